"""The runbook every fault drill follows, with writes running throughout.

    baseline   fio (rbd engine) and the verifying writer run; nothing is wrong yet
    detection  the fault is injected; the cluster has not yet marked the lost OSDs down
               (a silent failure: the detection stall)
    degraded   the OSDs are marked down; PGs re-peer and serve from the survivors
    recovery   the fault is healed (power restored: an uncontrolled start); until active+clean
    after      the cluster is clean again; writes go on; then every acknowledged write is read back

Phase boundaries are what the cluster reports (OSDs marked down, all PGs active, all
active+clean), recorded as events. While the fault is in force an abort watch heals at
once and fails the drill if the cluster crosses a hard line: inactive PGs for longer than
the drill allows, unfound objects, or an OSD outside the blast radius going down.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from drills.cluster import CephCluster, ClusterError, WaitTimeout
from drills.drill import DrillRecorder
from drills.faults.fault import Fault
from drills.faults.session import FaultSession
from drills.report.results import LostWrites, ModelInputs
from drills.target import Target
from drills.timeline import read_events
from drills.invariants import FioVerification
from drills.workloads.fio import FioJob, FioRunner, start_job, verify_written
from drills.workloads.reaper import WorkloadProcesses
from drills.workloads.verifier import RadosObjectBackend, VerifierConfig, VerifyingWriter


@dataclass(frozen=True)
class Pace:
    """How long each phase runs; smoke keeps CI short, nightly gives plateaus worth plotting."""

    warmup: float  # writes before the baseline: caches fill, so "before" is a warm cluster
    baseline: float
    degraded: float  # plateau after the OSDs are marked down, before power returns
    after: float
    max_inactive: float  # abort: PGs inactive longer than this while the fault is in force
    detection_timeout: float = 120
    clean_timeout: float = 900
    warmup_max: float = 90  # the warm-up goes on (up to this) until the daemons' RSS stops climbing
    gray_hold: float = 30  # gray drills (drills/gray_runbook.py): how long the fault is held in the degraded phase

    @classmethod
    def named(cls, name: str) -> "Pace":
        paces = {
            "smoke": cls(warmup=20, baseline=10, degraded=15, after=10, max_inactive=90, warmup_max=60, gray_hold=30),
            "nightly": cls(warmup=60, baseline=30, degraded=60, after=30, max_inactive=120, warmup_max=180, gray_hold=90),
            "full": cls(warmup=120, baseline=60, degraded=180, after=60, max_inactive=180, warmup_max=300, gray_hold=180),
        }
        if name not in paces:
            raise ValueError(f"unknown drill pace {name!r}; choose {', '.join(paces)}")
        return paces[name]


def current_pace() -> Pace:
    """DRILL_PACE (smoke | nightly | full), with DRILL_PACE_OVERRIDES="field=seconds,..." laid over it
    (e.g. "detection_timeout=5" drives a drill into its stop condition on purpose: a canary)."""
    pace = Pace.named(os.environ.get("DRILL_PACE", "smoke"))
    overrides = os.environ.get("DRILL_PACE_OVERRIDES", "").strip()
    if not overrides:
        return pace
    fields = {f.name for f in dataclasses.fields(Pace)}
    changes: dict[str, float] = {}
    for item in overrides.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            if key not in fields:
                raise ValueError
            changes[key] = float(value)
        except ValueError:
            raise ValueError(f"DRILL_PACE_OVERRIDES: {item.strip()!r} is not field=seconds with a field of "
                             f"{', '.join(sorted(fields))}") from None
    return dataclasses.replace(pace, **changes)


# Warm baseline: RSS has "stopped climbing" when no daemon's median RSS over the last RSS_WINDOW_S seconds
# is more than RSS_SETTLED_GROWTH above its median over the window before (docs/thresholds.md).
RSS_WINDOW_S = 10.0
RSS_SETTLED_GROWTH = 0.03


@dataclass(frozen=True)
class WarmUp:
    settled: bool
    waited: float  # seconds waited past the fixed warm-up
    growth: float  # the largest relative growth of a daemon's RSS between the last two windows


def rss_growth(samples: list, now: float, window: float = RSS_WINDOW_S) -> float | None:
    """Largest relative growth of any daemon's median RSS, last window vs the one before; None: too few samples."""
    from drills.report.analysis import RSS

    by_daemon: dict[str, tuple[list[float], list[float]]] = {}
    for smp in samples:
        if smp.metric != RSS or smp.value is None or smp.t < now - 2 * window:
            continue
        last, before = by_daemon.setdefault(smp.labels.get("daemon", "?"), ([], []))
        (last if smp.t >= now - window else before).append(smp.value)
    growths = [statistics.median(a) / statistics.median(b) - 1 for a, b in by_daemon.values() if len(a) >= 3 and len(b) >= 3]
    return max(growths) if growths else None


