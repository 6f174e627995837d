"""Reading a drill's slice of the run timeline: phases, faults, series, derived figures.

Metric names the report looks for (written by workloads and samplers to series.jsonl):

  fio.write.iops                   client write IOPS, per second
  fio.read.iops                    client read IOPS (optional)
  fio.write.lat_mean_ms            mean write latency, ms (what the degraded-write model predicts)
  fio.write.lat_p50_ms             p50 write latency, ms
  fio.write.lat_p99_ms             p99 write latency, ms (per second: drawn on the timeline)
  fio.write.lat_ns (histograms.jsonl)  write latency histogram per interval: a phase's p99 is the p99 of
                                   every write that completed in it (runs recorded before it existed
                                   fall back to the worst second's p99, which is never lower)
  cluster.degraded_ratio           Ceph's pgmap degraded_ratio: degraded copies / all copies, 0..1
  cluster.degraded_object_fraction degraded objects / objects, 0..1 (optional; else derived from the ratio)
  cluster.pgs{state=...}           PG count per state string ("active+clean", "peering", ...)
  rss.bytes{daemon=...}            resident memory per daemon ("osd.3", "mon.a")

Events: kind "phase" (label = baseline|detection|degraded|recovery|after; a phase lasts until
the next phase event or the drill's end; label "end" closes without opening another),
"fault.inject" and "fault.heal" (label = what was done).  An event whose data has a "drill"
key belongs to that drill only.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from drills.model import WriteCosts, object_fraction_from_degraded_ratio, predict_latency_series
from drills.report.results import DrillResult, ModelInputs
from drills.thresholds import PHASES, SPECS
from drills.timeline import Event, Histogram, Sample
from drills.workloads.fio import percentile_from_bins

IOPS = "fio.write.iops"
READ_IOPS = "fio.read.iops"
LAT_MEAN = "fio.write.lat_mean_ms"
LAT_P50 = "fio.write.lat_p50_ms"
LAT_P99 = "fio.write.lat_p99_ms"
LAT_HIST = "fio.write.lat_ns"
DEGRADED_RATIO = "cluster.degraded_ratio"
DEGRADED_OBJECTS = "cluster.degraded_object_fraction"
PGS = "cluster.pgs"
RSS = "rss.bytes"
EXPECTED_METRICS = (IOPS, READ_IOPS, LAT_MEAN, LAT_P50, LAT_P99, DEGRADED_RATIO, DEGRADED_OBJECTS, PGS, RSS)

FAULT_KINDS = ("fault.inject", "fault.heal")

Points = list[tuple[float, float | None]]


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t <= self.end


@dataclass(frozen=True)
class PhaseSpan:
    name: str
    start: float
    end: float


def window_of(result: DrillResult | None, events: list[Event], samples: list[Sample]) -> Window:
    """The drill's window; with no results file, the whole run."""
    if result is not None:
        return Window(result.started, result.ended)
    ts = [e.t for e in events] + [s.t for s in samples]
    return Window(min(ts), max(ts)) if ts else Window(0.0, 1.0)


def events_in(events: Iterable[Event], window: Window, drill: str | None = None) -> list[Event]:
    return sorted((e for e in events if window.contains(e.t)
                   and (drill is None or e.data.get("drill") in (None, drill))), key=lambda e: e.t)


def phase_spans(events: list[Event], window: Window) -> list[PhaseSpan]:
    marks = [e for e in events if e.kind == "phase"]
    spans = []
    for i, e in enumerate(marks):
        if e.label == "end":
            continue
        end = marks[i + 1].t if i + 1 < len(marks) else window.end
        spans.append(PhaseSpan(e.label, e.t, end))
    return spans


def faults(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind in FAULT_KINDS]


def series(samples: Iterable[Sample], metric: str, window: Window) -> dict[tuple[tuple[str, str], ...], Points]:
    """metric -> {sorted label items: [(t, value)]} within the window, values None for gaps."""
    out: dict[tuple[tuple[str, str], ...], Points] = {}
    for s in samples:
        if s.metric == metric and window.contains(s.t):
            out.setdefault(tuple(sorted(s.labels.items())), []).append((s.t, s.value))
    for pts in out.values():
        pts.sort(key=lambda p: p[0])
    return out


# How samples of one metric from several label sets (fio jobs, fio clients) combine into one figure
# per second: client IOPS add up; for latency the slowest client is what a user sees.
COMBINE = {IOPS: "sum", READ_IOPS: "sum", LAT_MEAN: "max", LAT_P50: "max", LAT_P99: "max"}


def single(samples: Iterable[Sample], metric: str, window: Window) -> Points:
    """One series for a metric: label sets combined per whole second (COMBINE; default max).

    A second in which every label set has a gap stays a gap.
    """
    by_label = series(samples, metric, window)
    if len(by_label) <= 1:
        return next(iter(by_label.values()), [])
    how = COMBINE.get(metric, "max")
    buckets: dict[int, list[float | None]] = {}
    for pts in by_label.values():
        for t, v in pts:
            buckets.setdefault(int(round(t)), []).append(v)
    out: Points = []
    for sec in sorted(buckets):
        vals = [v for v in buckets[sec] if v is not None]
        out.append((float(sec), None if not vals else sum(vals) if how == "sum" else max(vals)))
    return out


