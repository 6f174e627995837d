"""Pass/fail limits as data: one TOML file, a table per drill and per phase.

    [rack_power_cut.detection]
    detection_time_max = "45s"

    [rack_power_cut.degraded]
    iops_ratio_min = 0.2
    p99_latency_max = "1s"

Every key names its direction (``_max`` / ``_min``) and the measurement it limits
(the key without that suffix: ``p99_latency_max`` limits ``p99_latency``).
Durations and sizes are strings with a unit (s, ms, min, h; B, KiB, MiB, GiB);
ratios and counts are plain numbers.  Anything unknown or mistyped is a
`ThresholdsError` with one line naming the file, the table and the key: a typo
must never turn a limit into "no limit".

A limit may carry a severity: ``rss_after_recovery_ratio_max = { limit = 1.5, severity = "warn" }``.
A failed ``warn`` check is shown with its margin and counted, and does not fail the drill.

A user's file overlays the shipped defaults key by key: it can tighten or loosen a limit,
or change its severity, but a limit of the defaults cannot disappear because a file left it
out.  Every limit remembers where it came from (``Threshold.source``), and the report shows it.

`evaluate` checks every limit of a drill (it does not stop at the first breach);
a limit with no measurement is a failed check that says "not measured".
docs/thresholds.md lists every key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from drills.units import parse_bytes, parse_seconds

SCHEMA_VERSION = 1
DEFAULT_THRESHOLDS_FILE = Path(__file__).with_name("default_thresholds.toml")


def _shipped_drills() -> tuple[str, ...]:
    """The drills are the shipped defaults' tables: a new drill is a catalogue entry and a section there,
    never a name typed into a list. A user's file may name only these."""
    raw = tomllib.loads(DEFAULT_THRESHOLDS_FILE.read_text())
    return tuple(k for k, v in raw.items() if isinstance(v, dict) and k != REGRESSION)


# The article's timeline: normal -> fault noticed -> degraded plateau -> rejoin and recovery -> normal again.
PHASES = ("baseline", "detection", "degraded", "recovery", "after")

# Unit kinds, with the base unit every value is converted to (and every measurement must be given in).
DURATION, SIZE, RATIO, COUNT = "s", "B", "ratio", "count"

# A failed "fail" check fails its drill; a failed "warn" check is reported and counted, nothing more.
SEVERITIES = ("fail", "warn")
SHIPPED_DEFAULTS = "shipped defaults"
# Sources of checks that no thresholds file writes.
INVARIANT, REGRESSION = "invariant", "regression"
DRILLS = _shipped_drills()


class ThresholdsError(Exception):
    """A thresholds file (or a call) that cannot be used; the message is one line saying what to fix."""


@dataclass(frozen=True)
class ThresholdSpec:
    """What one key means: its unit kind, direction and the phases it makes sense in."""

    key: str
    unit: str  # DURATION | SIZE | RATIO | COUNT
    phases: tuple[str, ...]
    description: str

    @property
    def bound(self) -> str:
        return "max" if self.key.endswith("_max") else "min"

    @property
    def measurement(self) -> str:
        return self.key.rsplit("_", 1)[0]


_ALL = PHASES
_FAULTED = ("detection", "degraded", "recovery", "after")

