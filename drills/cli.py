"""`drill`: the command line. Each room adds its subcommand here; errors are one line and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn, TextIO

from drills import __version__
from drills.cluster import ClusterError
from drills.faults import cli as faults_cli
from drills.faults.errors import DrillSignal, FaultError
from drills.faults.guard import GuardRefused
from drills.history import cli as history_cli
from drills.preflight import cli as preflight_cli
from drills.restart import cli as restart_cli
from drills.restore import cli as restore_cli
from drills.sandbox.spec import DEFAULT_DIR, DEFAULT_PREFIX, DEFAULT_SUBNET, GiB, SandboxError, SandboxSpec
from drills.target import TargetError
from drills.thresholds import ThresholdsError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command Ctrl-C stopped
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: stdout's reader went away mid-write (see main)

DEFAULT_TARGET_ENV = "DRILL_TARGET"


def default_target_path() -> str:
    return os.environ.get(DEFAULT_TARGET_ENV) or str(Path(DEFAULT_DIR) / "target.toml")


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> int:
    from drills.units import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


# --- sandbox -------------------------------------------------------------------


def _spec_from_args(a: argparse.Namespace) -> SandboxSpec:
    return SandboxSpec(
        dir=a.dir,
        racks=a.racks,
        hosts_per_rack=a.hosts_per_rack,
        osds_per_host=a.osds_per_host,
        subnet=a.subnet,
        prefix=a.prefix,
        osd_size=a.osd_size,
        osd_memory_target=a.osd_memory_target,
        rgw=not a.no_rgw,
        host_memory=a.host_memory,
        allocator=a.allocator,
    )


def _existing_spec(a: argparse.Namespace) -> SandboxSpec:
    from drills.sandbox.bootstrap import load_spec

    return load_spec(a.dir) or SandboxSpec(dir=a.dir, prefix=a.prefix)


def cmd_sandbox_up(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    r = bootstrap.up(_spec_from_args(a), timeout=a.timeout)
    print(f"sandbox up in {r.seconds:.1f} s: {len(r.target.osd_ids)} OSDs in {len(r.target.racks)} racks; target file {r.target.path or _spec_from_args(a).target_path}")
    return EXIT_OK


def cmd_sandbox_down(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    spec = _existing_spec(a)
    r = bootstrap.down(spec, log=lambda m: None)
    left = bootstrap.leftovers(spec)
    print(f"sandbox down in {r.seconds:.1f} s: {r.processes_killed} processes stopped, {len(r.removed)} items removed")
    if left:
        _say(f"drill: error: still present after down: {', '.join(left)}")
        return EXIT_ERROR
    return EXIT_OK


def cmd_sandbox_status(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    spec = _existing_spec(a)
    if not spec.path.exists():
        print(f"no sandbox in {spec.dir} (start one with: drill sandbox up)")
        return EXIT_FAILED
    st = bootstrap.status(spec)
    if a.json:
        print(json.dumps(st, indent=2))
    else:
        print(f"sandbox {st['dir']}: {st['health']}")
        for name, d in st["daemons"].items():
            rss = f"{d['rss'] / 2**20:7.1f} MiB" if d["rss"] else "      -"
            print(f"  {name:22s} host {d['host']:5s} pid {d['pid'] or '-':>8}  rss {rss}")
    return EXIT_OK if st["health"] == "HEALTH_OK" else EXIT_FAILED


def cmd_sandbox_logs(a: argparse.Namespace) -> int:
    spec = _existing_spec(a)
    logdir = spec.path / "log"
    if not logdir.is_dir():
        raise SandboxError(f"no sandbox logs in {logdir}; is the sandbox up? (drill sandbox status)")
    files = sorted(logdir.glob(f"{a.daemon}.log" if a.daemon else "*.log"))
    if not files:
        raise SandboxError(f"no log for {a.daemon!r} in {logdir}; daemons: {', '.join(p.stem for p in sorted(logdir.glob('*.log')))}")
    for f in files:
        lines = f.read_text(errors="replace").splitlines()[-a.lines :]
        print(f"==> {f} <==")
        print("\n".join(lines))
    return EXIT_OK


def cmd_sandbox_power(a: argparse.Namespace) -> int:
    """Cut or restore one sandbox host's power (what a BMC emulator's power action calls)."""
    from drills.faults.backends.sandbox import SandboxBackend
    from drills.target import load_target

    spec = _existing_spec(a)
    target = load_target(spec.target_path)
    host = target.host(a.host)
    backend = SandboxBackend(target)
    if a.state == "off":
        backend.power_off(host)
    else:
        backend.power_on(host, start_daemons=not a.hold)
    print(f"host {host.name}: power {a.state}{' (daemons held)' if a.hold and a.state == 'on' else ''}")
    return EXIT_OK


# --- target --------------------------------------------------------------------


def cmd_target_check(a: argparse.Namespace) -> int:
    """Validate a target file, the credentials it names (unless --schema-only) and, with --connect, the live cluster."""
    from drills.cluster import CephCluster
    from drills.target import credential_problems, load_target

    t = load_target(a.target)
    print(f"target {t.path}: cluster {t.cluster.name}, {len(t.racks)} racks, {len(t.hosts)} hosts, {len(t.osd_ids)} OSDs, destructive={t.destructive}")
    if not a.schema_only:
        problems = credential_problems(t)
        if problems:
            sys.stdout.flush()
            for line in problems:  # all of them: this command is where a person fixes a target file
                _say(f"drill: error: {line}")
            return EXIT_ERROR
    if a.connect:
        with CephCluster(t) as c:
            topo = c.topology()
            print(f"connected: fsid {c.fsid()}, {c.health_status()}, live CRUSH racks: {', '.join(sorted(topo.racks))}")
    return EXIT_OK


# --- run -------------------------------------------------------------------------


def cmd_run(a: argparse.Namespace) -> int:
    from drills.runner import rerun_failed, run_suite

    if a.rerun_failed:
        return rerun_failed(a.rerun_failed, a.report_dir, a.dry_run, a.pytest_args, a.skip_destructive)
    return run_suite(
        target=a.target,
        suite=a.suite,
        thresholds=a.thresholds,
        report_dir=a.report_dir,
        dry_run=a.dry_run,
        extra=a.pytest_args,
        skip_destructive=a.skip_destructive,
    )


def cmd_report(a: argparse.Namespace) -> int:
    """Re-render a run's report (and the runs index beside it) from its timeline and results."""
    from drills.report import render_index, render_run, write_prom, write_summary_json

    run_dir = Path(a.run_dir)
    if not (run_dir / "run.json").is_file() and not (run_dir / "events.jsonl").is_file():
        raise TargetError(f"{run_dir} is not a run directory (no run.json or events.jsonl); pass reports/<run-id>")
    write_summary_json(run_dir)
    write_prom(run_dir)
    page = render_run(run_dir)
    index = render_index(run_dir.resolve().parent)
    print(f"report {page}; runs index {index}")
    return EXIT_OK


