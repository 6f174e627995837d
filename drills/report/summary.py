"""Machine-readable outputs of a run: summary.json and a node_exporter textfile (.prom)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from drills.report import analysis as an
from drills.report.results import ResultsError, read_drill_results
from drills.timeline import read_meta

SUMMARY_SCHEMA_VERSION = 2
PROM_FILE = "ceph_drills.prom"


def build_summary(run_dir: str | Path) -> dict[str, Any]:
    from drills.verdict import run_verdict

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    try:
        results, error = read_drill_results(run_dir), ""
    except ResultsError as e:
        results, error = [], str(e)
    verdict = run_verdict(run_dir)  # the one decision every output of the run repeats
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": meta.get("run_id", run_dir.name),
        "started": meta.get("started"),
        "ceph_version": meta.get("ceph_version"),
        "verdict": verdict.outcome,
        "exit_code": verdict.exit_code,
        "reasons": list(verdict.reasons),
        "warnings": verdict.warnings,
        "error": error,
        "drills": [
            {
                "drill": r.drill,
                "verdict": r.verdict,
                "started": r.started,
                "ended": r.ended,
                "checks": len(r.checks),
                "failed": len(r.failed_checks),
                "failed_checks": [c.message() for c in r.failed_checks],
                "warnings": [c.message() for c in r.warnings],
                "stop_condition": r.stop_condition,
                "error": r.error,
                "lost_writes": None if r.lost_writes is None else r.lost_writes.lost,
                "key_figures": {k: {"value": v, "unit": u} for k, (v, u) in an.key_figures(r).items()},
            }
            for r in results
        ],
    }


def write_summary_json(run_dir: str | Path) -> Path:
    """Write <run_dir>/summary.json: verdicts, failed checks and key figures, for CI and the index."""
    run_dir = Path(run_dir)
    out = run_dir / "summary.json"
    _atomic_write(out, json.dumps(build_summary(run_dir), indent=2, default=str))
    return out


def _label_value(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def build_prom(run_dir: str | Path) -> str:
    """Prometheus text exposition of a run's key figures.

    The run id is in an _info metric only: as a label on every series it would make
    a new series per run in Prometheus.  Values are in base units (seconds, bytes).
    A check that measured nothing has no _measured sample (Prometheus has no null);
    its _passed sample is 0.
    """
    run_dir = Path(run_dir)
    summary = build_summary(run_dir)
    try:
        results = read_drill_results(run_dir)
    except ResultsError:
        results = []
    metrics: dict[str, tuple[str, list[str]]] = {}

    def add(name: str, help_text: str, value: float, **labels: object) -> None:
        metrics.setdefault(name, (help_text, []))[1].append(f"ceph_drills_{name}{_labels(**labels)} {_number(value)}")

    ended = max((r.ended for r in results), default=None)
    add("last_run_info", "The run these figures come from.", 1, run_id=summary["run_id"],
        ceph_version=summary.get("ceph_version") or "")
    if ended is not None:
        add("last_run_timestamp_seconds", "When the last drill of the run ended (unix time).", ended)
    add("run_passed", "1 if the run's verdict is passed (the same verdict as the exit code and the report).",
        1 if summary["verdict"] == "passed" else 0)
    add("run_exit_code", "The run's exit code: 0 passed, 1 a check or stop condition failed, 2 set-up or harness error.",
        summary["exit_code"])
    add("run_warnings", "Failed checks of severity warn (they do not fail the run).", summary["warnings"])
    for r in results:
        add("drill_passed", "1 if the drill's verdict is passed.", 1 if r.passed else 0, drill=r.drill)
        for outcome in ("passed", "failed", "error", "skipped"):
            add("drill_outcome", "1 for the drill's outcome.", 1 if r.verdict == outcome else 0, drill=r.drill, outcome=outcome)
        add("drill_duration_seconds", "Wall time of the drill.", r.ended - r.started, drill=r.drill)
        add("drill_checks_failed", "Checks of the drill that failed it (not measured counts as failed).",
            len(r.failed_checks), drill=r.drill)
        add("drill_checks_warned", "Checks of severity warn that failed.", len(r.warnings), drill=r.drill)
        if r.lost_writes is not None:
            add("lost_writes", "Acknowledged writes that did not read back intact.", r.lost_writes.lost, drill=r.drill)
        for c in r.checks:
            labels = {"drill": r.drill, "phase": c.phase, "check": c.name}
            add("check_passed", "1 if the check passed.", 1 if c.passed else 0, **labels, severity=c.severity,
                source=c.source or "")
            add("check_limit", "The check's limit, in base units (seconds, bytes, ratio, count).", c.limit,
                **labels, unit=c.unit)
            if c.measured is not None:
                add("check_measured", "The measured value, in base units (seconds, bytes, ratio, count).",
                    c.measured, **labels, unit=c.unit)
        for fig, (value, unit) in an.key_figures(r).items():
            if value is not None:
                phase, measurement = fig.split(".", 1)
                add("key_figure", "Figures followed across runs (phase.measurement).", value,
                    drill=r.drill, phase=phase, figure=measurement, unit=unit)
    lines: list[str] = []
    for name, (help_text, samples) in metrics.items():
        lines.append(f"# HELP ceph_drills_{name} {help_text}")
        lines.append(f"# TYPE ceph_drills_{name} gauge")
        lines.extend(samples)
    from drills.history.prom import history_prom_lines

    lines.extend(history_prom_lines(run_dir))  # per-phase figures and regression flags
    return "\n".join(lines) + "\n"


def write_prom(run_dir: str | Path, textfile_dir: str | Path | None = None) -> Path:
    """Write <run_dir>/ceph_drills.prom; with textfile_dir, also replace the copy node_exporter reads there.

    Written to a temporary name and renamed: node_exporter's textfile collector must
    never read half a file.
    """
    run_dir = Path(run_dir)
    text = build_prom(run_dir)
    out = run_dir / PROM_FILE
    _atomic_write(out, text)
    if textfile_dir is not None:
        _atomic_write(Path(textfile_dir) / PROM_FILE, text)
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")  # a dot name: node_exporter only reads *.prom
    tmp.write_text(text)
    os.replace(tmp, path)


def write_refused(run_dir: Path, reason: str) -> None:
    from drills.verdict import REFUSED_FILE

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REFUSED_FILE).write_text(reason + "\n")
    write_summary_json(run_dir)
    write_prom(run_dir)