SPECS: dict[str, ThresholdSpec] = {
    s.key: s
    for s in (
        ThresholdSpec("detection_time_max", DURATION, ("detection",),
                      "fault injected -> the cluster marks the lost OSDs down"),
        ThresholdSpec("stall_time_max", DURATION, _FAULTED,
                      "longest run of seconds with zero client IOPS in the phase"),
        ThresholdSpec("iops_min", COUNT, _ALL, "median client write IOPS in the phase (absolute)"),
        ThresholdSpec("iops_ratio_min", RATIO, _FAULTED,
                      "median client write IOPS in the phase / median IOPS in baseline"),
        ThresholdSpec("p50_latency_max", DURATION, _ALL, "median of the per-second p50 write latency"),
        ThresholdSpec("p99_latency_max", DURATION, _ALL, "highest per-second p99 write latency in the phase"),
        ThresholdSpec("p99_latency_ratio_max", RATIO, _FAULTED,
                      "highest per-second p99 in the phase / median p99 in baseline"),
        ThresholdSpec("degraded_ratio_max", RATIO, _FAULTED,
                      "peak cluster.degraded_ratio (degraded object copies / all copies, 0..1)"),
        ThresholdSpec("time_to_active_max", DURATION, ("degraded", "recovery"),
                      "event that opened the phase (fault.inject / fault.heal) -> every PG active"),
        ThresholdSpec("time_to_clean_max", DURATION, ("recovery", "after"),
                      "fault.heal -> every PG active+clean"),
        ThresholdSpec("rss_peak_max", SIZE, _ALL, "peak RSS of each Ceph daemon (checked per daemon)"),
        ThresholdSpec("rss_after_recovery_ratio_max", RATIO, ("after",),
                      "RSS after recovery / RSS in baseline, per daemon (heap fragmentation keeps it high)"),
        ThresholdSpec("rss_after_heap_release_ratio_max", RATIO, ("after",),
                      "RSS after `heap release` / RSS in baseline, per OSD (not measured where ceph-osd lacks tcmalloc)"),
        ThresholdSpec("memory_budget_ratio_max", RATIO, _ALL,
                      "peak summed RSS of a host's Ceph daemons / that host's memory_budget (per host)"),
        ThresholdSpec("oom_kills_max", COUNT, _FAULTED, "Ceph daemons killed by the OOM killer"),
        ThresholdSpec("uncontrolled_oom_kills_min", COUNT, ("recovery",),
                      "OOM kills when a rack's OSDs start all at once (oom_chain_reaction): fewer means the drill did not "
                      "reproduce the chain reaction it compares against"),
        ThresholdSpec("uncontrolled_repeat_kills_min", COUNT, ("recovery",),
                      "OOM kills, in the all-at-once round, of an OSD already killed once in it (killed again after its "
                      "restart: the cascade of oom_chain_reaction)"),
        ThresholdSpec("uncontrolled_health_ok_max", COUNT, ("recovery",),
                      "1 if the all-at-once round reached HEALTH_OK within its bound, 0 if never (oom_chain_reaction)"),
        ThresholdSpec("budget_window_ratio_min", RATIO, ("recovery",),
                      "cascade ceiling / the controlled start's need, per host, from the probe (oom_chain_reaction): "
                      "above 1 a budget exists where the all-at-once start cascades and the controlled one fits"),
        ThresholdSpec("held_osds_max", COUNT, ("recovery",),
                      "OSDs a controlled start left held because it stopped (budget cannot be met, an OOM kill)"),
        ThresholdSpec("osd_flaps_max", COUNT, _FAULTED,
                      "OSDs marked down again after coming up (flapping)"),
        # gray drills (drills/gray_runbook.py): the fault is held for a fixed time in the degraded phase
        ThresholdSpec("slow_ops_time_max", DURATION, ("degraded",),
                      "fault injected -> the first SLOW_OPS health check in the cluster log; never raised within the "
                      "phase fails with that said (not as 'not measured')"),
        ThresholdSpec("slow_ops_raised_min", COUNT, ("degraded",),
                      "1 if SLOW_OPS was raised while the fault was in force, 0 if never (the cluster flagged the fault)"),
        ThresholdSpec("slow_ops_raised_max", COUNT, ("degraded",),
                      "1 if SLOW_OPS was raised while the fault was in force, 0 if never"),
        # read errors (drill eio_read): the fault's marked objects read back through the client during the hold
        ThresholdSpec("eio_reads_ok_min", COUNT, ("degraded",),
                      "reads of the objects marked with an injected read error that returned the written bytes"),
        ThresholdSpec("eio_reads_failed_max", COUNT, ("degraded",),
                      "reads of the objects marked with an injected read error that failed or returned other bytes"),
        ThresholdSpec("eio_read_time_max", DURATION, ("degraded",),
                      "the slowest first read of a marked object (the primary's EIO, then whatever the cluster does)"),
        ThresholdSpec("shards_repaired_min", COUNT, ("degraded",),
                      "reads the faulty OSD repaired from replicas during the hold (its num_shards_repaired)"),
        ThresholdSpec("shards_repaired_max", COUNT, ("degraded",),
                      "reads the faulty OSD repaired from replicas during the hold (its num_shards_repaired)"),
        # the soak (drills/soak/): per fault of the drawn schedule, checked per step (the worst decides, every breach named)
        ThresholdSpec("settle_time_max", DURATION, ("degraded",),
                      "per soak step: the heal begins (power back, daemons started) -> every OSD up and every PG active+clean"),
        ThresholdSpec("fault_iops_ratio_min", RATIO, ("degraded",),
                      "per soak step: median client write IOPS while the fault was in force / in the quiet spell before it"),
        ThresholdSpec("fault_p99_latency_max", DURATION, ("degraded",),
                      "per soak step: p99 of the client writes that completed while the fault was in force"),
        ThresholdSpec("s3_errors_max", COUNT, _ALL, "S3 requests of the object clients (locust) that failed in the phase"),
        ThresholdSpec("markdowns_max", COUNT, _FAULTED,
                      "OSD mark-downs in the phase (every down transition of any OSD in the osdmap)"),
        ThresholdSpec("io_errors_max", COUNT, _ALL, "client I/O errors returned to the workload"),
        ThresholdSpec("lost_writes_max", COUNT, ("after",),
                      "acknowledged writes (or restored blocks) that do not read back intact"),
        ThresholdSpec("restore_rss_peak_max", SIZE, ("recovery",),
                      "peak RSS of the restore process while restores run"),
        ThresholdSpec("restore_rss_overhead_max", SIZE, ("recovery",),
                      "peak RSS of the restore process above its memory budget"),
        ThresholdSpec("restore_throughput_ratio_min", RATIO, ("recovery",),
                      "aggregate restore rate / raw RBD write rate measured in the same run"),
        ThresholdSpec("restores_failed_max", COUNT, ("recovery", "after"), "restores that did not finish"),
        ThresholdSpec("restore_client_p99_latency_max", DURATION, ("recovery",),
                      "client 4 KiB write p99 (fio) while the restores run (under --max-rate when the drill limits them)"),
        ThresholdSpec("model_error_ratio_max", RATIO, ("recovery",),
                      "|measured - predicted| / predicted mean write latency (drills/model.py)"),
    )
}