# --- parser --------------------------------------------------------------------


def build_parser() -> ArgParser:
    p = ArgParser(prog="drill", description="Chaos drills for Ceph clusters.")
    p.add_argument("--version", action="version", version=f"ceph-drills {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgParser)

    sb = sub.add_parser("sandbox", help="a real Ceph cluster on this machine")
    sbs = sb.add_subparsers(dest="action", required=True, parser_class=ArgParser)

    def dir_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory (default {DEFAULT_DIR})")
        q.add_argument("--prefix", default=DEFAULT_PREFIX, help="tag for namespaces, links and cgroups (default %(default)s)")

    up = sbs.add_parser("up", help="start the sandbox (idempotent; replaces a crashed one) and write its target file")
    dir_opts(up)
    up.add_argument("--racks", type=int, default=3)
    up.add_argument("--hosts-per-rack", type=int, default=2)
    up.add_argument("--osds-per-host", type=int, default=1)
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="addresses of the sandbox's bridge and hosts (default %(default)s)")
    up.add_argument("--osd-size", type=_size, default=8 * GiB, help="sparse BlueStore file per OSD; all of them must fit the disk when full (default 8GiB)")
    up.add_argument("--osd-memory-target", type=_size, default=1 * GiB, help="osd_memory_target (default 1GiB)")
    up.add_argument("--no-rgw", action="store_true", help="do not start radosgw")
    up.add_argument("--allocator", choices=("glibc", "tcmalloc"), default="glibc",
                    help="the daemons' malloc: glibc (Debian's build) or tcmalloc (Debian's libtcmalloc preloaded, "
                         "as upstream builds link it) (default %(default)s)")
    up.add_argument("--host-memory", type=_size, default=0, help="memory cgroup limit per OSD host, e.g. 1536MiB (default 0: none)")
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for HEALTH_OK")
    up.set_defaults(func=cmd_sandbox_up)

    for name, fn, helptext in (("down", cmd_sandbox_down, "stop the sandbox and remove everything it made"), ("status", cmd_sandbox_status, "daemons, pids, RSS and health")):
        q = sbs.add_parser(name, help=helptext)
        dir_opts(q)
        if name == "status":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=fn)
    pw = sbs.add_parser("power", help="cut or restore one sandbox host's power (silent: its network drops, its daemons die)")
    dir_opts(pw)
    pw.add_argument("host", help="sandbox host, e.g. r1h1")
    pw.add_argument("state", choices=("on", "off"))
    pw.add_argument("--hold", action="store_true", help="with on: keep its daemons stopped for a controlled start")
    pw.set_defaults(func=cmd_sandbox_power)
    lg = sbs.add_parser("logs", help="the tail of the daemons' logs")
    dir_opts(lg)
    lg.add_argument("daemon", nargs="?", help="e.g. osd.3, mon.a (default: all)")
    lg.add_argument("-n", "--lines", type=_positive, default=20)
    lg.set_defaults(func=cmd_sandbox_logs)

    tg = sub.add_parser("target", help="check a target file")
    tg.add_argument("--target", default=default_target_path())
    tg.add_argument("--connect", action="store_true", help="also connect and compare the live cluster")
    tg.add_argument("--schema-only", action="store_true",
                    help="check the file alone, not the credentials it names (e.g. linting a target on another machine)")
    tg.set_defaults(func=cmd_target_check)

    run = sub.add_parser("run", help="run a drill suite against a target and write the report")
    run.add_argument("--target", default=default_target_path())
    run.add_argument("--suite", default="smoke", help="smoke | nightly | full (default smoke)")
    run.add_argument("--thresholds", default=None, help="thresholds TOML (default: the shipped one)")
    run.add_argument("--report-dir", default="reports")
    run.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")
    run.add_argument("--rerun-failed", metavar="RUN_DIR", default=None,
                     help="repeat the failed drills of that run with its resolved configuration (config.json)")
    run.add_argument("--skip-destructive", action="store_true",
                     help="on a target without destructive = true, skip the drills that inject faults (each shown as skipped, with why) instead of refusing the run")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="re-render a run's HTML report from its run directory")
    rp.add_argument("run_dir", help="reports/<run-id>")
    rp.set_defaults(func=cmd_report)

    restore_cli.add_parser(sub)
    history_cli.add_parser(sub)  # drill calibrate, drill history
    faults_cli.add_parser(sub, default_target_path())
    restart_cli.add_parser(sub, default_target_path())
    preflight_cli.add_parser(sub, default_target_path())
    _name_leaf_parsers(p)
    return p


