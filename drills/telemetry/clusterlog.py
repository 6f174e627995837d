"""The cluster log as evidence: what the monitors said during a drill, and whether it was expected.

Source: a librados log subscription (`Rados.monitor_log2`, what `ceph -w` uses) on a connection of its
own, held from before the fault to the end of the drill. The monitors push every entry of every level
as they commit it (about a second late), so the window is "while subscribed" and never depends on
comparing the daemons' clocks with this machine's. `ceph log last` alone cannot cover a drill: a
Pacific monitor keeps only the last `mon_log_max_summary` (50) entries per channel, DBG ones included
(the mgr's pgmap line comes every 2 s), i.e. about a minute and a half.

Completeness is checked, not assumed: every daemon numbers its log entries (seq 1, 2, 3... per
process), so a jump in one daemon's seq between two received entries means entries were lost (e.g.
the subscription's monitor connection dropped). Gaps are filled from `log last` when the monitor still
has them; any left unfilled make the reading's `error` say so (a partial log is not evidence of a quiet
cluster). One kind of gap is Ceph's own, not the watch's: the monitor holds the daemon's entries on both
sides of it, so the entry was never committed and nobody could have seen it (measured: the mgr's pgmap
DBG line seq 148 of 366, absent from `log last` while 1-147 and 149-366 were there). Those are counted as
`never_committed`, not as a hole in the evidence.

Judging: `unexpected(reading, allow)` lists every health check raised (failed or updated) whose code
is not in the drill's allow-list, and every `[ERR]` line that is not a health-check line with an
allowed code (a scrub error, "candidate had a read error", is never allowed; nor are the codes in
NEVER_ALLOWED). A fault that causes [ERR] lines by design names them (`expected_errors`, regular
expressions: the read-error fault's "missing primary copy of <its own object>"); no other line is excused.
The monitors' periodic roll-up lines ("overall HEALTH_ERR ...") are not judged on their own: the checks
they roll up are. A reading with `error` set was not measured: check it before trusting `unexpected`.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from drills.cluster import CephCluster, ClusterError
from drills.target import Target
from drills.timeline import Timeline

# Health checks no allow-list can admit: they mean data is damaged or gone.
NEVER_ALLOWED = frozenset({"OSD_SCRUB_ERRORS", "PG_DAMAGED", "OBJECT_UNFOUND"})

LEVELS = ("DBG", "INF", "SEC", "WRN", "ERR")  # Ceph's clog priorities, lowest first

# "Health check failed: noout flag(s) set (OSDMAP_FLAGS)"
# "Health check update: Degraded data redundancy: 12/90 objects degraded (13.333%), 5 pgs degraded (PG_DEGRADED)"
# "Health check cleared: OSDMAP_FLAGS (was: noout flag(s) set)"
_HEALTH_RAISED = re.compile(r"^Health check (failed|update): (?P<summary>.*) \((?P<code>[A-Z][A-Z0-9_]*)\)\s*$", re.S)
_HEALTH_CLEARED = re.compile(r"^Health check cleared: (?P<code>[A-Z][A-Z0-9_]*) \(was: (?P<summary>.*)\)\s*$", re.S)

# How many entries `log last` asks for when filling gaps (the monitor returns at most what it keeps).
LOG_LAST_NUM = 10000


@dataclass(frozen=True)
class HealthChange:
    action: str  # "failed" (raised), "update" (still raised, new summary) or "cleared"
    code: str  # OSD_DOWN, PG_DEGRADED, ...
    summary: str


@dataclass(frozen=True)
class LogEntry:
    stamp: float  # unix seconds on the clock of the daemon that logged it
    name: str  # who logged it: "mon.a", "mgr.x", "osd.3"
    seq: int  # that daemon's entry number (per process)
    channel: str  # "cluster", "audit", ...
    level: str  # DBG | INF | SEC | WRN | ERR
    message: str
    received: float | None = None  # this machine's clock when it arrived (None: read back with `log last`)

    @property
    def key(self) -> tuple[str, int, float]:
        return self.name, self.seq, round(self.stamp, 6)

    @property
    def health(self) -> HealthChange | None:
        return parse_health(self.message)

    def text(self) -> str:
        return f"{self.name} [{self.level}] {self.message}"


@dataclass(frozen=True)
class ClusterLogReading:
    """The cluster channel's entries while the watch ran. `error` set = not measured (with why)."""

    start: float  # this machine's clock: subscribed
    end: float  # this machine's clock: stopped
    entries: tuple[LogEntry, ...] = ()
    error: str | None = None
    filled: int = 0  # entries the subscription missed and `log last` supplied
    never_committed: tuple[tuple[str, int], ...] = ()  # (daemon, seq) the monitor never had (Ceph's own gap)
    max_lag_s: float | None = None  # largest (received - stamp): delivery delay plus clock offset

    @property
    def measured(self) -> bool:
        return self.error is None

    @property
    def health_changes(self) -> list[tuple[LogEntry, HealthChange]]:
        return [(e, h) for e in self.entries if (h := e.health) is not None]

    @property
    def raised(self) -> set[str]:
        """Codes raised or updated (still raised) in the window."""
        return {h.code for _, h in self.health_changes if h.action != "cleared"}

    @property
    def cleared(self) -> set[str]:
        return {h.code for _, h in self.health_changes if h.action == "cleared"}

    @property
    def still_raised(self) -> set[str]:
        """Codes whose last change in the window was not a clear."""
        last: dict[str, str] = {}
        for _, h in self.health_changes:
            last[h.code] = h.action
        return {c for c, a in last.items() if a != "cleared"}

    @property
    def errors(self) -> list[LogEntry]:
        return [e for e in self.entries if e.level == "ERR"]

    @property
    def warnings(self) -> list[LogEntry]:
        return [e for e in self.entries if e.level == "WRN"]

    def summary(self) -> str:
        if self.error:
            return f"cluster log not measured: {self.error}"
        return (f"cluster log: {len(self.entries)} entries in {self.end - self.start:.0f} s, {len(self.errors)} ERR, "
                f"{len(self.warnings)} WRN; raised {sorted(self.raised) or 'none'}, cleared {sorted(self.cleared) or 'none'}"
                + (f"; {self.filled} filled from `log last`" if self.filled else "")
                + (f"; {len(self.never_committed)} never committed by the monitor "
                   f"({', '.join(f'{n} {q}' for n, q in self.never_committed[:4])})" if self.never_committed else ""))


