"""The soak's runbook: a drawn schedule of faults while block and object clients run and are verified.

    baseline   fio (rbd, crc32c headers), the verifying writer (RADOS), the S3 clients (locust, and a verifying
               writer whose every acknowledged PUT is read back) run; nothing is wrong yet
    degraded   the schedule (drills/soak/schedule.py), step by step:
                 quiet   the drawn calm: the step's "before"
                 inject  every fault of the step through the fault session (guarded, ledgered)
                 hold    the drawn seconds, under the abort watch (inactive PGs too long, unfound objects,
                         an OSD outside the step's blast radius going down: the soak stops, heals, fails)
                 heal    newest first
                 settle  until the OSDs are back up and every PG active+clean, bounded by the settle bound
                         (past it the soak stops: the next fault would land on a cluster that is still degraded)
    recovery   after the last step: until active+clean (timed)
    after      the cluster is clean; writes go on; then every acknowledged write (RADOS and S3) and fio's own
               blocks are read back

The workloads, the warm-up and baseline, the read-back and the invariants are FaultDrill's (drills/scenario.py).
The seed and the drawn schedule go to the run directory (soak-schedule.json) before the first fault; each step's
moments and figures (drills/soak/figures.py) to soak.json for the report.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from drills.cluster import ClusterError
from drills.faults.fault import Fault, Outage
from drills.faults.guard import impact_of
from drills.report.results import LostWrites
from drills.scenario import AbortWatch, DrillAborted, DrillOutcome, FaultDrill
from drills.soak.figures import SCHEDULE_FILE, SOAK_FILE, StepFigures, StepTiming, per_fault, step_figures
from drills.soak.schedule import Schedule, SoakStep
from drills.timeline import read_events, read_histograms, read_series
from drills.workloads.fio import FioRunner

# The object clients: light enough to leave the 2-core sandbox to the block clients, steady enough to plot.
S3_USERS, S3_RATE_PER_USER = 2, 5.0
S3_VERIFIER_RATE = 5.0
S3_WRITE_TIMEOUT_S = 60.0


def combine_lost_writes(a: LostWrites, b: LostWrites) -> LostWrites:
    """Both verifiers' read-backs as one lost-write result (the invariant counts every acknowledged write)."""
    return LostWrites(a.written + b.written, a.acknowledged + b.acknowledged, a.verified + b.verified, a.lost + b.lost,
                      (a.examples + b.examples)[:10], f"{a.method}; and {b.method}")


