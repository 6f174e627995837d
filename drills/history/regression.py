"""Regressions as checks: each figure of a drill against the same drill's own past.

The baseline of a figure is its value in the same drill's last `window` passing runs on
the same target (fsid) and the same Ceph version: its median and its spread (the median
absolute deviation, MAD).  A rule per figure says how far is too far:

    allowed = max(tolerance x |median|, spread_factor x MAD)
    worse = "higher":  limit = median + allowed   (check name <metric>_regression_max)
    worse = "lower":   limit = median - allowed   (check name <metric>_regression_min, never below 0)

The tolerance keeps a baseline of identical runs from flagging noise; the spread term widens
the band for a figure that is noisy on this cluster.  Rules come from the thresholds file:

    [regression.defaults]            # optional; these are the built-in defaults
    window = 5                       # passing runs compared with
    min_runs = 3                     # fewer than this: "no baseline yet"
    spread_factor = 3.0
    severity = "warn"

    [regression.rack_power_cut.recovery]
    p99_latency = { tolerance = 0.5 }                       # worse defaults from the limit key (_max: higher)
    iops_ratio = { tolerance = 0.3, severity = "fail", window = 10 }

    [regression."*".detection]       # every drill
    detection_time = { tolerance = 0.5, worse = "higher" }

A first run (fewer than min_runs comparable runs) gets a check with measured=None, detail
"no baseline yet", severity "warn" - not measured, not a pass.  When earlier runs exist only on
another Ceph version, the detail says "new baseline (Ceph X -> Y)".
"""

from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from drills.history.store import MEASUREMENT_UNITS, connect
from drills.thresholds import DRILLS, PHASES, SPECS, Check, format_value

WORSE = ("higher", "lower")
SEVERITIES = ("fail", "warn")
ANY_DRILL = "*"
REGRESSION = "regression"  # Check.source of every check made here

DEFAULTS: dict[str, Any] = {"window": 5, "min_runs": 3, "spread_factor": 3.0, "severity": "warn", "tolerance": 0.5}
_RULE_KEYS = ("tolerance", "worse", "severity", "window", "min_runs", "spread_factor")


class RegressionRulesError(Exception):
    """A [regression] table that cannot be used; one line naming the file, the table and the key."""


@dataclass(frozen=True)
class RegressionRule:
    drill: str  # a drill name or "*"
    phase: str
    metric: str  # a measurement name, e.g. "p99_latency"
    tolerance: float  # relative: 0.5 = 50 % of the baseline median
    worse: str  # "higher" | "lower"
    severity: str  # "fail" | "warn"
    window: int  # last N passing runs
    min_runs: int  # fewer comparable runs: no baseline yet
    spread_factor: float  # k in k x MAD
    source: str = ""  # the file the rule came from

    @property
    def check_name(self) -> str:
        return f"{self.metric}_regression_{'max' if self.worse == 'higher' else 'min'}"


def _default_worse(metric: str) -> str | None:
    bounds = {s.bound for s in SPECS.values() if s.measurement == metric}
    return ("higher" if bounds == {"max"} else "lower") if len(bounds) == 1 else None


def parse_regression_rules(raw: Mapping[str, Any], path: str | Path) -> list[RegressionRule]:
    """The [regression] table of a thresholds file (already parsed TOML) -> rules.

    Every mistake is a RegressionRulesError with one line naming file, table and key: a typo
    must not silently turn a rule into no rule.
    """
    where0 = f"{path}: [regression"
    if not isinstance(raw, Mapping):
        raise RegressionRulesError(f"{where0}]: expected a table, got a {type(raw).__name__}")
    defaults = dict(DEFAULTS)
    table = dict(raw)
    if "defaults" in table:
        d = table.pop("defaults")
        if not isinstance(d, Mapping):
            raise RegressionRulesError(f"{where0}.defaults]: expected a table of defaults")
        for k, v in d.items():
            if k not in DEFAULTS:
                raise RegressionRulesError(f"{where0}.defaults] {k}: unknown key; known: {', '.join(DEFAULTS)}")
            defaults[k] = _value(k, v, f"{where0}.defaults] {k}")
    rules: list[RegressionRule] = []
    for drill, phases in table.items():
        if drill != ANY_DRILL and drill not in DRILLS:
            raise RegressionRulesError(f"{where0}.{drill}]: unknown drill; known drills: {', '.join(DRILLS)} "
                                       f"(or \"*\" for every drill)")
        if not isinstance(phases, Mapping):
            raise RegressionRulesError(f"{where0}.{drill}]: expected tables [regression.{drill}.<phase>]")
        for phase, metrics in phases.items():
            where = f"{where0}.{drill}.{phase}]"
            if phase not in PHASES:
                raise RegressionRulesError(f"{where}: unknown phase {phase!r}; phases: {', '.join(PHASES)}")
            if not isinstance(metrics, Mapping):
                raise RegressionRulesError(f"{where}: expected metric = {{ tolerance = 0.5 }} entries")
            for metric, spec in metrics.items():
                w = f"{where} {metric}"
                if metric not in MEASUREMENT_UNITS:
                    raise RegressionRulesError(f"{w}: unknown metric; known: {', '.join(sorted(MEASUREMENT_UNITS))}")
                if isinstance(spec, (int, float)) and not isinstance(spec, bool):
                    spec = {"tolerance": spec}  # p99_latency = 0.5 is short for { tolerance = 0.5 }
                if not isinstance(spec, Mapping):
                    raise RegressionRulesError(f"{w}: expected {{ tolerance = 0.5, worse = \"higher\" }} or a number")
                for k in spec:
                    if k not in _RULE_KEYS:
                        raise RegressionRulesError(f"{w} {k}: unknown key; known: {', '.join(_RULE_KEYS)}")
                merged = {**defaults, **{k: _value(k, v, f"{w} {k}") for k, v in spec.items()}}
                worse = merged.get("worse") or _default_worse(metric)
                if worse is None:
                    raise RegressionRulesError(f"{w}: say worse = \"higher\" or \"lower\" (no limit key fixes it)")
                rules.append(RegressionRule(drill, phase, metric, float(merged["tolerance"]), worse,
                                            str(merged["severity"]), int(merged["window"]), int(merged["min_runs"]),
                                            float(merged["spread_factor"]), str(path)))
    return rules


