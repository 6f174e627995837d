"""Preflight checks with a stand-in command runner (pure logic: no hosts)."""

from __future__ import annotations


import pytest

from drills.preflight.checks import FAIL, PASS, WARN, check_mtus, parse_chrony, run_preflight
from drills.preflight.gate import PreflightFailed, PreflightGate
from drills.target import Access, Cluster, Host, Rack, Target

GiB = 1 << 30
MEMINFO = "MemTotal:       {total} kB\nSwapTotal:      {swap} kB\nCommitLimit:    1000 kB\n"


def target(kind: str = "ssh", budget: int = 0) -> Target:
    hosts = tuple(Host(f"h{i}", address=f"10.0.0.{i}", daemons=(f"osd.{i}",), access=Access(kind=kind), memory_budget=budget)
                  for i in (1, 2))
    return Target(Cluster("c", "f", "/x/ceph.conf", "/y", deployment="package"), "/tmp/s", destructive=True,
                  racks=(Rack("r1", hosts),), path="/t.toml")


def runner(total_kb=8 << 20, swap_kb=1 << 20, overcommit="0\n50\n", mtus=None, chrony="Leap status     : Normal\nSystem time     : 0.000012 seconds fast of NTP time\n",
           daemons_ok=True):
    mtus = mtus or {"h1": 1500, "h2": 1500}

    def run(host, cmd):
        if cmd == "cat /proc/meminfo":
            return 0, MEMINFO.format(total=total_kb, swap=swap_kb)
        if "overcommit" in cmd:
            return 0, overcommit
        if "chronyc" in cmd:
            return (0, chrony) if chrony else (1, "")
        if "timedatectl" in cmd:
            return 1, ""
        if "systemctl is-active" in cmd:
            return (0 if daemons_ok else 3), ""
        if "ip -o addr" in cmd:
            return 0, f"eth0 {mtus[host.name]}\n"
        raise AssertionError(cmd)

    return run


def statuses(report):
    return {(c.host, c.check): c.status for c in report.checks}


def test_a_fit_cluster_passes():
    r = run_preflight(target(), runner(), 1 * GiB)
    assert r.ok and set(statuses(r).values()) == {PASS}, r.table()


def test_no_swap_fails_on_real_hosts_and_warns_on_sandbox_hosts():
    assert statuses(run_preflight(target(), runner(swap_kb=0), GiB))[("h1", "swap")] == FAIL
    assert statuses(run_preflight(target("local"), runner(swap_kb=0), GiB))[("h1", "swap")] == WARN


def test_memory_per_osd():
    # 1 OSD x 4 GiB + 1 GiB headroom = 5 GiB > 4 GiB
    r = run_preflight(target(), runner(total_kb=4 << 20), 4 * GiB)
    assert statuses(r)[("h1", "memory")] == FAIL and not r.ok
    r = run_preflight(target(budget=6 * GiB), runner(total_kb=1 << 20), 4 * GiB)
    assert statuses(r)[("h1", "memory")] == PASS  # the budget, not MemTotal, is what counts


def test_overcommit_modes():
    assert statuses(run_preflight(target(), runner(overcommit="1\n50\n"), GiB))[("h1", "overcommit")] == WARN
    assert statuses(run_preflight(target(), runner(overcommit="2\n50\n"), GiB))[("h1", "overcommit")] == FAIL


def test_daemons_clock_and_mtu():
    s = statuses(run_preflight(target(), runner(daemons_ok=False, mtus={"h1": 1500, "h2": 9000}), GiB))
    assert s[("h1", "daemons")] == FAIL and s[("*", "mtu")] == FAIL
    s = statuses(run_preflight(target(), runner(chrony="Leap status     : Not synchronised\nSystem time     : 2.5 seconds slow\n"), GiB))
    assert s[("h1", "clock")] == FAIL
    assert statuses(run_preflight(target(), runner(chrony=""), GiB))[("h1", "clock")] == WARN


def test_parse_chrony_and_mtus():
    assert parse_chrony("Leap status : Normal\nSystem time : 0.2 seconds fast\n")[0] is False
    assert check_mtus({"a": ("e", 1500), "b": None}).status == FAIL


def test_gate_blocks_and_can_be_overridden(monkeypatch):
    gate = PreflightGate()
    import drills.preflight.gate as g

    monkeypatch.setattr(g, "preflight", lambda t, **kw: run_preflight(t, runner(swap_kb=0), GiB))
    monkeypatch.delenv("DRILLS_SKIP_PREFLIGHT", raising=False)
    with pytest.raises(PreflightFailed, match="swap"):
        gate.require(target())
    monkeypatch.setenv("DRILLS_SKIP_PREFLIGHT", "1")
    assert gate.require(target()) is None


def test_the_gate_hands_its_host_access_to_preflight_for_its_own_target(monkeypatch):
    import drills.preflight.gate as g
    from drills.hostaccess import HostAccess

    seen: list = []
    monkeypatch.setattr(g, "preflight", lambda t, access=None: seen.append(access) or run_preflight(t, runner(), GiB))
    monkeypatch.delenv("DRILLS_SKIP_PREFLIGHT", raising=False)
    t = target()
    access = HostAccess(t)
    PreflightGate(access=access).require(t)
    PreflightGate(access=HostAccess(target("local"))).require(t)  # another target's: not used
    assert seen == [access, None]
