"""`drill calibrate`: a thresholds file whose limits come from this cluster's own measured runs.

From the last N runs of a suite on one target (taken from the history database, which is
first brought up to date from the run directories), every limit of the base thresholds
(the shipped defaults, or --thresholds laid over them) is recomputed from the measured
distribution of its figure across those runs, where at least `min_runs` of them measured it:

  _min limits (iops_min, iops_ratio_min, restore_throughput_ratio_min):
      limit = min(0.6 x median, 0.9 x lowest, geometric mean x exp(-3 x spread x sqrt(1 + 1/n)))
      -> a halving of the median fails, unless the runs themselves went below 0.56 x median or
         varied so much that a healthy run would fall below it now and then.
      spread = the standard deviation of ln(value) over the runs (3 or more), else
      POOLED_LOG_SPREAD: 10 s windows of IOPS on a shared 2-core sandbox differ from run to run by a
      log-SD of 0.32 (45 degrees of freedom pooled over the runbook drills' healthy runs), so a
      limit 3 SD below the mean fails about one healthy run in 700, where 0.9 x lowest of two runs
      failed one CI run in the first four (hung_osd after: 0.574 against 0.58).
  _max limits (durations, sizes, ratios):
      limit = max(F x median, 1.1 x highest, median + floor, geometric mean x exp(3 x spread x sqrt(1 + 1/n)))
      (the spread term from 3 runs or more, all above 0; for latencies below 3 runs, the pooled
      POOLED_LATENCY_LOG_SPREAD: a phase's p99 differs from run to run about as much as IOPS do)
      F = 2.5 for durations and ratios (a tripling fails), 1.5 for memory (RSS) sizes and RSS ratios;
      floor = 2 s for durations (1 Hz sampling: a 0 s stall must not become a 0 s limit), 10 s for stall_time
      and time_to_active (they move in whole re-peering rounds), 64 MiB for sizes
      degraded_ratio_max is capped at 1 (it is a fraction)
  kept as they are: counts of failures (lost writes, I/O errors, OOM kills, failed restores, held OSDs,
      flaps, mark-downs, SLOW_OPS raised or not), memory_budget_ratio_max (a budget is a promise, not a
      measurement) and model_error_ratio_max (a judgment of the model), and any limit too few runs measured.

Each limit is written with a comment naming the runs, the distribution and the rule.  The
file is checked with drills/thresholds.py before it is written: it loads, or nothing is written.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sqlite3
import statistics
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from drills.history.store import RunRecord, connect, runs
from drills.thresholds import (
    COUNT,
    DURATION,
    RATIO,
    SIZE,
    SPECS,
    Threshold,
    Thresholds,
    ThresholdsError,
    format_value,
    loads_thresholds,
)

KEPT_KEYS = frozenset({
    "lost_writes_max", "io_errors_max", "oom_kills_max", "uncontrolled_oom_kills_min", "held_osds_max",
    "restores_failed_max", "osd_flaps_max", "memory_budget_ratio_max", "model_error_ratio_max",
    "markdowns_max", "slow_ops_raised_min", "slow_ops_raised_max",  # the gray drills' hypotheses: counts, not spreads
    "eio_reads_ok_min", "eio_reads_failed_max", "shards_repaired_min", "shards_repaired_max",
})
MIN_FACTOR, MIN_LOWEST_FACTOR = 0.6, 0.9
MIN_SPREAD_SDS = 3.0
POOLED_LOG_SPREAD = 0.32
# A phase's p99 (over all its writes, fio's histograms) on the quiet sandbox differs from run to run by this
# log-SD, pooled over the runbook drills' phases (docs/thresholds.md, "Defaults"); used below 3 runs.
POOLED_LATENCY_LOG_SPREAD = 0.29  # 41 degrees of freedom: 5 smoke-suite runs and 2 fault-drill runs, 2026-11-30
LATENCY_KEYS = frozenset({"p50_latency_max", "p99_latency_max", "restore_client_p99_latency_max"})
MAX_FACTOR = {DURATION: 2.5, RATIO: 2.5, SIZE: 1.5}
MAX_FACTOR_BY_KEY = {"rss_after_recovery_ratio_max": 1.5, "rss_after_heap_release_ratio_max": 1.5}
MAX_HIGHEST_FACTOR = 1.1
FLOOR = {DURATION: 2.0, SIZE: 64 * 2**20, RATIO: 0.0}
# Latencies are measured in ms, not at the 1 Hz sampling resolution of the event-timed durations.
FLOOR_BY_KEY = {"p50_latency_max": 0.005, "p99_latency_max": 0.010, "restore_client_p99_latency_max": 0.010,
                # event timings move in whole polls and re-peering rounds: a healthy run that took 0.03 s
                # once takes 5 s the next time (measured on the sandbox: time_to_active 0.01-4.5 s)
                "stall_time_max": 10.0, "time_to_active_max": 10.0}
CAP = {"degraded_ratio_max": 1.0}


class CalibrationError(Exception):
    """Calibration cannot be done (no runs, too few); one line saying what to run or pass."""


@dataclass(frozen=True)
class Calibrated:
    """One limit of the output file."""

    drill: str
    phase: str
    key: str
    written: str  # the TOML value as written
    limit: float  # base units
    severity: str
    comment: str
    calibrated: bool  # False: kept from the base thresholds
    old_limit: float | None = None


@dataclass(frozen=True)
class Calibration:
    text: str
    limits: tuple[Calibrated, ...]
    runs: tuple[str, ...]
    notes: tuple[str, ...]


def select_runs(conn: sqlite3.Connection, fsid: str, target_path: str, suite: str | None, n: int) -> list[RunRecord]:
    """The last n runs of the suite on the target, on the newest run's Ceph version."""
    candidates = [r for r in runs(conn) if (r.fsid == fsid if fsid else r.target_path == target_path)]
    if not candidates:
        who = f"fsid {fsid}" if fsid else target_path
        raise CalibrationError(f"no runs of target {who} in the history; run `drill run --suite {suite or 'smoke'}` "
                               f"on it a few times (3 or more) first")
    if suite is not None:
        same = [r for r in candidates if r.suite == suite]
        if not same:
            known = sorted({str(r.suite) for r in candidates})
            raise CalibrationError(f"no runs of suite {suite!r} on this target (recorded suites: {', '.join(known)}); "
                                   f"pass --suite with one of them")
        candidates = same
    newest_version = candidates[-1].ceph_version
    return [r for r in candidates if r.ceph_version == newest_version][-n:]


