"""The report: a run directory rendered to one self-contained HTML page, plus machine-readable outputs.

    render_run(run_dir)          -> run_dir/index.html
    render_index(reports_dir)    -> reports_dir/index.html (every run, pass/fail, trends)
    write_summary_json(run_dir)  -> run_dir/summary.json
    write_prom(run_dir)          -> run_dir/ceph_drills.prom (node_exporter textfile)

Inputs: the timeline (run.json, events.jsonl, series.jsonl; drills/timeline.py) and one
results file per drill, run_dir/drills/<drill>.json (drills/report/results.py, docs/report.md).
"""

from drills.report.render import render_index, render_run
from drills.report.results import (
    DrillResult,
    LostWrites,
    ModelInputs,
    ResultsError,
    finish_drill,
    read_drill_results,
    write_drill_result,
)
from drills.report.summary import build_summary, write_prom, write_summary_json

__all__ = [
    "DrillResult",
    "LostWrites",
    "ModelInputs",
    "ResultsError",
    "build_summary",
    "finish_drill",
    "read_drill_results",
    "render_index",
    "render_run",
    "write_drill_result",
    "write_prom",
    "write_summary_json",
]
