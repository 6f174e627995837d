"""The soak (drills/soak/): the seeded draw and its replay, the guard at every step, the runbook's steps against
a recording fake backend (inject, hold, heal, settle; stops heal), the per-fault figures, the S3 PUT verifier,
the report's section and `drill soak`'s refusals of bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID, FakeBackend, make_target  # noqa: E402

from drills.faults.guard import FaultGuard, GuardRefused, PoolSpec
from drills.faults.ledger import FaultLedger
from drills.faults.session import FaultSession
from drills.scenario import DrillAborted, Pace
from drills.soak.figures import StepTiming, per_fault, step_figures
from drills.soak.schedule import (DEFAULT_KINDS, FaultSpec, Schedule, SoakError, SoakParams, SoakStep, admissible,
                                  draw_schedule, parse_kinds, parse_seed)
from drills.timeline import Event, Histogram, Sample, Timeline, read_events

RACK = [PoolSpec("rbd", 3, 2, "rack")]
HOST = [PoolSpec("rbd", 3, 2, "host")]


@pytest.fixture
def target(tmp_path):
    return make_target(str(tmp_path / "state"))


def params(**kw: Any) -> SoakParams:
    return SoakParams.build(**{"seed": 7, "duration": "20min", **kw})


# --- the draw ---------------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another(target) -> None:
    a = draw_schedule(params(), target, RACK)
    b = draw_schedule(params(), target, RACK)
    assert a.to_dict() == b.to_dict() and a.fingerprint == b.fingerprint and len(a.steps) >= 5
    c = draw_schedule(params(seed=8), target, RACK)
    assert c.fingerprint != a.fingerprint and [s.faults for s in c.steps] != [s.faults for s in a.steps]
    # the order the kinds are named in does not matter; the other parameters do
    assert draw_schedule(params(kinds="slow_disk,daemon_kill"), target, RACK).fingerprint == \
        draw_schedule(params(kinds="daemon_kill,slow_disk"), target, RACK).fingerprint
    assert draw_schedule(params(hold="20s..61s"), target, RACK).fingerprint != a.fingerprint
    # a pool radosgw makes on its first bucket, weighed the same, draws the same schedule
    more = draw_schedule(params(), target, [*RACK, PoolSpec("default.rgw.buckets.data", 3, 2, "rack")])
    assert more.fingerprint == a.fingerprint and more.record()["pools"] != a.record()["pools"]


def test_a_replay_through_the_environment_draws_what_the_command_line_drew(target) -> None:
    p = params(kinds="rack_power_cut,slow_link", hold="15s..30s", quiet="5s..10s", settle="5min", max_concurrent=2)
    assert SoakParams.from_env(p.to_env()) == p
    assert draw_schedule(SoakParams.from_env(p.to_env()), target, RACK).fingerprint == draw_schedule(p, target, RACK).fingerprint
    assert f"--seed {p.seed}" in p.command() and "--max-concurrent 2" in p.command()


def test_the_schedule_fills_the_duration_and_draws_from_every_kind(target) -> None:
    s = draw_schedule(params(duration="1h"), target, RACK)
    assert s.estimated_s <= 3600 and s.estimated_s > 3600 - 200  # full, no step past the end
    assert {f.kind for st in s.steps for f in st.faults} == set(DEFAULT_KINDS)
    assert all(20 <= st.hold_s <= 60 and 10 <= st.quiet_s <= 30 for st in s.steps)
    assert [st.index for st in s.steps] == list(range(1, len(s.steps) + 1))


def test_every_step_passes_the_guard_one_fault_at_a_time(target) -> None:
    s = draw_schedule(params(duration="2h"), target, RACK)
    assert all(len(st.faults) == 1 for st in s.steps)
    for st in s.steps:
        assert admissible(target, RACK, st.build(target))
        FaultGuard(target, FSID, RACK).check_all(st.build(target))  # the session's own check agrees


def test_a_host_failure_domain_keeps_rack_wide_faults_out(target) -> None:
    s = draw_schedule(params(duration="2h"), target, HOST)
    kinds = {f.kind for st in s.steps for f in st.faults}
    assert "rack_power_cut" not in kinds and "network_partition" not in kinds and "power_cut" in kinds
    with pytest.raises(SoakError, match="no fault of rack_power_cut"):
        draw_schedule(params(kinds="rack_power_cut"), target, HOST)


def test_concurrent_faults_only_when_asked_and_never_past_what_the_pools_survive(target) -> None:
    s = draw_schedule(params(duration="3h", max_concurrent=3), target, RACK)
    assert max(len(st.faults) for st in s.steps) >= 2
    guard = FaultGuard(target, FSID, RACK)
    for st in s.steps:
        faults = st.build(target)
        guard.check_all(faults)  # raises GuardRefused if together they take down two racks
        hosts = [h for f in faults for h in f.host_names()]
        assert len(hosts) == len(set(hosts))  # two faults of a step never act on one host


def test_bad_input_is_refused_with_one_line() -> None:
    with pytest.raises(SoakError, match="unknown fault kind 'bogus'"):
        parse_kinds("rack_power_cut,bogus")
    with pytest.raises(SoakError, match="does not draw"):
        parse_kinds("read_errors")
    for seed in ("abc", "-1", "1.5", str(2**63)):
        with pytest.raises(SoakError, match="--seed"):
            parse_seed(seed)
    assert parse_seed("0x10") == 16 and parse_seed("42") == 42
    with pytest.raises(SoakError, match="shorter than one step"):
        params(duration="30s")
    with pytest.raises(SoakError, match="low end"):
        params(hold="60s..20s")
    with pytest.raises(SoakError, match="not a duration"):
        params(duration="20")
    with pytest.raises(SoakError, match="at least 1"):
        params(max_concurrent=0)


def test_a_duration_of_exactly_one_step_gets_one_step(target) -> None:
    p = params(kinds="slow_link", duration="40s", hold="20s..60s", quiet="10s..30s")  # 10 + 20 + settle 10
    s = draw_schedule(p, target, RACK)
    assert len(s.steps) == 1 and (s.steps[0].quiet_s, s.steps[0].hold_s) == (10, 20)


def test_the_dry_run_lines_name_every_step(target) -> None:
    s = draw_schedule(params(duration="10min"), target, RACK)
    lines = s.lines(target)
    assert "seed 7" in lines[0] and s.fingerprint in lines[0]
    assert len([line for line in lines if " held " in line]) == len(s.steps)
    record = s.record()
    assert record["fingerprint"] == s.fingerprint and "timing differs" in record["replay"]
    assert json.loads(json.dumps(record))["steps"] == [st.to_dict() for st in s.steps]


# --- the runbook's steps against a fake backend -----------------------------------------------------


@dataclasses.dataclass
class FakePgs:
    inactive: int = 0
    unfound_objects: int = 0
    all_clean: bool = True
    all_active: bool = True


class FakeCluster:
    """What the soak's steps ask of the cluster: PG states and OSDs up/in. After the first heal (a power_on or a
    start_daemon on the fake backend) `late` OSDs are still down for `late_polls` polls, and PGs stay unclean
    for good when `clean` is False."""

    def __init__(self, target, fake: FakeBackend, clean: bool = True, late: set[int] = frozenset(), late_polls: int = 0,
                 down_once_cut: set[int] = frozenset()):
        self.all = set(target.osd_ids)
        self.fake = fake
        self.down_once_cut = set(down_once_cut)  # down from the first power_off on
        self.clean, self.late, self.late_polls = clean, set(late), late_polls

    def healed(self) -> bool:
        return any(c[0] in ("power_on", "start_daemon") for c in self.fake.calls)

    def pg_summary(self) -> FakePgs:
        return FakePgs(all_clean=self.clean or not self.healed())

    def osds_up(self) -> set[int]:
        down = self.down_once_cut if any(c[0] == "power_off" for c in self.fake.calls) else set()
        if self.healed() and self.late_polls > 0:
            self.late_polls -= 1
            return self.all - down - self.late
        return self.all - down

    def osds_in(self) -> set[int]:
        return set(self.all)


class Recorder:
    def __init__(self, run_dir: Path, timeline: Timeline) -> None:
        self.name, self.run_dir, self.timeline = "soak", run_dir, timeline
        self.evidence = None
        self.notes: list[str] = []

    def phase(self, name: str, **data: Any) -> None:
        self.timeline.event("phase", name, drill=self.name, **data)

    def event(self, kind: str, label: str, **data: Any) -> None:
        self.timeline.event(kind, label, drill=self.name, **data)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _soak(target, tmp_path, steps, *, stable_s=0.0, **cluster_kw):
    from drills.soak.runner import SoakDrill

    fake = FakeBackend()
    tl = Timeline(tmp_path / "run")
    session = FaultSession(target, guard=FaultGuard(target, FSID, RACK), resolve=fake.resolve, timeline=tl)
    p = SoakParams.build(seed=1, duration="10min", settle="5s")
    schedule = Schedule(p, tuple(steps), {}, tuple(RACK))
    soak = SoakDrill(drill=Recorder(tmp_path / "run", tl), cluster=FakeCluster(target, fake, **cluster_kw),  # type: ignore[arg-type]
                     target=target, faults=session, make_fault=lambda t: None, image="img",  # type: ignore[arg-type, return-value]
                     pace=dataclasses.replace(Pace.named("smoke"), max_inactive=5), schedule=schedule, object_clients=False,
                     stable_s=stable_s)
    return soak, session, fake, tl


def step(index: int, *faults: tuple[str, str], hold: float = 1, quiet: float = 0) -> SoakStep:
    return SoakStep(index, tuple(FaultSpec(k, a) for k, a in faults), quiet, hold, quiet + hold + 30)


def test_each_step_is_injected_held_healed_and_settled_through_the_ledger(target, tmp_path) -> None:
    soak, session, fake, tl = _soak(target, tmp_path, [step(1, ("rack_power_cut", "rack1")),
                                                        step(2, ("daemon_kill", "osd.0"), ("slow_disk", "osd.5"))],
                                    late={4, 5}, late_polls=2, stable_s=1.0)
    with session:
        for s in soak.schedule.steps:
            soak._step(s)
        assert session.active == []
    assert FaultLedger(target.state_dir).pending() == []
    ops = [c[0] for c in fake.calls]
    assert ops.index("power_off") < ops.index("power_on") < ops.index("kill_daemon")
    assert [t.index for t in soak.timings] == [1, 2]
    for t in soak.timings:
        assert t.t_quiet <= t.t_inject < t.t_heal <= t.t_clean and t.t_heal - t.t_inject >= 1.0 and not t.note
    # rack1's OSDs 4 and 5 came back two polls (seconds) after the heal: the settle waited for them
    first = soak.timings[0]
    assert first.t_clean - first.t_heal >= 1.5 and soak.timings[1].t_inject - first.t_clean >= 1.0  # + the stable second
    kinds = [e.kind for e in read_events(tl.dir) if e.kind.startswith(("fault.", "soak."))]
    assert kinds == ["soak.step", "fault.inject", "fault.heal", "soak.step", "fault.inject", "fault.inject",
                     "fault.heal", "fault.heal"]


def test_a_step_that_does_not_settle_stops_the_soak_with_its_fault_healed(target, tmp_path) -> None:
    soak, session, fake, tl = _soak(target, tmp_path, [step(1, ("power_cut", "r2h0"))], clean=False)
    with session:
        with pytest.raises(DrillAborted, match="step 1: not settled within 5 s"):
            soak._step(soak.schedule.steps[0])
    assert FaultLedger(target.state_dir).pending() == [] and "power_on" in [c[0] for c in fake.calls]
    assert "not settled" in soak.timings[0].note and soak.timings[0].t_clean is None


def test_an_osd_outside_the_steps_blast_radius_going_down_stops_the_soak(target, tmp_path) -> None:
    # osd.0 (rack0) goes down while the step holds a power cut of rack2
    soak, session, fake, tl = _soak(target, tmp_path, [step(1, ("rack_power_cut", "rack2"), hold=2)], down_once_cut={0, 8})
    with session:
        with pytest.raises(DrillAborted, match=r"outside the blast radius went down: \[0\]"):
            soak._step(soak.schedule.steps[0])
    assert FaultLedger(target.state_dir).pending() == [] and soak.timings[0].t_inject is not None
    assert [e.kind for e in read_events(tl.dir) if e.kind == "abort"] == ["abort"]


def test_the_guard_holds_at_run_time_too(target, tmp_path) -> None:
    """A schedule the draw would never make (two racks at once) is refused at the inject, nothing left armed."""
    soak, session, fake, tl = _soak(target, tmp_path, [step(1, ("rack_power_cut", "rack0"), ("rack_power_cut", "rack1"))])
    with session:
        with pytest.raises(GuardRefused, match="together"):
            soak._step(soak.schedule.steps[0])
    assert FaultLedger(target.state_dir).pending() == []
    assert [c[1] for c in fake.calls if c[0] == "power_off"] == ["r0h0", "r0h1"]  # only the first, healed
    assert [c[1] for c in fake.calls if c[0] == "power_on"] == ["r0h0", "r0h1"]


# --- per-fault figures ------------------------------------------------------------------------------


def test_step_figures_compare_each_fault_with_the_calm_before_it() -> None:
    t0 = 1000.0
    samples = [Sample(t0 + i, "fio.write.iops", 100.0) for i in range(0, 30)]  # before: 100
    samples += [Sample(t0 + 30 + i, "fio.write.iops", 0.0 if i < 8 else 50.0) for i in range(0, 20)]  # during
    samples += [Sample(t0 + 50 + i, "fio.write.iops", 90.0) for i in range(0, 20)]  # settle
    samples += [Sample(t0 + i, "s3.put.rps", 10.0 if i < 30 else 4.0) for i in range(0, 70)]
    samples += [Sample(t0 + 40, "s3.errors", 2.0)]
    hists = [Histogram(t0 + i, "fio.write.lat_ns", {2_000_000: 100}) for i in range(0, 30)]
    hists += [Histogram(t0 + 40, "fio.write.lat_ns", {9_000_000_000: 5})]
    events = [Event(t0 + 35, "cluster.osd_down", "osd.3"), Event(t0 + 5, "cluster.osd_down", "osd.1")]
    timing = StepTiming(1, "rack power cut rack2", t_quiet=t0, t_inject=t0 + 30, t_heal=t0 + 50, t_clean=t0 + 62)
    (f,) = step_figures([timing], samples, hists, events, end=t0 + 100)
    assert f.iops_before == 100 and f.iops_during == 50 and f.iops_ratio == 0.5
    assert f.held_s == 20 and f.settle_s == 12 and f.stall_s == 8.0 and f.markdowns == 1
    assert abs(f.p99_before_s - 0.002) < 0.0001 and f.p99_during_s > 8.9
    assert f.s3_put_rps_before == 10 and f.s3_put_rps_during == 4 and f.s3_errors == 2
    assert per_fault([f], "settle_s") == {"#1 rack power cut rack2": 12}


def test_a_step_that_never_came_has_no_figures_and_says_why() -> None:
    (f,) = step_figures([StepTiming(3, "hang osd.1", 5.0, note="stopped: step 2")], [], [], [], end=10.0)
    assert f.t_inject is None and f.iops_ratio is None and "stopped" in f.note
    assert per_fault([f], "settle_s") == {}


# --- the S3 PUT verifier ----------------------------------------------------------------------------


class FakeS3:
    """put/get/delete/list of one bucket, as boto3's client answers them."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.buckets: set[str] = set()

    def head_bucket(self, Bucket: str) -> None:
        from botocore.exceptions import ClientError

        if Bucket not in self.buckets:
            raise ClientError({"Error": {"Code": "404"}}, "HeadBucket")

    def create_bucket(self, Bucket: str) -> None:
        self.buckets.add(Bucket)

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
        self.objects[Key] = bytes(Body)

    def get_object(self, Bucket: str, Key: str) -> dict:
        from botocore.exceptions import ClientError

        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.objects.pop(Key, None)

    def delete_objects(self, Bucket: str, Delete: dict) -> None:
        for o in Delete["Objects"]:
            self.objects.pop(o["Key"], None)

    def get_paginator(self, name: str) -> Any:
        objects = self.objects
        return SimpleNamespace(paginate=lambda Bucket, Prefix: [
            {"Contents": [{"Key": k} for k in sorted(objects) if k.startswith(Prefix)]}])


