"""Peak RSS of a restore process minus its idle RSS, against --memory-budget, across a matrix.

Each cell runs in a child process of its own (nothing else in it): the child imports the
engine, prepares the allocator as `drill restore` does, reads VmRSS (idle), restores
CONCURRENCY copies of one backup into files, then reads VmHWM (peak).  The ratio
(peak - idle) / budget must stay <= 1.0: an operator sizes a restore host from the budget.

    .venv/bin/python benchmarks/restore_rss_matrix.py                      # default matrix
    .venv/bin/python benchmarks/restore_rss_matrix.py --concurrency 1,64 --chunk-mib 16,256 \
        --codec zlib,zstd,bz2,mix --budget 64MiB,256MiB

Codec "mix" cycles zlib, zstd, bz2 and none per object (a backup set written over years;
its volume is 4 chunks).  Other codecs: a volume of max(--volume-mib, 1 chunk).  Mixed
random / zero / text data; targets are sparse files in the workdir, removed after each cell.
A cell stops after --max-seconds (the engine is cancelled, which exercises the cleanup
too): the peak is reached as soon as the budget is full, long before 64 restores of 256 MiB
volumes are done on a shared 2-core machine.  Rows say "cut" when that happened.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.restore_bench import make_volume_file  # noqa: E402
from drills.restore.budget import format_size, parse_size  # noqa: E402
from drills.restore.format import cinder_prefix, write_backup  # noqa: E402
from drills.restore.store import PosixBackupStore  # noqa: E402

MiB = 1 << 20
MIX = ("zlib", "zstd", "bz2", "none")


@dataclass(frozen=True)
class CellSpec:
    container: str
    prefix: str
    outdir: str
    concurrency: int
    budget_bytes: int
    window_bytes: int
    read_piece_bytes: int
    max_seconds: float


@dataclass(frozen=True)
class CellResult:
    idle_rss: int
    peak_rss: int
    peak_reserved: int
    seconds: float
    bytes_restored: int
    ok: bool
    errors: list[str]
    cut: bool
    peak_held: int
    threads_max: int


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def child(spec: CellSpec) -> CellResult:
    from drills.restore.engine import EngineConfig, RestoreEngine, file_job
    from drills.restore.memory import prepare_process_allocator

    prepare_process_allocator()
    store = PosixBackupStore(spec.container)
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=spec.budget_bytes, concurrency=spec.concurrency,
                                        window_bytes=spec.window_bytes, read_piece_bytes=spec.read_piece_bytes))
    jobs = [file_job(store, spec.prefix, os.path.join(spec.outdir, f"out{i}.img"), name=f"r{i}")
            for i in range(spec.concurrency)]
    idle = _status_bytes("VmRSS")
    timer = threading.Timer(spec.max_seconds, engine.cancel)
    timer.start()
    threads_max = [threading.active_count()]

    def count_threads(_snap: object) -> None:
        threads_max[0] = max(threads_max[0], len(os.listdir("/proc/self/task")))

    report = engine.run(jobs, on_progress=count_threads, progress_interval=0.2)
    timer.cancel()
    peak = _status_bytes("VmHWM")
    cut = any(r.status == "cancelled" for r in report.results)
    ok = all(r.status in ("done", "cancelled") for r in report.results)
    return CellResult(idle, peak, report.peak_reserved_bytes, report.seconds, report.bytes_restored, ok,
                      [r.error for r in report.results if r.error and r.status != "cancelled"][:3], cut,
                      report.peak_held_bytes, threads_max[0])


def run_cell(spec: CellSpec) -> CellResult:
    Path(spec.outdir).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("MALLOC_ARENA_MAX", None)  # the engine's own allocator settings are under test
    try:
        proc = subprocess.run([sys.executable, __file__, "_child"], input=json.dumps(asdict(spec)), env=env,
                              capture_output=True, text=True, timeout=3600)
    finally:
        shutil.rmtree(spec.outdir, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child failed with status {proc.returncode}: {proc.stderr[-800:]}")
    return CellResult(**json.loads(lines[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "_child"))
    parser.add_argument("--concurrency", default="1,16,64", help="comma list (default 1,16,64)")
    parser.add_argument("--chunk-mib", default="16,64,256", help="backup chunk sizes in MiB (default 16,64,256)")
    parser.add_argument("--codec", default="zlib,zstd,bz2,mix", help="codecs; mix = zlib,zstd,bz2,none per object")
    parser.add_argument("--budget", default="64MiB,256MiB", help="memory budgets (default 64MiB,256MiB)")
    parser.add_argument("--volume-mib", type=int, default=16, help="volume size of single-codec cells (>= 1 chunk)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="cancel a cell's restores after this long")
    parser.add_argument("--window", type=parse_size, default=parse_size("4MiB"))
    parser.add_argument("--read-piece", type=parse_size, default=parse_size("1MiB"))
    parser.add_argument("--workdir", default="", help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.mode == "_child":
        print(json.dumps(asdict(child(CellSpec(**json.loads(sys.stdin.read()))))), flush=True)
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="restore-rss-"))
    workdir.mkdir(parents=True, exist_ok=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    budgets = [parse_size(b) for b in args.budget.split(",")]
    header = (f"{'chunk':>7} {'codec':>5} {'conc':>4} {'budget':>9} | {'idle RSS':>9} {'peak RSS':>9} "
              f"{'peak-idle':>9} {'held':>9} {'ratio':>5} | {'thr':>3} {'MB/s':>5} {'s':>5}")
    rows = [header, "-" * len(header)]
    print("held = the budget's peak of buffers in use plus idle pooled buffers; thr = most threads at once")
    print(f"file sink, window {format_size(args.window)}, read piece {format_size(args.read_piece)}, workdir "
          f"{workdir}; ratio = (peak RSS - idle RSS) / budget, must be <= 1.00; load {os.getloadavg()[0]:.1f}",
          flush=True)
    worst = 0.0
    try:
        for chunk_mib in [int(c) for c in args.chunk_mib.split(",")]:
            for codec in args.codec.split(","):
                volume_mib = 4 * chunk_mib if codec == "mix" else max(args.volume_mib, chunk_mib)
                volume = workdir / f"volume-{volume_mib}.img"
                if not volume.exists():
                    make_volume_file(volume, volume_mib * MiB)
                store = PosixBackupStore(workdir / f"backup-{chunk_mib}-{codec}")
                prefix = cinder_prefix("rss-volume", f"rss-{chunk_mib}-{codec}")
                write_backup(volume, store, prefix, chunk_mib * MiB, MIX if codec == "mix" else codec)
                for conc, budget in itertools.product(concurrencies, budgets):
                    result = run_cell(CellSpec(str(store.root), prefix, str(workdir / "out"), conc, budget,
                                               args.window, args.read_piece, args.max_seconds))
                    if not result.ok:
                        raise SystemExit(f"restores failed: {result.errors}")
                    ratio = (result.peak_rss - result.idle_rss) / budget
                    worst = max(worst, ratio)
                    row = (f"{chunk_mib:>4}MiB {codec:>5} {conc:>4} {format_size(budget):>9} | "
                           f"{format_size(result.idle_rss):>9} {format_size(result.peak_rss):>9} "
                           f"{format_size(result.peak_rss - result.idle_rss):>9} "
                           f"{format_size(result.peak_held):>9} {ratio:>5.2f} | {result.threads_max:>3} "
                           f"{result.bytes_restored / result.seconds / 1e6:>5.0f} {result.seconds:>5.1f}"
                           + (" cut" if result.cut else ""))
                    rows.append(row)
                    print(row, flush=True)
                shutil.rmtree(store.root, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("\n".join(rows))
    print(f"worst ratio {worst:.2f} ({'within' if worst <= 1.0 else 'OVER'} the budget)")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
