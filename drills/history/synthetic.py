"""Synthetic run directories written with the real writers (Timeline, write_drill_result).

For the history, regression, calibration and trends tests and demos: no cluster, milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from drills.report.results import DrillResult, LostWrites, finish_drill, write_drill_result
from drills.thresholds import Thresholds, load_thresholds
from drills.timeline import Timeline

FSID = "6d3e2c1a-0000-4000-8000-000000000001"


def make_run(reports_dir: str | Path, run_id: str, started: float, drills: Mapping[str, Mapping[str, Mapping[str, Any]]],
             *, fsid: str = FSID, ceph_version: str = "16.2.15 pacific", suite: str = "smoke",
             thresholds: Thresholds | None = None, outcome: Mapping[str, str] | None = None,
             extra_checks: Mapping[str, list] | None = None, with_faults: bool = True) -> Path:
    """A run directory with one results file per drill: drills = {drill: {phase: {metric: value}}}.

    Each drill lasts 100 s from `started` (one after another); a fault is injected at +20 s and
    healed at +60 s; every limit of `thresholds` (default: the shipped ones) is evaluated.
    """
    thresholds = thresholds or load_thresholds()
    run_dir = Path(reports_dir) / run_id
    t = started
    with Timeline(run_dir) as tl:
        tl.write_meta(run_id=run_id, started=started, ceph_version=ceph_version, harness_version="0.1.0",
                      suite=suite, pace=suite,
                      target={"path": "/etc/ceph-drills/staging.toml", "cluster": "staging", "fsid": fsid})
        for drill, measurements in drills.items():
            for name, at in (("baseline", 0), ("detection", 20), ("degraded", 40), ("recovery", 60), ("after", 90)):
                tl.event("phase", name, t=t + at, drill=drill)
                tl.sample("fio.write.iops", 500.0, t=t + at)
            if with_faults and drill != "smoke":
                tl.event("fault.inject", "power off rack2", t=t + 20, fault_id=f"{run_id}-{drill}", fault="power")
                tl.event("fault.heal", "power off rack2", t=t + 60, fault_id=f"{run_id}-{drill}", fault="power", ok=True)
            tl.event("phase", "end", t=t + 100, drill=drill)
            result = finish_drill(drill, t, t + 100, measurements, thresholds,
                                  lost_writes=LostWrites(100, 100, 100, 0, method="synthetic"))
            if extra_checks and drill in extra_checks:
                result = DrillResult(**{**result.__dict__, "checks": result.checks + tuple(extra_checks[drill])})
            if outcome and drill in outcome:
                result = DrillResult(**{**result.__dict__, "outcome": outcome[drill]})
            write_drill_result(run_dir, result)
            t += 110
        tl.write_meta(finished=t)
    verdicts = [json.loads(p.read_text())["outcome"] for p in (run_dir / "drills").glob("*.json")]
    verdict = "error" if "error" in verdicts else "failed" if "failed" in verdicts else "passed"
    (run_dir / "summary.json").write_text(json.dumps({"run_id": run_id, "verdict": verdict}))
    return run_dir


def rack_measurements(scale: float = 1.0, p99: float = 0.4, detection: float = 25.0) -> dict[str, dict[str, Any]]:
    """A plausible rack_power_cut measurement set; `scale` multiplies the IOPS figures."""
    return {
        "baseline": {"iops": 800 * scale, "p99_latency": 0.05},
        "detection": {"detection_time": detection, "stall_time": 18.0, "io_errors": 0},
        "degraded": {"iops_ratio": 0.9 * scale, "p99_latency": p99, "time_to_active": 30.0, "io_errors": 0},
        "recovery": {"iops_ratio": 0.4 * scale, "p99_latency": p99 * 5, "stall_time": 2.0, "time_to_active": 12.0,
                     "time_to_clean": 120.0, "rss_peak": {"osd.0": 600 * 2**20, "osd.1": 640 * 2**20},
                     "oom_kills": 0, "io_errors": 0},
        "after": {"iops_ratio": 0.95 * scale, "p99_latency": 0.06, "rss_after_recovery_ratio": {"osd.0": 1.1, "osd.1": 1.2},
                  "osd_flaps": 0},
    }
