"""FaultGuard: destructive flag, live fsid, and what each fault takes down vs min_size."""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID, FakeBackend, make_target  # noqa: E402

from drills.faults.kinds import DaemonKill, DaemonStop, NetworkPartition, PacketLoss, PowerCut, RackPowerCut  # noqa: E402
from drills.faults.guard import FaultGuard, GuardRefused, PoolSpec, impact_of  # noqa: E402

RACK3 = [PoolSpec("rbd", size=3, min_size=2, failure_domain="rack")]
HOST3 = [PoolSpec("data", size=3, min_size=2, failure_domain="host")]


@pytest.fixture
def target(tmp_path):
    return make_target(str(tmp_path))


def guard(target, pools, fsid=FSID, **kw):
    return FaultGuard(target, live_fsid=fsid, pools=pools, **kw)


def test_one_rack_down_is_allowed_for_rack_domain_3_2(target):
    impact = guard(target, RACK3).check(RackPowerCut(target, "rack0", resolve=FakeBackend().resolve))
    assert impact.racks == {"rack0"} and impact.osds == {0, 1, 2, 3} and impact.hosts == {"r0h0", "r0h1"}


def test_two_racks_down_is_refused_with_reason(target):
    cut = PowerCut(target, ["r0h0", "r1h0"], resolve=FakeBackend().resolve)
    with pytest.raises(GuardRefused, match=r"pool rbd .*survives 1 rack\(s\) down; this takes down 2"):
        guard(target, RACK3).check(cut)
    guard(target, RACK3).check(cut, allow_unavailable=True)  # a drill about unavailability


def test_host_domain_counts_hosts_not_racks(target):
    cut = RackPowerCut(target, "rack0")  # two hosts of one rack
    with pytest.raises(GuardRefused, match="survives 1 host"):
        guard(target, HOST3).check(cut)
    guard(target, [PoolSpec("ec", size=5, min_size=3, failure_domain="host")]).check(cut)


def test_osd_faults(target):
    g = guard(target, [PoolSpec("p", 2, 2, "osd")])
    with pytest.raises(GuardRefused):
        g.check(DaemonKill(target, "osd.3"))
    guard(target, [PoolSpec("p", 3, 2, "osd")]).check(DaemonStop(target, "osd.3"))


def test_monitor_quorum(target):
    g = guard(target, [])
    g.check(DaemonKill(target, "mon.a"))
    with pytest.raises(GuardRefused, match="loses quorum"):
        g.check_all([DaemonKill(target, "mon.a"), DaemonKill(target, "mon.b")])


def test_faults_in_force_together_add_up(target):
    g = guard(target, RACK3)
    with pytest.raises(GuardRefused, match="together"):
        g.check_all([RackPowerCut(target, "rack0"), DaemonKill(target, "osd.5")])


def test_partition_takes_down_the_side_without_mon_quorum(target):
    p = NetworkPartition(target, ["r0h0", "r0h1"])
    assert impact_of(target, p.takes_down()).racks == {"rack0"}
    guard(target, RACK3).check(p)
    # Cutting the monitors' host off: the other side is down - everything.
    p2 = NetworkPartition(target, ["svc"])
    with pytest.raises(GuardRefused):
        guard(target, RACK3).check(p2)


def test_packet_loss_takes_nothing_down(target):
    assert impact_of(target, PacketLoss(target, "r0h0", 10).takes_down()).osds == frozenset()


def test_non_destructive_target_is_refused(tmp_path):
    t = make_target(str(tmp_path), destructive=False)
    with pytest.raises(GuardRefused, match="destructive = true"):
        guard(t, RACK3).check(DaemonKill(t, "osd.1", signal=signal.SIGTERM))


def test_fsid_mismatch_and_unknown_fsid_are_refused(target):
    with pytest.raises(GuardRefused, match="points at another cluster"):
        guard(target, RACK3, fsid="00000000-dead-beef-0000-000000000000").check(DaemonKill(target, "osd.1"))
    with pytest.raises(GuardRefused, match="could not read"):
        guard(target, RACK3, fsid=None).check(DaemonKill(target, "osd.1"))
    guard(target, RACK3, fsid=FSID.upper()).check(DaemonKill(target, "osd.1"))


def test_pool_spec_validation_and_osd_dump():
    with pytest.raises(ValueError):
        PoolSpec("x", 2, 3)
    with pytest.raises(ValueError):
        PoolSpec("x", 3, 2, "datacenter")
    p = PoolSpec.from_osd_dump({"pool_name": "rbd", "size": 3, "min_size": 2, "crush_rule": 1}, {0: "host", 1: "rack"})
    assert p == PoolSpec("rbd", 3, 2, "rack") and p.tolerates == 1


def test_guard_session_flag(target):
    g = dataclasses.replace(guard(target, RACK3), allow_unavailable=True)
    g.check(PowerCut(target, ["r0h0", "r1h0"]))
