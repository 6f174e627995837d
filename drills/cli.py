"""`drill`: the command line. Each room owns its subcommands (`add_parser` in its cli module) and is
listed here once; errors are one line and exit 2."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
from typing import NoReturn, TextIO

from drills import __version__
from drills.cluster import ClusterError
from drills.faults import cli as faults_cli
from drills.faults.errors import DrillSignal, FaultError
from drills.faults.guard import GuardRefused
from drills import runner
from drills.history import cli as history_cli
from drills.hostaccess import HostAccessError
from drills.preflight import cli as preflight_cli
from drills.report import cli as report_cli
from drills.restart import cli as restart_cli
from drills.restore import cli as restore_cli
from drills.sandbox import cli as sandbox_cli
from drills.soak import cli as soak_cli
from drills.sandbox.spec import SandboxError, default_target_path
from drills.target import TargetError
from drills.thresholds import ThresholdsError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command Ctrl-C stopped
EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE: stdout's reader went away mid-write (see main)


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- parser --------------------------------------------------------------------


def build_parser() -> ArgParser:
    p = ArgParser(prog="drill", description="Chaos drills for Ceph clusters.")
    p.add_argument("--version", action="version", version=f"ceph-drills {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgParser)

    sandbox_cli.add_parser(sub)
    preflight_cli.add_target_parser(sub, default_target_path())  # drill target
    runner.add_parser(sub, default_target_path())  # drill run
    report_cli.add_parser(sub)
    restore_cli.add_parser(sub)
    history_cli.add_parser(sub)  # drill calibrate, drill history
    faults_cli.add_parser(sub, default_target_path())
    restart_cli.add_parser(sub, default_target_path())
    preflight_cli.add_parser(sub, default_target_path())
    soak_cli.add_parser(sub, default_target_path())  # drill soak
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
            rc, interrupted, said = _run_command(argv)
            # Also when the interrupt was handled on the way (pytest, the restore engine) and the command
            # returned a status of its own: the person pressed Ctrl-C, so the command did not finish.
            seen = signals.seen()
            if (interrupted or signal.SIGINT in seen) and rc != EXIT_PIPE_CLOSED:
                _say("drill: interrupted")
                rc = EXIT_INTERRUPTED
            elif not said and rc in (EXIT_INTERRUPTED, 128 + signal.SIGTERM, 128 + signal.SIGHUP) and seen & {signal.SIGTERM, signal.SIGHUP}:
                # `drill run` stopped by SIGTERM/SIGHUP: pytest ended the run early (faults healed, the
                # report written); exit as a process that signal stopped
                stopped = min(seen & {signal.SIGTERM, signal.SIGHUP})
                _say(f"drill: stopped by {signal.Signals(stopped).name}")
                rc = 128 + stopped
        return rc
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = real_stdout, real_stderr


def _run_command(argv: list[str] | None) -> tuple[int, bool, bool]:
    """The command's exit status, whether a Ctrl-C ended it (main says so, once), and whether a
    SIGTERM/SIGHUP that stopped it was already said."""
    try:
        try:
            args = parse_args(argv)
            rc = int(args.func(args) or 0)
            sys.stdout.flush()
            return rc, False, False
        except (SandboxError, TargetError, ClusterError, FaultError, HostAccessError, GuardRefused, ThresholdsError,
                report_cli.ReportError) as e:
            sys.stdout.flush()  # what the command printed comes before its error
            _say(f"drill: error: {e}")
            return EXIT_ERROR, False, False
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, True, False
    except DrillSignal as e:  # SIGTERM/SIGHUP, or a Ctrl-C the fault session deferred until its heals were done
        if e.signum == signal.SIGINT:
            return EXIT_INTERRUPTED, True, False
        _say(f"drill: stopped by {signal.Signals(e.signum).name}")
        return 128 + e.signum, False, True
    except BrokenPipeError:
        if not _pipe_closed(sys.stdout):
            raise  # some other pipe (a daemon, ssh): a harness error, shown in full
        _silence(sys.stdout)
        if _pipe_closed(sys.stderr):
            _silence(sys.stderr)
        return EXIT_PIPE_CLOSED, False, False


if __name__ == "__main__":
    sys.exit(main())