@dataclass(frozen=True)
class Threshold:
    """One limit read from the file, converted to its base unit."""

    drill: str
    phase: str
    key: str
    limit: float
    written: str  # as written in the file, for messages ("45s")
    severity: str = "fail"
    source: str = SHIPPED_DEFAULTS  # the file it came from, or "shipped defaults"

    @property
    def spec(self) -> ThresholdSpec:
        return SPECS[self.key]


@dataclass(frozen=True)
class Thresholds:
    path: str  # the user's file, or "shipped defaults"
    entries: tuple[Threshold, ...]
    # drill -> health-check codes its fault is expected to raise (the cluster-log allow-list)
    allowed_health: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def for_drill(self, drill: str) -> list[Threshold]:
        if drill not in DRILLS:
            raise ThresholdsError(f"unknown drill {drill!r}; known drills: {', '.join(DRILLS)}")
        return [t for t in self.entries if t.drill == drill]

    def health_allowed(self, drill: str) -> frozenset[str]:
        return frozenset(self.allowed_health.get(drill, frozenset()))


@dataclass(frozen=True)
class Check:
    """The verdict on one limit.  Values are in the base unit named by `unit`.

    margin: headroom left before the limit (positive, passed) or how far past it (negative);
    None when nothing was measured.
    """

    name: str  # the threshold key, e.g. "p99_latency_max"
    phase: str
    measured: float | None
    limit: float
    unit: str  # "s" | "B" | "ratio" | "count"
    passed: bool
    margin: float | None
    detail: str = ""  # "not measured", which daemon was worst, every daemon over the limit, ...
    severity: str = "fail"  # "fail": a breach fails the drill; "warn": shown and counted only
    source: str = ""  # where the limit came from: a file, "shipped defaults", "invariant", "regression"

    @property
    def fails_drill(self) -> bool:
        return not self.passed and self.severity == "fail"

    @property
    def warned(self) -> bool:
        return not self.passed and self.severity == "warn"

    @property
    def bound(self) -> str:
        return "min" if self.name.endswith("_min") else "max"

    @property
    def margin_fraction(self) -> float | None:
        """The margin as a fraction of the limit (0.65 = 65 % of the limit)."""
        if self.margin is None or self.limit == 0 or math.isnan(self.limit):
            return None
        return self.margin / abs(self.limit)

    def margin_text(self) -> str:
        if self.margin is None:
            return "not measured"
        word = "headroom" if self.margin >= 0 else "breached by"
        text = f"{word} {format_value(abs(self.margin), self.unit)}"
        frac = self.margin_fraction
        if frac is not None and math.isfinite(frac):
            text += f" ({abs(frac) * 100:.0f}%)"
        return text

    def message(self) -> str:
        """One line: 'degraded p99_latency_max: measured 412 ms, limit 250 ms, over by 162 ms (65%)'."""
        verdict = "ok" if self.passed else "WARN" if self.severity == "warn" else "FAIL"
        limit = ("no limit yet" if math.isnan(self.limit) else
                 f"limit {'<=' if self.bound == 'max' else '>='} {format_value(self.limit, self.unit)}")
        if self.measured is None:
            return f"{verdict} {self.phase} {self.name}: {self.detail or 'not measured'} ({limit})"
        extra = f"; {self.detail}" if self.detail else ""
        if self.source in (INVARIANT, REGRESSION):
            extra += f" ({self.source})"
        return (f"{verdict} {self.phase} {self.name}: measured {format_value(self.measured, self.unit)}, {limit}, "
                f"{self.margin_text()}{extra}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Check":
        return cls(
            name=str(d["name"]), phase=str(d["phase"]),
            measured=None if d.get("measured") is None else float(d["measured"]),
            limit=float(d["limit"]), unit=str(d["unit"]), passed=bool(d["passed"]),
            margin=None if d.get("margin") is None else float(d["margin"]),
            detail=str(d.get("detail", "")),
            severity=str(d.get("severity", "fail")),
            source=str(d.get("source", "")),
        )


# --- parsing -------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """'250ms' -> 0.25, '45s' -> 45.0, '10min' -> 600.0, '1h' -> 3600.0 (seconds); drills/units.py's rules."""
    if not isinstance(text, str):
        raise ValueError(f"a duration is a string with a unit (ms, s, min, h), e.g. '45s'; got {text!r}")
    return parse_seconds(text)


def parse_size(text: str) -> float:
    """'2GiB' -> 2147483648.0 (bytes); drills/units.py's rules ('2GB' is refused, not guessed)."""
    if not isinstance(text, str):
        raise ValueError(f"a size is a string with a unit (B, KiB, MiB, GiB, TiB), e.g. '2GiB'; got {text!r}")
    return float(parse_bytes(text, unit_required=True))


def parse_limit(value: Any, unit: str) -> float:
    """A raw TOML value -> the limit in its base unit; ValueError says why not."""
    if unit == DURATION:
        return parse_duration(value)
    if unit == SIZE:
        return parse_size(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a plain number like 0.2" if unit == RATIO else "a whole number like 0"
        raise ValueError(f"expected {kind}, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, got {value!r}; write 0 or more, e.g. {0.5 if unit == RATIO else 10}")
    if unit == COUNT and not isinstance(value, int):
        raise ValueError(f"a count is a whole number, got {value!r}")
    return float(value)


HEALTH_TABLE = "health"  # [<drill>.health] allow = ["OSD_DOWN", ...]: not a phase, the cluster-log allow-list


def loads_thresholds(text: str, path: str = "<string>", source: str | None = None) -> Thresholds:
    """Parse one thresholds file on its own (no defaults layered under it)."""
    source = source or path
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ThresholdsError(f"{path}: not valid TOML: {e}; fix the file (TOML syntax) or pass another --thresholds") from None
    version = raw.pop("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ThresholdsError(f"{path}: schema_version {version!r} is not supported (this harness reads {SCHEMA_VERSION})")
    raw.pop(REGRESSION, None)  # [regression...]: rules against the cluster's own past (drills/history/regression.py)
    entries: list[Threshold] = []
    allowed: dict[str, frozenset[str]] = {}
    for drill, phases in raw.items():
        if drill not in DRILLS:
            raise ThresholdsError(f"{path}: [{drill}]: unknown drill{_did_you_mean(drill, DRILLS)}; rename or remove "
                                  f"the table (known drills: {', '.join(DRILLS)})")
        if not isinstance(phases, dict):
            raise ThresholdsError(f"{path}: {drill}: expected a table [{drill}.<phase>], got a {type(phases).__name__}")
        for phase, limits in phases.items():
            where = f"{path}: [{drill}.{phase}]"
            if phase == HEALTH_TABLE:
                allowed[drill] = _parse_allow(limits, where)
                continue
            if phase not in PHASES:
                raise ThresholdsError(f"{where}: unknown phase {phase!r}; phases: {', '.join(PHASES)} (or {HEALTH_TABLE})")
            if not isinstance(limits, dict):
                raise ThresholdsError(f"{where}: expected a table of limits, got a {type(limits).__name__}")
            for key, value in limits.items():
                spec = SPECS.get(key)
                if spec is None:
                    valid = [k for k, sp in SPECS.items() if phase in sp.phases]
                    raise ThresholdsError(f"{where} {key}: unknown key{_did_you_mean(key, valid)}; rename or remove it "
                                          f"(keys of phase {phase}: {', '.join(valid)})")
                if phase not in spec.phases:
                    raise ThresholdsError(f"{where} {key}: not a limit of phase {phase!r}; "
                                          f"it belongs in: {', '.join(spec.phases)}")
                value, severity = _split_severity(value, f"{where} {key}")
                try:
                    limit = parse_limit(value, spec.unit)
                except ValueError as e:
                    raise ThresholdsError(f"{where} {key}: {e}") from None
                written = value if isinstance(value, str) else repr(value)
                entries.append(Threshold(drill, phase, key, limit, written, severity, source))
    return Thresholds(path, tuple(entries), allowed)


def _did_you_mean(word: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _split_severity(value: Any, where: str) -> tuple[Any, str]:
    """`1.5` or `{ limit = 1.5, severity = "warn" }` -> (1.5, severity)."""
    if not isinstance(value, dict):
        return value, "fail"
    unknown = set(value) - {"limit", "severity"}
    if unknown or "limit" not in value:
        raise ThresholdsError(f"{where}: a limit table takes 'limit' and optionally 'severity' "
                              f"(e.g. {{ limit = 1.5, severity = \"warn\" }}); got keys {sorted(value)}")
    severity = value.get("severity", "fail")
    if severity not in SEVERITIES:
        raise ThresholdsError(f"{where}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    return value["limit"], severity


def _parse_allow(table: Any, where: str) -> frozenset[str]:
    if not isinstance(table, dict) or set(table) != {"allow"}:
        raise ThresholdsError(f"{where}: expected exactly one key, allow = [\"OSD_DOWN\", ...] "
                              f"(health-check codes the drill may raise)")
    codes = table["allow"]
    if not isinstance(codes, list) or not all(isinstance(c, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", c) for c in codes):
        raise ThresholdsError(f"{where} allow: expected a list of health-check codes like \"OSD_DOWN\", got {codes!r}")
    return frozenset(codes)


def overlay(base: Thresholds, top: Thresholds) -> Thresholds:
    """`top`'s limits replace `base`'s key by key; a limit `top` does not name stays as `base` had it."""
    mine = {(t.drill, t.phase, t.key): t for t in top.entries}
    merged = [mine.pop((t.drill, t.phase, t.key), t) for t in base.entries]
    merged.extend(mine.values())  # limits the defaults do not have
    return Thresholds(top.path, tuple(merged), {**base.allowed_health, **top.allowed_health})


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ThresholdsError(f"{p}: thresholds file does not exist; pass an existing file to --thresholds "
                              f"or leave it out for the shipped defaults") from None
    except OSError as e:
        raise ThresholdsError(f"{p}: cannot read: {e.strerror}") from None


def load_defaults() -> Thresholds:
    return loads_thresholds(_read(DEFAULT_THRESHOLDS_FILE), str(DEFAULT_THRESHOLDS_FILE), SHIPPED_DEFAULTS)


def load_thresholds(path: str | Path | None = None) -> Thresholds:
    """The limits a run uses: the shipped defaults (drills/default_thresholds.toml), with the file
    at `path`, if any, laid over them key by key (see `overlay`)."""
    defaults = load_defaults()
    if path is None:
        return Thresholds(SHIPPED_DEFAULTS, defaults.entries, defaults.allowed_health)
    p = Path(path)
    return overlay(defaults, loads_thresholds(_read(p), str(p)))


# --- evaluation ------------------------------------------------------------------

# A measurement is one number (in the base unit), None (not measured), or, for per-daemon and
# per-host limits, a mapping of subject ("osd.3", "host-a") -> number or None.
MeasuredValue = float | int | None | Mapping[str, float | int | None]
Measurements = Mapping[str, Mapping[str, MeasuredValue]]  # phase -> measurement name -> value


def evaluate(thresholds: Thresholds, drill: str, measurements: Measurements,
             why_none: Mapping[tuple[str, str], str] | None = None) -> list[Check]:
    """Check every limit of `drill` against `measurements` (phase -> name -> value, base units).

    All limits are evaluated; the result lists each one, passed or not.  A limit whose
    measurement is absent or None fails with detail "not measured", or with the reason in
    `why_none[(phase, measurement)]` when the drill gave one (e.g. "never raised within the
    degraded phase (45 s)": an event that did not happen, which is not a reading that failed).
    """
    checks: list[Check] = []
    for t in thresholds.for_drill(drill):
        value = measurements.get(t.phase, {}).get(t.spec.measurement)
        if isinstance(value, Mapping):
            checks.append(_check_per_subject(t, value))
        else:
            why = (why_none or {}).get((t.phase, t.spec.measurement), "") if value is None else ""
            checks.append(_check_one(t, value, why))
    return checks


def _margin(t: Threshold, measured: float) -> float:
    return t.limit - measured if t.spec.bound == "max" else measured - t.limit


def _check_one(t: Threshold, value: Any, detail: str = "") -> Check:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(t.key, t.phase, None, t.limit, t.spec.unit, False, None, detail or "not measured",
                     t.severity, t.source)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ThresholdsError(f"measurement {t.phase}.{t.spec.measurement}: expected a number, got {value!r}")
    measured = float(value)
    margin = _margin(t, measured)
    return Check(t.key, t.phase, measured, t.limit, t.spec.unit, margin >= 0, margin, detail, t.severity, t.source)


def _check_per_subject(t: Threshold, values: Mapping[str, Any]) -> Check:
    """One check for a per-daemon (or per-host) limit: the worst subject decides, every breach is named."""
    measured = {k: v for k, v in values.items() if v is not None}
    missing = sorted(k for k, v in values.items() if v is None)
    if not measured:
        return _check_one(t, None, "not measured" + (f" ({', '.join(missing)})" if missing else ""))
    pick = max if t.spec.bound == "max" else min
    worst = pick(measured, key=lambda k: measured[k])
    breaches = sorted((k for k in measured if _margin(t, float(measured[k])) < 0), key=lambda k: _margin(t, float(measured[k])))
    parts = [f"worst {worst}"]
    if breaches:
        parts.append("over the limit: " + ", ".join(f"{k} {format_value(float(measured[k]), t.spec.unit)}" for k in breaches))
    if missing:
        parts.append("not measured: " + ", ".join(missing))
    check = _check_one(t, measured[worst], "; ".join(parts))
    if missing:  # a daemon we could not see is not a daemon that passed
        check = replace(check, passed=False)
    return check


def failures(checks: list[Check]) -> list[Check]:
    """Checks that fail their drill (a failed warn check does not)."""
    return [c for c in checks if c.fails_drill]


# --- formatting --------------------------------------------------------------------


def format_value(value: float | None, unit: str) -> str:
    """A base-unit value for people: 0.412 s -> '412 ms', 2147483648 B -> '2.00 GiB'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit == DURATION:
        a = abs(value)
        if a == 0:
            return "0 s"
        if a < 1:
            return f"{value * 1000:.3g} ms"
        if a < 120:
            return f"{value:.3g} s"
        if a < 7200:
            return f"{value / 60:.3g} min"
        return f"{value / 3600:.3g} h"
    if unit == SIZE:
        for name, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {name}"
        return f"{value:.0f} B"
    if unit == COUNT:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3g}"
