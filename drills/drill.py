"""What every drill does the same way: phases as events, measurements, the verdict.

A drill module asks for the `drill` fixture (plugin.py), marks its phases as the cluster
reports them, adds the figures only its code can time (detection, time to clean, ...),
and ends with `drill.finish()`: the figures that follow from the timeline's series are
derived (report/analysis.py), every threshold of the drill is evaluated, the result file
is written for the report, and the test fails listing every breach.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from drills.report.analysis import Window, measure_phases
from drills.report.results import DrillResult, LostWrites, ModelInputs, finish_drill, write_drill_result
from drills.thresholds import Check, Thresholds
from drills.timeline import Timeline, read_events, read_histograms, read_series

if TYPE_CHECKING:
    from drills.invariants import DrillEvidence
    from drills.workloads.verifier import CheckReport, VerifyingWriter


@dataclass
class DrillRecorder:
    name: str
    timeline: Timeline
    thresholds: Thresholds
    run_dir: Path
    started: float = field(default_factory=time.time)
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (phase, measurement) -> why it is None when that is an outcome, not a failed reading ("never raised ...")
    why_none: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    current_phase: str = ""
    evidence: "DrillEvidence | None" = None  # invariants judged at finish (drills/invariants.py)
    regression_rules: list = field(default_factory=list)  # drills/history/regression.py RegressionRule
    result: DrillResult | None = None  # set once finish() has written the result file

    def phase(self, name: str, **data: Any) -> None:
        """A phase starts now (its boundary is what the cluster reported, given in data)."""
        self.current_phase = name
        self.timeline.event("phase", name, drill=self.name, **data)

    def event(self, kind: str, label: str, **data: Any) -> None:
        self.timeline.event(kind, label, drill=self.name, **data)

    def measure(self, phase: str, key: str, value: Any, why: str = "") -> None:
        """A figure for the phase; `why` says why a None is what happened (the check shows it instead of
        "not measured"; the check still fails: a limit cannot pass on a figure that does not exist)."""
        self.measurements.setdefault(phase, {})[key] = value
        if value is None and why:
            self.why_none[(phase, key)] = why
        else:
            self.why_none.pop((phase, key), None)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, lost_writes: LostWrites | None = None, model: ModelInputs | None = None, error: str = "",
               stop_condition: str = "", extra_checks: tuple[Check, ...] = ()) -> DrillResult:
        """Judge the drill and write its result file; called once (the plugin calls it for a drill that
        ended in a stop condition or an exception before it could)."""
        if self.result is not None:
            return self.result
        ended = time.time()
        self.timeline.event("phase", "end", drill=self.name)
        derived = measure_phases(read_series(self.run_dir), [e for e in read_events(self.run_dir) if e.data.get("drill") in (None, self.name)], Window(self.started, ended),
                                 read_histograms(self.run_dir))
        merged: dict[str, dict[str, Any]] = {p: dict(v) for p, v in derived.items()}
        for phase, kv in self.measurements.items():
            merged.setdefault(phase, {}).update(kv)  # the drill's own timing wins over derivation
        invariants: tuple[Check, ...] = ()
        if self.evidence is not None and not error:
            invariants = tuple(self.evidence.checks(lost_writes, aborted=bool(stop_condition)))
        regressions = tuple(self._regressions(merged)) if not error else ()
        result = finish_drill(self.name, self.started, ended, merged, self.thresholds, lost_writes=lost_writes,
                              model=model, error=error, notes=tuple(self.notes),
                              extra_checks=invariants + regressions + tuple(extra_checks),
                              stop_condition=stop_condition, phase=self.current_phase, why_none=self.why_none)
        remedy = self._rss_remedy(result)
        if remedy:
            self.notes.extend(remedy)
            result = dataclasses.replace(result, notes=tuple(self.notes))
        write_drill_result(self.run_dir, result)
        self.result = result
        return result

    def _regressions(self, measurements: dict[str, dict[str, Any]]) -> list[Check]:
        """Each figure against the same drill's last passing runs on this cluster (reports/history.sqlite)."""
        if not self.regression_rules:
            return []
        from drills.history.regression import regression_checks_in_run
        from drills.history.store import HistoryError

        try:
            return regression_checks_in_run(self.run_dir, self.name, measurements, self.regression_rules)
        except (HistoryError, OSError) as e:  # the past unreadable: say so, judge by the limits alone
            self.notes.append(f"regressions not checked: {e}")
            return []

    def _rss_remedy(self, result: DrillResult) -> list[str]:
        """The article's remedy for OSDs that kept their recovery memory: which, how much, and the command."""
        check = next((c for c in result.checks if c.name == "rss_after_recovery_ratio_max" and not c.passed), None)
        ratios = result.measurements.get("after", {}).get("rss_after_recovery_ratio") or {}
        peaks = result.measurements.get("after", {}).get("rss_peak") or {}
        if check is None or not isinstance(ratios, dict):
            return []
        over = sorted(((d, r) for d, r in ratios.items() if r is not None and r > check.limit), key=lambda x: -x[1])
        if not over:
            return []
        target = self.evidence.target if self.evidence is not None else None
        hosts: dict[str, list[str]] = {}
        lines = []
        for daemon, ratio in over:
            host = None
            if target is not None:
                try:
                    host = target.host_of_daemon(daemon).name
                except Exception:  # noqa: BLE001 - a daemon the target does not name
                    host = None
            if host and daemon.startswith("osd."):
                hosts.setdefault(host, []).append(daemon)
            peak = peaks.get(daemon) if isinstance(peaks, dict) else None
            lines.append(f"{daemon}{f' on {host}' if host else ''} holds {ratio:.2f}x its warm-baseline RSS"
                         + (f" ({peak / 2**20:.0f} MiB)" if peak else ""))
        out = ["RSS after recovery: " + "; ".join(lines)]
        if any(e.label.startswith("RSS still climbing") and e.data.get("drill") == self.name
               for e in read_events(self.run_dir) if e.kind == "note"):
            out.append("the baseline RSS was still climbing when the fault came (warm-up ran out): "
                       "the ratio overstates what recovery left")
        path = target.path if target is not None else "TARGET"
        for host, daemons in hosts.items():
            out.append(f"to return it (restart the OSDs one at a time under the host's budget): "
                       f"drill restart --target {path} --host {host} --stop-first   # {', '.join(daemons)}")
        return out

    def skip(self, reason: str) -> None:
        """The drill cannot run here: a skipped result with the reason, then pytest's skip."""
        if self.result is None:
            self.result = DrillResult(self.name, self.started, time.time(), outcome="skipped", error=reason,
                                      thresholds_file=self.thresholds.path, notes=tuple(self.notes))
            write_drill_result(self.run_dir, self.result)
        pytest.skip(reason)

    @staticmethod
    def lost_writes(writer: "VerifyingWriter", report: "CheckReport", method: str = "") -> LostWrites:
        """The verifier's read-back (every acknowledged write, drills/workloads/verifier.py) as the report's result."""
        return LostWrites(
            written=report.written,
            acknowledged=report.acknowledged,
            verified=report.verified,
            lost=report.lost,
            examples=tuple(f"{c.status} {c.location} seq {c.seq}" for c in report.problems[:10]),
            method=method or report.method,
        )

    @staticmethod
    def assert_passed(result: DrillResult) -> None:
        """Fail the test with the findings (no traceback) unless the drill passed."""
        if result.verdict != "passed":
            pytest.fail(findings_text(result), pytrace=False)


def findings_text(result: DrillResult) -> str:
    """A failed drill as a person reads it: the drill, the phase, each failed check with measured value,
    limit and margin; for a stop condition what crossed which line and that the fault was healed."""
    failed = result.failed_checks
    stopped = bool(result.stop_condition or result.error) and result.verdict != "skipped"
    lines = [f"drill {result.drill}: {result.verdict}" + (f" in phase {result.phase}" if result.phase and stopped else "")]
    if result.stop_condition:
        lines.append(f"  stop condition: {result.stop_condition}; the fault was healed at once "
                     "(see the timeline's abort and fault.heal events)")
    if result.error:
        lines.append(f"  {'skipped' if result.verdict == 'skipped' else 'harness error'}: {result.error}")
    if failed:
        lines.append(f"  {len(failed)} of {len(result.checks)} checks failed:")
        lines.extend(f"    {c.message()}" + (f"  [{c.source}]" if c.source else "") for c in failed)
    if result.warnings:
        lines.append(f"  {len(result.warnings)} warning(s):")
        lines.extend(f"    {c.message()}" for c in result.warnings)
    return "\n".join(lines)