def test_every_acknowledged_put_is_read_back_and_a_vanished_one_is_lost(tmp_path) -> None:
    from drills.workloads.verifier import S3ObjectBackend, VerifierConfig, VerifyingWriter

    s3 = FakeS3()
    backend = S3ObjectBackend(s3, "bucket", "soak-x")
    with VerifyingWriter(backend, tmp_path / "j.jsonl", config=VerifierConfig(num_keys=4, rate_per_s=0)) as w:
        for _ in range(10):
            w.write_one()
        assert "bucket" in s3.buckets and len(s3.objects) == 10
        report = w.check()
        assert report.passed and report.verified == 10 and report.lost == 0
        del s3.objects["soak-x/000001/00000001"]  # write 6 (key 1, slot 1) vanishes behind the verifier's back
        report = w.check()
        assert not report.passed and report.lost == 1 and report.problems[0].seq == 6
        assert "s3://bucket/soak-x/000001/00000001" in report.problems[0].location
        s3.objects["soak-x/000002/00000000"] = b"\0" * 10  # a torn object: corrupt, not ok
        assert w.check().counts["corrupt"] + w.check().counts["lost"] >= 2
    assert backend.cleanup() == 9 and s3.objects == {}


def test_both_verifiers_count_in_the_lost_write_result() -> None:
    from drills.report.results import LostWrites
    from drills.soak.runner import combine_lost_writes

    c = combine_lost_writes(LostWrites(10, 9, 9, 0, (), "rados"), LostWrites(5, 5, 4, 1, ("lost s3://b/k seq 2",), "s3"))
    assert (c.written, c.acknowledged, c.verified, c.lost) == (15, 14, 13, 1) and not c.passed
    assert c.examples == ("lost s3://b/k seq 2",) and "rados" in c.method and "s3" in c.method


