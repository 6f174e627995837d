"""Controlled restart and preflight on the test sandbox (real OSDs in real memory cgroups)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from drills.cluster import wait_for
from drills.faults.session import FaultSession
from drills.faults.guard import guard_from_cluster
from drills.faults.ledger import FaultLedger
from drills.preflight import cli as preflight_cli
from drills.restart import cli as restart_cli
from drills.restart.hostops import CephClusterOps, SandboxHostOps
from drills.restart.orchestrator import ControlledRestart, RestartConfig, order_daemons, select_osds
from drills.restart.runbook import run_with_flags
from drills.sandbox.cgroups import HostCgroup

pytestmark = pytest.mark.integration
MiB = 1 << 20


def _stop(ops, pairs):
    for h, d in pairs:
        ops.stop(h, d)


def _restart(sandbox_target, sandbox_cluster, sandbox_spec, rack, budget, need):
    ops = SandboxHostOps(sandbox_target)
    pairs = order_daemons(select_osds(sandbox_target, rack=rack), "id")
    cgroups = {h.name: HostCgroup.of(sandbox_spec.prefix, h.name).create(budget) for h, _ in pairs}
    sandbox_cluster.set_flag("noout")  # while we stop them by hand; the restart's own flags are ledgered
    try:
        _stop(ops, pairs)
    finally:
        sandbox_cluster.unset_flag("noout")
    restart = ControlledRestart(ops, CephClusterOps(sandbox_cluster),
                                RestartConfig({h.name: budget for h, _ in pairs}, need, step_timeout_s=120, settle_s=5), pairs)
    with FaultSession(sandbox_target, guard=guard_from_cluster(sandbox_target, sandbox_cluster)) as s:
        result, flags = run_with_flags(s, sandbox_target, sandbox_cluster, restart)
    return result, flags, cgroups, ops, pairs


def test_controlled_restart_of_a_rack_under_a_budget(sandbox_target, sandbox_cluster, sandbox_spec):
    result, flags, cgroups, ops, pairs = _restart(sandbox_target, sandbox_cluster, sandbox_spec, "rack2", 1536 * MiB, 200 * MiB)
    assert result.ok, result.summary()
    assert result.started == [d for _, d in pairs] and not result.oom_kills
    assert all(cg.read().oom_kills == 0 for cg in cgroups.values())
    assert all(result.peak_used[h] <= 1536 * MiB for h in result.peak_used)
    # the daemons really run in their host's cgroup
    for h, d in pairs:
        pid = ops._pid(d)
        assert pid in cgroups[h.name].pids()
    assert not ({"noout", "nodeep-scrub"} & sandbox_cluster.flags())
    assert not FaultLedger(sandbox_target.state_dir).pending()
    sandbox_cluster.wait_for_clean(timeout=180)


def test_budget_below_one_osd_stops_with_flags_restored(sandbox_target, sandbox_cluster, sandbox_spec):
    result, flags, cgroups, ops, pairs = _restart(sandbox_target, sandbox_cluster, sandbox_spec, "rack3", 64 * MiB, 200 * MiB)
    try:
        assert not result.ok
        assert "below one OSD's start-up need" in result.error
        assert result.held == [d for _, d in pairs]
        assert not result.oom_kills
        assert not ({"noout", "nodeep-scrub"} & sandbox_cluster.flags())
        assert not FaultLedger(sandbox_target.state_dir).pending()
    finally:
        for h, d in pairs:
            cgroups[h.name].set_limit(4096 * MiB)
            ops.start(h, d)
        sandbox_cluster.wait_for_osds(up={int(d.split(".")[1]) for _, d in pairs}, timeout=120)
        sandbox_cluster.wait_for_clean(timeout=180)


def test_a_held_osds_pg_count_comes_from_the_osd_map(sandbox_target, sandbox_cluster):
    # The controlled start scales an OSD's start-up need by its PG count while that OSD is held, i.e. down,
    # when `pg dump` puts it in no up set; the count comes from the OSD map with the OSD marked up.
    c = sandbox_cluster
    c.wait_for_clean(timeout=300)
    ops, cops = SandboxHostOps(sandbox_target), CephClusterOps(c)
    host = sandbox_target.racks[0].hosts[0]
    osd = host.osd_ids[0]
    in_up_sets = lambda: sum(1 for p in cops._pg_stats() if osd in p["up"])  # noqa: E731
    while_up = in_up_sets()
    assert while_up > 0 and cops.osd_pg_count(osd) == while_up
    c.set_flag("noout")
    try:
        ops.stop(host, f"osd.{osd}")
        c.wait_for_osds(down={osd}, timeout=120)
        wait_for(lambda: (not in_up_sets(), "PGs still list it up"), timeout=60, what="pg dump to drop the down OSD")
        assert cops.osd_pg_count(osd) == while_up
    finally:
        ops.start(host, f"osd.{osd}")
        c.unset_flag("noout")
        c.wait_for_osds(up={osd}, timeout=120)
        c.wait_for_clean(timeout=300)


def _parse(mod, argv, default):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    mod.add_parser(sub, default)
    return p.parse_args(argv)


def test_restart_cli_unknown_rack(sandbox_target, capsys):
    a = _parse(restart_cli, ["restart", "--rack", "rack9", "--memory-budget", "1GiB"], sandbox_target.path)
    assert a.func(a) == 2
    assert "unknown rack 'rack9'" in capsys.readouterr().err


def test_preflight_output_for_the_sandbox(sandbox_target, capsys):
    a = _parse(preflight_cli, ["preflight"], sandbox_target.path)
    rc = a.func(a)
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    for check in ("swap", "memory", "overcommit", "daemons", "clock", "mtu"):
        assert f"  {check}" in out
    assert "preflight passed" in out


def test_kill_9_of_drill_restart_then_drill_heal_restores_flags_and_osds(sandbox_target, sandbox_cluster):
    c = sandbox_cluster
    c.wait_for_clean(timeout=300)
    host = sandbox_target.racks[1].hosts[0]
    osds = set(host.osd_ids)
    p = subprocess.Popen([sys.executable, "-m", "drills.cli", "restart", "--target", sandbox_target.path, "--host", host.name,
                          "--stop-first", "--memory-budget", "1536MiB", "--start-need", "200MiB", "--settle", "5",
                          "--report-dir", str(Path(sandbox_target.state_dir) / "restart-kill9")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()  # the first decision: flags set and OSDs stopped by now
    p.kill()
    p.wait(timeout=30)
    assert "osd." in first, first + p.stderr.read()
    kinds = sorted(e.kind for e in FaultLedger(sandbox_target.state_dir).pending())
    assert "cluster_flags" in kinds and kinds.count("daemon_stop") == len(osds), kinds
    assert "noout" in c.flags()
    h = subprocess.run([sys.executable, "-m", "drills.cli", "heal", "--target", sandbox_target.path],
                       capture_output=True, text=True, timeout=300)
    assert h.returncode == 0 and f"healed {len(kinds)} fault(s), 0 could not be undone" in h.stdout, h.stdout + h.stderr
    assert not (c.flags() & {"noout", "nodeep-scrub"})
    assert FaultLedger(sandbox_target.state_dir).pending() == []
    c.wait_for_osds(up=osds, timeout=120)
    c.wait_for_clean(timeout=300)
