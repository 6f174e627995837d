"""The gray runbook: a fault that makes part of the cluster slow or unreliable, which the cluster may
never mark down, held for a fixed time.

    baseline   fio (rbd engine) and the verifying writer run; nothing is wrong yet
    degraded   the gray fault is injected and held for the pace's `gray_hold` seconds (smoke 30, nightly 90,
               full 180), never less than osd_op_complaint_time + REPORT_ALLOWANCE_S so that SLOW_OPS can
               be seen at all; meanwhile: SLOW_OPS from the cluster log, OSD mark-downs and mark-ups from the
               osdmap, client IOPS and p99
    recovery   the fault is healed; until every OSD is up and every PG active+clean
    after      the cluster is clean again; writes go on; then every acknowledged write is read back

The fail-stop runbook (drills/scenario.py) waits in "detection" until the cluster marks the lost OSDs
down; a gray fault may never be marked down, so there is no detection phase here: whether and when the
cluster noticed is what the drill measures.  Workloads, samplers, the abort watch, the invariants and
the verifier are FaultDrill's.  The abort watch lets the fault's own OSDs go down (that is a finding,
judged by `markdowns_max`); any other OSD going down stops the drill.

Measurements (degraded phase unless said; docs/thresholds.md):
  slow_ops_time    fault injected -> the first SLOW_OPS health check (cluster log); None with the reason
                   "never raised within the degraded phase (N s)" when it was not raised
  slow_ops_raised  1 raised while the fault was in force, 0 never; None when the cluster log was not read
  markdowns        OSD mark-downs (osdmap down transitions) in the phase (also recovery, after)
  markups          OSDs marked up again in the phase (recorded, no limit)
  osd_flaps        mark-downs beyond the first per OSD in the phase: down again after coming back
  markdown_time    fault injected -> the first mark-down; None with "no OSD was marked down"

A fault whose objects cannot be read (ReadErrors, drill eio_read) is read back through the client: every
marked object once right after the inject (each read hits the injected EIO on the primary) and once 10 s
before the end of the hold (after whatever the cluster did about it):
  eio_reads_ok      reads that returned the written bytes (both passes)
  eio_reads_failed  reads that returned an error or other bytes (both passes)
  eio_read_time     the slowest read of the first pass: what a client waits for a copy that cannot be read
  shards_repaired   reads the OSD repaired from replicas during the hold (its num_shards_repaired at the end
                    of the hold, as the mgr last heard it: the OSD reports every 5 s)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable

from drills.cluster import ClusterError
from drills.faults.fault import Fault
from drills.faults.gray import READ_ERR_OPTION, MarkedRead, ReadErrors
from drills.scenario import AbortWatch, DrillAborted, FaultDrill, Pace
from drills.timeline import Event, read_events
from drills.workloads.fio import FioRunner

SLOW_OPS = "SLOW_OPS"
DEFAULT_COMPLAINT_S = 30.0  # osd_op_complaint_time's default, when the OSD cannot be asked
# An op older than osd_op_complaint_time is counted by its OSD, reported to the mgr (every mgr_stats_period,
# 5 s), passed on to the monitors' health and logged by them: allow this much after the complaint time.
REPORT_ALLOWANCE_S = 15.0
_RAISE_KINDS = ("health.raised", "health.updated")
# eio_read: the second read of the marked objects comes this long before the end of the hold, so that the OSD's
# repaired-read count (sent to the mgr every mgr_stats_period, 5 s) includes it when it is read at the end.
REREAD_BEFORE_END_S = 10.0


def hold_seconds(pace_hold: float, complaint_s: float | None) -> float:
    """How long the fault is held: the pace's, but never too short for SLOW_OPS to be raised at all."""
    complaint = DEFAULT_COMPLAINT_S if complaint_s is None else complaint_s
    return max(float(pace_hold), complaint + REPORT_ALLOWANCE_S)