def _name_leaf_parsers(parser: argparse.ArgumentParser) -> None:
    """Each command's parser goes into its namespace (`command_parser`), so that an unknown flag is
    reported against that command (`see drill run --help`), not the top level."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        parser.set_defaults(command_parser=parser)
    for action in subs:
        for child in set(action.choices.values()):
            _name_leaf_parsers(child)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _say(message: str) -> None:
    """One line to stderr; a closed stderr (`drill ... 2>&1 | head -1`) is not worth a traceback."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


def _pipe_closed(stream: TextIO) -> bool:
    """True when `stream` is a pipe whose reader has gone (Linux reports POLLERR on its write end)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


def _silence(stream: TextIO) -> None:
    """Point a closed stream's file descriptor at /dev/null: later writes, and the final flush, go nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class PipeSafeStream:
    """sys.stdout or sys.stderr for the length of one command: when the pipe's reader goes away
    (`drill run | head -5`), the rest of the output is dropped instead of raising BrokenPipeError
    out of whatever was printing - a drill halfway through its fault, a controlled restart, pytest's
    terminal reporter. The command finishes (heals, verdict, report) and exits with its own status.
    Everything but writing is the wrapped stream's (isatty, fileno, encoding: rich and pytest ask).
    """

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream
        self.reader_gone = False

    def _gone(self) -> None:
        self.reader_gone = True
        _silence(self.wrapped)
        try:
            self.wrapped.flush()  # what was buffered for the closed pipe now drains into /dev/null
        except OSError:
            pass

    def write(self, text: str) -> int:
        try:
            return self.wrapped.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> object:
        return getattr(self.wrapped, name)