@dataclass
class SoakDrill(FaultDrill):
    """One soak: `schedule` drawn beforehand; `make_fault` is unused (the steps build their faults)."""

    schedule: Schedule | None = None
    object_clients: bool = True  # the S3 clients (skipped, with a note, on a target without [s3])
    timings: list[StepTiming] = field(default_factory=list)
    figures: list[StepFigures] = field(default_factory=list)
    s3_lost: LostWrites | None = None
    t_started: float = field(default_factory=time.time)
    # A settle counts once the step's OSDs are up and every PG active+clean for this long: the osdmap and the mgr's
    # pgmap lag the heal by seconds (a power cut healed before the cluster noticed is marked down at the reboot).
    stable_s: float = 10.0
    _previous: set[int] = field(default_factory=set)  # the last step's OSDs: still settling in the next quiet

    def run(self) -> DrillOutcome:
        assert self.schedule is not None
        self.t_started = time.time()
        self._write_schedule()
        self.cluster.wait_for_clean(timeout=self.pace.clean_timeout)
        outcome = self.with_workloads(self._soak)
        if self.s3_lost is not None:
            outcome = dataclasses.replace(outcome, lost_writes=combine_lost_writes(outcome.lost_writes, self.s3_lost))
        return outcome

    # -- the record --

    def _write_schedule(self) -> None:
        assert self.schedule is not None
        d = self.drill
        record = self.schedule.record()
        (d.run_dir / SCHEDULE_FILE).write_text(json.dumps(record, indent=2))
        d.event("soak.schedule", f"seed {self.schedule.params.seed}", seed=self.schedule.params.seed,
                steps=len(self.schedule.steps), fingerprint=self.schedule.fingerprint,
                estimated_s=round(self.schedule.estimated_s, 1))
        d.note(f"soak: seed {self.schedule.params.seed}, {len(self.schedule.steps)} step(s), schedule fingerprint "
               f"{self.schedule.fingerprint} ({SCHEDULE_FILE}); the same seed replays this schedule, timing will differ")

    def _write_soak_file(self) -> None:
        assert self.schedule is not None
        ended = time.time()
        record = {
            "seed": self.schedule.params.seed,
            "fingerprint": self.schedule.fingerprint,
            "schedule": self.schedule.record(),
            "planned_s": round(self.schedule.estimated_s, 1),
            "wall_s": round(ended - self.t_started, 1),
            "steps": [dataclasses.asdict(t) for t in self.timings],
            "figures": [f.to_dict() for f in self.figures],
            "timing_note": "timing differs between replays of one seed: the schedule (kinds, aims, holds, quiet spells) is "
                           "the same, each settle lasts as long as the cluster takes",
        }
        (self.drill.run_dir / SOAK_FILE).write_text(json.dumps(record, indent=2, default=str))

    # -- the runbook --

    def _soak(self, fio: FioRunner) -> None:
        assert self.schedule is not None
        d, c, pace = self.drill, self.cluster, self.pace
        with self._s3_clients():
            self._warmup_and_baseline(pace)
            d.phase("degraded", seed=self.schedule.params.seed, steps=len(self.schedule.steps))
            for step in self.schedule.steps:
                self._step(step)
            d.phase("recovery")
            t0 = time.monotonic()
            c.wait_for_clean(timeout=pace.clean_timeout)
            d.measure("recovery", "time_to_clean", time.monotonic() - t0)
            d.phase("after")
            time.sleep(pace.after)

    def _step(self, step: SoakStep) -> None:
        d, c, t, pace = self.drill, self.cluster, self.target, self.pace
        assert self.schedule is not None
        faults = step.build(t)
        label = " + ".join(f.label for f in faults)
        timing = StepTiming(step.index, label, time.time())
        d.event("soak.step", label, step=step.index, of=len(self.schedule.steps), quiet_s=step.quiet_s,
                hold_s=step.hold_s, faults=[dataclasses.asdict(f) for f in step.faults])
        on_unfound = d.evidence.saw_unfound if d.evidence is not None else None
        injected: list[Fault] = []
        try:
            # the last step's OSDs may still be marked down and up in the quiet (its own doing, not a new outage) ...
            self._hold(step.quiet_s, AbortWatch(c, set(self._previous), pace.max_inactive, on_unfound=on_unfound))
            # ... but the guard weighs only faults in force, so nothing goes in before every OSD is up and PGs clean
            self._settle(set(c.osds_in()), step, stable_s=0.0, what="before the inject")
            timing = dataclasses.replace(timing, t_inject=time.time())
            for fault in faults:  # the guard weighs every fault in force together (FaultSession.inject)
                injected.append(self.faults.inject(fault, allow_unavailable=self.allow_unavailable))
            suspects = self._previous = self._suspects(faults)
            self._hold(step.hold_s, AbortWatch(c, suspects, pace.max_inactive, on_unfound=on_unfound))
            timing = dataclasses.replace(timing, t_heal=time.time())
            for fault in reversed(injected):
                self.faults.heal(fault)
            timing = dataclasses.replace(timing, t_clean=self._settle(suspects, step, self.stable_s))
        except DrillAborted as e:
            d.event("abort", str(e), step=step.index)
            timing = dataclasses.replace(timing, note=f"stopped: {e}")
            for fault in reversed(injected):
                self.faults.heal(fault)
            raise
        except BaseException as e:
            timing = dataclasses.replace(timing, note=f"stopped: {type(e).__name__}: {e}")
            raise
        finally:
            self.timings.append(timing)

    def _suspects(self, faults: list[Fault]) -> set[int]:
        """OSDs the step's faults take down or act on (their hosts' OSDs): they may go down without stopping the soak."""
        hosts: set[str] = set()
        daemons: set[str] = set()
        for f in faults:
            o = f.takes_down()
            hosts |= o.hosts | {h for h in f.host_names() if self.target.host(h).osd_ids}
            daemons |= o.daemons
        return set(impact_of(self.target, Outage(frozenset(hosts), frozenset(daemons))).osds)

    def _hold(self, seconds: float, watch: AbortWatch) -> None:
        end = time.monotonic() + seconds
        while True:
            watch.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(1.0, left))

    def _settle(self, osds: set[int], step: SoakStep, stable_s: float, what: str = "of the heal") -> float:
        """Wait until `osds` are up and every PG is active+clean, without a break for `stable_s` seconds, within the
        settle bound; returns when that began (wall clock). DrillAborted past the bound."""
        assert self.schedule is not None
        c, bound = self.cluster, self.schedule.params.settle_s
        deadline = time.monotonic() + bound
        since: tuple[float, float] | None = None  # (monotonic, wall) when the cluster was last seen settled
        state = ""
        while True:
            try:
                up, pgs = c.osds_up(), c.pg_summary()
                ok = osds <= up and pgs.all_clean
                state = f"OSDs down {sorted(osds - up)}" if not osds <= up else "" if pgs.all_clean else "PGs not all active+clean"
            except ClusterError as e:
                ok, state = False, str(e)
            now = time.monotonic()
            if not ok:
                since = None
            elif since is None:
                since = (now, time.time())
            if since is not None and now - since[0] >= stable_s:
                return since[1]
            if now > deadline:
                raise DrillAborted(f"step {step.index}: not settled within {bound:.0f} s {what} ({state}); a further "
                                   "fault would land on a degraded cluster")
            time.sleep(1.0)

    # -- the object clients --

    @contextmanager
    def _s3_clients(self) -> Iterator[None]:
        """locust's S3 mix (figures on the timeline) and a verifying writer of S3 PUTs, for the whole soak."""
        from drills.target import TargetError
        from drills.workloads.locust_s3 import LocustS3Runner, S3Endpoint, S3Workload, S3WorkloadError
        from drills.workloads.reaper import WorkloadProcesses
        from drills.workloads.verifier import S3ObjectBackend, VerifierConfig, VerifyingWriter

        d = self.drill
        if not self.object_clients:
            yield
            return
        try:
            endpoint = S3Endpoint.from_target(self.target)
        except TargetError as e:
            d.note(f"object clients not run: {e}")
            yield
            return
        tag = uuid.uuid4().hex[:6]
        workload = S3Workload(name=f"soak-{tag}", users=S3_USERS, runtime_s=7 * 24 * 3600, object_size="16KiB",
                              mix={"put": 2, "get": 2, "delete": 1}, keys_per_user=50, rate_per_user=S3_RATE_PER_USER)
        backend = S3ObjectBackend(endpoint.client(5.0, S3_WRITE_TIMEOUT_S), f"drills-soak-verify-{tag}", f"soak-{tag}")
        locust = LocustS3Runner(workload, endpoint, d.timeline, workdir=d.run_dir / f"locust-{tag}",
                                processes=WorkloadProcesses(self.target.state_dir))
        writer = VerifyingWriter(backend, d.run_dir / f"{d.name}-s3-verifier.jsonl", d.timeline,
                                 VerifierConfig(num_keys=16, rate_per_s=S3_VERIFIER_RATE, write_timeout_s=S3_WRITE_TIMEOUT_S),
                                 name="s3-verifier")
        with writer:
            locust.start()
            writer.start()
            try:
                yield
            finally:
                writer.stop()
                try:
                    result = locust.stop(timeout=60)
                    totals = ", ".join(f"{op} {t.ok} ok {t.errors} failed" for op, t in sorted(result.totals.items()))
                    d.note(f"S3 clients (locust, {S3_USERS} users x {S3_RATE_PER_USER:g}/s): {totals}")
                    d.notes.extend(result.notes)
                except S3WorkloadError as e:
                    d.note(f"S3 clients (locust): {e}")
            report = writer.check()
            d.note(f"S3 PUTs: {report.summary().splitlines()[0]}")
            self.s3_lost = d.lost_writes(writer, report, report.method)
            try:
                backend.cleanup()
            except Exception as e:  # noqa: BLE001 - the check is done; leftovers are only named
                d.note(f"S3 verifier objects not removed from {backend.bucket}: {e}")

    # -- figures --

    def step_figures(self) -> list[StepFigures]:
        d = self.drill
        events = [e for e in read_events(d.run_dir) if e.data.get("drill") in (None, d.name)]
        return step_figures(self.timings, read_series(d.run_dir), read_histograms(d.run_dir), events, time.time())

    def record_stopped(self) -> None:
        """soak.json for a soak that stopped early (the steps it ran, with their figures)."""
        if self.schedule is None or (self.drill.run_dir / SOAK_FILE).exists():
            return
        self.figures = self.step_figures()
        self._write_soak_file()

    def _measure_flaps(self) -> None:
        """The soak's figures (FaultDrill.with_workloads calls this once the clients stopped): per step, and mark-downs
        after the last settle (none expected: the faults' own mark-downs are in the degraded phase)."""
        from drills.gray_runbook import count_markdowns, phase_bounds

        d = self.drill
        events = [e for e in read_events(d.run_dir) if e.data.get("drill") in (None, d.name)]
        bounds = phase_bounds(events, d.name)
        if "after" in bounds:
            start, end = bounds["after"]
            d.measure("after", "osd_flaps", count_markdowns(events, start, end).downs)
        samples = read_series(d.run_dir)
        self.figures = self.step_figures()
        if self.figures:
            d.measure("degraded", "settle_time", per_fault(self.figures, "settle_s"))
            d.measure("degraded", "fault_iops_ratio", per_fault(self.figures, "iops_ratio"))
            d.measure("degraded", "fault_p99_latency", per_fault(self.figures, "p99_during_s"))
        for phase in ("baseline", "degraded", "after"):
            if phase in bounds:
                start, end = bounds[phase]
                errs = [s.value for s in samples if s.metric == "s3.errors" and s.value is not None and start <= s.t < end]
                if any(s.metric == "s3.errors" for s in samples):
                    d.measure(phase, "s3_errors", int(sum(errs)))
        self._write_soak_file()
        for f in self.figures:
            d.note(figure_line(f))