def parse_health(message: str) -> HealthChange | None:
    """Pure: a "Health check failed/update/cleared" message -> its change, else None."""
    m = _HEALTH_RAISED.match(message)
    if m:
        return HealthChange(m.group(1), m.group("code"), m.group("summary"))
    m = _HEALTH_CLEARED.match(message)
    if m:
        return HealthChange("cleared", m.group("code"), m.group("summary"))
    return None


def is_health_summary(message: str) -> bool:
    """Pure: the monitors' periodic roll-up ("overall HEALTH_ERR ...", "Health detail: HEALTH_ERR ...") logged
    at the overall status's level; the checks in it are judged one by one from their own lines."""
    return message.startswith(("overall HEALTH_", "Health detail: HEALTH_"))


def _level(priority: str) -> str:
    """'[WRN]' -> 'WRN'."""
    return priority.strip().strip("[]").upper()


def _stamp(text: str) -> float:
    """Ceph's '2026-11-30T04:07:28.932594+0000' -> unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def entry_from_json(d: dict[str, Any]) -> LogEntry:
    """Pure: one element of `log last` (JSON) -> LogEntry."""
    return LogEntry(_stamp(d["stamp"]), d["name"], int(d["seq"]), d.get("channel", ""), _level(d["priority"]),
                    d.get("message", ""))


def seq_gaps(entries: Iterable[LogEntry]) -> list[tuple[str, int, int]]:
    """Pure: (daemon, first missing seq, last missing seq) for every jump in a daemon's seq.

    Entries are taken in arrival order; a seq that goes down is a restarted daemon (numbering starts
    again at 1), not a gap. Needs every level (DBG included) and every channel: a daemon numbers its
    audit and DBG entries too.
    """
    last: dict[str, int] = {}
    gaps = []
    for e in entries:
        prev = last.get(e.name)
        if prev is not None and e.seq > prev + 1:
            gaps.append((e.name, prev + 1, e.seq - 1))
        if e.seq != prev:
            last[e.name] = e.seq
    return gaps


def unexpected(reading: ClusterLogReading, allow: set[str] | frozenset[str],
               expected_errors: Iterable[str] = ()) -> list[str]:
    """Every raised health check outside ``allow`` and every [ERR] line that is not an allowed health
    check nor matched by one of ``expected_errors`` (regular expressions a fault gives for the lines it
    causes by design), one line each (empty: nothing unexpected). Judges only what was read: a reading with
    ``error`` set is "not measured", which the caller must fail on its own."""
    allowed = set(allow) - NEVER_ALLOWED
    excused = [re.compile(x) for x in expected_errors]
    out: list[str] = []
    seen: set[str] = set()
    for e in reading.entries:
        h = e.health
        if h is not None:  # judged by its code, whatever its level; each code listed once
            if h.action != "cleared" and h.code not in allowed and h.code not in seen:
                seen.add(h.code)
                out.append(f"health check {h.code} raised ({h.summary}) at {_hms(e.stamp)}, not in the drill's allow-list")
            continue
        if e.level == "ERR" and not is_health_summary(e.message) and not any(x.search(e.message) for x in excused):
            out.append(f"[ERR] from {e.name} at {_hms(e.stamp)}: {e.message}")
    return out


def excused(reading: ClusterLogReading, expected_errors: Iterable[str]) -> int:
    """How many [ERR] lines of the reading the fault's ``expected_errors`` account for (said in the verdict)."""
    patterns = [re.compile(x) for x in expected_errors]
    return sum(1 for e in reading.entries
               if e.level == "ERR" and e.health is None and any(x.search(e.message) for x in patterns))


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 10)}Z"


