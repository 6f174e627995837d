"""The restart plan (drills/restart/plan.py) and its read-only gatherer's pure parts, on synthetic readings."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from drills.cli import main
from drills.hostfacts import MEMINFO_COMMAND, meminfo_reading, parse_meminfo
from drills.history.store import connect
from drills.restart.orchestrator import HostMemory
from drills.restart.plan import (
    VERDICT_EXCEEDS, VERDICT_FITS, VERDICT_NOT_MEASURED, HostInput, OsdInput, PlanInputs, Reading, StartupCost,
    StartupSample, assumed_cost, compare_peaks, make_plan, startup_cost_from_history,
)
from drills.restart.plan_gather import STARTUP_PGS_METRIC, history_samples, host_input
from drills.target import Access, Cluster, Host, Rack, Target, dump_target

MiB = 1 << 20
# 10 MiB per PG, nothing fixed, the orchestrator's 1.2 margin: an OSD with N PGs peaks at 10 N MiB, needs 12 N MiB.
COST = StartupCost(10 * MiB, 0, "measured: test", "assumed, not measured: test", 1.2)


def osd(name: str, host: str, pgs: int | None, memory_target: int | None = None) -> OsdInput:
    return OsdInput(name, host, Reading(pgs, "test") if pgs is not None else Reading.missing("osdmaptool failed"),
                    Reading(memory_target, "test") if memory_target is not None else Reading.missing("no OSD answered"))


def host(name: str, memory: int | None, used: int = 100 * MiB) -> HostInput:
    return HostInput(name, Reading(memory, "test") if memory is not None else Reading.missing("host h1 not reachable: ssh timed out"),
                     Reading(used, "test"))


def plan_of(hosts: list[HostInput], osds: list[OsdInput], cost: StartupCost = COST):
    return make_plan(PlanInputs("rack rack1", tuple(osds), tuple(hosts), cost))


# --- the verdict ------------------------------------------------------------------------------------


def test_a_host_too_small_is_predicted_to_exceed():
    # 100 used + 300 + 200 + 100 = 700 MiB at the peak, the host has 600
    p = plan_of([host("h1", 600 * MiB)], [osd("osd.0", "h1", 30), osd("osd.1", "h1", 20), osd("osd.2", "h1", 10)])
    h = p.host("h1")
    assert h.verdict == VERDICT_EXCEEDS
    assert h.predicted_peak == 700 * MiB and h.margin == -100 * MiB
    assert h.one_at_a_time_fits is False  # the last start cannot fit either: the host is short whatever the order
    assert p.complete


def test_a_big_host_fits_all_at_once_in_one_step():
    p = plan_of([host("h1", 2000 * MiB)], [osd("osd.0", "h1", 30), osd("osd.1", "h1", 20), osd("osd.2", "h1", 10)])
    h = p.host("h1")
    assert h.verdict == VERDICT_FITS and h.margin == 1300 * MiB
    assert h.max_concurrent == 3 and len(h.steps) == 1
    assert h.steps[0].budget == 100 * MiB + (360 + 240 + 120) * MiB  # used + every need (peak x 1.2)


def test_steps_and_their_budgets_when_the_margin_does_not_fit_all_at_once():
    # room 700: 360 + 240 fit, + 120 does not; then 500 held at their peaks, 120 more fits in the 200 left
    p = plan_of([host("h1", 800 * MiB)], [osd("osd.2", "h1", 10), osd("osd.1", "h1", 20), osd("osd.0", "h1", 30)])
    h = p.host("h1")
    assert h.verdict == VERDICT_FITS
    assert [[o.osd for o in s.osds] for s in h.steps] == [["osd.0", "osd.1"], ["osd.2"]]
    assert [s.budget for s in h.steps] == [700 * MiB, 720 * MiB]
    assert all(s.fits for s in h.steps) and h.max_concurrent == 2


def test_the_order_puts_the_biggest_osd_first():
    p = plan_of([host("h1", 4000 * MiB), host("h2", 4000 * MiB)],
                [osd("osd.0", "h1", 10), osd("osd.1", "h1", 50), osd("osd.2", "h2", 70), osd("osd.3", "h2", 5)])
    assert [o.osd for o in p.host("h1").osds] == ["osd.1", "osd.0"]
    assert [o.osd for o in p.host("h2").osds] == ["osd.2", "osd.3"]
    # hosts take turns, the biggest of each turn first
    assert p.order == ("osd.2", "osd.1", "osd.0", "osd.3")


def test_half_the_memory_target_is_the_floor_of_a_need():
    p = plan_of([host("h1", 4000 * MiB)], [osd("osd.0", "h1", 10, memory_target=1000 * MiB)])
    start = p.host("h1").osds[0]
    assert start.peak == 100 * MiB and start.need == 500 * MiB  # not 120: the controlled start's flat need


def test_a_missing_reading_is_not_measured_never_zero():
    p = plan_of([host("h1", None), host("h2", 4000 * MiB)], [osd("osd.0", "h1", 10), osd("osd.1", "h2", None)])
    assert not p.complete
    for h in p.hosts:
        assert h.verdict == VERDICT_NOT_MEASURED
        assert h.predicted_peak is None and h.margin is None and h.max_concurrent is None
    assert "ssh timed out" in " ".join(p.host("h1").missing)
    assert "osd.1: PG count not measured: osdmaptool failed" in p.host("h2").missing
    d = p.to_dict()
    assert d["hosts"][0]["memory"] == {"bytes": None, "not_measured": "host h1 not reachable: ssh timed out"}
    assert d["complete"] is False


# --- the start-up cost --------------------------------------------------------------------------------


def test_the_assumed_cost_says_so():
    c = assumed_cost()
    assert not c.measured
    assert c.per_pg_source.startswith("assumed, not measured") and c.per_osd_source.startswith("assumed, not measured")


def test_the_history_gives_the_largest_cost_per_pg():
    samples = [StartupSample("r1", "controlled_restart", "osd.0", 64 * MiB + 300 * MiB, 30),  # 10 MiB/PG
               StartupSample("r2", "controlled_restart", "osd.1", 64 * MiB + 300 * MiB, 20)]  # 15 MiB/PG
    c = startup_cost_from_history(samples)
    assert c.measured and c.per_pg == 15 * MiB and c.per_osd == 64 * MiB
    assert "osd.1 in r2" in c.per_pg_source
    assert not startup_cost_from_history([]).measured


def test_history_samples_from_a_database(tmp_path: Path):
    db = tmp_path / "history.sqlite"
    with closing(connect(db)) as conn, conn:
        for run, fsid in (("r1", "fsid-a"), ("r2", "fsid-b")):
            conn.execute("INSERT INTO runs (run_id, started, fsid) VALUES (?, ?, ?)", (run, 1.0, fsid))
            conn.executemany("INSERT INTO figures (run_id, drill, phase, metric, subject, value) VALUES (?,?,?,?,?,?)", [
                (run, "controlled_restart", "recovery", STARTUP_PGS_METRIC, "osd.4", 40),
                (run, "controlled_restart", "recovery", "rss_peak", "osd.4", 500 * MiB),
                (run, "controlled_restart", "recovery", "rss_peak", "osd.5", 400 * MiB),  # no PG count: unused
            ])
    samples, why = history_samples(db, "fsid-a")
    assert samples == [StartupSample("r1", "controlled_restart", "osd.4", 500 * MiB, 40)] and why == ""
    assert history_samples(db, "fsid-other")[0] == []
    missing = tmp_path / "none.sqlite"
    assert history_samples(missing, "fsid-a") == ([], f"no history database at {missing}")
    assert not missing.exists()  # read-only: never created


# --- predicted vs measured ------------------------------------------------------------------------------


def test_compare_predicted_and_measured_peaks():
    p = plan_of([host("h1", 2000 * MiB), host("h2", None)], [osd("osd.0", "h1", 30), osd("osd.1", "h2", 30)])
    by_host = {c.host: c for c in compare_peaks(p, {"h1": 500 * MiB, "h2": 450 * MiB})}
    assert by_host["h1"].predicted == 400 * MiB and by_host["h1"].error_ratio == pytest.approx(0.25)
    assert by_host["h2"].error_ratio is None and "ssh timed out" in by_host["h2"].why
    unseen = compare_peaks(p, {"h1": 0})[0]  # a peak never looked at is not a measured 0
    assert unseen.error_ratio is None and "no peak measured" in unseen.line()


# --- host readings ----------------------------------------------------------------------------------------


def test_parse_meminfo():
    assert parse_meminfo("MemTotal: 2048 kB\nMemFree: 1 kB\nMemAvailable: 1024 kB\n") == (2 * MiB, MiB)
    assert parse_meminfo("garbage") == (None, None)


def _t() -> Target:
    hosts = (Host("h1", daemons=("osd.0", "mon.a"), access=Access(kind="ssh", host="10.0.0.1")),)
    return Target(Cluster("c", "f", "/x", "/y", deployment="package"), "/tmp/s", racks=(Rack("rack1", hosts),))


def test_meminfo_over_ssh_unreachable_is_not_measured():
    t = _t()
    ran: list[str] = []

    def boom(h, cmd):
        ran.append(cmd)
        raise OSError("No route to host")

    info = meminfo_reading(t, t.host("h1"), ssh_run=boom)
    assert info.total is None and "No route to host" in info.why and ran == [MEMINFO_COMMAND]


@dataclass
class FakeOps:
    daemons: dict[str, int]
    reachable: bool = True
    probed: list[str] = field(default_factory=list)

    def probe(self, h):
        self.probed.append(h.name)
        if not self.reachable:
            raise OSError("ssh: connect to host 10.0.0.1 port 22: Connection refused")

    def memory(self, h, budget):
        return HostMemory(h.name, budget, sum(self.daemons.values()), dict(self.daemons), None)


def _meminfo(total: int, available: int):
    from drills.hostfacts import MemInfo

    return lambda t, h: MemInfo(h.name, total, available, "ssh /proc/meminfo")


def test_host_memory_without_a_budget_is_memtotal_less_what_others_use():
    t = _t()
    hi = host_input(t, t.host("h1"), ["osd.0"], host_ops=FakeOps({"osd.0": 300 * MiB, "mon.a": 200 * MiB}), budget=0,
                    prefix=None, meminfo=_meminfo(4000 * MiB, 3000 * MiB))
    assert hi.memory.value == 4000 * MiB and "MemTotal" in hi.memory.source
    assert hi.used_by_others.value == 1000 * MiB - 300 * MiB  # osd.0's own RSS is freed by its restart


def test_a_budget_is_capped_by_what_the_host_has_free():
    t = _t()
    ops = FakeOps({"osd.0": 300 * MiB, "mon.a": 200 * MiB})
    roomy = host_input(t, t.host("h1"), ["osd.0"], host_ops=ops, budget=1000 * MiB, prefix=None,
                       meminfo=_meminfo(4000 * MiB, 3000 * MiB))
    assert (roomy.memory.value, roomy.used_by_others.value) == (1000 * MiB, 200 * MiB)  # the Ceph daemons' view
    tight = host_input(t, t.host("h1"), ["osd.0"], host_ops=ops, budget=1000 * MiB, prefix=None,
                       meminfo=_meminfo(4000 * MiB, 400 * MiB))  # 700 free once osd.0 is down
    assert tight.memory.value == 200 * MiB + 700 * MiB and "capped" in tight.memory.source


def test_an_unreachable_host_is_not_measured():
    t = _t()
    hi = host_input(t, t.host("h1"), ["osd.0"], host_ops=FakeOps({}, reachable=False), budget=1000 * MiB, prefix=None,
                    meminfo=_meminfo(1, 1))
    assert hi.memory.value is None and hi.used_by_others.value is None
    assert "not reachable" in hi.memory.source and "Connection refused" in hi.memory.source


# --- the command line ------------------------------------------------------------------------------------


def test_plan_of_an_unknown_rack_is_one_line_and_exit_2(tmp_path: Path, capsys):
    h = Host("r1h1", daemons=("osd.0",))
    t = Target(Cluster("c", "f", str(tmp_path / "ceph.conf"), str(tmp_path / "keyring")), str(tmp_path / "state"),
               racks=(Rack("rack1", (h,)),))
    dump_target(t, tmp_path / "target.toml")
    rc = main(["restart", "--plan", "--target", str(tmp_path / "target.toml"), "--rack", "rack9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unknown rack 'rack9'" in err[0] and "rack1" in err[0]


def test_json_without_plan_is_refused(tmp_path: Path, capsys):
    rc = main(["restart", "--json", "--target", str(tmp_path / "none.toml"), "--rack", "rack1"])
    assert rc == 2 and "--json goes with --plan" in capsys.readouterr().err


# --- the controlled-restart drill's figures ------------------------------------------------------------


@dataclass
class FakeRecorder:
    measurements: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def measure(self, phase, key, value):
        self.measurements.setdefault(phase, {})[key] = value

    def note(self, text):
        self.notes.append(text)


def test_the_drill_records_predicted_and_measured_peaks_per_host():
    from drills.test_controlled_restart import measure_prediction

    p = plan_of([host("h1", 2000 * MiB), host("h2", None)], [osd("osd.0", "h1", 30), osd("osd.1", "h2", 30)])
    rec = FakeRecorder()
    measure_prediction(rec, p, {"h1": 300 * MiB, "h2": 350 * MiB})  # type: ignore[arg-type]
    m = rec.measurements["recovery"]
    assert m["restart_plan_peak"] == {"h1": 400 * MiB, "h2": None}
    assert m["restart_plan_error_ratio"] == {"h1": pytest.approx(0.25), "h2": None}
    assert any("predicted a peak of 400 MiB, measured 300 MiB" in n for n in rec.notes)
    assert any("h2: restart plan not compared" in n for n in rec.notes)
