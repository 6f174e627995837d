"""reports/index.html: every run, and per drill each key figure across runs by date.

Read from the history database (drills/history/store.py), which is first brought up to date
from the run directories.  Per target and drill, one small chart per key figure:

  * x = when the run started (date), y = the figure in its unit
  * a point per run: filled = the drill passed, red = failed, black ring = error/aborted,
    orange ring = a regression check on this figure failed (drills/history/regression.py)
  * the baseline band: median +- the allowed band of the last passing runs on the newest Ceph
    version (the band the next run is compared with), median dashed
  * a vertical line where the Ceph version changed

A target filter (a <select>; the page still shows everything without JavaScript) narrows the
page to one cluster.  One self-contained file: inline CSS and SVG, a few lines of inline script.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import statistics
from contextlib import closing
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from drills.history.regression import DEFAULTS, RegressionRule, limit_of, rules_for, Baseline
from drills.history.store import HistoryError, connect, history_path, import_runs, unit_of
from drills.report.svg import linear_ticks
from drills.thresholds import DURATION, RATIO, SIZE, SPECS, format_value

# (phase, measurement, title): the figures a staging user follows night to night.
KEY_TRENDS: tuple[tuple[str, str, str], ...] = (
    ("baseline", "iops", "baseline IOPS"),
    ("detection", "detection_time", "detection time"),
    ("detection", "stall_time", "longest stall (detection)"),
    ("recovery", "stall_time", "longest stall (recovery)"),
    ("degraded", "time_to_active", "time to active"),
    ("recovery", "time_to_active", "time to active after heal"),
    ("recovery", "time_to_clean", "time to clean"),
    ("degraded", "iops_ratio", "degraded IOPS / baseline"),
    ("recovery", "iops_ratio", "recovery IOPS / baseline"),
    ("degraded", "p99_latency", "degraded p99"),
    ("recovery", "p99_latency", "recovery p99"),
    ("recovery", "rss_peak", "RSS peak (worst daemon)"),
    ("after", "rss_after_recovery_ratio", "RSS after / before (worst daemon)"),
    ("recovery", "restore_rss_peak", "restore peak RSS"),
    ("recovery", "restore_throughput_ratio", "restore rate / raw RBD rate"),
    ("recovery", "restart_time", "controlled restart time"),
)
VERDICT_COLOR = {"passed": "#1f77b4", "failed": "#b00020", "error": "#202124", "skipped": "#9e9e9e",
                 "unchecked": "#9e9e9e"}
REGRESSION_COLOR = "#ef6c00"
BAND_COLOR = "#c8e6c9"


@dataclass(frozen=True)
class TrendPoint:
    run_id: str
    t: float
    value: float | None
    verdict: str  # the drill's verdict in that run
    regression: bool  # a regression check on this figure failed
    ceph_version: str
    link: str


@dataclass(frozen=True)
class Trend:
    phase: str
    metric: str
    title: str
    unit: str
    points: tuple[TrendPoint, ...]
    baseline: Baseline | None
    band: tuple[float, float] | None


@dataclass
class RunRow:
    run_id: str
    started: float | None
    target: str
    target_label: str
    ceph_version: str
    suite: str
    verdict: str
    drills: list[tuple[str, str]]
    failed_checks: int
    regressions: int
    link: str


@dataclass
class TargetSection:
    key: str
    label: str
    drills: dict[str, list[Trend]] = field(default_factory=dict)


def render_trends_index(reports_dir: str | Path, rules: list[RegressionRule] | None = None,
                        render_missing: bool = True) -> Path:
    """Write <reports_dir>/index.html (and bring reports/history.sqlite up to date first)."""
    reports_dir = Path(reports_dir)
    report = import_runs(reports_dir)
    if render_missing:
        from drills.report.render import render_run

        for run_id in report.recorded:
            d = reports_dir / run_id
            if d.is_dir() and not (d / "index.html").exists():
                try:
                    render_run(d)
                except Exception:  # noqa: BLE001 - a run page that cannot render must not hide the index
                    pass
    with closing(connect(history_path(reports_dir))) as conn:
        rows, sections = _collect(conn, reports_dir, rules or [])
    html = _page(rows, sections, report.skipped)
    out = reports_dir / "index.html"
    tmp = out.with_name(".index.html.tmp")
    tmp.write_text(html)
    os.replace(tmp, out)
    return out


def _target_key(fsid: str, path: str) -> str:
    return fsid or path or "unknown"


def _collect(conn, reports_dir: Path, rules: list[RegressionRule]) -> tuple[list[RunRow], list[TargetSection]]:
    runs = conn.execute("SELECT * FROM runs ORDER BY started, run_id").fetchall()
    drills = conn.execute("SELECT run_id, drill, verdict FROM drills ORDER BY started").fetchall()
    by_run: dict[str, list[tuple[str, str]]] = {}
    for d in drills:
        by_run.setdefault(d["run_id"], []).append((d["drill"], d["verdict"]))
    failed = dict(conn.execute("SELECT run_id, count(*) FROM checks WHERE passed = 0 AND severity != 'warn' "
                               "GROUP BY run_id").fetchall())
    regressed = {(r[0], r[1], r[2], r[3]) for r in conn.execute(
        "SELECT run_id, drill, phase, name FROM checks WHERE source = 'regression' AND passed = 0 "
        "AND measured IS NOT NULL").fetchall()}
    reg_count: dict[str, int] = {}
    for run_id, *_ in regressed:
        reg_count[run_id] = reg_count.get(run_id, 0) + 1
    labels: dict[str, str] = {}
    rows = []
    for r in runs:
        key = _target_key(r["fsid"], r["target_path"])
        labels.setdefault(key, f"{r['cluster'] or 'cluster'} ({(r['fsid'] or r['target_path'] or '?')[:8]})")
        link = f"{r['run_id']}/index.html" if (reports_dir / r["run_id"]).is_dir() else ""
        rows.append(RunRow(r["run_id"], r["started"], key, labels[key], r["ceph_version"] or "", r["suite"] or "",
                           r["verdict"] or "", by_run.get(r["run_id"], []), failed.get(r["run_id"], 0),
                           reg_count.get(r["run_id"], 0), link))
    meta = {r["run_id"]: r for r in runs}
    sections: dict[str, TargetSection] = {}
    for key, label in labels.items():
        sections[key] = TargetSection(key, label)
    figures = conn.execute(
        """SELECT f.run_id, f.drill, f.phase, f.metric, MAX(f.value) AS hi, MIN(f.value) AS lo, d.verdict
           FROM figures f JOIN drills d ON d.run_id = f.run_id AND d.drill = f.drill
           GROUP BY f.run_id, f.drill, f.phase, f.metric""").fetchall()
    wanted = {(p, m): title for p, m, title in KEY_TRENDS}
    series: dict[tuple[str, str, str, str], list[TrendPoint]] = {}
    for f in figures:
        if (f["phase"], f["metric"]) not in wanted:
            continue
        r = meta[f["run_id"]]
        key = _target_key(r["fsid"], r["target_path"])
        lower_worse = _worse(f["metric"]) == "lower"
        value = f["lo"] if lower_worse else f["hi"]
        reg = any((f["run_id"], f["drill"], f["phase"], f"{f['metric']}_regression_{b}") in regressed for b in ("max", "min"))
        link = f"{f['run_id']}/index.html" if (reports_dir / f["run_id"]).is_dir() else ""
        series.setdefault((key, f["drill"], f["phase"], f["metric"]), []).append(TrendPoint(
            f["run_id"], r["started"] or 0.0, value, f["verdict"], reg, r["ceph_version"] or "", link))
    order = {pm: i for i, pm in enumerate(wanted)}
    for (key, drill, phase, metric), pts in sorted(series.items(), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2:]])):
        pts.sort(key=lambda p: (p.t, p.run_id))
        rule = _rule(rules, drill, phase, metric)
        base = _baseline(pts, rule)
        band = None if base is None else _band(rule, base)
        sections[key].drills.setdefault(drill, []).append(Trend(
            phase, metric, wanted[(phase, metric)], unit_of(metric) or "", tuple(pts), base, band))
    return list(reversed(rows)), [s for s in sections.values() if s.drills or True]


def _worse(metric: str) -> str:
    bounds = {s.bound for s in SPECS.values() if s.measurement == metric}
    return "lower" if bounds == {"min"} else "higher"


def _rule(rules: list[RegressionRule], drill: str, phase: str, metric: str) -> RegressionRule:
    for r in rules_for(rules, drill):
        if r.phase == phase and r.metric == metric:
            return r
    return RegressionRule(drill, phase, metric, float(DEFAULTS["tolerance"]), _worse(metric), str(DEFAULTS["severity"]),
                          int(DEFAULTS["window"]), int(DEFAULTS["min_runs"]), float(DEFAULTS["spread_factor"]))


def _baseline(pts: list[TrendPoint], rule: RegressionRule) -> Baseline | None:
    """The baseline the next run will be compared with: last passing runs on the newest Ceph version."""
    if not pts:
        return None
    newest = pts[-1].ceph_version
    usable = [p for p in reversed(pts) if p.ceph_version == newest and p.verdict == "passed" and p.value is not None]
    usable = usable[: rule.window]
    if len(usable) < rule.min_runs:
        return None
    values = [float(p.value) for p in usable if p.value is not None]
    med = statistics.median(values)
    return Baseline(tuple(p.run_id for p in usable), tuple(values), med, statistics.median(abs(v - med) for v in values))


def _band(rule: RegressionRule, base: Baseline) -> tuple[float, float]:
    limit = limit_of(rule, base)
    allowed = abs(limit - base.median)
    return max(0.0, base.median - allowed), base.median + allowed


# --- drawing -----------------------------------------------------------------------


def _scale(unit: str, values: list[float]) -> tuple[float, str]:
    if unit == DURATION:
        return (1000.0, "ms") if values and max(values) < 1 else (1.0, "s")
    if unit == SIZE:
        return 1 / 2**20, "MiB"
    if unit == RATIO:
        return 1.0, "ratio"
    return 1.0, unit or ""


def _date(t: float, with_time: bool = False) -> str:
    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return d.strftime("%Y-%m-%d %H:%M UTC") if with_time else d.strftime("%m-%d")


def trend_chart(tr: Trend, width: int = 470, height: int = 190) -> str:
    """One trend as inline SVG."""
    pts = list(tr.points)
    raw = [p.value for p in pts if p.value is not None]
    extra = list(tr.band) if tr.band else []
    k, unit_label = _scale(tr.unit, raw + extra)
    left, right, top, bottom = 56, 12, 34, 26
    pw, ph = width - left - right, height - top - bottom
    ts = [p.t for p in pts]
    x0, x1 = min(ts), max(ts)
    pad = max((x1 - x0) * 0.05, 3600.0)
    x0, x1 = x0 - pad, x1 + pad
    ys = [v * k for v in raw + extra]
    y0 = min(0.0, min(ys)) if ys else 0.0
    y1 = max(ys) * 1.12 if ys and max(ys) > 0 else 1.0

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    title = f"{tr.title} — {tr.phase}.{tr.metric}"
    out = [f'<svg class="chart trend" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(title)}">',
           f'<text x="{left}" y="14" class="chart-title">{escape(tr.title)}</text>',
           f'<text x="{left}" y="27" class="axis-label">{escape(tr.phase)}.{escape(tr.metric)}'
           f'{" · " + escape(unit_label) if unit_label else ""}</text>']
    if tr.band and tr.baseline:
        b0, b1 = sy(tr.band[1] * k), sy(tr.band[0] * k)
        first = min(p.t for p in pts if p.run_id in tr.baseline.run_ids)
        bx = sx(first)
        tip = (f"baseline: median {format_value(tr.baseline.median, tr.unit)}, allowed "
               f"{format_value(tr.band[0], tr.unit)}..{format_value(tr.band[1], tr.unit)}, runs {', '.join(tr.baseline.run_ids)}")
        out.append(f'<rect x="{bx:.1f}" y="{b0:.1f}" width="{left + pw - bx:.1f}" height="{max(1.0, b1 - b0):.1f}" '
                   f'fill="{BAND_COLOR}" opacity="0.7" class="baseline-band"><title>{escape(tip)}</title></rect>')
        my = sy(tr.baseline.median * k)
        out.append(f'<line x1="{bx:.1f}" y1="{my:.1f}" x2="{left + pw}" y2="{my:.1f}" stroke="#2e7d32" '
                   f'stroke-dasharray="5 3" stroke-width="1"/>')
    for t in linear_ticks(y0, y1, 4):
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" class="tick" text-anchor="end">{t:g}</text>')
    day = 86400.0
    step = max(day, math.ceil((x1 - x0) / day / 6) * day)
    tick = math.ceil(x0 / day) * day
    while tick <= x1:
        out.append(f'<text x="{sx(tick):.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_date(tick)}</text>')
        tick += step
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    # Ceph version changes.
    for prev, cur in zip(pts, pts[1:]):
        if prev.ceph_version != cur.ceph_version:
            x = sx((prev.t + cur.t) / 2)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#6a1b9a" '
                       f'stroke-dasharray="3 2" class="version-change"><title>Ceph {escape(prev.ceph_version)} -&gt; '
                       f'{escape(cur.ceph_version)}: a new baseline starts</title></line>')
            out.append(f'<text x="{x + 3:.1f}" y="{top + 11}" class="marker-label" fill="#6a1b9a">'
                       f'Ceph {escape(cur.ceph_version.split()[0] if cur.ceph_version else "?")}</text>')
    # The line through measured points (a run that did not measure it is a gap).
    seg: list[str] = []
    for p in pts:
        if p.value is None:
            if len(seg) > 1:
                out.append(f'<path d="M{" L".join(seg)}" fill="none" stroke="#90a4ae" stroke-width="1.3"/>')
            seg = []
            continue
        seg.append(f"{sx(p.t):.1f} {sy(p.value * k):.1f}")
    if len(seg) > 1:
        out.append(f'<path d="M{" L".join(seg)}" fill="none" stroke="#90a4ae" stroke-width="1.3"/>')
    for p in pts:
        x = sx(p.t)
        tip = (f"{p.run_id} ({_date(p.t, True)}, Ceph {p.ceph_version or '?'}): "
               f"{format_value(p.value, tr.unit) if p.value is not None else 'not measured'}; drill {p.verdict}"
               + ("; REGRESSION" if p.regression else ""))
        cls = f"point {p.verdict}" + (" regression" if p.regression else "")
        if p.value is None:
            shape = (f'<text x="{x:.1f}" y="{top + ph - 4}" text-anchor="middle" class="tick" '
                     f'fill="{VERDICT_COLOR.get(p.verdict, "#9e9e9e")}">×</text>')
        else:
            y = sy(p.value * k)
            color = VERDICT_COLOR.get(p.verdict, "#9e9e9e")
            if p.verdict == "error":
                shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#fff" stroke="{color}" stroke-width="2"/>'
            else:
                shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>'
            if p.regression:
                shape += (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="{REGRESSION_COLOR}" '
                          f'stroke-width="2"/>')
        body = f'<g class="{cls}"><title>{escape(tip)}</title>{shape}</g>'
        out.append(f'<a href="{escape(p.link)}">{body}</a>' if p.link else body)
    out.append("</svg>")
    return "".join(out)


CSS_EXTRA = """
.filter { margin: 8px 0 14px; } .filter select { font: inherit; padding: 2px 6px; }
.legend-trend span { display: inline-block; margin-right: 14px; font-size: 12px; color: #5f6368; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 4px; vertical-align: middle; }
.badge.warned { background: #b26a00; }
td.reg { color: #ef6c00; font-weight: bold; }
"""
SCRIPT = """
document.getElementById('target-filter').addEventListener('change', function (e) {
  var v = e.target.value;
  document.querySelectorAll('[data-target]').forEach(function (el) {
    el.hidden = !!v && el.getAttribute('data-target') !== v;
  });
});
"""


def _page(rows: list[RunRow], sections: list[TargetSection], skipped: tuple[str, ...]) -> str:
    css = (Path(__file__).parent / "templates" / "style.css").read_text() + CSS_EXTRA
    targets = sorted({(r.target, r.target_label) for r in rows})
    h: list[str] = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ceph-drills runs</title><style>{css}</style></head><body><main>",
        "<h1>ceph-drills runs</h1>",
        f'<p class="sub">{len(rows)} run(s), newest first; figures from reports/history.sqlite, rebuilt from the '
        f"run directories.</p>",
        '<div class="filter"><label>Target: <select id="target-filter"><option value="">all targets</option>',
        *[f'<option value="{escape(k)}">{escape(lbl)}</option>' for k, lbl in targets],
        "</select></label></div>",
    ]
    for line in skipped:
        h.append(f'<p class="note">not in the history: {escape(line)}</p>')
    h.append('<table><thead><tr><th>Run</th><th>Started</th><th>Result</th><th>Target</th><th>Ceph</th><th>Suite</th>'
             '<th>Drills</th><th class="num">Failed checks</th><th class="num">Regressions</th></tr></thead>')
    for r in rows:
        cls = "pass" if r.verdict == "passed" else "fail"
        started = "-" if r.started is None else _date(r.started, True)
        link = f'<a href="{escape(r.link)}">{escape(r.run_id)}</a>' if r.link else escape(r.run_id)
        badges = " ".join(f'<span class="badge {escape(v)}" title="{escape(v)}">{escape(d)}</span>' for d, v in r.drills)
        # a tbody per run: the filter needs an element per row, and <tr class=..> stays as the run page's
        h.append(f'<tbody data-target="{escape(r.target)}"><tr class="{cls}">\n  <td>{link}</td><td>{started}</td>'
                 f'<td class="result">{escape(r.verdict)}</td><td>{escape(r.target_label)}</td>'
                 f'<td>{escape(r.ceph_version)}</td><td>{escape(r.suite)}</td><td>{badges}</td>'
                 f'<td class="num">{r.failed_checks}</td><td class="num{" reg" if r.regressions else ""}">'
                 f'{r.regressions}</td></tr></tbody>')
    h.append("</table>")
    if any(s.drills for s in sections):
        h.append("<h2>Trends across runs</h2>")
        h.append('<p class="legend-trend">'
                 f'<span><i class="dot" style="background:{VERDICT_COLOR["passed"]}"></i>drill passed</span>'
                 f'<span><i class="dot" style="background:{VERDICT_COLOR["failed"]}"></i>failed</span>'
                 f'<span><i class="dot" style="border:2px solid #202124"></i>error / aborted</span>'
                 f'<span><i class="dot" style="border:2px solid {REGRESSION_COLOR}"></i>regression</span>'
                 f'<span><i class="dot" style="background:{BAND_COLOR};border-radius:0"></i>baseline band '
                 f'(last passing runs, newest Ceph version)</span>'
                 '<span style="color:#6a1b9a">┆ Ceph version change</span></p>')
    for s in sections:
        if not s.drills:
            continue
        h.append(f'<section data-target="{escape(s.key)}"><h3>{escape(s.label)}</h3>')
        for drill, trends in s.drills.items():
            h.append(f"<h4>{escape(drill)}</h4><div class=\"trend-grid\">")
            h.extend(trend_chart(t) for t in trends)
            h.append("</div>")
        h.append("</section>")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    h.append(f"<footer>Generated {now} by ceph-drills.</footer></main><script>{SCRIPT}</script></body></html>")
    return "\n".join(h)


__all__ = ["KEY_TRENDS", "HistoryError", "render_trends_index", "trend_chart"]