def _values(points: Points, span: PhaseSpan | Window) -> list[float]:
    return [v for t, v in points if v is not None and span.start <= t < span.end]


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def longest_zero_run(points: Points, span: PhaseSpan) -> float | None:
    """Seconds of the longest run of zero samples; a gap (None) ends a run (unknown is not zero)."""
    inside = [(t, v) for t, v in points if span.start <= t < span.end]
    if not inside or all(v is None for _, v in inside):
        return None
    dts = [b[0] - a[0] for a, b in zip(inside, inside[1:])]
    step = statistics.median(dts) if dts else 1.0
    best, run_start, last = 0.0, None, None
    for t, v in inside:
        if v == 0:
            run_start = t if run_start is None else run_start
            last = t
            best = max(best, last - run_start + step)
        else:
            run_start = None
    return best


def phase_p99_from_histograms(histograms: Iterable[Histogram], span: PhaseSpan | Window) -> float | None:
    """p99 (seconds) of every write that completed in the span: one histogram per label set (fio job or
    client), merged over the span; the slowest label set is what a user sees. None without histograms."""
    merged: dict[tuple[tuple[str, str], ...], dict[int, int]] = {}
    for h in histograms:
        if h.metric == LAT_HIST and span.start <= h.t < span.end:
            bins = merged.setdefault(tuple(sorted(h.labels.items())), {})
            for v, n in h.bins.items():
                bins[v] = bins.get(v, 0) + n
    p99s = [p for p in (percentile_from_bins(b, 99.0) for b in merged.values()) if p is not None]
    return max(p99s) / 1e9 if p99s else None


def measure_phases(samples: list[Sample], events: list[Event], window: Window,
                   histograms: list[Histogram] | None = None) -> dict[str, dict[str, Any]]:
    """The measurements that follow from the series alone, per phase, in threshold base units.

    A phase's p99 latency is the p99 of all writes that completed in it, from fio's histograms; without
    them (runs recorded before they were written) the worst second's p99, an extreme value that swings
    far more from run to run (measured: 135 ms to 994 ms for one drill's degraded phase on a healthy
    sandbox) and is never lower than the phase's own p99.
    Event-timed figures (detection_time, time_to_active, time_to_clean, lost_writes, ...)
    come from the drill code, which sees the cluster's own state changes.
    """
    spans = phase_spans(events, window)
    hists = [h for h in histograms or [] if h.metric == LAT_HIST and window.contains(h.t)]
    iops, p50, p99 = single(samples, IOPS, window), single(samples, LAT_P50, window), single(samples, LAT_P99, window)
    degraded = single(samples, DEGRADED_RATIO, window)
    rss = {dict(k).get("daemon", "?"): v for k, v in series(samples, RSS, window).items()}
    base = next((s for s in spans if s.name == "baseline"), None)
    base_iops = _median(_values(iops, base)) if base else None
    base_p99 = _median(_values(p99, base)) if base else None
    if base and hists:
        base_p99 = phase_p99_from_histograms(hists, base)
    base_rss = {d: _median(_values(pts, base)) for d, pts in rss.items()} if base else {}
    out: dict[str, dict[str, Any]] = {}
    for span in spans:
        m: dict[str, Any] = out.setdefault(span.name, {})
        m["iops"] = _median(_values(iops, span))
        p50s, p99s = _values(p50, span), _values(p99, span)
        m["p50_latency"] = None if not p50s else statistics.median(p50s) / 1000.0
        from_hist = phase_p99_from_histograms(hists, span) if hists else None
        m["p99_latency"] = from_hist if from_hist is not None else None if not p99s else max(p99s) / 1000.0
        m["degraded_ratio"] = max(_values(degraded, span), default=None)
        m["rss_peak"] = {d: max(_values(pts, span), default=None) for d, pts in rss.items()}
        if span.name != "baseline":
            m["iops_ratio"] = _ratio(m["iops"], base_iops)
            if hists:
                m["p99_latency_ratio"] = _ratio(m["p99_latency"], base_p99)
            else:
                m["p99_latency_ratio"] = _ratio(None if not p99s else max(p99s), base_p99)
            m["stall_time"] = longest_zero_run(iops, span)
        if span.name == "after":
            m["rss_after_recovery_ratio"] = {d: _ratio(_median(_values(pts, span)), base_rss.get(d))
                                             for d, pts in rss.items()}
    return out