@dataclass(frozen=True)
class SlowOpsOutcome:
    time: float | None  # seconds from the inject to the first SLOW_OPS raised; None: see `why`
    raised: int | None  # 1 raised while the fault was in force, 0 never, None not measured
    why: str = ""  # why `time` (and maybe `raised`) is None

    def text(self) -> str:
        if self.time is not None:
            return f"SLOW_OPS raised {self.time:.1f} s after the inject"
        return f"SLOW_OPS: {self.why}"


def slow_ops_outcome(events: Iterable[Event], start: float, end: float, log_read: bool,
                     code: str = SLOW_OPS) -> SlowOpsOutcome:
    """Pure: when the health check `code` was first raised in [start, end] (the fault in force), from the
    cluster log's `health.*` events (stamped with the monitor's time).

    Not raised is an outcome (raised 0, time None "never raised ..."); a log that was not read is not
    (both None, "not measured ..."). A check already in force when the fault came is said as such: its
    time since the inject would mean nothing.
    """
    if not log_read:
        return SlowOpsOutcome(None, None, "not measured: the cluster log was not read (no subscription)")
    health = sorted((e for e in events if e.label == code and e.kind in (*_RAISE_KINDS, "health.cleared")),
                    key=lambda e: e.t)
    before = [e for e in health if e.t < start]
    if before and before[-1].kind != "health.cleared":
        return SlowOpsOutcome(None, 1, f"not measured: {code} was already raised before the fault was injected")
    first = next((e.t for e in health if e.kind in _RAISE_KINDS and start <= e.t <= end), None)
    if first is None:
        return SlowOpsOutcome(None, 0, f"never raised within the degraded phase ({end - start:.0f} s)")
    return SlowOpsOutcome(first - start, 1)


def first_cleared_after(events: Iterable[Event], t: float, code: str = SLOW_OPS) -> float | None:
    """Pure: seconds from `t` to the first `health.cleared` of `code` at or after it; None: not cleared."""
    ts = sorted(e.t for e in events if e.kind == "health.cleared" and e.label == code and e.t >= t)
    return ts[0] - t if ts else None


@dataclass(frozen=True)
class Markdowns:
    downs: int  # mark-downs of any OSD in the window
    ups: int  # mark-ups of any OSD in the window
    flaps: int  # mark-downs beyond the first per OSD: down again after coming back up
    first_down: float | None  # seconds from the window's start to the first mark-down
    by_osd: dict[str, int] = field(default_factory=dict)  # OSD -> mark-downs

    def text(self) -> str:
        if not self.downs:
            return "no OSD marked down" + (f" ({self.ups} marked up)" if self.ups else "")
        osds = ", ".join(f"{o} x{n}" for o, n in sorted(self.by_osd.items()))
        return (f"{self.downs} mark-down(s) ({osds}), {self.ups} mark-up(s), first {self.first_down:.1f} s in"
                + (f", {self.flaps} flap(s)" if self.flaps else ""))


def count_markdowns(events: Iterable[Event], start: float, end: float) -> Markdowns:
    """Pure: the osdmap's down/up transitions in [start, end) (the cluster sampler's `cluster.osd_down` /
    `cluster.osd_up` events, label osd.N)."""
    inside = sorted((e for e in events if e.kind in ("cluster.osd_down", "cluster.osd_up") and start <= e.t < end),
                    key=lambda e: e.t)
    by_osd: dict[str, int] = {}
    downs = [e for e in inside if e.kind == "cluster.osd_down"]
    for e in downs:
        by_osd[e.label] = by_osd.get(e.label, 0) + 1
    ups = sum(1 for e in inside if e.kind == "cluster.osd_up")
    return Markdowns(len(downs), ups, sum(n - 1 for n in by_osd.values()),
                     downs[0].t - start if downs else None, by_osd)