def _values(conn: sqlite3.Connection, run_ids: list[str], drill: str, phase: str, metric: str, bound: str) -> list[tuple[str, float]]:
    agg = "MAX" if bound == "max" else "MIN"  # per-daemon figures: the worst daemon
    marks = ",".join("?" * len(run_ids))
    rows = conn.execute(
        f"""SELECT f.run_id, {agg}(f.value) FROM figures f JOIN drills d ON d.run_id = f.run_id AND d.drill = f.drill
            WHERE f.run_id IN ({marks}) AND f.drill = ? AND f.phase = ? AND f.metric = ? AND f.value IS NOT NULL
              AND d.verdict IN ('passed', 'failed')
            GROUP BY f.run_id""", (*run_ids, drill, phase, metric)).fetchall()
    order = {r: i for i, r in enumerate(run_ids)}
    return sorted(((str(r), float(v)) for r, v in rows), key=lambda p: order[p[0]])


def calibrated_limit(key: str, values: list[float]) -> tuple[float, str]:
    """(limit in base units, the rule with its numbers) for a limit key and measured values."""
    spec = SPECS[key]
    med, lo, hi = statistics.median(values), min(values), max(values)
    if spec.bound == "min":
        own = len(values) >= 3 and lo > 0
        spread = statistics.stdev(math.log(v) for v in values) if own else POOLED_LOG_SPREAD
        # a prediction interval: the next run's spread around a mean that is itself known from n runs only
        width = MIN_SPREAD_SDS * spread * math.sqrt(1 + 1 / len(values))
        floor = math.exp(statistics.fmean(math.log(v) for v in values) - width) if lo > 0 else 0.0
        limit = min(MIN_FACTOR * med, MIN_LOWEST_FACTOR * lo, floor)
        rule = (f"min({MIN_FACTOR} x median, {MIN_LOWEST_FACTOR} x lowest, geometric mean x exp(-{MIN_SPREAD_SDS:g} x "
                f"{'log-SD of the runs' if own else 'pooled log-SD'} {spread:.2f} x sqrt(1 + 1/{len(values)})))")
        return limit, rule + ("; WARNING: the runs varied so much that a halving would not fail"
                              if limit <= 0.5 * med else "")
    factor = MAX_FACTOR_BY_KEY.get(key, MAX_FACTOR.get(spec.unit, 2.5))
    floor = FLOOR_BY_KEY.get(key, FLOOR.get(spec.unit, 0.0))
    limit = max(factor * med, MAX_HIGHEST_FACTOR * hi, med + floor)
    rule = f"max({factor} x median, {MAX_HIGHEST_FACTOR} x highest" + (
        f", median + {format_value(floor, spec.unit)}" if floor else "")
    own = len(values) >= 3 and lo > 0
    if own or (key in LATENCY_KEYS and lo > 0):
        # the same prediction interval as for _min limits, upwards: runs that spread wide get room for it;
        # a latency from fewer than 3 runs takes the pooled spread of latencies instead (as IOPS do)
        spread = statistics.stdev(math.log(v) for v in values) if own else POOLED_LATENCY_LOG_SPREAD
        ceiling = math.exp(statistics.fmean(math.log(v) for v in values)
                           + MIN_SPREAD_SDS * spread * math.sqrt(1 + 1 / len(values)))
        limit = max(limit, ceiling)
        rule += (f", geometric mean x exp({MIN_SPREAD_SDS:g} x {'log-SD of the runs' if own else 'pooled log-SD'} "
                 f"{spread:.2f} x sqrt(1 + 1/{len(values)}))")
    rule += ")"
    if key in CAP and limit > CAP[key]:
        limit, rule = CAP[key], rule + f", capped at {CAP[key]:g}"
    if limit >= 3 * med and med > 0:
        rule += "; WARNING: at 3 x median or more, a tripling would not fail"
    return limit, rule