# --- the report -------------------------------------------------------------------------------------


def test_the_report_shows_the_seed_the_schedule_and_every_steps_figures(tmp_path, target) -> None:
    from drills.report import render_run
    from drills.report.results import DrillResult, write_drill_result
    from drills.soak.figures import SOAK_FILE

    run = tmp_path / "run"
    tl = Timeline(run)
    t0 = 1_700_000_000.0
    for i in range(60):
        tl.sample("fio.write.iops", 100.0 if not 20 <= i < 40 else 10.0, t=t0 + i)
    tl.event("phase", "baseline", t=t0, drill="soak")
    tl.event("phase", "degraded", t=t0 + 10, drill="soak")
    tl.event("fault.inject", "rack power cut rack2", t=t0 + 20, drill="soak", fault_id="x")
    tl.event("fault.heal", "rack power cut rack2", t=t0 + 40, drill="soak", fault_id="x")
    tl.close()
    schedule = draw_schedule(params(duration="5min"), target, RACK)
    timing = StepTiming(1, "rack power cut rack2", t0 + 10, t0 + 20, t0 + 40, t0 + 52)
    (fig,) = step_figures([timing], [Sample(t0 + i, "fio.write.iops", 100.0 if not 20 <= i < 40 else 10.0) for i in range(60)],
                          [], [], t0 + 60)
    (run / SOAK_FILE).write_text(json.dumps({"seed": 7, "fingerprint": schedule.fingerprint, "schedule": schedule.record(),
                                             "planned_s": 300, "wall_s": 412.5, "steps": [dataclasses.asdict(timing)],
                                             "figures": [fig.to_dict()], "timing_note": "timing differs"}))
    write_drill_result(run, DrillResult("soak", t0, t0 + 60))
    html = render_run(run).read_text()
    assert "Soak: seed 7, 1 of" in html and schedule.fingerprint in html and "rack power cut rack2" in html
    assert "timing differs" in html and "0.10" in html  # IOPS 100 -> 10 during the fault
    assert f"Replay: <code>{schedule.params.command()}" in html


