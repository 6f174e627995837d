"""`drill restore`: restore Cinder chunked backups into files or RBD images, memory-bounded.

    drill restore BACKUP DEST [BACKUP DEST ...] --memory-budget 256MiB --concurrency 8

BACKUP is a backup's container directory joined with its object prefix
(``/backups/ab/cd/<id>/volume_<vol>_<stamp>_backup_<id>``; the ``_metadata`` file's path
works too).  DEST is a file or block device, or ``rbd:IMAGE`` / ``rbd:POOL/IMAGE``
(needs ``--target`` for the cluster).

Incremental chains, restored into one DEST, each link verified:

    drill restore --chain FULL INC1 INC2 DEST        # the links, oldest first
    drill restore --backup-tree ROOT INC2 DEST       # parents found by backup_id under ROOT
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drills.restore.budget import format_size, parse_size
from drills.restore.chain import ChainLink, discover_chain
from drills.restore.memory import prepare_process_allocator
from drills.restore.engine import (EngineConfig, ProgressSnapshot, RestoreEngine, RestoreJob, RestoreReport,
                                   file_job, rbd_job)
from drills.restore.format import METADATA_SUFFIX, read_manifest
from drills.restore.journal import journal_key
from drills.restore.errors import RestoreError
from drills.restore.sinks import RbdConnection
from drills.restore.store import PosixBackupStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad command-line input: one line to the user, exit status 2."""


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "restore", help="restore Cinder chunked backups under a memory budget",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", metavar="BACKUP DEST",
                        help="backup (container dir/prefix) and destination, repeated; with --chain: the "
                             "chain's backups, full first, then one destination")
    parser.add_argument("--chain", action="store_true",
                        help="the BACKUPs are one incremental chain (full first) restored into the last argument")
    parser.add_argument("--backup-tree", default="", metavar="DIR",
                        help="find the parents of incremental BACKUPs by backup_id in the *_metadata files under DIR")
    parser.add_argument("--memory-budget", type=_size_arg, default=parse_size("256MiB"),
                        help="bytes all restores together may hold in buffers (default 256MiB)")
    parser.add_argument("--concurrency", type=int, default=4, help="restores running at once (default 4)")
    parser.add_argument("--window", type=_size_arg, default=parse_size("4MiB"),
                        help="decompressed window and write size (default 4MiB)")
    parser.add_argument("--read-piece", type=_size_arg, default=parse_size("1MiB"),
                        help="ranged read size of stored objects (default 1MiB)")
    parser.add_argument("--writes-in-flight", type=int, default=4, help="per target (default 4)")
    parser.add_argument("--max-rate", type=_size_arg, default=0, metavar="BYTES_PER_S",
                        help="written bytes per second for all restores together, e.g. 200MB (default unlimited)")
    parser.add_argument("--adaptive-rate", action="store_true",
                        help="back off (x0.5) while the cluster reports slow ops or the restores' write p99 rises "
                             "3x above its calm value; creep back up to --max-rate (or the first 2 s's rate)")
    parser.add_argument("--force", action="store_true", help="overwrite existing, non-empty targets")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted restores from their journal (files: .DEST.restore-journal; "
                             "rbd: the image's drills.restore.* metadata), verify the whole target at the end")
    parser.add_argument("--no-zero-skip", action="store_true", help="write zero windows on new targets too")
    parser.add_argument("--pool", default="", help="RBD pool for rbd:IMAGE destinations (default: the target's)")
    parser.add_argument("--target", default="", metavar="FILE", help="drills target file (cluster) for rbd: destinations")
    parser.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    parser.add_argument("--malloc-arena-max", type=int, default=2,
                        help="cap glibc malloc arenas before the restore threads start (default 2; 0 = glibc's "
                             "default of 8 per core; MALLOC_ARENA_MAX in the environment wins)")
    parser.set_defaults(func=run)
    return parser


def _backup_source(text: str) -> tuple[PosixBackupStore, str]:
    path = Path(text)
    name = path.name
    if name.endswith(METADATA_SUFFIX):
        name = name[: -len(METADATA_SUFFIX)]
    if not name or not path.parent.is_dir():
        raise UsageError(f"backup {text!r}: {path.parent} is not a directory")
    if not (path.parent / f"{name}{METADATA_SUFFIX}").is_file():
        raise UsageError(f"backup {text!r}: no {name}{METADATA_SUFFIX} in {path.parent}")
    return PosixBackupStore(path.parent), name


