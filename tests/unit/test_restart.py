"""The orchestrator's decisions, with a stand-in host and cluster (pure logic: no Ceph, no processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from drills.faults.errors import FaultError
from drills.restart.orchestrator import (
    Action, ControlledRestart, HostMemory, RestartConfig, RestartError, decide, order_daemons, select_osds,
)
from drills.restart.hostops import pgs_in_up_sets, pgs_ready
from drills.target import Host, Rack, Target, Cluster

MiB = 1 << 20


def mem(used: int, budget: int = 1000 * MiB, daemons: dict[str, int] | None = None, machine: int | None = None) -> HostMemory:
    return HostMemory("h1", budget, used, daemons or {}, machine)


def test_start_when_the_budget_has_room():
    d = decide("osd.1", 300 * MiB, mem(600 * MiB), waited_s=0, settle_s=20, restarted=[], max_restarts=2)
    assert d.action is Action.START and d.daemon == "osd.1"


def test_wait_then_restart_the_biggest_then_stop():
    m = mem(800 * MiB, daemons={"osd.0": 500 * MiB, "osd.2": 300 * MiB})
    assert decide("osd.1", 300 * MiB, m, waited_s=5, settle_s=20, restarted=[], max_restarts=2).action is Action.WAIT
    d = decide("osd.1", 300 * MiB, m, waited_s=25, settle_s=20, restarted=[], max_restarts=2)
    assert (d.action, d.daemon) == (Action.RESTART, "osd.0")
    d = decide("osd.1", 300 * MiB, m, waited_s=25, settle_s=20, restarted=["osd.0"], max_restarts=2)
    assert (d.action, d.daemon) == (Action.RESTART, "osd.2")
    d = decide("osd.1", 300 * MiB, m, waited_s=25, settle_s=20, restarted=["osd.0", "osd.2"], max_restarts=2)
    assert d.action is Action.STOP and "osd.1 needs" in d.reason


def test_budget_below_one_osd_stops_at_once():
    d = decide("osd.1", 300 * MiB, mem(0, budget=100 * MiB), waited_s=0, settle_s=20, restarted=[], max_restarts=2)
    assert d.action is Action.STOP and "below one OSD's start-up need" in d.reason


def test_machine_available_caps_the_budget():
    d = decide("osd.1", 300 * MiB, mem(0, machine=200 * MiB), waited_s=0, settle_s=0, restarted=[], max_restarts=0)
    assert d.action is Action.STOP


def test_order():
    t = target()
    pairs = select_osds(t, rack="rack1")
    assert [d for _, d in order_daemons(pairs, "id")] == ["osd.0", "osd.1", "osd.2"]
    assert [d for _, d in order_daemons(pairs, "reverse")] == ["osd.2", "osd.1", "osd.0"]
    assert [d for _, d in order_daemons(pairs, "host")] == ["osd.0", "osd.2", "osd.1"]
    assert [d for _, d in order_daemons(pairs, "osd.2,osd.0,osd.1")] == ["osd.2", "osd.0", "osd.1"]
    with pytest.raises(RestartError, match="exactly these OSDs"):
        order_daemons(pairs, "osd.2,osd.9")
    with pytest.raises(RestartError, match="unknown rack"):
        select_osds(t, rack="rack9")


def target() -> Target:
    h1 = Host("h1", daemons=("osd.0", "osd.1"))
    h2 = Host("h2", daemons=("osd.2",))
    return Target(Cluster("c", "f", "/x", "/y"), "/tmp/s", racks=(Rack("rack1", (h1, h2)),))


@dataclass
class FakeHosts:
    """Each start adds `start_rss` to the host; a start beyond the budget is an OOM kill (as the kernel would)."""

    budget: int
    start_rss: dict[str, int]
    running_rss: dict[str, int] = field(default_factory=dict)
    ooms: int = 0
    log: list[str] = field(default_factory=list)
    settle_to: dict[str, int] = field(default_factory=dict)  # RSS a daemon falls to after a restart

    def start(self, host, daemon):
        self.log.append(f"start {daemon}")
        self.running_rss[daemon] = self.start_rss[daemon]
        if sum(self.running_rss.values()) > self.budget:
            self.ooms += 1
            del self.running_rss[daemon]

    def restart(self, host, daemon):
        self.log.append(f"restart {daemon}")
        self.running_rss[daemon] = self.settle_to.get(daemon, self.running_rss[daemon])

    def stop(self, host, daemon):
        self.running_rss.pop(daemon, None)

    def running(self, host, daemon):
        return daemon in self.running_rss

    def memory(self, host, budget):
        return HostMemory(host.name, budget, sum(self.running_rss.values()), dict(self.running_rss))

    def oom_kills(self, host):
        return self.ooms


@dataclass
class FakeCluster:
    pgs: dict[int, int] = field(default_factory=dict)  # osd id -> PGs in its up set; none: the cluster cannot say

    def heap_release(self, osd):
        pass

    def osd_pg_count(self, osd):
        return self.pgs.get(osd)

    def osd_up(self, osd):
        return True

    def osd_ready(self, osd, wait):
        return True, "ready"


def run(hosts: FakeHosts, need: int, budget: int = 1000 * MiB, settle: float = 0, pgs: dict[int, int] | None = None) -> tuple:
    t = target()
    events: list[tuple[str, str]] = []
    cr = ControlledRestart(hosts, FakeCluster(pgs or {}), RestartConfig({"h1": budget}, need, settle_s=settle, poll_s=0),
                           [(t.host("h1"), "osd.0"), (t.host("h1"), "osd.1")],
                           on_event=lambda k, label, d: events.append((k, label)), sleep=lambda s: None)
    return cr.run(), events


def test_two_osds_fit_one_after_the_other():
    hosts = FakeHosts(1000 * MiB, {"osd.0": 400 * MiB, "osd.1": 400 * MiB})
    result, events = run(hosts, need=400 * MiB)
    assert result.ok and result.started == ["osd.0", "osd.1"] and not result.oom_kills
    assert [label for k, label in events if k == "restart.decision"] == ["start osd.0", "start osd.1"]
    assert result.peak_used["h1"] == 800 * MiB


def test_restarts_the_biggest_when_short_then_starts():
    # osd.0 peaks at 700 (need 840 with the 1.2 margin), comes back at 100 after a restart: 900 free
    hosts = FakeHosts(1000 * MiB, {"osd.0": 700 * MiB, "osd.1": 400 * MiB}, settle_to={"osd.0": 100 * MiB})
    result, _ = run(hosts, need=400 * MiB)
    assert result.ok and result.restarted == ["osd.0"] and hosts.log == ["start osd.0", "restart osd.0", "start osd.1"]
    assert hosts.ooms == 0


def test_stops_with_held_osds_when_the_budget_cannot_be_met():
    hosts = FakeHosts(1000 * MiB, {"osd.0": 700 * MiB, "osd.1": 400 * MiB})  # a restart frees nothing
    result, events = run(hosts, need=400 * MiB)
    assert not result.ok and result.held == ["osd.1"] and result.started == ["osd.0"]
    assert "needs" in result.error and ("restart.stopped", "controlled start stopped") in events
    assert hosts.ooms == 0  # it stopped instead of starting into an OOM kill


def test_learns_a_bigger_start_need_from_the_peak():
    # Estimate 100 MiB, but osd.0 peaks at 600: osd.1 (also 600) must not be started into a 1000 MiB budget.
    hosts = FakeHosts(1000 * MiB, {"osd.0": 600 * MiB, "osd.1": 600 * MiB})
    result, events = run(hosts, need=100 * MiB)
    assert not result.ok and hosts.ooms == 0 and result.held == ["osd.1"]
    assert any(k == "restart.need" for k, _ in events)


def test_an_oom_kill_during_a_start_stops_with_a_clear_error():
    hosts = FakeHosts(500 * MiB, {"osd.0": 600 * MiB, "osd.1": 100 * MiB})
    result, _ = run(hosts, need=100 * MiB, budget=500 * MiB)
    assert not result.ok and len(result.oom_kills) == 1 and "OOM-killed" in result.error
    assert result.held == ["osd.0", "osd.1"]


def test_pgs_ready():
    pgs = [{"pgid": "1.0", "state": "active+clean", "up": [1, 2], "acting": [1, 2]},
           {"pgid": "1.1", "state": "peering", "up": [1, 3], "acting": [3]},
           {"pgid": "1.2", "state": "active+recovering", "up": [2, 3], "acting": [2, 3]}]
    assert not pgs_ready(pgs, 1, "peered")[0]
    pgs[1] = {"pgid": "1.1", "state": "active+recovering+degraded", "up": [1, 3], "acting": [1, 3]}
    assert pgs_ready(pgs, 1, "peered")[0]
    assert not pgs_ready(pgs, 1, "clean")[0]
    assert pgs_ready(pgs, 9, "peered") == (False, "no PGs mapped to osd.9 yet")


# `osdmaptool MAP --mark-up 8 --test-map-pgs-dump-all` as Debian's 16.2.15 prints it (pool 3: an EC pool's hole)
OSDMAPTOOL_DUMP_ALL = """osdmaptool: osdmap file '/tmp/drills-osdmap-x'
marking OSD@8 as up
pool 1 pg_num 1
1.0 raw ([3,7,2], p3) up ([3,7,2], p3) acting ([3,7,2], p3)
pool 2 pg_num 32
2.3 raw ([5,2,8], p5) up ([5,2,8], p5) acting ([5,2], p5)
2.5 raw ([1,8,5], p1) up ([1,5], p1) acting ([1,5], p1)
3.1f raw ([18,2147483647,2], p18) up ([18,2147483647,2], p18) acting ([18,2147483647,2], p18)
"""


def test_pgs_in_up_sets_counts_the_up_set_only_and_whole_ids():
    assert pgs_in_up_sets(OSDMAPTOOL_DUMP_ALL, 8) == 1  # 2.5 maps osd.8 raw but not up (an upmap moved it)
    assert pgs_in_up_sets(OSDMAPTOOL_DUMP_ALL, 2) == 3
    assert pgs_in_up_sets(OSDMAPTOOL_DUMP_ALL, 1) == 1  # not osd.18's PG
    assert pgs_in_up_sets(OSDMAPTOOL_DUMP_ALL, 9) == 0
    assert pgs_in_up_sets("osdmaptool: couldn't open", 1) == 0


def test_heap_release_is_tried_before_a_restart():
    m = mem(800 * MiB, daemons={"osd.0": 500 * MiB, "osd.2": 300 * MiB})
    d = decide("osd.1", 300 * MiB, m, waited_s=25, settle_s=20, restarted=[], max_restarts=2, released=[])
    assert (d.action, d.daemon) == (Action.RELEASE, "osd.0")
    d = decide("osd.1", 300 * MiB, m, waited_s=25, settle_s=20, restarted=[], max_restarts=2, released=["osd.0"])
    assert (d.action, d.daemon) == (Action.RESTART, "osd.0")


@dataclass
class UnreachableAfterFirstStart(FakeHosts):
    """The host stops answering after the first start (SSH drops): the run stops, nothing hidden."""

    def memory(self, host, budget):
        if self.log:
            raise FaultError(f"host {host.name}: SSH 10.0.0.1: connection refused")
        return super().memory(host, budget)

    def running(self, host, daemon):
        if self.log and daemon != "osd.0":
            raise FaultError(f"host {host.name}: SSH 10.0.0.1: connection refused")
        return super().running(host, daemon)


def test_a_host_that_stops_answering_stops_the_run_and_lists_held_osds():
    hosts = UnreachableAfterFirstStart(1000 * MiB, {"osd.0": 100 * MiB, "osd.1": 100 * MiB})
    result, events = run(hosts, need=100 * MiB)
    assert not result.ok and "connection refused" in result.error
    assert result.started == ["osd.0"] and result.held == ["osd.1"]  # osd.0 runs; osd.1 unknown counts as held
    assert ("restart.stopped", "controlled start stopped") in events


def test_the_learned_need_has_a_margin_so_a_bigger_second_osd_is_not_started_into_an_oom():
    # osd.0 peaks at 500; osd.1 will take 550. Without a margin 500 free would start it into 1050 of 1000.
    hosts = FakeHosts(1000 * MiB, {"osd.0": 500 * MiB, "osd.1": 550 * MiB})
    result, events = run(hosts, need=100 * MiB)
    assert hosts.ooms == 0 and not result.ok and result.held == ["osd.1"]
    assert ("restart.need", "start-up need raised to 600 MiB (osd.0 peaked at 500 MiB x 1.2)") in events


def test_the_learned_need_scales_with_the_next_osds_pg_count():
    # osd.0 (10 PGs) peaks at 500 -> 60 MiB per PG with the margin; osd.1 holds 14 PGs -> needs 840.
    # A flat learned need (600) would start osd.1 into the 600 MiB left and the kernel would kill it.
    hosts = FakeHosts(1100 * MiB, {"osd.0": 500 * MiB, "osd.1": 700 * MiB}, settle_to={"osd.0": 100 * MiB})
    result, events = run(hosts, need=100 * MiB, budget=1100 * MiB, pgs={0: 10, 1: 14})
    assert result.ok and hosts.ooms == 0
    assert hosts.log == ["start osd.0", "restart osd.0", "start osd.1"]
    assert ("restart.need", "start-up need per PG raised to 60.0 MiB (osd.0: 10 PGs, peaked at 500 MiB x 1.2)") in events
    assert ("restart.need", "osd.1 needs ~840 MiB to start (60.0 MiB per PG x 14 PGs)") in events


def test_without_pg_counts_the_flat_learned_need_decides():
    # the same OSDs, but the cluster cannot count PGs: the flat need (600) fits the 600 left, and the
    # fake kernel OOM-kills osd.1 -- the case the per-PG need exists for
    hosts = FakeHosts(1100 * MiB, {"osd.0": 500 * MiB, "osd.1": 700 * MiB}, settle_to={"osd.0": 100 * MiB})
    result, _ = run(hosts, need=100 * MiB, budget=1100 * MiB)
    assert hosts.log[:2] == ["start osd.0", "start osd.1"] and hosts.ooms == 1 and not result.ok


def test_heap_release_is_one_ceph_command_on_the_cluster():
    from drills.cluster import CephCluster, ClusterError
    from drills.restart.hostops import CephClusterOps

    sent: list[tuple[int, str, dict]] = []

    class Cluster(CephCluster):
        def osd_command(self, osd_id, prefix, **args):
            sent.append((osd_id, prefix, args))
            if osd_id == 2:
                raise ClusterError("osd.2 command 'heap' failed (-22): not using tcmalloc!")
            return ""

    c = Cluster(target())
    CephClusterOps(c).heap_release(1)  # the controlled start's
    assert sent == [(1, "heap", {"heapcmd": "release"})]
    ok, why = c.release_heaps(["osd.0", "osd.2"])  # the drills'
    assert not ok and why == "osd.2: osd.2 command 'heap' failed (-22): not using tcmalloc!"
    assert [s[0] for s in sent] == [1, 0, 2]
    assert c.release_heaps(["osd.0"]) == (True, "")