# --- drill soak's refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--duration", "1h", "--faults", "rack_power_cut,bogus"], "unknown fault kind 'bogus'"),
    (["--duration", "20s"], "shorter than one step"),
    (["--duration", "1h", "--seed", "twelve"], "--seed 'twelve' is not a whole number"),
    (["--duration", "1h", "--seed", "-5"], "out of range"),
    (["--duration", "1h", "--max-concurrent", "0"], "at least 1"),
])
def test_drill_soak_refuses_bad_input_in_one_line_touching_nothing(tmp_path, target, args, says) -> None:
    reports = tmp_path / "reports"
    p = subprocess.run([sys.executable, "-m", "drills.cli", "soak", "--target", str(tmp_path / "no-such-target.toml"),
                        "--report-dir", str(reports), *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drill soak: error: ") and says in lines[0], p.stderr
    assert p.stdout == "" and not reports.exists()  # checked before the target is even read
    assert FaultLedger(target.state_dir).pending() == []


def test_drill_soak_is_registered_with_its_options() -> None:
    from drills.cli import parse_args

    a = parse_args(["soak", "--duration", "3min", "--seed", "5", "--dry-run"])
    assert a.command == "soak" and a.duration == "3min" and a.seed == "5" and a.dry_run
    with pytest.raises(SystemExit):
        parse_args(["soak", "--seed", "5"])  # --duration is required
