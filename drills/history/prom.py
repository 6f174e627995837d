"""Extra lines for the run's node_exporter textfile (ceph_drills.prom): every figure per drill and
phase, and the regression flags, so that a staging Grafana can graph and alert on them.

    ceph_drills_phase_figure{drill,phase,figure,unit[,subject]}   the measured value, base units
    ceph_drills_regression{drill,phase,figure}                     1 = regressed against the baseline, 0 = within it
    ceph_drills_regression_limit{drill,phase,figure,unit}          the baseline's limit the value was held to
    ceph_drills_regression_baseline_missing{drill,phase,figure}    1 = no baseline yet (first runs, new Ceph version)

A figure that was not measured has no sample (Prometheus has no null).  No run id label: a new
series per run would grow Prometheus without bound (the run id is in ceph_drills_last_run_info).
"""

from __future__ import annotations

import math
from pathlib import Path

from drills.history.store import unit_of
from drills.report.results import ResultsError, read_drill_results

HELP = {
    "phase_figure": "Every figure a drill measured, per phase, in base units (seconds, bytes, ratio, count).",
    "regression": "1 if the figure regressed against the same drill's last passing runs on this cluster.",
    "regression_limit": "The limit the regression check derived from the baseline (base units).",
    "regression_baseline_missing": "1 if the figure had no baseline yet (first runs, or a new Ceph version).",
}


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: object) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def history_prom_lines(run_dir: str | Path) -> list[str]:
    """The lines to append to build_prom's text (HELP and TYPE included); [] for an unreadable run."""
    try:
        results = read_drill_results(run_dir)
    except ResultsError:
        return []
    samples: dict[str, list[str]] = {k: [] for k in HELP}
    for r in results:
        for phase, values in r.measurements.items():
            for figure, value in values.items():
                unit = unit_of(figure) or ""
                if isinstance(value, dict):
                    for subject, v in value.items():
                        n = _num(v)
                        if n is not None:
                            samples["phase_figure"].append(
                                f"ceph_drills_phase_figure{_labels(drill=r.drill, phase=phase, figure=figure, unit=unit, subject=subject)} {n!r}")
                else:
                    n = _num(value)
                    if n is not None:
                        samples["phase_figure"].append(
                            f"ceph_drills_phase_figure{_labels(drill=r.drill, phase=phase, figure=figure, unit=unit)} {n!r}")
        for c in r.checks:
            if getattr(c, "source", "") != "regression":
                continue
            figure = c.name.rsplit("_regression_", 1)[0]
            labels = _labels(drill=r.drill, phase=c.phase, figure=figure)
            limit = _num(c.limit)
            if limit is None:  # no baseline yet
                samples["regression_baseline_missing"].append(f"ceph_drills_regression_baseline_missing{labels} 1")
                continue
            samples["regression_baseline_missing"].append(f"ceph_drills_regression_baseline_missing{labels} 0")
            samples["regression_limit"].append(
                f"ceph_drills_regression_limit{_labels(drill=r.drill, phase=c.phase, figure=figure, unit=c.unit)} {limit!r}")
            if c.measured is not None:
                samples["regression"].append(f"ceph_drills_regression{labels} {0 if c.passed else 1}")
    lines: list[str] = []
    for name, rows in samples.items():
        if rows:
            lines += [f"# HELP ceph_drills_{name} {HELP[name]}", f"# TYPE ceph_drills_{name} gauge", *rows]
    return lines