def _value(key: str, v: Any, where: str) -> Any:
    if key in ("window", "min_runs"):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise RegressionRulesError(f"{where}: expected a whole number >= 1, got {v!r}")
        return v
    if key in ("tolerance", "spread_factor"):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise RegressionRulesError(f"{where}: expected a number >= 0 (0.5 = 50 %), got {v!r}")
        return float(v)
    if key == "worse":
        if v not in WORSE:
            raise RegressionRulesError(f"{where}: expected \"higher\" or \"lower\", got {v!r}")
        return v
    if key == "severity":
        if v not in SEVERITIES:
            raise RegressionRulesError(f"{where}: expected \"fail\" or \"warn\", got {v!r}")
        return v
    raise RegressionRulesError(f"{where}: unknown key")


def rules_for(rules: list[RegressionRule], drill: str) -> list[RegressionRule]:
    """A drill's rules: its own win over "*" rules for the same phase and metric."""
    own = {(r.phase, r.metric): r for r in rules if r.drill == drill}
    for r in rules:
        if r.drill == ANY_DRILL:
            own.setdefault((r.phase, r.metric), r)
    return list(own.values())


@dataclass(frozen=True)
class Baseline:
    run_ids: tuple[str, ...]  # newest first
    values: tuple[float, ...]
    median: float
    spread: float  # median absolute deviation