def _rbd_destination(dest: str, args: argparse.Namespace) -> tuple[str, str]:
    spec = dest[len("rbd:"):]
    pool, _, image = spec.rpartition("/")
    pool = pool or args.pool
    if not image or "/" in pool:
        raise UsageError(f"destination {dest!r}: expected rbd:IMAGE or rbd:POOL/IMAGE")
    if not args.target:
        raise UsageError(f"destination {dest!r}: rbd destinations need --target FILE (the cluster)")
    return pool, image


def _parents(store: PosixBackupStore, prefix: str, source: str, args: argparse.Namespace) -> tuple[ChainLink, ...]:
    """The older links of `source` found under --backup-tree (none without it, or for a full backup)."""
    if not args.backup_tree:
        return ()
    try:
        chain = discover_chain(args.backup_tree, ChainLink(store, prefix))
    except RestoreError as e:
        raise UsageError(f"backup {source!r}: {e}") from None
    return tuple(chain[:-1])


def _chain_pairs(args: argparse.Namespace) -> list[tuple[list[str], str]]:
    if args.chain:
        if len(args.pairs) < 2:
            raise UsageError("--chain needs the chain's backups (full first) and one destination")
        return [(args.pairs[:-1], args.pairs[-1])]
    if len(args.pairs) % 2:
        raise UsageError("give BACKUP DEST pairs: an even number of arguments")
    return [([source], dest) for source, dest in zip(args.pairs[0::2], args.pairs[1::2])]


def build_jobs(args: argparse.Namespace, connect_rbd: Callable[[], RbdConnection]) -> list[RestoreJob]:
    """Jobs for the BACKUP DEST pairs (or one --chain); rbd: destinations share one connection."""
    jobs: list[RestoreJob] = []
    seen: set[str] = set()
    pairs = _chain_pairs(args)
    rbd_destinations = {dest: _rbd_destination(dest, args) for _source, dest in pairs if dest.startswith("rbd:")}
    connection = connect_rbd() if rbd_destinations else None
    for sources, dest in pairs:
        links = [ChainLink(*_backup_source(source)) for source in sources]
        if len(links) == 1:
            links = [*_parents(links[0].store, links[0].prefix, sources[0], args), links[0]]  # type: ignore[arg-type]
        *parents, last = links
        store, prefix = last.store, last.prefix
        if dest in seen:
            raise UsageError(f"destination {dest!r} given twice")
        seen.add(dest)
        if dest in rbd_destinations:
            assert connection is not None
            pool, image = rbd_destinations[dest]
            if args.resume:
                _check_rbd_resume(connection, pool, image, links, dest)
            jobs.append(rbd_job(store, prefix, connection, pool, image, force=args.force, parents=parents,
                                resume=args.resume))
        else:
            if Path(dest).is_dir():
                raise UsageError(f"destination {dest!r} is a directory")
            jobs.append(file_job(store, prefix, dest, force=args.force, parents=parents, resume=args.resume))
    return jobs


def _check_rbd_resume(connection: RbdConnection, pool: str, image: str, links: list[ChainLink], dest: str) -> None:
    """Refuse (exit 2, the image untouched) a resume into an image that is not this restore's interrupted one.

    The sink checks the same again when it opens the image; this is the early, read-only look.
    """
    try:
        manifests = [read_manifest(link.store, link.prefix, allow_incremental=len(links) > 1) for link in links]
    except RestoreError:
        return  # a bad backup fails its restore with the backup and object named, as without --resume
    try:
        refusal = connection.resume_refusal(pool, image, journal_key(manifests), manifests[0].volume_size)
    except RestoreError as e:
        raise UsageError(f"destination {dest!r}: {e}") from None
    except Exception as e:  # rbd errors reading the image: one line
        raise UsageError(f"destination {dest!r}: cannot read the image's journal: {e}") from None
    if refusal is not None:
        raise UsageError(f"destination {dest!r}: cannot resume: {refusal}; use --force to start over")