def toml_value(limit: float, unit: str, bound: str) -> str:
    """A limit as the thresholds file writes it, rounded away from the measured runs (never tighter)."""
    up = bound == "max"
    if unit == DURATION:
        if limit < 1:
            ms = math.ceil(limit * 1000) if up else math.floor(limit * 1000)
            return f'"{max(ms, 1)}ms"'
        tenths = math.ceil(limit * 10) if up else math.floor(limit * 10)
        return f'"{tenths / 10:g}s"'
    if unit == SIZE:
        mib = math.ceil(limit / 2**20) if up else math.floor(limit / 2**20)
        return f'"{mib}MiB"'
    if unit == COUNT:
        return str(math.ceil(limit) if up else math.floor(limit))
    thousandths = math.ceil(limit * 1000) if up else math.floor(limit * 1000)
    return f"{thousandths / 1000:g}"


def calibrate(db_path: str | Path, base: Thresholds, *, fsid: str, target_path: str = "", suite: str | None = None,
              runs_wanted: int = 5, min_runs: int = 3) -> Calibration:
    if runs_wanted < 1 or min_runs < 1:
        raise CalibrationError("--runs and --min-runs must be 1 or more")
    with closing(connect(db_path)) as conn:
        chosen = select_runs(conn, fsid, target_path, suite, runs_wanted)
        if len(chosen) < min_runs:
            raise CalibrationError(
                f"only {len(chosen)} run(s) of this target and suite on Ceph {chosen[-1].ceph_version or '?'} in the "
                f"history ({', '.join(r.run_id for r in chosen)}); {min_runs} are needed: run the suite again or "
                f"pass a smaller --min-runs")
        run_ids = [r.run_id for r in chosen]
        limits = [_calibrate_one(conn, run_ids, t, min_runs) for t in base.entries]
    notes = []
    if any("would not fail" in c.comment for c in limits):
        notes.append("some limits could not be made tight enough (the comments say which): the runs varied a lot")
    text = _render(base, limits, chosen, suite)
    # Nothing half-done: the text must load and every limit must read back as computed.
    try:
        parsed = loads_thresholds(text, "<calibrated>")
    except ThresholdsError as e:
        raise CalibrationError(f"the calibrated file does not load ({e}); this is a bug in drill calibrate") from None
    got = {(t.drill, t.phase, t.key): t.limit for t in parsed.entries}
    for c in limits:
        if not math.isclose(got[(c.drill, c.phase, c.key)], _parse_written(c), rel_tol=1e-9):
            raise CalibrationError(f"{c.drill}.{c.phase}.{c.key} read back differently; this is a bug in drill calibrate")
    return Calibration(text, tuple(limits), tuple(run_ids), tuple(notes))


