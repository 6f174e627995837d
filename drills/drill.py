"""What every drill does the same way: phases as events, measurements, the verdict.

A drill module asks for the `drill` fixture (plugin.py), marks its phases as the cluster
reports them, adds the figures only its code can time (detection, time to clean, ...),
and ends with `drill.finish()`: the figures that follow from the timeline's series are
derived (report/analysis.py), every threshold of the drill is evaluated, the result file
is written for the report, and the test fails listing every breach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from drills.report.analysis import Window, measure_phases
from drills.report.results import DrillResult, LostWrites, ModelInputs, finish_drill, write_drill_result
from drills.thresholds import Thresholds
from drills.timeline import Timeline, read_events, read_series

if TYPE_CHECKING:
    from drills.workloads.verifier import CheckReport, VerifyingWriter


@dataclass
class DrillRecorder:
    name: str
    timeline: Timeline
    thresholds: Thresholds
    run_dir: Path
    started: float = field(default_factory=time.time)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    current_phase: str = ""

    def phase(self, name: str, **data: Any) -> None:
        """A phase starts now (its boundary is what the cluster reported, given in data)."""
        self.current_phase = name
        self.timeline.event("phase", name, drill=self.name, **data)

    def event(self, kind: str, label: str, **data: Any) -> None:
        self.timeline.event(kind, label, drill=self.name, **data)

    def measure(self, phase: str, key: str, value: Any) -> None:
        self.measurements.setdefault(phase, {})[key] = value

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, lost_writes: LostWrites | None = None, model: ModelInputs | None = None, error: str = "") -> DrillResult:
        ended = time.time()
        self.timeline.event("phase", "end", drill=self.name)
        derived = measure_phases(read_series(self.run_dir), [e for e in read_events(self.run_dir) if e.data.get("drill") in (None, self.name)], Window(self.started, ended))
        merged: dict[str, dict[str, Any]] = {p: dict(v) for p, v in derived.items()}
        for phase, kv in self.measurements.items():
            merged.setdefault(phase, {}).update(kv)  # the drill's own timing wins over derivation
        result = finish_drill(self.name, self.started, ended, merged, self.thresholds, lost_writes=lost_writes,
                              model=model, error=error, notes=tuple(self.notes))
        write_drill_result(self.run_dir, result)
        return result

    @staticmethod
    def lost_writes(writer: "VerifyingWriter", report: "CheckReport", method: str) -> LostWrites:
        """The verifier's read-back as the report's lost-write result."""
        counts = report.counts
        lost = sum(counts.get(s, 0) for s in ("lost", "stale", "corrupt", "unreadable"))
        ledger = writer.ledger
        return LostWrites(
            written=ledger.acked_count + ledger.unacked_count,
            acknowledged=ledger.acked_count,
            verified=max(0, ledger.acked_count - lost),  # only each key's latest write is checkable
            lost=lost,
            examples=tuple(f"{c.status} {c.location}" for c in report.problems[:10]),
            method=method,
        )

    @staticmethod
    def assert_passed(result: DrillResult) -> None:
        failed = [c for c in result.checks if not c.passed]
        if failed:
            lines = [c.message() for c in failed]
            pytest.fail(f"drill {result.drill}: {len(failed)} of {len(result.checks)} checks failed:\n  " + "\n  ".join(lines), pytrace=False)