class SignalsSeen:
    """Which signals reached this process while the command ran, whoever handled them.

    The fault session replaces the SIGINT handler while faults are armed, and pytest (under
    `drill run`) turns a KeyboardInterrupt into its own exit status, so a handler of ours would
    miss some Ctrl-Cs. The interpreter's C-level handler writes every caught signal's number to
    the wakeup fd, whichever Python handler then runs, so that is where we look.
    """

    def __init__(self) -> None:
        self._read_fd = self._write_fd = -1
        self._previous_fd = -1
        self._numbers: set[int] = set()

    def __enter__(self) -> "SignalsSeen":
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set the wakeup fd; then nothing is watched
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        return self

    def seen(self) -> set[int]:
        if self._read_fd >= 0:
            try:
                self._numbers.update(os.read(self._read_fd, 512))
            except BlockingIOError:
                pass
        return set(self._numbers)

    def __exit__(self, *exc: object) -> None:
        if self._read_fd < 0:
            return
        self.seen()
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
        self._read_fd = self._write_fd = -1


def main(argv: list[str] | None = None) -> int:
    """Run one `drill` command. Besides the command's own exit status:

    - Ctrl-C exits 130 (128 + SIGINT) with one line, never a traceback; faults armed through a fault
      session are healed by the session before the interrupt gets here. SIGTERM and SIGHUP, which the
      fault session turns into DrillSignal, exit 128 + the signal's number.
    - A closed stdout (`drill sandbox status | head -2`) is not an error: the rest of the output is
      dropped, nothing is printed about it, and the command finishes with its own status (0 when it
      succeeded). Only output written past the wrapper (a raw write to the descriptor) can still hit
      the closed pipe; then the command stops there and exits 141 (128 + SIGPIPE), also silently.
    """
    real_stdout, real_stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafeStream(real_stdout), PipeSafeStream(real_stderr)  # type: ignore[assignment]
    try:
        with SignalsSeen() as signals:
            rc, interrupted = _run_command(argv)
            # Also when the interrupt was handled on the way (pytest, the restore engine) and the command
            # returned a status of its own: the person pressed Ctrl-C, so the command did not finish.
            if (interrupted or signal.SIGINT in signals.seen()) and rc != EXIT_PIPE_CLOSED:
                _say("drill: interrupted")
                rc = EXIT_INTERRUPTED
        return rc
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = real_stdout, real_stderr


def _run_command(argv: list[str] | None) -> tuple[int, bool]:
    """The command's exit status, and whether a Ctrl-C ended it (main says so, once)."""
    try:
        try:
            args = parse_args(argv)
            rc = int(args.func(args) or 0)
            sys.stdout.flush()
            return rc, False
        except (SandboxError, TargetError, ClusterError, FaultError, GuardRefused, ThresholdsError) as e:
            sys.stdout.flush()  # what the command printed comes before its error
            _say(f"drill: error: {e}")
            return EXIT_ERROR, False
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, True
    except DrillSignal as e:  # SIGTERM/SIGHUP, or a Ctrl-C the fault session deferred until its heals were done
        if e.signum == signal.SIGINT:
            return EXIT_INTERRUPTED, True
        _say(f"drill: stopped by {signal.Signals(e.signum).name}")
        return 128 + e.signum, False
    except BrokenPipeError:
        if not _pipe_closed(sys.stdout):
            raise  # some other pipe (a daemon, ssh): a harness error, shown in full
        _silence(sys.stdout)
        if _pipe_closed(sys.stderr):
            _silence(sys.stderr)
        return EXIT_PIPE_CLOSED, False


if __name__ == "__main__":
    sys.exit(main())