def figure_line(f: StepFigures) -> str:
    def num(v: float | None, fmt: str = ".0f", unit: str = "") -> str:
        return "-" if v is None else f"{v:{fmt}}{unit}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f} ms"

    return (f"step {f.subject}: held {num(f.held_s, unit=' s')}, IOPS {num(f.iops_before)} -> {num(f.iops_during)} "
            f"(x{num(f.iops_ratio, '.2f')}), p99 {ms(f.p99_before_s)} -> {ms(f.p99_during_s)}, "
            f"stall {num(f.stall_s, unit=' s')}, settled {num(f.settle_s, '.1f', ' s')}, mark-downs {f.markdowns}"
            + (f", S3 PUT/s {num(f.s3_put_rps_before, '.1f')} -> {num(f.s3_put_rps_during, '.1f')}, S3 errors {f.s3_errors}"
               if f.s3_errors is not None else "")
            + (f"; {f.note}" if f.note else ""))


def run_soak(drill: Any, drill_cluster: Any, drill_target: Any, drill_faults: Any, drill_image: Any) -> None:
    """The soak as a pytest drill (drills/test_soak.py): the schedule drawn from DRILL_SOAK_* and the live pools."""
    from drills.faults.guard import guard_from_cluster
    from drills.soak.schedule import SoakParams, draw_schedule

    params = SoakParams.from_env()
    schedule = draw_schedule(params, drill_target, guard_from_cluster(drill_target, drill_cluster).pools)
    soak = SoakDrill(drill, drill_cluster, drill_target, drill_faults, lambda t: None, drill_image,  # type: ignore[arg-type,return-value]
                     schedule=schedule)
    try:
        outcome = soak.run()
    except BaseException:
        soak.record_stopped()
        raise
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
