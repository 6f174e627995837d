"""Render a run directory into one self-contained HTML page, and an index of runs.

Everything is inline: CSS in a <style> element, charts as inline SVG made in
Python (drills/report/svg.py).  No script, no font, no image is fetched, so the
file can be mailed, archived as a CI artifact, or opened on an air-gapped host.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jinja2
from markupsafe import Markup

from drills.model import ARTICLE_COSTS, Topology, failure_domain_table
from drills.report import analysis as an
from drills.report.oom import build_oom_view
from drills.report.record import DrillRecord, build_record, read_run_config
from drills.report.results import DrillResult, ResultsError, read_drill_results
from drills.report.soak import SoakView, soak_view
from drills.report.svg import Band, HLine, Line, Marker, format_number, line_chart
from drills.thresholds import DURATION, SHIPPED_DEFAULTS, SIZE, SPECS, Check, format_value
from drills.timeline import Event, Sample, read_events, read_meta, read_series

TEMPLATES = Path(__file__).with_name("templates")

PHASE_COLORS = {
    "baseline": "#eef3ee",
    "detection": "#fde2e1",
    "degraded": "#fdf0d5",
    "recovery": "#e1ecfb",
    "after": "#e8f5e9",
}
FAULT_COLORS = {"fault.inject": "#c62828", "fault.heal": "#2e7d32"}


def _env() -> jinja2.Environment:
    # finalize: a value that is None prints as a dash, never as Python's "None".
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=lambda v: "—" if v is None else v)
    env.filters["clock"] = _clock
    env.filters["duration"] = _duration
    env.filters["fmt"] = format_value
    env.filters["num"] = lambda v, digits=3: "—" if v is None else f"{v:.{digits}g}"
    return env


def _clock(t: float | None) -> str:
    if t is None:
        return "—"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    """A length of time for people: '48 s', '6 min 40 s', '2 h 05 min'."""
    if seconds is None:
        return "—"
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    whole = int(round(s))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


# run.json keys holding a Unix time: shown as a UTC date.
TIME_KEYS = ("started", "finished", "ended", "generated")
SHIPPED_THRESHOLDS_TEXT = "shipped defaults (drills/default_thresholds.toml)"


@dataclass(frozen=True)
class RunTimes:
    """When a run started and finished, as text, for the page's first line."""

    started: str
    finished: str
    took: str


def _run_times(meta: dict[str, Any], results: list[DrillResult]) -> RunTimes:
    """From run.json, else from the drills' own windows; a time nobody recorded says so."""
    started = meta.get("started") if _is_time(meta.get("started")) else min((r.started for r in results), default=None)
    finished = meta.get("finished") if _is_time(meta.get("finished")) else max((r.ended for r in results), default=None)
    took = _duration(finished - started) if started is not None and finished is not None else "—"
    return RunTimes(_clock(started) if started is not None else "not recorded",
                    _clock(finished) if finished is not None else "not recorded (the run did not finish)", took)