def _parse_written(c: Calibrated) -> float:
    return loads_thresholds(f"[{c.drill}.{c.phase}]\n{c.key} = {c.written}\n").entries[0].limit


def _calibrate_one(conn: sqlite3.Connection, run_ids: list[str], t: Threshold, min_runs: int) -> Calibrated:
    spec = SPECS[t.key]
    severity = getattr(t, "severity", "fail")
    source = getattr(t, "source", "") or "the base thresholds"
    if t.key in KEPT_KEYS:
        return Calibrated(t.drill, t.phase, t.key, _written(t), t.limit, severity,
                          f"kept from {source}: not calibrated (a count of failures, a budget or a model judgment)",
                          False, t.limit)
    pairs = _values(conn, run_ids, t.drill, t.phase, spec.measurement, spec.bound)
    if len(pairs) < min_runs:
        return Calibrated(t.drill, t.phase, t.key, _written(t), t.limit, severity,
                          f"kept from {source}: measured in {len(pairs)} of {len(run_ids)} runs, {min_runs} needed",
                          False, t.limit)
    values = [v for _, v in pairs]
    limit, rule = calibrated_limit(t.key, values)
    written = toml_value(limit, spec.unit, spec.bound)
    rule, _, warning = rule.partition("; WARNING: ")
    comment = (f"{rule} over {len(values)} runs ({', '.join(r for r, _ in pairs)}): median "
               f"{format_value(statistics.median(values), spec.unit)}, range {format_value(min(values), spec.unit)}"
               f"..{format_value(max(values), spec.unit)}; was {format_value(t.limit, spec.unit)}"
               + (f"; {warning}" if warning else ""))
    return Calibrated(t.drill, t.phase, t.key, written, limit, severity, comment, True, t.limit)


def _written(t: Threshold) -> str:
    w = t.written
    if t.spec.unit in (DURATION, SIZE) and not w.startswith('"'):
        return f'"{w}"'
    return w


def _render(base: Thresholds, limits: list[Calibrated], chosen: list[RunRecord], suite: str | None) -> str:
    first, last = chosen[0], chosen[-1]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Calibrated by `drill calibrate` on {when}",
        f"# from {len(chosen)} run(s) of suite {suite or 'any'} on target {first.cluster or '?'} "
        f"(fsid {first.fsid or '?'}, {first.target_path or '?'}), Ceph {last.ceph_version or '?'}:",
        f"#   {', '.join(r.run_id for r in chosen)}",
        f"# base limits: {base.path}",
        "# Rules: _min limits = min(0.6 x median, 0.9 x lowest, geometric mean x exp(-3 x log-SD))",
        "#        (a halving fails unless healthy runs vary that much);",
        "#        _max limits = max(2.5 x median, 1.1 x highest, median + floor, geometric mean x exp(3 x log-SD))",
        "#        for durations and ratios",
        "#        (a tripling fails; floor 2 s), 1.5 x median for RSS sizes (floor 64 MiB) and RSS ratios;",
        "#        counts of failures, memory budgets and the model's error are kept.  docs/history.md.",
        "# Use it with: drill run --thresholds THIS_FILE (it is laid over the shipped defaults).",
        "schema_version = 1",
    ]
    by_table: dict[tuple[str, str], list[Calibrated]] = {}
    for c in limits:
        by_table.setdefault((c.drill, c.phase), []).append(c)
    for (drill, phase), entries in by_table.items():
        lines.append("")
        lines.append(f"[{drill}.{phase}]")
        for c in entries:
            lines.append(f"# {c.comment}")
            value = c.written if c.severity == "fail" else f'{{ limit = {c.written}, severity = "{c.severity}" }}'
            lines.append(f"{c.key} = {value}")
    for drill, codes in sorted(getattr(base, "allowed_health", {}).items()):
        if codes:
            lines += ["", f"[{drill}.health]", "allow = [" + ", ".join(f'"{c}"' for c in sorted(codes)) + "]"]
    return "\n".join(lines) + "\n"


def write_calibration(path: str | Path, text: str) -> Path:
    """Atomically: a reader (or a crash) never sees half a thresholds file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name("." + p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)
    return p