def wait_rss_settled(run_dir: Path, budget_s: float, poll_s: float = 5.0) -> WarmUp:
    """Go on warming up until every daemon's RSS stopped climbing under the workload, or the budget is spent."""
    from drills.timeline import read_series

    t0 = time.monotonic()
    growth = float("inf")
    while True:
        g = rss_growth(read_series(run_dir), time.time())
        growth = g if g is not None else growth
        if g is not None and g <= RSS_SETTLED_GROWTH:
            return WarmUp(True, time.monotonic() - t0, g)
        if time.monotonic() - t0 >= budget_s:
            return WarmUp(False, time.monotonic() - t0, growth if growth != float("inf") else -1.0)
        time.sleep(poll_s)


class DrillAborted(Exception):
    """The cluster crossed a hard line; the fault was healed at once."""


@dataclass
class AbortWatch:
    cluster: CephCluster
    expected_down: set[int]
    max_inactive: float
    inactive_since: float | None = None
    on_unfound: Callable[[int], None] | None = None  # the drill's evidence keeps the most it saw

    def check(self) -> None:
        s = self.cluster.pg_summary()
        if self.on_unfound is not None:
            self.on_unfound(s.unfound_objects)
        now = time.monotonic()
        if s.inactive:
            self.inactive_since = self.inactive_since or now
            if now - self.inactive_since > self.max_inactive:
                raise DrillAborted(f"{s.inactive} PGs inactive for more than {self.max_inactive:.0f} s")
        else:
            self.inactive_since = None
        if s.unfound_objects:
            raise DrillAborted(f"{s.unfound_objects} unfound objects")
        up = self.cluster.osds_up()
        outside = (set(self.cluster.osds_in()) | up) - self.expected_down - up
        if outside:
            raise DrillAborted(f"OSDs outside the blast radius went down: {sorted(outside)}")


CANARY_DROP_WRITE_ENV = "DRILL_CANARY_DROP_WRITE"


def canary_backend(backend: Any, drill: DrillRecorder) -> Any:
    """DRILL_CANARY_DROP_WRITE=N: the verifier's backend acknowledges its Nth write without storing it (a
    canary: the drill must then fail, whatever the thresholds file says). Said on the timeline and in the notes."""
    nth = os.environ.get(CANARY_DROP_WRITE_ENV, "").strip()
    if not nth:
        return backend
    from drills.workloads.verifier import DropAckedWrite

    drill.event("canary", f"the verifier drops acknowledged write #{nth}")
    drill.note(f"canary: {CANARY_DROP_WRITE_ENV}={nth}: the verifier drops one acknowledged write on purpose")
    return DropAckedWrite(backend, int(nth))


# A block device client waits out a stall rather than failing the write; only a write the
# cluster never answers within this long is an I/O error.
WRITE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class DrillOutcome:
    lost_writes: LostWrites
    model: ModelInputs


def measure_write_costs(cluster: CephCluster, pool: str, object_size: int = 4 << 20, rounds: int = 5) -> tuple[float, float]:
    """(w, r) in ms on the target: a 4 KiB write, and a whole-object read + write (what recovering
    one object costs before a degraded write may proceed)."""
    data_small, data_obj = os.urandom(4096), os.urandom(object_size)
    name = f"drill-costs-{uuid.uuid4().hex[:8]}"
    small, whole = [], []
    with cluster.open_ioctx(pool) as io:
        try:
            io.write_full(name, data_obj)
            for _ in range(rounds):
                t0 = time.perf_counter()
                io.write(name, data_small, 0)
                small.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                io.read(name, object_size, 0)
                io.write_full(name, data_obj)
                whole.append((time.perf_counter() - t0) * 1000)
        finally:
            io.remove_object(name)
    return statistics.median(small), statistics.median(whole)


