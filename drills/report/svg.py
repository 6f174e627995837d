"""A small inline-SVG line chart: no JavaScript, no external files.

Gaps (None values) break the line; a lone point between gaps is drawn as a dot,
so a reader can tell "no data" from "zero".  Phases are shaded bands, faults are
vertical markers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None = gap
    color: str = ""  # empty: next palette colour
    dashed: bool = False


@dataclass(frozen=True)
class Band:
    start: float
    end: float
    label: str
    color: str


@dataclass(frozen=True)
class Marker:
    x: float
    label: str
    color: str


@dataclass(frozen=True)
class HLine:
    """A limit line; with x_span only across that stretch (a phase's limit within that phase)."""

    y: float
    label: str
    color: str = "#b00020"
    x_span: tuple[float, float] | None = None
    legend: str = ""  # legend text (entries with the same text are shown once); empty: label
    tag: str = ""  # short text drawn on the line, e.g. "≤ 2 s"


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(1, target_ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def time_ticks(lo: float, hi: float, target: int = 8) -> list[float]:
    """Ticks on whole seconds/minutes so m:ss labels read cleanly."""
    span = hi - lo
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if span / step <= target:
            break
    first = math.ceil(lo / step) * step
    return [float(first + i * step) for i in range(int((hi - first) // step) + 1)]


def format_clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    s = int(round(abs(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{sign}{h}:{m:02d}:{sec:02d}" if h else f"{sign}{m}:{sec:02d}"


def format_number(v: float) -> str:
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:g}G"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def line_chart(lines: Sequence[Line], *, title: str, y_label: str = "",
               bands: Sequence[Band] = (), markers: Sequence[Marker] = (), hlines: Sequence[HLine] = (),
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               y_log: bool = False, y_format: Callable[[float], str] = format_number,
               x_format: Callable[[float], str] = format_clock, x_is_time: bool = True,
               width: int = 960, height: int = 230) -> str:
    """Render one chart as an <svg> string.  On a log axis values <= 0 are gaps (log 0 is undefined)."""
    colors = [ln.color or PALETTE[i % len(PALETTE)] for i, ln in enumerate(lines)]
    # Legend rows first: their count sets the top margin.
    legend_items = [(ln.label, c, ln.dashed) for ln, c in zip(lines, colors)]
    for h in hlines:
        if (h.legend or h.label, h.color, True) not in legend_items:
            legend_items.append((h.legend or h.label, h.color, True))
    legend_rows: list[list[tuple[str, str, bool, float]]] = [[]]
    x_cursor = 0.0
    for label, color, dashed in legend_items:
        w = 26 + 6.6 * len(label)
        if x_cursor + w > width - 70 and legend_rows[-1]:
            legend_rows.append([])
            x_cursor = 0.0
        legend_rows[-1].append((label, color, dashed, x_cursor))
        x_cursor += w + 10
    n_legend = len(legend_rows) if legend_items else 0
    left, right = 62, 14
    top = 24 + 16 * n_legend + 16  # title, legend rows, phase labels
    bottom = 30
    pw, ph = width - left - right, height - top - bottom

    xs = [x for ln in lines for x, _ in ln.points]
    xs += [b.start for b in bands] + [b.end for b in bands] + [m.x for m in markers]
    if x_range:
        x0, x1 = x_range
    elif xs:
        x0, x1 = min(xs), max(xs)
    else:
        x0, x1 = 0.0, 1.0
    if x1 <= x0:
        x1 = x0 + 1.0

    def usable(y: float | None) -> bool:
        return y is not None and math.isfinite(y) and (y > 0 or not y_log)

    ys = [y for ln in lines for _, y in ln.points if usable(y)] + [h.y for h in hlines if usable(h.y)]
    if y_range:
        y0, y1 = y_range
    elif y_log:
        y0 = 10 ** math.floor(math.log10(min(ys))) if ys else 1.0
        y1 = 10 ** math.ceil(math.log10(max(ys))) if ys else 10.0
    else:
        y0 = min(0.0, min(ys)) if ys else 0.0
        y1 = max(ys) * 1.08 if ys and max(ys) > 0 else 1.0
    if y1 <= y0:
        y1 = y0 + (1.0 if not y_log else 10 * y0)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        if y_log:
            frac = (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))
        else:
            frac = (y - y0) / (y1 - y0)
        return top + ph - min(1.0, max(0.0, frac)) * ph

    out: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    if y_label:
        out.append(f'<text x="{width - right}" y="16" class="axis-label" text-anchor="end">{escape(y_label)}</text>')
    # Legend.
    for row_i, row in enumerate(legend_rows if legend_items else []):
        ly = 24 + 16 * row_i + 8
        for label, color, dashed, lx in row:
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(f'<line x1="{left + lx:.1f}" y1="{ly - 4}" x2="{left + lx + 20:.1f}" y2="{ly - 4}" '
                       f'stroke="{color}" stroke-width="2.5"{dash}/>')
            out.append(f'<text x="{left + lx + 24:.1f}" y="{ly}" class="legend">{escape(label)}</text>')
    # Phase bands under everything else.
    for b in bands:
        bx0, bx1 = sx(max(b.start, x0)), sx(min(b.end, x1))
        if bx1 <= bx0:
            continue
        out.append(f'<rect x="{bx0:.1f}" y="{top}" width="{bx1 - bx0:.1f}" height="{ph}" fill="{b.color}" '
                   f'class="band"><title>{escape(b.label)}: {x_format(b.start)}–{x_format(b.end)}</title></rect>')
        if bx1 - bx0 > 6.5 * len(b.label):
            out.append(f'<text x="{(bx0 + bx1) / 2:.1f}" y="{top - 4}" class="band-label" '
                       f'text-anchor="middle">{escape(b.label)}</text>')
    # Grid and axes.
    y_ticks = _log_ticks(y0, y1) if y_log else linear_ticks(y0, y1)
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{escape(y_format(t))}</text>')
    for t in (time_ticks(x0, x1) if x_is_time else linear_ticks(x0, x1, 8)):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 17}" class="tick" text-anchor="middle">{escape(x_format(t))}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>')
    # Limit lines.
    for h in hlines:
        if usable(h.y) and y0 <= h.y <= y1:
            hx0, hx1 = (sx(max(x0, h.x_span[0])), sx(min(x1, h.x_span[1]))) if h.x_span else (left, left + pw)
            out.append(f'<line x1="{hx0:.1f}" y1="{sy(h.y):.1f}" x2="{hx1:.1f}" y2="{sy(h.y):.1f}" stroke="{h.color}" '
                       f'stroke-width="1.2" stroke-dasharray="6 4"><title>{escape(h.label)}</title></line>')
            if h.tag:
                out.append(f'<text x="{hx0 + 3:.1f}" y="{sy(h.y) - 3:.1f}" class="limit-tag" fill="{h.color}">'
                           f'{escape(h.tag)}</text>')
    # Data.
    for ln, color in zip(lines, colors):
        dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
        for seg in _segments(ln.points, usable):
            if len(seg) == 1:
                x, y = seg[0]
                out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2" fill="{color}"/>')
                continue
            d = "M" + " L".join(f"{sx(x):.1f} {sy(y):.1f}" for x, y in seg)
            out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6" '
                       f'stroke-linejoin="round"{dash}><title>{escape(ln.label)}</title></path>')
    # Fault markers on top; labels alternate between two rows so neighbours do not overprint.
    for i, m in enumerate(markers):
        if not x0 <= m.x <= x1:
            continue
        x = sx(m.x)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="{m.color}" '
                   f'stroke-width="1.5" stroke-dasharray="3 2"><title>{escape(m.label)} at {x_format(m.x)}</title></line>')
        anchor = "end" if x > left + pw - 120 else "start"
        dx = -3 if anchor == "end" else 3
        out.append(f'<text x="{x + dx:.1f}" y="{top + 12 + 12 * (i % 2)}" class="marker-label" fill="{m.color}" '
                   f'text-anchor="{anchor}">{escape(m.label)}</text>')
    if not any(usable(y) for ln in lines for _, y in ln.points):
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph / 2:.1f}" class="no-data" '
                   f'text-anchor="middle">no samples</text>')
    out.append("</svg>")
    return "".join(out)


def _log_ticks(y0: float, y1: float) -> list[float]:
    lo, hi = math.floor(math.log10(y0)), math.ceil(math.log10(y1))
    ticks = []
    for e in range(lo, hi + 1):
        for m in ((1, 2, 5) if hi - lo <= 3 else (1,)):
            v = m * 10.0**e
            if y0 <= v <= y1:
                ticks.append(v)
    return ticks


def _segments(points: Sequence[tuple[float, float | None]],
              usable: Callable[[float | None], bool]) -> list[list[tuple[float, float]]]:
    segs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: p[0]):
        if usable(y):
            current.append((x, float(y)))  # type: ignore[arg-type]
        elif current:
            segs.append(current)
            current = []
    if current:
        segs.append(current)
    return segs
