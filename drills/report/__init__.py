"""The report: a run directory rendered to one self-contained HTML page, plus machine-readable outputs.

    render_run(run_dir)          -> run_dir/index.html
    render_index(reports_dir)    -> reports_dir/index.html (every run, pass/fail, trends)
    write_summary_json(run_dir)  -> run_dir/summary.json
    write_prom(run_dir)          -> run_dir/ceph_drills.prom (node_exporter textfile)

Inputs: the timeline (run.json, events.jsonl, series.jsonl; drills/timeline.py) and one
results file per drill, run_dir/drills/<drill>.json (drills/report/results.py, docs/report.md).
"""

from __future__ import annotations

import importlib
from typing import Any

# Names resolved on first use (PEP 562), so that importing a light submodule (results, cli) does not
# load the renderer, and the renderer's own imports never loop back through this package.
_EXPORTS = {
    "render_index": "render", "render_run": "render",
    "DrillResult": "results", "LostWrites": "results", "ModelInputs": "results", "ResultsError": "results",
    "finish_drill": "results", "read_drill_results": "results", "write_drill_result": "results",
    "build_summary": "summary", "write_prom": "summary", "write_summary_json": "summary",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'drills.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"drills.report.{_EXPORTS[name]}"), name)
