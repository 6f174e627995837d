"""The per-drill results file: what a drill decided, for the report to show.

One JSON file per drill in a run: ``<run_dir>/drills/<drill>.json`` (schema in docs/report.md).
Drill code builds a `DrillResult` (usually with `finish_drill`) and calls
`write_drill_result`; the report only reads these files and the timeline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from drills.thresholds import Check, Measurements, Thresholds, evaluate

RESULTS_SCHEMA_VERSION = 1
OUTCOMES = ("passed", "failed", "error", "skipped")


class ResultsError(Exception):
    """A results file that cannot be read; one line naming the file and what is wrong."""


@dataclass(frozen=True)
class LostWrites:
    """The lost-write check: every acknowledged write read back and compared."""

    written: int  # writes issued
    acknowledged: int  # writes the cluster acknowledged
    verified: int  # acknowledged writes read back intact
    lost: int  # acknowledged writes missing or wrong on read-back
    examples: tuple[str, ...] = ()  # a few object names / offsets of lost writes, for the person debugging
    method: str = ""  # how it was checked, e.g. "fio verify=crc32c" or "rados sequence numbers"

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.verified == self.acknowledged


@dataclass(frozen=True)
class ModelInputs:
    """What the degraded-write model (drills/model.py) needs for this drill; None = not measured."""

    small_write_ms: float | None = None  # w; None: the report uses the baseline median write latency
    object_recovery_ms: float | None = None  # r: read + write of one whole object
    pool_size: int = 3  # to turn Ceph's degraded_ratio (copies) into a fraction of objects
    object_size: int | None = None  # bytes (RBD default 4 MiB), shown for context


@dataclass(frozen=True)
class DrillResult:
    drill: str
    started: float  # unix seconds; with `ended` the drill's window on the run's timeline
    ended: float
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> name -> value (base units)
    checks: tuple[Check, ...] = ()
    lost_writes: LostWrites | None = None
    model: ModelInputs | None = None
    outcome: str = ""  # empty: derived from error, stop condition and checks; "skipped" is set explicitly
    error: str = ""  # one line when the drill itself broke (not a failed check), or why it was skipped
    thresholds_file: str = ""
    notes: tuple[str, ...] = ()
    stop_condition: str = ""  # what crossed which line when a stop condition aborted the drill (then it failed)
    phase: str = ""  # the phase the drill was in when it ended (where an abort or an error happened)

    @property
    def verdict(self) -> str:
        """passed | failed | error | skipped.  A drill that judged nothing is an error, never a pass."""
        if self.outcome:
            return self.outcome
        if self.error:
            return "error"
        if self.stop_condition or any(c.fails_drill for c in self.checks):
            return "failed"
        if not self.checks:
            return "error"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @property
    def failed_checks(self) -> list[Check]:
        """Checks that fail the drill (failed warn checks are in `warnings`)."""
        return [c for c in self.checks if c.fails_drill]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.warned]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "drill": self.drill,
            "started": self.started,
            "ended": self.ended,
            "outcome": self.verdict,
            "error": self.error,
            "thresholds_file": self.thresholds_file,
            "measurements": self.measurements,
            "checks": [c.to_dict() for c in self.checks],
            "lost_writes": None if self.lost_writes is None else {
                **self.lost_writes.__dict__, "examples": list(self.lost_writes.examples)},
            "model": None if self.model is None else dict(self.model.__dict__),
            "notes": list(self.notes),
            "stop_condition": self.stop_condition,
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "results") -> "DrillResult":
        try:
            version = d.get("schema_version", RESULTS_SCHEMA_VERSION)
            if version != RESULTS_SCHEMA_VERSION:
                raise ResultsError(f"{where}: schema_version {version!r} is not supported ({RESULTS_SCHEMA_VERSION})")
            outcome = str(d.get("outcome", ""))
            if outcome and outcome not in OUTCOMES:
                raise ResultsError(f"{where}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
            lw = d.get("lost_writes")
            model = d.get("model")
            return cls(
                drill=str(d["drill"]),
                started=float(d["started"]),
                ended=float(d["ended"]),
                measurements={str(k): dict(v) for k, v in (d.get("measurements") or {}).items()},
                checks=tuple(Check.from_dict(c) for c in d.get("checks") or ()),
                lost_writes=None if lw is None else LostWrites(
                    written=int(lw["written"]), acknowledged=int(lw["acknowledged"]), verified=int(lw["verified"]),
                    lost=int(lw["lost"]), examples=tuple(str(x) for x in lw.get("examples", ())),
                    method=str(lw.get("method", ""))),
                model=None if model is None else ModelInputs(
                    small_write_ms=_opt_float(model.get("small_write_ms")),
                    object_recovery_ms=_opt_float(model.get("object_recovery_ms")),
                    pool_size=int(model.get("pool_size", 3)),
                    object_size=None if model.get("object_size") is None else int(model["object_size"])),
                outcome=outcome,
                error=str(d.get("error", "")),
                thresholds_file=str(d.get("thresholds_file", "")),
                notes=tuple(str(n) for n in d.get("notes", ())),
                stop_condition=str(d.get("stop_condition", "")),
                phase=str(d.get("phase", "")),
            )
        except ResultsError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ResultsError(f"{where}: malformed drill results ({type(e).__name__}: {e})") from None


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def finish_drill(drill: str, started: float, ended: float, measurements: Measurements, thresholds: Thresholds,
                 lost_writes: LostWrites | None = None, model: ModelInputs | None = None,
                 error: str = "", notes: tuple[str, ...] = (), extra_checks: tuple[Check, ...] = (),
                 stop_condition: str = "", phase: str = "",
                 why_none: Mapping[tuple[str, str], str] | None = None) -> DrillResult:
    """Evaluate every limit of `drill` and bundle the result.

    The lost-write count is also a measurement (after.lost_writes) so that the
    lost_writes_max limit sees it without the caller repeating it.  `extra_checks` are
    the checks no thresholds file writes (invariants, regressions).
    """
    merged: dict[str, dict[str, Any]] = {p: dict(v) for p, v in measurements.items()}
    if lost_writes is not None:
        merged.setdefault("after", {}).setdefault("lost_writes", lost_writes.lost)
    checks = tuple(evaluate(thresholds, drill, merged, why_none)) + tuple(extra_checks)
    return DrillResult(drill, started, ended, merged, checks, lost_writes, model, "", error,
                       thresholds.path, notes, stop_condition, phase)


def drill_results_path(run_dir: str | Path, drill: str) -> Path:
    return Path(run_dir) / "drills" / f"{drill}.json"


def write_drill_result(run_dir: str | Path, result: DrillResult) -> Path:
    """Write <run_dir>/drills/<drill>.json atomically (a reader never sees half a file)."""
    path = drill_results_path(run_dir, result.drill)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    os.replace(tmp, path)
    return path


def read_drill_results(run_dir: str | Path) -> list[DrillResult]:
    """Every drill result of a run, in the order the drills ran."""
    folder = Path(run_dir) / "drills"
    if not folder.is_dir():
        return []
    results = []
    for p in sorted(folder.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ResultsError(f"{p}: not valid JSON: {e}") from None
        results.append(DrillResult.from_dict(data, str(p)))
    return sorted(results, key=lambda r: r.started)