def phase_bounds(events: Iterable[Event], drill: str) -> dict[str, tuple[float, float]]:
    """Pure: phase -> (start, end) from the drill's `phase` events (a phase ends where the next begins)."""
    spans = sorted(((e.t, e.label) for e in events if e.kind == "phase" and e.data.get("drill") == drill))
    return {label: (t, spans[i + 1][0] if i + 1 < len(spans) else float("inf"))
            for i, (t, label) in enumerate(spans) if label != "end"}


@dataclass
class GrayDrill(FaultDrill):
    """One run of the gray runbook (see the module's docstring); `make_fault` builds a gray fault."""

    expect_down: bool = False
    t_inject: float | None = None  # wall clock: the fault injected (the heal's is FaultDrill.t_heal)
    hold: float | None = None
    marked_reads: list[list[MarkedRead] | None] = field(default_factory=list)  # per pass; None: the pass failed

    def _suspects(self, fault: Fault) -> set[int]:
        """The OSDs the fault touches (its hosts' OSDs): they may be marked down without stopping the drill."""
        osds = set(fault.takes_down().osds())
        for name in fault.host_names():
            osds |= set(self.target.host(name).osd_ids)
        return osds

    def _complaint_time(self, suspects: set[int]) -> float | None:
        for osd in sorted(suspects) or sorted(self.cluster.osds_up()):
            try:
                return float(self.cluster.osd_running_config(osd, "osd_op_complaint_time"))
            except (ClusterError, ValueError):
                continue
        return None

    def _phases(self, fault: Fault, down: set[int], pace: Pace, fio: FioRunner) -> None:
        d, c = self.drill, self.cluster
        suspects = self._suspects(fault)
        complaint = self._complaint_time(suspects)
        self.hold = hold_seconds(pace.gray_hold, complaint)
        d.note(f"gray runbook: fault held {self.hold:.0f} s (pace {pace.gray_hold:.0f} s; osd_op_complaint_time "
               + (f"{complaint:g} s" if complaint is not None else f"not read, {DEFAULT_COMPLAINT_S:g} s assumed")
               + f" + {REPORT_ALLOWANCE_S:g} s to report)")
        self._warmup_and_baseline(pace)

        d.phase("degraded", fault=fault.label, suspects=sorted(suspects), hold_s=round(self.hold, 1),
                osd_op_complaint_time=complaint)
        self.t_inject = time.time()
        if self.before_inject is not None:
            self.before_inject(fault)
        self.faults.inject(fault, allow_unavailable=self.allow_unavailable)
        watch = AbortWatch(c, suspects, pace.max_inactive,
                           on_unfound=d.evidence.saw_unfound if d.evidence is not None else None)
        readable = fault if isinstance(fault, ReadErrors) else None
        if readable is not None and d.evidence is not None:
            # its PGs are deep-scrubbed at the end with the drill's own; its [ERR] lines are the fault's, by design
            d.evidence.track_objects(readable.pool, readable.object_names())
            d.evidence.expected_errors.extend(readable.expected_log_errors())
        try:
            end = time.monotonic() + self.hold
            read_again = end - REREAD_BEFORE_END_S  # the OSD's repaired-read count reaches the mgr within seconds
            if readable is not None:
                self._read_marked(readable, "first")
            while time.monotonic() < end:
                watch.check()
                if readable is not None and len(self.marked_reads) == 1 and time.monotonic() >= read_again:
                    self._read_marked(readable, "again")
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            if readable is not None:
                if len(self.marked_reads) == 1:
                    self._read_marked(readable, "again")
                self._measure_marked_reads(readable)
        except DrillAborted as e:
            d.event("abort", str(e))
            self.faults.heal(fault)
            raise

        self._recover(fault, suspects, pace)
        if readable is not None:
            d.note(f"eio heal: marked objects removed, {READ_ERR_OPTION} as before; "
                   + (f"PG(s) {', '.join(readable.repaired_pgs)} found inconsistent and repaired" if readable.repaired_pgs
                      else "no PG of theirs inconsistent")
                   + (f"; {readable.daemon} restarted to reset its repaired-read count (OSD_TOO_MANY_REPAIRS)"
                      if readable.restarted else ""))

    def _read_marked(self, fault: ReadErrors, which: str) -> None:
        """One pass over the fault's marked objects, each read an `eio.read` event."""
        d = self.drill
        try:
            reads = fault.read_marked(self.cluster)
        except Exception as e:  # noqa: BLE001 - the pass is not measured; the measurement says why
            d.event("note", f"marked objects not read ({which} pass): {e}")
            self.marked_reads.append(None)
            return
        for r in reads:
            d.event("eio.read", r.name, ok=r.ok, seconds=round(r.seconds, 3), error=r.error, osd=fault.daemon, read=which)
        self.marked_reads.append(reads)

    def _measure_marked_reads(self, fault: ReadErrors) -> None:
        d = self.drill
        passes = self.marked_reads
        why = "" if passes and all(p is not None for p in passes) else "a pass over the marked objects failed (see the notes)"
        reads = [r for p in passes if p is not None for r in p]
        ok, failed = sum(r.ok for r in reads), sum(not r.ok for r in reads)
        first = passes[0] if passes else None
        d.measure("degraded", "eio_reads_ok", None if why else ok, why=why)
        d.measure("degraded", "eio_reads_failed", None if why else failed, why=why)
        d.measure("degraded", "eio_read_time", max(r.seconds for r in first) if first else None, why=why or "no object read")
        repaired = fault.repaired_since_inject(self.cluster)
        d.measure("degraded", "shards_repaired", repaired, why="" if repaired is not None else
                  f"{fault.daemon}'s num_shards_repaired not in `pg dump osds`")
        text = "; ".join(f"{which} pass: " + (", ".join(f"{r.name} {'ok' if r.ok else 'FAILED ' + r.error} {r.seconds:.2f} s"
                                                       for r in p) if p is not None else "not read")
                         for which, p in zip(("first", "again"), passes))
        d.note(f"eio: {len(fault.object_names())} objects marked on {fault.daemon}; reads ok {ok}, failed {failed}; "
               f"{fault.daemon} repaired {repaired if repaired is not None else '?'} read(s) during the hold; {text}")

    def _log_read(self) -> bool:
        ev = self.drill.evidence
        watch = getattr(ev, "log_watch", None) if ev is not None else None
        return bool(watch is not None and getattr(watch, "subscribed", False))

    def _measure_flaps(self) -> None:
        """The gray figures, from the timeline: SLOW_OPS (cluster log) and mark-downs (osdmap), per phase."""
        d = self.drill
        events = [e for e in read_events(d.run_dir) if e.data.get("drill") in (None, d.name)]
        bounds = phase_bounds(events, d.name)
        if self.t_inject is None or "degraded" not in bounds:
            return  # never injected: the drill ended before (its error says why)
        heal = self.t_heal if self.t_heal is not None else bounds["degraded"][1]
        so = slow_ops_outcome(events, self.t_inject, heal, self._log_read())
        d.measure("degraded", "slow_ops_time", so.time, why=so.why)
        d.measure("degraded", "slow_ops_raised", so.raised, why=so.why)
        notes = [so.text()]
        cleared = first_cleared_after(events, heal) if so.raised else None
        if so.raised:
            notes.append(f"cleared {cleared:.1f} s after the heal" if cleared is not None else "not cleared by the end")
        for phase in ("degraded", "recovery", "after"):
            if phase not in bounds:
                continue
            start, end = bounds[phase]
            if phase == "degraded":
                start = self.t_inject
            md = count_markdowns(events, start, end)
            d.measure(phase, "markdowns", md.downs)
            d.measure(phase, "markups", md.ups)
            d.measure(phase, "osd_flaps", md.flaps)
            if phase == "degraded":
                d.measure(phase, "markdown_time", md.first_down, why="" if md.downs else "no OSD was marked down")
            notes.append(f"{phase}: {md.text()}")
        d.note("gray: " + "; ".join(notes))