def _is_time(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- one run ---------------------------------------------------------------------


@dataclass
class DrillView:
    """What the template needs for one drill section."""

    name: str
    verdict: str
    window: an.Window
    result: DrillResult | None
    failures: list[str]
    checks: list[Check]
    charts: list[Markup]
    model: an.ModelComparison | None
    model_chart: Markup | None
    events: list[tuple[str, str, str]]  # (t+ clock, kind, label)
    missing_metrics: list[str]
    measurements: list[tuple[str, str, str]] = field(default_factory=list)  # unchecked extras
    record: DrillRecord | None = None  # the drill record that opens the section (drills/report/record.py)
    soak: SoakView | None = None  # the soak's seed, schedule and per-fault figures (drills/report/soak.py)
    oom: Any = None  # the chain-reaction drill's rounds side by side (drills/report/oom.py), else None


def render_run(run_dir: str | Path) -> Path:
    """Write <run_dir>/index.html and return its path."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    events = read_events(run_dir)
    samples = read_series(run_dir)
    results_error = ""
    try:
        results = read_drill_results(run_dir)
    except ResultsError as e:
        results, results_error = [], str(e)
    drills = [_drill_view(r.drill, r, events, samples) for r in results]
    config = read_run_config(run_dir)
    for view in drills:
        view.record = build_record(view.result, events, samples, meta, config) if view.result else None
        view.soak = soak_view(run_dir, view.name, view.window.start)
    if not drills:  # no results file: still show what the timeline holds
        drills = [_drill_view(meta.get("run_id", run_dir.name), None, events, samples)]
    topology = _topology(meta)
    html = _env().get_template("run.html.j2").render(
        title=f"ceph-drills run {meta.get('run_id', run_dir.name)}",
        run_id=meta.get("run_id", run_dir.name),
        meta=meta,
        environment=_flatten(meta),
        times=_run_times(meta, results),
        verdict=_run_verdict(run_dir),
        verdict_reasons=_verdict_reasons(run_dir),
        drills=drills,
        results_error=results_error,
        topology=topology,
        topology_table=_topology_rows(topology),
        domain_table=failure_domain_table(pool_size=topology.pool_size if topology else 3),
        article_costs=ARTICLE_COSTS,
        phase_colors=PHASE_COLORS,
        generated=dt.datetime.now(dt.timezone.utc).timestamp(),
    )
    out = run_dir / "index.html"
    _atomic_write(out, html)
    return out


def _verdict_reasons(run_dir: Path) -> list[str]:
    from drills.verdict import run_verdict

    return list(run_verdict(run_dir).reasons)


def _run_verdict(run_dir: Path) -> str:
    """The run's verdict, decided once (drills/verdict.py) for the page, summary.json, .prom and exit code."""
    from drills.verdict import run_verdict

    return run_verdict(run_dir).outcome


def _drill_view(name: str, result: DrillResult | None, events: list[Event], samples: list[Sample]) -> DrillView:
    window = an.window_of(result, events, samples)
    evs = an.events_in(events, window, result.drill if result else None)
    spans = an.phase_spans(evs, window)
    bands = [Band(s.start - window.start, s.end - window.start, s.name, PHASE_COLORS.get(s.name, "#f0f0f0"))
             for s in spans]
    markers = [Marker(e.t - window.start, e.label, FAULT_COLORS[e.kind]) for e in an.faults(evs)]
    checks = sorted(result.checks, key=lambda c: (an.phase_order(c.phase), c.name)) if result else []

    def rel(points: an.Points, scale: float = 1.0) -> an.Points:
        return [(t - window.start, None if v is None else v * scale) for t, v in points]

    def chart(lines: list[Line], title: str, y_label: str, **kw: Any) -> Markup:
        return Markup(line_chart(lines, title=title, y_label=y_label, bands=bands, markers=markers,
                                 x_range=(0.0, window.end - window.start), **kw))

    missing = [m for m in an.EXPECTED_METRICS if not any(s.metric == m for s in samples)
               and m not in (an.READ_IOPS, an.DEGRADED_OBJECTS, an.LAT_MEAN)]
    charts: list[Markup] = []

    def per_labels(metric: str, name: str, scale: float = 1.0, color: str = "") -> list[Line]:
        # One line per fio job/client; a single label set gets the plain name.
        sets = sorted(an.series(samples, metric, window).items())
        return [Line(name if len(sets) == 1 else f"{name} {' '.join(f'{k}={v}' for k, v in key)}",
                     rel(pts, scale), color if len(sets) == 1 else "") for key, pts in sets]

    iops_lines = per_labels(an.IOPS, "write IOPS", color="#1f77b4") + per_labels(an.READ_IOPS, "read IOPS",
                                                                                 color="#9467bd")
    charts.append(chart(iops_lines, "Client IOPS", "operations / s"))
    lat_lines = (per_labels(an.LAT_MEAN, "mean", color="#1f77b4") + per_labels(an.LAT_P50, "p50", color="#2ca02c")
                 + per_labels(an.LAT_P99, "p99", color="#d62728"))
    charts.append(chart(lat_lines, "Write latency (log scale)", "ms", y_log=True, y_format=_ms_tick,
                        hlines=_limit_lines(checks, "p99_latency_max", 1000.0, "p99 limit", spans, window.start)))
    deg_lines = [Line("degraded copies %", rel(an.single(samples, an.DEGRADED_RATIO, window), 100.0), "#ff7f0e")]
    deg_obj = an.single(samples, an.DEGRADED_OBJECTS, window)
    if deg_obj:
        deg_lines.append(Line("degraded objects %", rel(deg_obj, 100.0), "#8c564b"))
    charts.append(chart(deg_lines, "Degraded", "% of cluster", y_range=(0.0, 100.0)))
    pg_lines = [Line(dict(k).get("state", "?"), rel(v)) for k, v in sorted(an.series(samples, an.PGS, window).items())]
    charts.append(chart(pg_lines, "Placement groups by state", "PGs"))
    rss_lines = [Line(dict(k).get("daemon", "?"), rel(v, 1 / 2**20))
                 for k, v in sorted(an.series(samples, an.RSS, window).items())]
    charts.append(chart(rss_lines, "Resident memory per daemon", "MiB",
                        hlines=_limit_lines(checks, "rss_peak_max", 1 / 2**20, "RSS limit", spans, window.start)))

    model = an.compare_model(samples, evs, window, result.model if result else None) if result or spans else None
    model_chart = None
    if model is not None and model.available:
        model_chart = chart([Line(f"measured {model.latency_metric}", rel(list(model.measured)), "#1f77b4"),
                             Line("model: w + f·r", rel(list(model.predicted)), "#d62728", dashed=True)],
                            "Write latency: model vs measured (log scale)", "ms", y_log=True, y_format=_ms_tick)
    checked = {(c.phase, SPECS[c.name].measurement) for c in checks if c.name in SPECS}
    extras = []
    if result:
        for phase in sorted(result.measurements, key=an.phase_order):
            for key, value in sorted(result.measurements[phase].items()):
                if (phase, key) not in checked:
                    extras.append((phase, key, _measurement_text(key, value)))
    oom = None
    if any(e.kind == "oom.power_on" for e in evs):
        oom = build_oom_view(evs, [s for s in samples if window.start <= s.t <= window.end])
    return DrillView(
        oom=oom,
        name=name,
        verdict=result.verdict if result else "unchecked",
        window=window,
        result=result,
        failures=[c.message() for c in checks if c.fails_drill],
        checks=checks,
        charts=charts,
        model=model,
        model_chart=model_chart,
        events=[(_rel_clock(e.t - window.start), e.kind, e.label) for e in evs],
        missing_metrics=missing,
        measurements=extras,
    )


def _limit_lines(checks: list[Check], key: str, scale: float, label: str,
                 spans: list[an.PhaseSpan], origin: float) -> list[HLine]:
    """One dashed line per phase limit, drawn across that phase only (limits differ by phase)."""
    lines = []
    for c in checks:
        span = next((s for s in spans if s.name == c.phase), None)
        if c.name == key and span is not None:
            limit = format_value(c.limit, SPECS[key].unit)
            lines.append(HLine(c.limit * scale, f"{label} {limit} ({c.phase})",
                               x_span=(span.start - origin, span.end - origin), legend=f"{label} (per phase)",
                               tag=f"{'≤' if c.bound == 'max' else '≥'} {limit}"))
    return lines


def _ms_tick(v: float) -> str:
    return f"{v / 1000:g} s" if v >= 1000 else f"{v:g}"


def _rel_clock(seconds: float) -> str:
    from drills.report.svg import format_clock
    return "T+" + format_clock(seconds)


def _measurement_text(key: str, value: Any) -> str:
    unit = next((s.unit for s in SPECS.values() if s.measurement == key), "")
    if isinstance(value, dict):
        return ", ".join(f"{k} {_measurement_text(key, v)}" for k, v in sorted(value.items()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_value(float(value), unit) if unit else format_number(float(value))
    return "—" if value is None else str(value)


def _flatten(meta: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """run.json as (dotted key, text) rows for people; the topology gets its own table.

    Unix times become UTC dates (with the run's duration after `finished`), the thresholds file is a
    path or "shipped defaults", and nothing shows Python's None or True.
    """
    rows: list[tuple[str, str]] = []
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if key == "topology":
            continue
        if key == "thresholds" and not isinstance(v, (dict, list)):
            rows.append((key, str(v) if v and v != SHIPPED_DEFAULTS else SHIPPED_THRESHOLDS_TEXT))
        elif isinstance(v, dict) and depth < 3:
            rows.extend(_flatten(v, key + ".", depth + 1))
        elif isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
            rows.append((key, ", ".join(_text(x) for x in v) or "none"))
        elif isinstance(v, (dict, list)):
            rows.append((key, json.dumps(v, default=str)[:300]))
        elif k in TIME_KEYS and _is_time(v):
            rows.append((key, _clock(float(v))))
            if k == "finished" and _is_time(meta.get("started")):
                rows.append((f"{prefix}duration", _duration(float(v) - float(meta["started"]))))
        else:
            rows.append((key, _text(v)))
    return rows


def _text(v: Any) -> str:
    if v is None:
        return "not recorded"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _topology(meta: dict[str, Any]) -> Topology | None:
    """run.json "topology": {"racks": [{"name", "hosts": [{"name", "daemons": ["osd.0", ...]}]}], "pool_size"}."""
    topo = meta.get("topology")
    if not isinstance(topo, dict) or not isinstance(topo.get("racks"), list):
        return None
    domains: dict[str, float] = {}
    for rack in topo["racks"]:
        osds = 0
        for host in rack.get("hosts", []):
            osds += len(_host_osds(host))
        domains[str(rack.get("name", f"rack{len(domains)}"))] = float(osds)
    pool_size = int(topo.get("pool_size", meta.get("pool", {}).get("size", 3) if isinstance(meta.get("pool"), dict) else 3))
    if sum(1 for w in domains.values() if w > 0) < pool_size:
        return None  # fewer racks than copies: CRUSH cannot place by rack, the rack model does not apply
    return Topology("rack", domains, pool_size)


def _host_osds(host: dict[str, Any]) -> list[str]:
    if "osds" in host:
        return [f"osd.{o}" if not str(o).startswith("osd.") else str(o) for o in host["osds"]]
    return [d for d in host.get("daemons", []) if str(d).startswith("osd.")]


def _topology_rows(topology: Topology | None) -> list[tuple[str, float, float, float, float]]:
    """Per rack: (name, OSDs, degraded fraction if it is lost, mean write ms, slowdown) with the article's costs."""
    if topology is None:
        return []
    return [(name, topology.domains[name], f, ms, sd) for name, f, ms, sd in topology.table(ARTICLE_COSTS)]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- many runs -------------------------------------------------------------------


@dataclass
class RunRow:
    run_id: str
    started: float | None
    verdict: str
    drills: list[tuple[str, str]]  # (drill, verdict)
    failed_checks: int
    link: str
    error: str = ""
    figures: dict[str, dict[str, tuple[float | None, str]]] = field(default_factory=dict)  # drill -> figures
    finished: float | None = None  # unix seconds; with `started`, the run's duration


def _run_dirs(reports_dir: Path) -> list[Path]:
    return sorted(p for p in reports_dir.iterdir() if p.is_dir()
                  and any((p / n).exists() for n in ("run.json", "events.jsonl", "drills")))


def render_index(reports_dir: str | Path, render_missing: bool = True) -> Path:
    """Write <reports_dir>/index.html: every run with pass/fail, and trends of key figures across runs."""
    reports_dir = Path(reports_dir)
    rows: list[RunRow] = []
    for run_dir in _run_dirs(reports_dir):
        meta = read_meta(run_dir)
        try:
            results = read_drill_results(run_dir)
            error = ""
        except ResultsError as e:
            results, error = [], str(e)
        if render_missing and not (run_dir / "index.html").exists():
            render_run(run_dir)
        started = meta.get("started")
        if not isinstance(started, (int, float)):
            started = min((r.started for r in results), default=None)
        rows.append(RunRow(
            run_id=str(meta.get("run_id", run_dir.name)),
            started=started,
            verdict=_run_verdict(run_dir),
            drills=[(r.drill, r.verdict) for r in results],
            failed_checks=sum(len(r.failed_checks) for r in results),
            link=f"{run_dir.name}/index.html",
            error=error,
            figures={r.drill: an.key_figures(r) for r in results},
            finished=meta.get("finished") if _is_time(meta.get("finished")) else max((r.ended for r in results), default=None),
        ))
    rows.sort(key=lambda r: (r.started is None, r.started or 0.0, r.run_id))
    html = _env().get_template("index.html.j2").render(
        title="ceph-drills runs", rows=list(reversed(rows)), trends=_trends(rows),
        generated=dt.datetime.now(dt.timezone.utc).timestamp(), phase_colors=PHASE_COLORS,
    )
    out = reports_dir / "index.html"
    _atomic_write(out, html)
    return out


def _trends(rows: list[RunRow]) -> list[tuple[str, list[Markup]]]:
    """Per drill, one small chart per key figure, x = run number (oldest first)."""
    drills = sorted({d for r in rows for d in r.figures})
    out = []
    for drill in drills:
        figure_names = sorted({f for r in rows for f in r.figures.get(drill, {})},
                              key=lambda f: an.phase_order(f.split(".", 1)[0]))
        charts = []
        for fig in figure_names:
            points: an.Points = []
            unit = ""
            for i, r in enumerate(rows, start=1):
                if fig in r.figures.get(drill, {}):
                    value, unit = r.figures[drill][fig]
                    points.append((float(i), value))
            if not points:
                continue
            scale, label = _unit_scale(unit)
            labels = {float(i): r.run_id for i, r in enumerate(rows, start=1)}
            charts.append(Markup(line_chart(
                [Line(fig, [(x, None if v is None else v * scale) for x, v in points], "#1f77b4")],
                title=fig, y_label=label, x_is_time=False, width=470, height=170,
                x_range=(0.5, len(rows) + 0.5), x_format=_run_label(labels))))
        out.append((drill, charts))
    return out


def _unit_scale(unit: str) -> tuple[float, str]:
    if unit == DURATION:
        return 1.0, "seconds"
    if unit == SIZE:
        return 1 / 2**20, "MiB"
    return 1.0, unit


def _run_label(labels: dict[float, str]) -> Callable[[float], str]:
    def fmt(x: float) -> str:
        return f"#{int(x)}" if float(x).is_integer() and x in labels else ""
    return fmt