def record_on_timeline(timeline: Timeline, entry: LogEntry, drill: str = "") -> None:
    """WRN/ERR lines as `cluster.log` events, health changes as `health.raised` / `health.updated` /
    `health.cleared` (label: the code), all at the entry's own stamp."""
    extra = {"drill": drill} if drill else {}
    h = entry.health
    if h is not None:
        kind = {"failed": "health.raised", "update": "health.updated", "cleared": "health.cleared"}[h.action]
        timeline.event(kind, h.code, t=entry.stamp, summary=h.summary, level=entry.level, who=entry.name, **extra)
    elif entry.level in ("WRN", "ERR"):
        timeline.event("cluster.log", f"[{entry.level}] {entry.message[:120]}", t=entry.stamp, level=entry.level,
                       who=entry.name, message=entry.message, **extra)


def fill_gaps(received: Iterable[LogEntry], gaps: Iterable[tuple[str, int, int]], kept: Iterable[LogEntry]
              ) -> tuple[list[LogEntry], tuple[tuple[str, int], ...], list[tuple[str, int]]]:
    """Pure: each missing (daemon, seq) of the gaps is found in what the monitor keeps, or was never committed
    (the monitor keeps that daemon's entries from before it, so its memory reaches back past the gap), or is
    lost (the monitor's memory of that daemon starts after it: the evidence has a hole).
    -> (found entries, never committed, lost)."""
    have = {(e.name, e.seq) for e in received}
    by_key = {(e.name, e.seq): e for e in kept}
    oldest: dict[str, int] = {}
    for name, seq in by_key:
        oldest[name] = min(seq, oldest.get(name, seq))
    found: list[LogEntry] = []
    never: list[tuple[str, int]] = []
    lost: list[tuple[str, int]] = []
    for name, lo, hi in gaps:
        for s in range(lo, hi + 1):
            if (name, s) in have:
                continue
            if (name, s) in by_key:
                found.append(by_key[(name, s)])
            elif name in oldest and oldest[name] < s:
                never.append((name, s))
            else:
                lost.append((name, s))
    return found, tuple(never), lost


def log_last(cluster: CephCluster, num: int = LOG_LAST_NUM, channel: str = "cluster", level: str = "debug") -> list[LogEntry]:
    """What the monitor still keeps of a channel (`ceph log last`), oldest first. Raises ClusterError."""
    out = cluster.mon_command("log last", num=num, channel=channel, level=level)
    if not isinstance(out, list):
        raise ClusterError(f"`log last` returned {type(out).__name__}, not a list of entries")
    try:
        return [entry_from_json(d) for d in out]
    except (KeyError, ValueError, TypeError) as e:
        raise ClusterError(f"`log last` entry not understood ({type(e).__name__}: {e})") from None