@dataclass
class FaultDrill:
    """One run of the runbook. `make_fault` builds the fault from the target."""

    drill: DrillRecorder
    cluster: CephCluster
    target: Target
    faults: FaultSession
    make_fault: Callable[[Target], Fault]
    image: str
    pace: Pace = field(default_factory=current_pace)
    allow_unavailable: bool = False
    expect_down: bool = True  # False for faults the cluster never notices as an OSD down
    write_costs: tuple[float | None, float | None] = (None, None)  # (w, r) in ms, measured in the baseline
    t_heal: float | None = None  # wall clock of the heal, once healed
    # Hooks for drills that follow this runbook with a step of their own (the controlled restart):
    # before_inject(fault) runs just before the fault goes in; restore(fault) runs at the start of the
    # recovery phase in place of a plain heal, and the fault session's heal still follows it (it undoes
    # whatever the restore left). An abort before recovery heals at once, without the restore.
    before_inject: Callable[[Fault], None] | None = None
    restore: Callable[[Fault], None] | None = None

    def run(self) -> DrillOutcome:
        self.cluster.wait_for_clean(timeout=self.pace.clean_timeout)
        fault = self.make_fault(self.target)
        down = set(fault.takes_down().osds())
        return self.with_workloads(lambda fio: self._phases(fault, down, self.pace, fio))

    def with_workloads(self, body: Callable[[FioRunner], None]) -> DrillOutcome:
        """fio (rbd, verify headers) and the verifying writer run while `body(fio)` drives the phases; then
        every acknowledged write is read back, fio's blocks verified, and the run's figures measured."""
        d, c, t = self.drill, self.cluster, self.target
        job = FioJob(name=f"{d.name}-randwrite", rw="randwrite", bs="4k", iodepth=16, runtime=24 * 3600, size="256M",
                     ioengine="rbd", pool=t.cluster.rbd_pool, rbdname=self.image,
                     clientname=t.cluster.client.removeprefix("client."), conf=t.cluster.conf,
                     verify="crc32c")  # headers in every block; read back and checked after the drill
        if d.evidence is not None:
            d.evidence.track_image(t.cluster.rbd_pool, self.image)
        prefix = f"drill-{d.name}-{uuid.uuid4().hex[:6]}"
        with c.open_ioctx(t.cluster.rados_pool) as io:
            writer = VerifyingWriter(canary_backend(RadosObjectBackend(io, prefix=prefix), d),
                                     d.run_dir / f"{d.name}-verifier.jsonl", d.timeline, VerifierConfig(num_keys=64, rate_per_s=20, write_timeout_s=WRITE_TIMEOUT_S))
            with writer:
                fio = start_job(job, d.timeline, processes=WorkloadProcesses(t.state_dir))
                writer.start()
                try:
                    body(fio)
                finally:
                    writer.stop()
                    result = fio.stop()
                report = writer.check()
        if d.evidence is not None:
            d.evidence.track_objects(t.cluster.rados_pool, [f"{prefix}.{i:06d}" for i in writer.ledger.keys()])
            d.evidence.start_scrub()  # writes stopped, cluster clean: scrubbed while fio's blocks are read back
        fio_check = verify_written(job, result, d.timeline)  # fio's own blocks, read back while the image exists
        if d.evidence is not None:
            d.evidence.add_fio(FioVerification(fio_check.errors, fio_check.method, fio_check.error))
        d.note(fio_check.method if fio_check.errors is not None else f"fio verify not measured: {fio_check.error}")
        # per host that runs Ceph daemons (its memory cgroup on the sandbox, /proc/vmstat over SSH on staging)
        d.measure("recovery", "oom_kills", d.evidence.oom_kills() if d.evidence is not None else None)
        self._measure_io_errors(writer, None if result.stopped else result.returncode)  # stopped by us: exit 128
        d.note(report.summary().splitlines()[0])
        d.note(f"fio {job.name}: exit {result.returncode}, {len(result.intervals)} intervals")
        self._measure_flaps()
        pool_size = next((p["size"] for p in c.pools() if p["pool_name"] == t.cluster.rbd_pool), 3)
        w_ms, r_ms = self.write_costs
        model = ModelInputs(small_write_ms=w_ms, object_recovery_ms=r_ms, pool_size=pool_size, object_size=4 << 20)
        self._measure_model(model)
        return DrillOutcome(
            lost_writes=d.lost_writes(writer, report, report.method),
            model=model,
        )

    def _measure_model(self, model: ModelInputs) -> None:
        """model_error_ratio: the degraded-write model (w, r taken under the drill's own load) against the
        latency measured after the heal."""
        from drills.report.analysis import Window, compare_model
        from drills.timeline import read_series

        d = self.drill
        events = [e for e in read_events(d.run_dir) if e.data.get("drill") in (None, d.name)]
        cmp = compare_model(read_series(d.run_dir), events, Window(d.started, time.time()), model)
        d.measure("recovery", "model_error_ratio", cmp.error_ratio)
        if cmp.available and cmp.mean_predicted_ms is not None and cmp.mean_measured_ms is not None:
            d.note(f"degraded-write model (w, r under load): predicted {cmp.mean_predicted_ms:.1f} ms, measured "
                   f"{cmp.mean_measured_ms:.1f} ms after the heal")
        else:
            d.note(f"degraded-write model not compared: {cmp.reason}")

    def _measure_flaps(self) -> None:
        """OSDs marked down again once the fault's own loss was detected: in the degraded phase
        (a partitioned OSD marked up and down again) and after the heal."""
        events = read_events(self.drill.run_dir)
        spans = [(e.t, e.label) for e in events if e.kind == "phase" and e.data.get("drill") == self.drill.name]
        bounds = {label: (t, spans[i + 1][0] if i + 1 < len(spans) else float("inf")) for i, (t, label) in enumerate(spans)}
        downs = [e.t for e in events if e.kind == "cluster.osd_down"]
        for phase in ("degraded", "recovery", "after"):
            if phase in bounds:
                start, end = bounds[phase]
                self.drill.measure(phase, "osd_flaps", sum(1 for t in downs if start <= t < end))

    def _measure_io_errors(self, writer: VerifyingWriter, fio_returncode: int | None) -> None:
        """Writes that failed or never returned, counted in the phase that issued them."""
        spans = [(e.t, e.label) for e in read_events(self.drill.run_dir) if e.kind == "phase" and e.data.get("drill") == self.drill.name]
        counts = {label: 0 for _, label in spans if label != "end"}
        for w in (w for ws in writer.ledger.unacked.values() for w in ws):
            phase = next((label for t, label in reversed(spans) if t <= w.issued_at), None)
            if phase in counts:
                counts[phase] += 1
        if fio_returncode not in (0, None):
            counts["after"] = counts.get("after", 0) + 1  # fio reported errors (see its notes)
        for phase, n in counts.items():
            self.drill.measure(phase, "io_errors", n)

    def _warmup_and_baseline(self, pace: Pace) -> None:
        """Warm-up (until RSS settles) and the baseline phase, with the write costs the model needs."""
        d = self.drill
        d.event("note", "warm-up", seconds=pace.warmup)
        time.sleep(pace.warmup)
        warm = wait_rss_settled(d.run_dir, pace.warmup_max - pace.warmup)
        d.event("note", "warm baseline" if warm.settled else "RSS still climbing at the end of the warm-up",
                seconds=round(warm.waited, 1), growth=round(warm.growth, 4))
        d.phase("baseline", rss_settled=warm.settled)
        t_base = time.monotonic()
        # w and r under the drill's own load (fio and the writer are running): like with like for the model
        self.write_costs = measure_write_costs(self.cluster, self.target.cluster.rados_pool)
        d.note(f"measured under the drill's load: 4 KiB write {self.write_costs[0]:.1f} ms, "
               f"4 MiB object read+write {self.write_costs[1]:.1f} ms")
        time.sleep(max(0.0, pace.baseline - (time.monotonic() - t_base)))

    def _phases(self, fault: Fault, down: set[int], pace: Pace, fio: FioRunner) -> None:
        d, c = self.drill, self.cluster
        self._warmup_and_baseline(pace)
        d.phase("detection", fault=fault.label, takes_down=sorted(down))
        t_inject = time.monotonic()
        if self.before_inject is not None:
            self.before_inject(fault)
        self.faults.inject(fault, allow_unavailable=self.allow_unavailable)
        watch = AbortWatch(c, down, pace.max_inactive,
                           on_unfound=d.evidence.saw_unfound if d.evidence is not None else None)
        try:
            if self.expect_down and down:
                self._wait(lambda: (not (down & c.osds_up()), f"up {sorted(c.osds_up())}"), pace.detection_timeout,
                           f"{sorted(down)} marked down", watch)
                d.measure("detection", "detection_time", time.monotonic() - t_inject)
                d.event("note", "OSDs marked down", osds=sorted(down))
            t_down = time.monotonic()
            if down:
                # The pgmap comes from the mgr seconds after the osdmap: until the PG states show
                # the loss (not all clean), "all active" would be read from before the fault.
                self._wait(lambda: (not c.pg_summary().all_clean, "pgmap still all clean"), 30, "the PG states to show the lost OSDs", watch)
                d.event("note", "PGs degraded", degraded_objects=c.pg_summary().degraded_objects)
            self._wait(lambda: (c.pg_summary().all_active, "PGs not all active"), pace.max_inactive + 30, "all PGs active", watch)
            d.measure("degraded", "time_to_active", time.monotonic() - t_down)
            d.event("note", "all PGs active")
            # The stall ends when clients see IO flow again: the first fio report taken after
            # the PGs went active carries the writes that waited out the stall.
            t_active = time.time()
            settle = time.monotonic() + 10
            while time.monotonic() < settle and not any(i.t > t_active + 0.2 for i in fio.intervals()):
                time.sleep(0.2)
            d.phase("degraded", osds_down=sorted(down))
            end = time.monotonic() + pace.degraded
            while time.monotonic() < end:
                watch.check()
                time.sleep(1)
        except DrillAborted as e:
            d.event("abort", str(e))
            self.faults.heal(fault)
            raise

        self._recover(fault, down, pace)

    def _recover(self, fault: Fault, back_up: set[int], pace: Pace) -> None:
        """The recovery and after phases every fault drill shares: heal, wait for `back_up` OSDs, then
        active and clean (timed from the heal), then the after phase."""
        d, c = self.drill, self.cluster
        d.phase("recovery", restored=fault.label)
        self.t_heal = time.time()
        t_heal = time.monotonic()
        try:
            if self.restore is not None:
                self.restore(fault)
        finally:
            self.faults.heal(fault)
        try:
            if back_up:
                c.wait_for_osds(up=back_up, timeout=pace.detection_timeout)
                d.event("note", "OSDs back up", osds=sorted(back_up))
            c.wait_for_active(timeout=pace.max_inactive)
            d.measure("recovery", "time_to_active", time.monotonic() - t_heal)
            c.wait_for_clean(timeout=pace.clean_timeout)
        except WaitTimeout as e:
            d.event("abort", f"recovery did not finish: {e}")
            raise
        d.measure("recovery", "time_to_clean", time.monotonic() - t_heal)
        d.phase("after", clean_after=round(time.monotonic() - t_heal, 1))
        time.sleep(pace.after)

    def _wait(self, check: Callable[[], tuple[bool, str]], timeout: float, what: str, watch: AbortWatch) -> None:
        deadline = time.monotonic() + timeout
        while True:
            watch.check()
            try:
                ok, state = check()
            except ClusterError as e:
                ok, state = False, str(e)
            if ok:
                return
            if time.monotonic() > deadline:
                raise DrillAborted(f"timed out after {timeout:.0f} s waiting for {what}; last state: {state}")
            time.sleep(0.5)
