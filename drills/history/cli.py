"""`drill calibrate` and `drill history`: limits from this cluster's past, and the run record.

    drill calibrate --target FILE [--suite smoke] [--runs 5] [--min-runs 3] [--thresholds BASE] -o FILE
    drill calibrate --target FILE --suite nightly --run-first 5 -o FILE    # run the suite 5 times first
    drill history import [--report-dir reports] [--rebuild]
    drill history list [--report-dir reports] [--target FILE]

Both bring reports/history.sqlite up to date from the run directories first (they are the
source of truth).  Exit codes: 0 done, 2 bad input or too few runs (nothing written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from typing import Any

from drills.history.calibrate import CalibrationError, calibrate, write_calibration
from drills.history.store import HistoryError, connect, history_path, import_runs, runs

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(subparsers: Any) -> None:
    cal = subparsers.add_parser(
        "calibrate", help="write a thresholds file whose limits come from this target's recorded runs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    who = cal.add_mutually_exclusive_group(required=True)
    who.add_argument("--target", metavar="FILE", help="the target whose runs to use (matched by its fsid)")
    who.add_argument("--fsid", help="the cluster fsid whose runs to use")
    cal.add_argument("--suite", default=None, help="only runs of this suite (default: any)")
    cal.add_argument("--runs", type=int, default=5, help="use the last N runs (default 5)")
    cal.add_argument("--min-runs", type=int, default=3,
                     help="a limit is calibrated only if at least this many runs measured it (default 3)")
    cal.add_argument("--thresholds", default=None, metavar="BASE",
                     help="limits to start from (laid over the shipped defaults, as drill run does)")
    cal.add_argument("--report-dir", default="reports", help="where the run directories are (default ./reports)")
    cal.add_argument("--run-first", type=int, default=0, metavar="N",
                     help="run the suite N times on --target first (drill run), then calibrate from the last --runs")
    cal.add_argument("-o", "--output", required=True, metavar="FILE", help="the thresholds file to write")
    cal.set_defaults(func=run_calibrate)

    hist = subparsers.add_parser("history", help="the run history database (reports/history.sqlite)")
    hs = hist.add_subparsers(dest="history_command", required=True)
    imp = hs.add_parser("import", help="record every run directory under --report-dir (idempotent)")
    imp.add_argument("--report-dir", default="reports")
    imp.add_argument("--rebuild", action="store_true", help="also forget runs whose directory is gone")
    imp.set_defaults(func=run_import)
    ls = hs.add_parser("list", help="recorded runs, oldest first")
    ls.add_argument("--report-dir", default="reports")
    ls.add_argument("--fsid", default=None, help="only this cluster's runs")
    ls.set_defaults(func=run_list)


def _err(message: str) -> int:
    print(f"drill: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _drill_run(argv: list[str]) -> int:
    """One `drill run` in its own process: pytest keeps module state between in-process runs."""
    return subprocess.call([sys.executable, "-m", "drills.cli", "run", *argv])


def run_calibrate(args: argparse.Namespace, drill_run: Callable[[list[str]], int] = _drill_run) -> int:
    from drills.target import TargetError, load_target
    from drills.thresholds import ThresholdsError, load_thresholds

    fsid, target_path = args.fsid or "", ""
    if args.run_first:
        if not args.target or not args.suite:
            return _err("--run-first needs --target and --suite (what to run, and where)")
        for i in range(args.run_first):
            print(f"calibrate: run {i + 1} of {args.run_first}: drill run --suite {args.suite}", flush=True)
            rc = drill_run(["--target", args.target, "--suite", args.suite, "--report-dir", args.report_dir,
                            *(["--thresholds", args.thresholds] if args.thresholds else [])])
            if rc not in (0, 1):  # 1: a limit failed, the figures are still good; 2: set-up error
                return _err(f"drill run exited {rc} on run {i + 1} of {args.run_first}; nothing calibrated "
                            f"(fix what it printed and run again)")
    try:
        if args.target:
            t = load_target(args.target)
            fsid, target_path = t.cluster.fsid or "", str(t.path)
        base = load_thresholds(args.thresholds)
        report = import_runs(args.report_dir)
        for line in report.skipped:
            print(f"drill: note: {line}", file=sys.stderr)
        cal = calibrate(history_path(args.report_dir), base, fsid=fsid, target_path=target_path, suite=args.suite,
                        runs_wanted=args.runs, min_runs=args.min_runs)
        out = write_calibration(args.output, cal.text)
    except (TargetError, ThresholdsError, HistoryError, CalibrationError) as e:
        return _err(str(e))
    except OSError as e:
        return _err(f"{args.output}: cannot write: {e.strerror}; pass a writable --output")
    changed = [c for c in cal.limits if c.calibrated]
    print(f"calibrated {len(changed)} of {len(cal.limits)} limits from runs {', '.join(cal.runs)} -> {out}")
    from drills.thresholds import SPECS, format_value

    for c in changed:
        unit = SPECS[c.key].unit
        print(f"  {c.drill}.{c.phase}.{c.key}: {format_value(c.old_limit, unit)} -> {format_value(c.limit, unit)}")
    for n in cal.notes:
        print(f"note: {n}")
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    try:
        report = import_runs(args.report_dir, rebuild=args.rebuild)
    except HistoryError as e:
        return _err(str(e))
    print(f"recorded {len(report.recorded)} run(s) into {history_path(args.report_dir)}"
          + (f"; forgot {len(report.removed)} whose directory is gone" if report.removed else ""))
    for line in report.skipped:
        print(f"skipped: {line}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    try:
        import_runs(args.report_dir)
        with closing(connect(history_path(args.report_dir))) as conn:
            rows = runs(conn, args.fsid)
    except HistoryError as e:
        return _err(str(e))
    for r in rows:
        when = "-" if r.started is None else dt.datetime.fromtimestamp(r.started, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        print(f"{r.run_id:22s} {when:16s} {r.verdict:9s} {r.suite or '-':8s} {r.cluster or '-':12s} {r.ceph_version or '-'}")
    return EXIT_OK