@dataclass
class ClusterLogWatch:
    """Subscribes to the cluster log for the length of a drill; `stop()` returns the reading.

    ``with ClusterLogWatch(target, timeline) as w: ...; reading = w.reading`` — or start()/stop().
    Entries of the cluster channel that are WRN/ERR or health changes go on the timeline as they arrive.
    """

    target: Target
    timeline: Timeline | None = None
    drill: str = ""
    settle_s: float = 2.5  # after the drill: wait for the monitors' last commit to arrive
    reading: ClusterLogReading | None = field(default=None, init=False)  # set by stop()
    _cluster: CephCluster | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _all: list[LogEntry] = field(default_factory=list, init=False)  # every channel, every level (for seq checks)
    _start: float = field(default=0.0, init=False)
    _error: str | None = field(default=None, init=False)

    def start(self) -> "ClusterLogWatch":
        self._start = time.time()
        try:
            self._cluster = CephCluster(self.target).connect()
            self._cluster.rados.monitor_log2("debug", self._on_entry, None)
        except Exception as e:  # noqa: BLE001 - no subscription = not measured, never a crash of the drill
            self._error = f"cannot subscribe to the cluster log: {type(e).__name__}: {e}"
            self._close()
        return self

    @property
    def subscribed(self) -> bool:
        """The subscription is up (so far): entries are arriving. Gaps are judged when it stops."""
        return self._cluster is not None and self._error is None

    def _on_entry(self, _arg: Any, _line: Any, channel: Any, name: Any, _who: Any, sec: int, nsec: int, seq: int,
                  level: Any, msg: Any) -> None:
        # Runs in a librados thread: keep it short and never raise into C.
        try:
            e = LogEntry(sec + nsec / 1e9, _s(name), int(seq), _s(channel), _level(_s(level)), _s(msg), time.time())
            with self._lock:
                self._all.append(e)
            if self.timeline is not None and e.channel == "cluster":
                record_on_timeline(self.timeline, e, self.drill)
        except Exception:  # noqa: BLE001
            pass

    def stop(self) -> ClusterLogReading:
        if self.reading is not None:
            return self.reading
        if self._cluster is not None:
            time.sleep(self.settle_s)
        end = time.time()
        filled_entries: list[LogEntry] = []
        never_committed: tuple[tuple[str, int], ...] = ()
        error = self._error
        if self._cluster is not None:
            try:
                self._cluster.rados.monitor_log2("debug", None, None)  # unsubscribe
            except Exception:  # noqa: BLE001
                pass
            with self._lock:
                received = list(self._all)
            gaps = seq_gaps(received)
            if gaps:
                filled_entries, never_committed, fill_error = self._fill(received, gaps)
                error = error or fill_error
            self._close()
        else:
            received = []
        entries = sorted({e.key: e for e in received + filled_entries if e.channel == "cluster"}.values(),
                         key=lambda e: (e.stamp, e.name, e.seq))
        lags = [e.received - e.stamp for e in received if e.received is not None]
        self.reading = ClusterLogReading(self._start, end, tuple(entries), error, len(filled_entries),
                                         never_committed, max(lags) if lags else None)
        if self.timeline is not None:
            try:
                for e in filled_entries:
                    if e.channel == "cluster":
                        record_on_timeline(self.timeline, e, self.drill)
                self.timeline.event("cluster.log.summary", "cluster log", **({"drill": self.drill} if self.drill else {}),
                                    summary=self.reading.summary(), measured=self.reading.measured)
            except ValueError:  # the timeline was closed first: the reading itself is still returned
                pass
        return self.reading

    def _fill(self, received: list[LogEntry], gaps: list[tuple[str, int, int]]
              ) -> tuple[list[LogEntry], tuple[tuple[str, int], ...], str | None]:
        """Missing seqs from `log last` (every channel): (entries found, entries the monitor never committed,
        error naming what stays missing)."""
        assert self._cluster is not None
        try:
            kept = log_last(self._cluster, channel="*")
        except ClusterError as e:
            return [], (), f"the subscription missed entries ({_gap_text(gaps)}) and `log last` failed: {e}"
        found, never, lost = fill_gaps(received, gaps, kept)
        if lost:
            return found, never, (f"{len(lost)} cluster log entries never arrived and the monitor no longer keeps "
                                  f"them ({_gap_text(_ranges(lost))}); the log of this window is incomplete")
        return found, never, None

    def _close(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "ClusterLogWatch":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _ranges(items: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for name, s in sorted(items):
        if out and out[-1][0] == name and out[-1][2] == s - 1:
            out[-1] = (name, out[-1][1], s)
        else:
            out.append((name, s, s))
    return out


def _gap_text(gaps: list[tuple[str, int, int]]) -> str:
    shown = ", ".join(f"{n} seq {lo}" + (f"-{hi}" if hi != lo else "") for n, lo, hi in gaps[:5])
    return shown + (f" and {len(gaps) - 5} more" if len(gaps) > 5 else "")


def read_window(cluster: CephCluster, start: float, end: float | None = None) -> ClusterLogReading:
    """One-shot read of [start, end] (this machine's clock) from what the monitor still keeps, for a window
    too short or too late for a watch. Not measured when the monitor's oldest kept entry is newer than
    ``start`` (earlier entries are gone). Entry stamps are the daemons' clocks: only as good as clock sync."""
    end = time.time() if end is None else end
    try:
        kept = log_last(cluster, channel="cluster")
    except ClusterError as e:
        return ClusterLogReading(start, end, (), f"cannot read the cluster log: {e}")
    if not kept or kept[0].stamp > start:
        oldest = _hms(kept[0].stamp) if kept else "none"
        return ClusterLogReading(start, end, (), f"the monitor keeps the cluster log back to {oldest} only, after the "
                                 f"window's start {_hms(start)} (mon_log_max_summary); use ClusterLogWatch for a drill")
    return ClusterLogReading(start, end, tuple(e for e in kept if start <= e.stamp <= end))