def _config(args: argparse.Namespace) -> EngineConfig:
    for flag, value in (("--concurrency", args.concurrency), ("--writes-in-flight", args.writes_in_flight)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1")
    return EngineConfig(memory_budget_bytes=args.memory_budget, concurrency=args.concurrency,
                        read_piece_bytes=args.read_piece, window_bytes=args.window,
                        max_writes_in_flight=args.writes_in_flight, skip_zeros=not args.no_zero_skip,
                        max_rate_bytes_per_s=float(args.max_rate), adaptive_rate=args.adaptive_rate)


def run(args: argparse.Namespace) -> int:
    connections: list[RbdConnection] = []
    # Before any restore thread exists: 2 arenas and a fixed mmap threshold (drills/restore/memory.py).
    prepare_process_allocator(arenas=getattr(args, "malloc_arena_max", 2))

    def connect_rbd() -> RbdConnection:
        try:
            connection = RbdConnection.from_target(args.target)
        except RestoreError as e:
            raise UsageError(str(e)) from None
        except Exception as e:  # TargetError of the target file, rados errors: one line, exit 2
            raise UsageError(f"cannot connect to the cluster of {args.target}: {e}") from None
        connections.append(connection)
        return connection

    try:
        try:
            config = _config(args)
            jobs = build_jobs(args, connect_rbd)
        except UsageError as e:
            print(f"drill restore: {e}", file=sys.stderr)
            return EXIT_USAGE
        probe = connections[0].slow_ops_probe() if connections else None
        engine = RestoreEngine(config, slow_ops_probe=probe)
        interactive = sys.stdout.isatty() and not args.plain
        if interactive:
            report = _run_with_rich(engine, jobs)
        else:
            report = engine.run(jobs, on_progress=_PlainProgress(), progress_interval=0.5)
        _print_summary(report)
    finally:
        for connection in connections:
            connection.close()
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_FAILED


class _PlainProgress:
    """One line every few seconds, for logs and CI."""

    def __init__(self, every_seconds: float = 5.0) -> None:
        self._every = every_seconds
        self._last = 0.0

    def __call__(self, snap: ProgressSnapshot) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        done = sum(r.bytes_done for r in snap.restores)
        total = sum(r.bytes_total for r in snap.restores)
        states = {s: sum(1 for r in snap.restores if r.status == s) for s in ("running", "queued", "done", "failed")}
        rate = done / snap.elapsed if snap.elapsed else 0
        print(f"restore: {format_size(done)}/{format_size(total)} {format_size(rate)}/s "
              f"running={states['running']} queued={snap.queue_length} done={states['done']} "
              f"failed={states['failed']} budget={format_size(snap.reserved_bytes)}/{format_size(snap.budget_bytes)}",
              flush=True)


def _run_with_rich(engine: RestoreEngine, jobs: list[RestoreJob]) -> RestoreReport:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, refresh_per_second=4) as progress:
        total_task = progress.add_task("total", total=None)
        tasks = [progress.add_task(job.label[-48:], total=None) for job in jobs]

        def update(snap: ProgressSnapshot) -> None:
            for task, item in zip(tasks, snap.restores):
                progress.update(task, completed=item.bytes_done, total=item.bytes_total or None,
                                description=f"{item.status:9} {item.name[-40:]}")
            progress.update(total_task, completed=sum(r.bytes_done for r in snap.restores),
                            total=sum(r.bytes_total for r in snap.restores) or None,
                            description=f"total (queue {snap.queue_length}, budget "
                                        f"{format_size(snap.reserved_bytes)}/{format_size(snap.budget_bytes)})")

        return engine.run(jobs, on_progress=update)


def _print_summary(report: RestoreReport) -> None:
    for r in report.results:
        line = f"{r.status:9} {r.name} -> {r.target} {format_size(r.bytes_restored)} in {r.seconds:.1f}s"
        if r.pieces_resumed:
            line += f" ({r.pieces_resumed}/{r.pieces_total} pieces journaled by the interrupted run, skipped)"
        if r.error:
            line += f": {r.error}"
        if r.cleanup:
            line += f" [{r.cleanup}]"
        print(line, file=sys.stdout if r.status == "done" else sys.stderr)
    print(f"peak reserved {format_size(report.peak_reserved_bytes)} of a {format_size(report.budget_bytes)} budget; "
          f"{sum(r.status == 'done' for r in report.results)}/{len(report.results)} restored in {report.seconds:.1f}s"
          + (" (interrupted)" if report.interrupted else ""))


def main(argv: list[str] | None = None) -> int:
    """`python -m drills.restore.cli`: the restore command alone, without the rest of `drill`.

    `drill restore` (drills/cli.py) registers the same parser through add_parser and is the usual
    entry; it also gives Ctrl-C and a closed stdout their common handling (docs/cli.md).
    """
    parser = argparse.ArgumentParser(prog="drill")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