@dataclass(frozen=True)
class ModelComparison:
    available: bool
    reason: str  # why not available, or notes on what was substituted
    small_write_ms: float | None = None
    object_recovery_ms: float | None = None
    small_write_source: str = ""
    latency_metric: str = ""
    span: Window | None = None
    measured: tuple[tuple[float, float | None], ...] = ()
    predicted: tuple[tuple[float, float | None], ...] = ()
    mean_measured_ms: float | None = None
    mean_predicted_ms: float | None = None
    mean_degraded_fraction: float | None = None

    @property
    def error_ratio(self) -> float | None:
        """|measured - predicted| / predicted, over the span (the model_error_ratio measurement)."""
        if self.mean_measured_ms is None or not self.mean_predicted_ms:
            return None
        return abs(self.mean_measured_ms - self.mean_predicted_ms) / self.mean_predicted_ms


def compare_model(samples: list[Sample], events: list[Event], window: Window,
                  inputs: ModelInputs | None) -> ModelComparison:
    """Predicted vs measured mean write latency from the moment the failed domain returns.

    The penalty only exists once a stale copy is back (writes to it force a full-object
    recovery), so the span starts at the "recovery" phase or, without one, the first fault.heal.
    """
    inputs = inputs or ModelInputs()
    spans = phase_spans(events, window)
    rec = next((s for s in spans if s.name == "recovery"), None)
    heal = next((e for e in events if e.kind == "fault.heal"), None)
    start = rec.start if rec else heal.t if heal else None
    if start is None:
        return ModelComparison(False, "no recovery phase and no fault.heal event: the model has nothing to predict")
    span = Window(start, window.end)
    notes = []
    lat_metric = LAT_MEAN
    lat = single(samples, LAT_MEAN, window)
    if not any(v is not None for _, v in lat):
        lat_metric, lat = LAT_P50, single(samples, LAT_P50, window)
        notes.append(f"no {LAT_MEAN} samples; compared against {LAT_P50}")
    w, w_source = inputs.small_write_ms, "measured by the drill"
    if w is None:
        base = next((s for s in spans if s.name == "baseline"), None)
        w = _median(_values(lat, base)) if base else None
        w_source = f"median {lat_metric} in baseline"
    if w is None:
        return ModelComparison(False, "small-write latency w not measured and no baseline latency samples")
    if inputs.object_recovery_ms is None:
        return ModelComparison(False, "object recovery latency r not measured (model.object_recovery_ms)",
                               small_write_ms=w, small_write_source=w_source)
    costs = WriteCosts(w, inputs.object_recovery_ms)
    fractions = single(samples, DEGRADED_OBJECTS, span)
    if not any(v is not None for _, v in fractions):
        ratio_pts = single(samples, DEGRADED_RATIO, span)
        fractions = [(t, None if v is None else object_fraction_from_degraded_ratio(max(0.0, v), inputs.pool_size))
                     for t, v in ratio_pts]
        notes.append(f"degraded object fraction = {DEGRADED_RATIO} x pool size {inputs.pool_size}")
    if not any(v is not None for _, v in fractions):
        return ModelComparison(False, "no degraded-fraction samples after the fault healed",
                               small_write_ms=w, object_recovery_ms=costs.object_recovery_ms,
                               small_write_source=w_source)
    predicted_values = predict_latency_series(costs, [v for _, v in fractions])
    predicted = tuple((t, p) for (t, _), p in zip(fractions, predicted_values))
    measured = tuple((t, v) for t, v in lat if span.contains(t))
    meas_vals = [v for _, v in measured if v is not None]
    pred_vals = [v for _, v in predicted if v is not None]
    frac_vals = [v for _, v in fractions if v is not None]
    return ModelComparison(
        True, "; ".join(notes), w, costs.object_recovery_ms, w_source, lat_metric, span, measured, predicted,
        statistics.fmean(meas_vals) if meas_vals else None,
        statistics.fmean(pred_vals) if pred_vals else None,
        statistics.fmean(frac_vals) if frac_vals else None,
    )


# Figures followed across runs (report index trend lines, .prom file): (phase, threshold key).
KEY_FIGURES = (
    ("detection", "detection_time_max"),
    ("degraded", "iops_ratio_min"),
    ("recovery", "iops_ratio_min"),
    ("recovery", "p99_latency_max"),
    ("recovery", "time_to_clean_max"),
    ("recovery", "rss_peak_max"),
    ("after", "rss_after_recovery_ratio_max"),
    ("after", "lost_writes_max"),
)


def key_figures(result: DrillResult) -> dict[str, tuple[float | None, str]]:
    """'phase.measurement' -> (measured value, unit) for the KEY_FIGURES this drill checked."""
    by_key = {(c.phase, c.name): c for c in result.checks}
    out: dict[str, tuple[float | None, str]] = {}
    for phase, key in KEY_FIGURES:
        c = by_key.get((phase, key))
        if c is not None:
            out[f"{phase}.{SPECS[key].measurement}"] = (c.measured, c.unit)
    return out


def phase_order(name: str) -> int:
    return PHASES.index(name) if name in PHASES else len(PHASES)
