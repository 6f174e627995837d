"""The chain-reaction drill's own figure: its rounds side by side, one timeline per host.

From the run's timeline only (what drills/test_oom_chain_reaction.py writes), so `drill report RUN_DIR`
redraws it:

    events   oom.power_on (round, budgets), oom.kill (round, host, daemon), oom.health_ok (round, seconds),
             oom.never (round, bound, reason), oom.round_end, oom.window (host, floor, ceiling, budget, steps),
             supervisor.start / supervisor.start_limit (round, daemon), restart.decision (round, action,
             daemon, host, used, budget, available, need, reason), restart.ready, restart.need
    series   oom.host_anon.bytes{host, round}, oom.rss.bytes{daemon, host, round} (null: not running),
             oom.osd_up{daemon, host, round}

Per host: one chart of the host's memory (its daemons' heaps) against the budget line, every round from its
power-on (x = 0), OOM kills marked per round, HEALTH_OK or "never" per round; one strip per OSD and round
with its state second by second (held, running, up, killed, left at the start limit); and the controlled
start's decisions with the memory behind each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

from drills.report.svg import HLine, Line, Marker, format_clock, line_chart, time_ticks
from drills.timeline import Event, Sample

ROUND_WORDS = {"probe": "probe (no limit)", "uncontrolled": "all at once", "controlled": "one at a time"}
ROUND_COLORS = {"probe": "#9e9e9e", "uncontrolled": "#c62828", "controlled": "#1565c0"}
STATE_COLORS = {"held": "#e0e0e0", "running": "#ffcc80", "up": "#81c784", "killed": "#e57373",
                "start limit": "#7f0000", "stopped": "#bdbdbd"}
STATE_WORDS = {"held": "held (not started)", "running": "running, not yet up", "up": "up",
               "killed": "down after an OOM kill", "start limit": "left down at the start limit",
               "stopped": "stopped (probe)"}
MiB = 1 << 20


@dataclass(frozen=True)
class RoundRow:
    name: str
    words: str
    kills: str  # "osd.7, osd.8, osd.7" or "none"
    kill_count: int
    repeats: int
    health: str  # "HEALTH_OK after 182 s" | "never within 600 s" | "never (reason)"
    peaks: str  # per host: "r3h1 790 of 800 MiB"


@dataclass(frozen=True)
class DecisionRow:
    t: str  # since power-on
    action: str
    daemon: str
    used: str
    budget: str
    free: str
    need: str
    reason: str


@dataclass
class OomView:
    rounds: list[RoundRow] = field(default_factory=list)
    windows: list[str] = field(default_factory=list)
    hosts: list[tuple[str, str, str]] = field(default_factory=list)  # (host, memory chart svg, state strips svg)
    decisions: list[DecisionRow] = field(default_factory=list)


def _mib(v: Any) -> str:
    return "—" if v is None else f"{float(v) / MiB:.0f} MiB"


def _round_of(e: Event | Sample) -> str:
    data = e.data if isinstance(e, Event) else e.labels
    return str(data.get("round", ""))


def build_oom_view(events: Sequence[Event], samples: Sequence[Sample]) -> OomView | None:
    """None when the timeline holds no chain-reaction round."""
    starts = {str(e.data.get("round")): e for e in events if e.kind == "oom.power_on"}
    if not starts:
        return None
    order = [r for r in ("probe", "uncontrolled", "controlled") if r in starts] + \
        sorted(r for r in starts if r not in ROUND_WORDS)
    ends = {str(e.data.get("round")): e.t for e in events if e.kind == "oom.round_end"}
    view = OomView()
    hosts = sorted({str(s.labels.get("host")) for s in samples if s.metric == "oom.host_anon.bytes"}
                   | {h for e in starts.values() for h in (e.data.get("budgets") or {})})
    span = max((ends.get(r, starts[r].t) - starts[r].t for r in order), default=1.0) or 1.0
    for e in events:
        if e.kind == "oom.window":
            view.windows.append(e.label)
    for r in order:
        view.rounds.append(_round_row(r, starts[r], events, samples, hosts))
    for host in hosts:
        view.hosts.append((host, _memory_chart(host, order, starts, ends, events, samples, span),
                           _state_strips(host, order, starts, ends, events, samples, span)))
    if "controlled" in starts:
        view.decisions = _decisions(starts["controlled"].t, events)
    return view


def _kills(r: str, events: Sequence[Event]) -> list[Event]:
    """The drill's own kill events (with the pid); the controlled start's count of the same kill has none."""
    return [e for e in events if e.kind == "oom.kill" and _round_of(e) == r and "pid" in e.data]


def _round_row(r: str, start: Event, events: Sequence[Event], samples: Sequence[Sample], hosts: list[str]) -> RoundRow:
    kills = _kills(r, events)
    names = [str(k.data.get("daemon") or "?") for k in kills]
    repeats = sum(1 for i, d in enumerate(names) if d in names[:i])
    ok = next((e for e in events if e.kind == "oom.health_ok" and _round_of(e) == r), None)
    never = next((e for e in events if e.kind == "oom.never" and _round_of(e) == r), None)
    if ok is not None:
        health = f"HEALTH_OK after {float(ok.data.get('seconds', ok.t - start.t)):.0f} s"
    elif never is not None:
        reason = str(never.data.get("reason") or "")
        # Ended early (an OSD left down at its start limit): say why, not a bound that did not run out.
        health = f"never: {reason}" if reason else f"never within {float(never.data.get('bound') or 0):.0f} s"
    else:
        health = "not recorded"
    budgets = start.data.get("budgets") or {}
    peaks = []
    for h in hosts:
        vals = [s.value for s in samples if s.metric == "oom.host_anon.bytes" and s.labels.get("host") == h
                and _round_of(s) == r and s.value is not None]
        peak = max(vals) if vals else None
        b = budgets.get(h)
        peaks.append(f"{h} {_mib(peak)} of {_mib(b)}" + (f" ({peak / b:.2f})" if peak and b else ""))
    kills_text = ", ".join(names) or "none"
    return RoundRow(r, ROUND_WORDS.get(r, r), kills_text, len(kills), repeats, health, "; ".join(peaks))


def _memory_chart(host: str, order: list[str], starts: dict[str, Event], ends: dict[str, float],
                  events: Sequence[Event], samples: Sequence[Sample], span: float) -> str:
    lines, markers, hlines = [], [], []
    budgets_seen: set[int] = set()
    for r in order:
        t0 = starts[r].t
        pts = [(s.t - t0, None if s.value is None else s.value / MiB) for s in samples
               if s.metric == "oom.host_anon.bytes" and s.labels.get("host") == host and _round_of(s) == r]
        if pts:
            lines.append(Line(f"{ROUND_WORDS.get(r, r)}: host heaps", sorted(pts), ROUND_COLORS.get(r, ""),
                              dashed=(r == "probe")))
        b = (starts[r].data.get("budgets") or {}).get(host)
        if b and r != "probe" and int(b) not in budgets_seen:
            budgets_seen.add(int(b))
            hlines.append(HLine(float(b) / MiB, f"budget {float(b) / MiB:.0f} MiB", tag=f"budget {float(b) / MiB:.0f} MiB"))
        for k in _kills(r, events):
            if k.data.get("host") in (None, host):
                markers.append(Marker(k.t - t0, f"✕ {k.data.get('daemon') or '?'}", ROUND_COLORS.get(r, "#000")))
        ok = next((e for e in events if e.kind == "oom.health_ok" and _round_of(e) == r), None)
        if ok is not None and r != "probe":
            markers.append(Marker(ok.t - t0, f"HEALTH_OK ({ROUND_WORDS.get(r, r)})", "#2e7d32"))
        never = next((e for e in events if e.kind == "oom.never" and _round_of(e) == r), None)
        if never is not None:
            markers.append(Marker(ends.get(r, never.t) - t0, f"never HEALTH_OK ({ROUND_WORDS.get(r, r)})", "#000000"))
    return line_chart(lines, title=f"{host}: the daemons' heaps (cgroup anonymous memory) from power-on, each round",
                      y_label="MiB", markers=markers, hlines=hlines, x_range=(0.0, span), height=300)


def _osd_states(daemon: str, host: str, r: str, t0: float, events: Sequence[Event],
                samples: Sequence[Sample]) -> list[tuple[float, str]]:
    """(seconds since power-on, state) per sample of the daemon in round r."""
    rss = {round(s.t - t0): s.value for s in samples if s.metric == "oom.rss.bytes" and s.labels.get("daemon") == daemon
           and _round_of(s) == r}
    up = {round(s.t - t0): s.value for s in samples if s.metric == "oom.osd_up" and s.labels.get("daemon") == daemon
          and _round_of(s) == r}
    kills = sorted(e.t - t0 for e in _kills(r, events) if e.data.get("daemon") == daemon)
    limit = min((e.t - t0 for e in events if e.kind == "supervisor.start_limit" and _round_of(e) == r
                 and e.data.get("daemon") == daemon), default=None)
    restarts = sorted(e.t - t0 for e in events if e.kind == "oom.probe_restart" and _round_of(e) == r
                      and e.data.get("daemon") == daemon)
    out = []
    for sec in sorted(rss):
        if rss[sec] is not None:
            state = "up" if up.get(sec) == 1 else "running"
        elif limit is not None and sec >= limit:
            state = "start limit"
        elif kills and sec >= kills[0]:
            state = "killed"
        elif restarts and sec >= restarts[0]:
            state = "stopped"
        else:
            state = "held"
        out.append((float(sec), state))
    return out


def _state_strips(host: str, order: list[str], starts: dict[str, Event], ends: dict[str, float],
                  events: Sequence[Event], samples: Sequence[Sample], span: float) -> str:
    daemons = sorted({str(s.labels.get("daemon")) for s in samples if s.metric == "oom.rss.bytes"
                      and s.labels.get("host") == host}, key=lambda d: int(d.split(".")[1]) if d.split(".")[-1].isdigit() else 0)
    rows: list[tuple[str, str, list[tuple[float, str]], list[float]]] = []
    for r in order:
        t0 = starts[r].t
        for d in daemons:
            kills = [e.t - t0 for e in _kills(r, events) if e.data.get("daemon") == d]
            rows.append((r, d, _osd_states(d, host, r, t0, events, samples), kills))
    width, left, right, row_h, top = 960, 170, 14, 14, 40
    pw = width - left - right
    height = top + len(rows) * (row_h + 4) + 34
    sx = lambda x: left + max(0.0, min(span, x)) / span * pw  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(host)}: OSD states">',
           f'<text x="{left}" y="16" class="chart-title">{escape(host)}: each OSD, each round, from power-on</text>']
    lx = 0.0
    for state, color in STATE_COLORS.items():
        out.append(f'<rect x="{left + lx:.1f}" y="24" width="12" height="9" fill="{color}"/>')
        out.append(f'<text x="{left + lx + 15:.1f}" y="32" class="legend">{escape(STATE_WORDS[state])}</text>')
        lx += 22 + 6.2 * len(STATE_WORDS[state])
    y = top
    for r, d, states, kills in rows:
        out.append(f'<text x="{left - 6}" y="{y + row_h - 3}" class="tick" text-anchor="end">'
                   f'{escape(ROUND_WORDS.get(r, r))} · {escape(d)}</text>')
        for i, (x, state) in enumerate(states):
            x1 = states[i + 1][0] if i + 1 < len(states) else x + 1.0
            out.append(f'<rect x="{sx(x):.1f}" y="{y}" width="{max(0.5, sx(x1) - sx(x)):.1f}" height="{row_h}" '
                       f'fill="{STATE_COLORS[state]}"><title>{escape(d)} {escape(STATE_WORDS[state])} at '
                       f'{format_clock(x)}</title></rect>')
        for k in kills:
            out.append(f'<text x="{sx(k):.1f}" y="{y + row_h - 2}" class="marker-label" text-anchor="middle" '
                       f'fill="#000">✕</text>')
        y += row_h + 4
    for tick in time_ticks(0.0, span):
        out.append(f'<line x1="{sx(tick):.1f}" y1="{y}" x2="{sx(tick):.1f}" y2="{y + 4}" class="axis"/>')
        out.append(f'<text x="{sx(tick):.1f}" y="{y + 17}" class="tick" text-anchor="middle">{format_clock(tick)}</text>')
    out.append("</svg>")
    return "".join(out)


def _decisions(t0: float, events: Sequence[Event]) -> list[DecisionRow]:
    """The controlled start's decisions; a run of waits for the same OSD is one row (its first and last look)."""
    rows: list[DecisionRow] = []
    wait_open: tuple[str, str, int] | None = None  # (first wait's time, its OSD, its row)
    for e in events:
        if _round_of(e) != "controlled" or e.kind not in ("restart.decision", "restart.ready", "restart.stopped"):
            continue
        t = "T+" + format_clock(e.t - t0)
        if e.kind == "restart.ready":
            rows.append(DecisionRow(t, "ready", str(e.data.get("daemon", "")), "", "", "", "",
                                    f"{e.label}; its peak while starting {_mib(e.data.get('peak_rss'))}"))
            wait_open = None
            continue
        if e.kind == "restart.stopped":
            rows.append(DecisionRow(t, "held", ", ".join(e.data.get("held") or []) or "—", "", "", "", "",
                                    str(e.data.get("error", ""))))
            continue
        d = e.data
        action = str(d.get("action", ""))
        row = DecisionRow(t, {"start": "started", "wait": "waited", "restart": "restarted the biggest",
                              "heap-release": "asked for heap release", "stop": "held"}.get(action, action),
                          str(d.get("daemon", "")), _mib(d.get("used")), _mib(d.get("budget")), _mib(d.get("available")),
                          _mib(d.get("need")), str(d.get("reason", "")))
        if action == "wait" and wait_open is not None and wait_open[1] == row.daemon:
            first_t, _, i = wait_open
            rows[i] = DecisionRow(f"{first_t}–{t.removeprefix('T+')}", row.action, row.daemon, row.used, row.budget,
                                  row.free, row.need, row.reason)
            continue
        rows.append(row)
        wait_open = (t, row.daemon, len(rows) - 1) if action == "wait" else None
    return rows