def _scalar(value: Any, worse: str) -> float | None:
    """One number for a figure; for a per-daemon mapping the worst daemon (by the rule's direction)."""
    if isinstance(value, Mapping):
        nums = [float(v) for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not nums:
            return None
        return max(nums) if worse == "higher" else min(nums)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def _history_values(conn: sqlite3.Connection, drill: str, rule: RegressionRule, fsid: str, ceph_version: str,
                    exclude_run: str | None, before: float | None) -> list[tuple[str, float]]:
    agg = "MAX" if rule.worse == "higher" else "MIN"
    rows = conn.execute(
        f"""SELECT r.run_id, {agg}(f.value) AS v FROM runs r
            JOIN drills d ON d.run_id = r.run_id AND d.drill = ?
            JOIN figures f ON f.run_id = r.run_id AND f.drill = d.drill AND f.phase = ? AND f.metric = ?
            WHERE r.fsid = ? AND r.ceph_version = ? AND d.verdict = 'passed' AND f.value IS NOT NULL
              AND (? IS NULL OR r.run_id != ?) AND (? IS NULL OR r.started < ?)
            GROUP BY r.run_id ORDER BY r.started DESC, r.run_id DESC LIMIT ?""",
        (drill, rule.phase, rule.metric, fsid, ceph_version, exclude_run, exclude_run, before, before,
         rule.window)).fetchall()
    return [(row["run_id"], float(row["v"])) for row in rows]


def baseline_for(conn: sqlite3.Connection, drill: str, rule: RegressionRule, fsid: str, ceph_version: str,
                 exclude_run: str | None = None, before: float | None = None) -> Baseline | None:
    pairs = _history_values(conn, drill, rule, fsid, ceph_version, exclude_run, before)
    if len(pairs) < rule.min_runs:
        return None
    values = [v for _, v in pairs]
    med = statistics.median(values)
    return Baseline(tuple(r for r, _ in pairs), tuple(values), med, statistics.median(abs(v - med) for v in values))


def limit_of(rule: RegressionRule, b: Baseline) -> float:
    allowed = max(rule.tolerance * abs(b.median), rule.spread_factor * b.spread)
    return b.median + allowed if rule.worse == "higher" else max(0.0, b.median - allowed)


def _previous_version(conn: sqlite3.Connection, drill: str, fsid: str, ceph_version: str,
                      exclude_run: str | None) -> str | None:
    row = conn.execute(
        """SELECT r.ceph_version FROM runs r JOIN drills d ON d.run_id = r.run_id AND d.drill = ?
           WHERE r.fsid = ? AND r.ceph_version != ? AND d.verdict = 'passed' AND (? IS NULL OR r.run_id != ?)
           ORDER BY r.started DESC LIMIT 1""", (drill, fsid, ceph_version, exclude_run, exclude_run)).fetchone()
    return None if row is None else str(row[0])


def regression_checks(db_path: str | Path | None, drill: str, measurements: Mapping[str, Mapping[str, Any]],
                      fsid: str, ceph_version: str, rules: list[RegressionRule], *,
                      run_id: str | None = None, before: float | None = None) -> list[Check]:
    """One Check per rule of `drill` (source "regression").

    run_id: this run, left out of its own baseline if it is already recorded; before: only
    runs that started earlier count (for re-judging an old run).  With no database (None or a
    missing file) every check says "no baseline yet".
    """
    mine = rules_for(rules, drill)
    if not mine:
        return []
    conn = connect(db_path) if db_path is not None and Path(db_path).exists() else None
    try:
        # A "*" rule applies where the drill measures that figure at all (smoke has no detection time);
        # a drill's own rule always applies, so a figure it stopped measuring says "not measured".
        return [_check(conn, drill, r, measurements, fsid, ceph_version, run_id, before) for r in mine
                if r.drill != ANY_DRILL or r.metric in measurements.get(r.phase, {})]
    finally:
        if conn is not None:
            conn.close()


def _check(conn: sqlite3.Connection | None, drill: str, rule: RegressionRule,
           measurements: Mapping[str, Mapping[str, Any]], fsid: str, ceph_version: str,
           run_id: str | None, before: float | None) -> Check:
    unit = MEASUREMENT_UNITS.get(rule.metric, "")
    measured = _scalar(measurements.get(rule.phase, {}).get(rule.metric), rule.worse)
    base = None if conn is None else baseline_for(conn, drill, rule, fsid, ceph_version, run_id, before)

    def check(limit: float, passed: bool, margin: float | None, detail: str, m: float | None = measured,
              severity: str = rule.severity) -> Check:
        return Check(rule.check_name, rule.phase, m, limit, unit, passed, margin, detail, severity, REGRESSION)

    if base is None:
        have = 0 if conn is None else len(_history_values(conn, drill, rule, fsid, ceph_version, run_id, before))
        previous = None if conn is None else _previous_version(conn, drill, fsid, ceph_version, run_id)
        why = f"new baseline (Ceph {previous} -> {ceph_version})" if previous else "no baseline yet"
        detail = (f"{why}: {have} of {rule.min_runs} passing runs on this target and Ceph version"
                  + ("" if measured is None else f"; measured {format_value(measured, unit)}"))
        # not measured, not a pass; a warning whatever the rule's severity: the first run cannot regress
        return check(math.nan, False, None, detail, m=None, severity="warn")
    limit = limit_of(rule, base)
    where = (f"baseline median {format_value(base.median, unit)}, spread (MAD) {format_value(base.spread, unit)} "
             f"over {len(base.run_ids)} passing runs ({', '.join(base.run_ids)}); rule: {rule.worse} is worse, "
             f"tolerance {rule.tolerance:g}, {rule.spread_factor:g} x spread")
    if measured is None:
        return check(limit, False, None, f"not measured; {where}")
    margin = limit - measured if rule.worse == "higher" else measured - limit
    change = "" if base.median == 0 else f" ({(measured - base.median) / abs(base.median) * 100:+.0f}% vs median)"
    verdict = "regression" if margin < 0 else "within baseline"
    return check(limit, margin >= 0, margin, f"{verdict}{change}; {where}")


def regression_checks_in_run(run_dir: str | Path, drill: str, measurements: Mapping[str, Mapping[str, Any]],
                             rules: list[RegressionRule]) -> list[Check]:
    """`regression_checks` for a drill of a run in progress: target fsid and Ceph version from its run.json,
    the database beside the run directory (reports/history.sqlite), the run itself left out."""
    from drills.history.store import history_path
    from drills.timeline import read_meta

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    target = meta.get("target") if isinstance(meta.get("target"), dict) else {}
    return regression_checks(history_path(run_dir.resolve().parent), drill, measurements,
                             str(target.get("fsid") or ""), str(meta.get("ceph_version") or ""), rules,
                             run_id=str(meta.get("run_id") or run_dir.name))


def load_regression_rules(path: str | Path | None = None) -> list[RegressionRule]:
    """The [regression] tables of the shipped defaults and of the thresholds file at `path`, the file's
    rules laid over the defaults' rule by rule (drill, phase, metric), as limits are."""
    import tomllib

    from drills.thresholds import DEFAULT_THRESHOLDS_FILE

    def read(p: Path) -> list[RegressionRule]:
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise RegressionRulesError(f"{p}: thresholds file does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise RegressionRulesError(f"{p}: cannot read: {e}") from None
        return parse_regression_rules(raw.get("regression", {}), p)

    merged = {(r.drill, r.phase, r.metric): r for r in read(DEFAULT_THRESHOLDS_FILE)}
    if path is not None:
        merged.update({(r.drill, r.phase, r.metric): r for r in read(Path(path))})
    return list(merged.values())
