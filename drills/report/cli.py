"""`drill report RUN_DIR`: re-render a run's report, summary.json, .prom file and the runs index."""

from __future__ import annotations

import argparse
from pathlib import Path


class ReportError(Exception):
    """A run directory that cannot be rendered; one line to the user, exit 2."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="re-render a run's HTML report from its run directory")
    rp.add_argument("run_dir", help="reports/<run-id>")
    rp.set_defaults(func=cmd_report)


def cmd_report(a: argparse.Namespace) -> int:
    """Re-render a run's report (and the runs index beside it) from its timeline and results."""
    from drills.report import render_index, render_run, write_prom, write_summary_json

    run_dir = Path(a.run_dir)
    if not (run_dir / "run.json").is_file() and not (run_dir / "events.jsonl").is_file():
        raise ReportError(f"{run_dir} is not a run directory (no run.json or events.jsonl); pass reports/<run-id>")
    write_summary_json(run_dir)
    write_prom(run_dir)
    page = render_run(run_dir)
    index = render_index(run_dir.resolve().parent)
    print(f"report {page}; runs index {index}")
    return 0
