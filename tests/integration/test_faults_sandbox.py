"""Faults against the real sandbox: silent vs refused failure detection, healing after
SIGTERM and after kill -9 of the runner, the guards, and BMC emulators wired to a host."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.ipmi_sim import IpmiSim  # noqa: E402
from emulators.sushy import SYSTEM_UUID, SushyEmulator  # noqa: E402

from drills.cluster import CephCluster  # noqa: E402
from drills.faults.backends.sandbox import SandboxBackend  # noqa: E402
from drills.faults.kinds import DaemonKill, PowerCut, RackPowerCut
from drills.faults.session import FaultSession  # noqa: E402
from drills.faults.guard import GuardRefused, guard_from_cluster  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.sandbox import host as hostctl  # noqa: E402
from drills.target import Power, Rack, TargetError, dump_target  # noqa: E402

pytestmark = pytest.mark.integration

PW_ENV = "DRILLS_TEST_BMC_PASSWORD"


def drill_tables(spec) -> dict[str, str]:
    """netns -> `nft list tables` output, for namespaces holding a drills_ table."""
    out = {}
    for h in spec.hosts:
        p = subprocess.run(["ip", "netns", "exec", h.netns, "nft", "list", "tables"], capture_output=True, text=True)
        if "drills_" in p.stdout:
            out[h.netns] = p.stdout
    return out


def grace(cluster: CephCluster) -> float:
    return float(cluster.osd_running_config(min(cluster.osds_up()), "osd_heartbeat_grace"))


def test_silent_rack_cut_is_detected_after_the_grace_a_kill_at_once(sandbox_cluster, sandbox_target, sandbox_spec, capsys):
    c = sandbox_cluster
    c.wait_for_clean(timeout=300)
    g = grace(c)
    rack = sandbox_target.rack("rack1")
    osds = {i for h in rack.hosts for i in h.osd_ids}
    with FaultSession(sandbox_target, guard=guard_from_cluster(sandbox_target, c)) as s:
        t0 = time.monotonic()
        cut = s.inject(RackPowerCut(sandbox_target, "rack1"))
        # Power is really off: the daemons are gone and the hosts' namespaces drop everything.
        assert all(hostctl.daemon_pid(sandbox_spec, f"osd.{i}") is None for i in osds)
        assert {f"{sandbox_spec.prefix}-{h.name}" for h in rack.hosts} <= set(drill_tables(sandbox_spec))
        c.wait_for_osds(down=osds, timeout=120)
        silent = time.monotonic() - t0
        s.heal(cut)
    c.wait_for_osds(up=osds, timeout=120)
    c.wait_for_clean(timeout=300)

    victim = "osd.4"
    with FaultSession(sandbox_target, guard=guard_from_cluster(sandbox_target, c)) as s:
        t0 = time.monotonic()
        kill = s.inject(DaemonKill(sandbox_target, victim))
        c.wait_for_osds(down={4}, timeout=120)
        refused = time.monotonic() - t0
        s.heal(kill)
    c.wait_for_osds(up={4}, timeout=120)
    c.wait_for_clean(timeout=300)
    with capsys.disabled():
        print(f"\n[detection] osd_heartbeat_grace {g:.0f} s: silent rack cut marked down after {silent:.1f} s; "
              f"kill -9 on a live host after {refused:.1f} s")
    # Silence must be waited out (at least the grace less one heartbeat interval); a refused
    # connection is reported at once.
    assert silent >= g - 6, f"silent cut detected after {silent:.1f} s, before the grace {g} s could expire"
    assert refused < g / 2, f"a killed OSD on a live host took {refused:.1f} s to be marked down"
    assert drill_tables(sandbox_spec) == {}


RUNNER = textwrap.dedent("""
    import sys, time
    from drills.cluster import CephCluster
    from drills.faults.kinds import RackPowerCut
    from drills.faults.session import FaultSession
    from drills.faults.guard import guard_from_cluster
    from drills.target import load_target
    t = load_target(sys.argv[1])
    with CephCluster(t) as c:
        guard = guard_from_cluster(t, c)
    with FaultSession(t, guard=guard) as s:
        s.inject(RackPowerCut(t, sys.argv[2]))
        print("INJECTED", flush=True)
        time.sleep(600)
""")


def start_runner(target_path: str, rack: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", RUNNER, target_path, rack], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "INJECTED", p.stderr.read()
    return p


def test_sigterm_to_the_runner_heals_before_it_exits(sandbox_cluster, sandbox_target, sandbox_spec):
    sandbox_cluster.wait_for_clean(timeout=300)
    p = start_runner(sandbox_target.path, "rack2")
    assert drill_tables(sandbox_spec)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    assert FaultLedger(sandbox_target.state_dir).pending() == []
    assert drill_tables(sandbox_spec) == {}
    osds = {i for h in sandbox_target.rack("rack2").hosts for i in h.osd_ids}
    assert all(hostctl.daemon_pid(sandbox_spec, f"osd.{i}") for i in osds)  # powered back on
    sandbox_cluster.wait_for_osds(up=osds, timeout=120)
    sandbox_cluster.wait_for_clean(timeout=300)


def test_kill_9_of_the_runner_mid_cut_then_drill_heal(sandbox_cluster, sandbox_target, sandbox_spec):
    c = sandbox_cluster
    c.wait_for_clean(timeout=300)
    p = start_runner(sandbox_target.path, "rack3")
    p.kill()
    p.wait(timeout=30)
    pending = FaultLedger(sandbox_target.state_dir).pending()
    assert [e.kind for e in pending] == ["rack_power_cut"]
    assert drill_tables(sandbox_spec)  # the rack is still dark
    h = subprocess.run([sys.executable, "-m", "drills.cli", "heal", "--target", sandbox_target.path], capture_output=True, text=True, timeout=300)
    assert h.returncode == 0, h.stdout + h.stderr
    assert "healed 1 fault(s), 0 could not be undone" in h.stdout
    osds = {i for hh in sandbox_target.rack("rack3").hosts for i in hh.osd_ids}
    c.wait_for_osds(up=osds, timeout=120)
    c.wait_for_clean(timeout=300)
    c.wait_for_health_ok(timeout=120)
    assert FaultLedger(sandbox_target.state_dir).pending() == []
    assert drill_tables(sandbox_spec) == {}
    assert not (c.flags() & {"noout", "norebalance", "nodeep-scrub", "norecover", "nobackfill", "pause"})
    assert c.osds_up() == set(sandbox_target.osd_ids)
    again = subprocess.run([sys.executable, "-m", "drills.cli", "heal", "--target", sandbox_target.path], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to heal" in again.stdout


def test_drill_run_after_a_crashed_runner_heals_first_and_says_so(sandbox_cluster, sandbox_target, sandbox_spec, tmp_path):
    sandbox_cluster.wait_for_clean(timeout=300)
    p = start_runner(sandbox_target.path, "rack1")
    p.kill()
    p.wait(timeout=30)
    assert FaultLedger(sandbox_target.state_dir).pending()
    run = subprocess.run([sys.executable, "-m", "drills.cli", "run", "--target", sandbox_target.path, "--suite", "smoke",
                          "--report-dir", str(tmp_path), "--", "-k", "test_rados_object_round_trip"],
                         capture_output=True, text=True, timeout=600)
    osds = {i for h in sandbox_target.rack("rack1").hosts for i in h.osd_ids}
    try:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "healed leftovers of an earlier run" in run.stdout and "rack power cut rack1" in run.stdout, run.stdout[-2000:]
        assert FaultLedger(sandbox_target.state_dir).pending() == []
        assert drill_tables(sandbox_spec) == {}
    finally:  # leave the cluster whole for the next test, whatever this one found
        subprocess.run([sys.executable, "-m", "drills.cli", "heal", "--target", sandbox_target.path], capture_output=True, timeout=300)
        sandbox_cluster.wait_for_osds(up=osds, timeout=120)
        sandbox_cluster.wait_for_clean(timeout=300)


def test_guards_refuse_and_inject_nothing(sandbox_cluster, sandbox_target, sandbox_spec, tmp_path):
    ledger = FaultLedger(sandbox_target.state_dir)
    before = ledger.path.read_text() if ledger.path.exists() else ""
    guard = guard_from_cluster(sandbox_target, sandbox_cluster)
    with FaultSession(sandbox_target, guard=guard) as s:
        with pytest.raises(GuardRefused, match="min_size"):
            s.inject(PowerCut(sandbox_target, ["r1h1", "r2h1"]))  # two racks: below min_size 2 of 3
    not_destructive = dataclasses.replace(sandbox_target, destructive=False)
    with FaultSession(not_destructive, guard=guard_from_cluster(not_destructive, sandbox_cluster)) as s:
        with pytest.raises(GuardRefused, match="destructive = true"):
            s.inject(DaemonKill(not_destructive, "osd.0"))
    with pytest.raises(TargetError, match="unknown rack 'rack9'"):
        RackPowerCut(sandbox_target, "rack9")
    assert (ledger.path.read_text() if ledger.path.exists() else "") == before
    assert drill_tables(sandbox_spec) == {}
    assert sandbox_cluster.osds_up() == set(sandbox_target.osd_ids)


def bmc_driven(sandbox_target, host: str, power: Power):
    """The sandbox target with one host's power routed through a BMC."""
    racks = tuple(
        Rack(r.name, tuple(dataclasses.replace(h, power=power) if h.name == host else h for h in r.hosts)) for r in sandbox_target.racks
    )
    return dataclasses.replace(sandbox_target, racks=racks)


def power_cut_through_bmc(sandbox_cluster, target, spec, host: str) -> None:
    osds = set(target.host(host).osd_ids)
    with FaultSession(target, guard=guard_from_cluster(target, sandbox_cluster)) as s:
        s.inject(PowerCut(target, [host]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(hostctl.daemon_pid(spec, f"osd.{i}") for i in osds):
            time.sleep(0.5)
        assert not any(hostctl.daemon_pid(spec, f"osd.{i}") for i in osds), "the BMC's power off did not reach the host"
        assert f"{spec.prefix}-{host}" in drill_tables(spec)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(hostctl.daemon_pid(spec, f"osd.{i}") for i in osds):
        time.sleep(0.5)
    assert all(hostctl.daemon_pid(spec, f"osd.{i}") for i in osds), "the BMC's power on did not bring the host back"
    assert drill_tables(spec) == {}
    sandbox_cluster.wait_for_osds(up=osds, timeout=120)
    sandbox_cluster.wait_for_clean(timeout=300)


@pytest.mark.skipif(bool(IpmiSim.available()), reason=IpmiSim.available() or "ok")
def test_ipmi_bmc_cuts_and_restores_a_sandbox_host(sandbox_cluster, sandbox_target, sandbox_spec, tmp_path, monkeypatch):
    host = "r2h2"
    hook = (f'if [ "$1" = 0 ]; then s=off; else s=on; fi; exec {sys.executable} -m drills.cli sandbox power '
            f'--dir {sandbox_spec.dir} --prefix {sandbox_spec.prefix} {host} "$s"')
    with IpmiSim(tmp_path / "bmc", power_hook=hook) as sim:
        monkeypatch.setenv(PW_ENV, sim.password)
        power = Power(kind="ipmi", address="127.0.0.1", port=sim.port, username=sim.user, password_env=PW_ENV)
        target = bmc_driven(sandbox_target, host, power)
        dump_target(target, tmp_path / "target.toml")
        power_cut_through_bmc(sandbox_cluster, target, sandbox_spec, host)
        assert any(c.startswith("set power 0") for c in sim.calls) and any(c.startswith("set power 1") for c in sim.calls)


@pytest.mark.skipif(bool(SushyEmulator.available()), reason=SushyEmulator.available() or "ok")
def test_redfish_bmc_cuts_and_restores_a_sandbox_host(sandbox_cluster, sandbox_target, sandbox_spec, tmp_path, monkeypatch):
    host = "r3h2"
    backend = SandboxBackend(sandbox_target)

    def on_state(state: str) -> None:
        h = sandbox_target.host(host)
        if state == "Off":
            backend.power_off(h)
        elif state == "On":
            backend.power_on(h)

    with SushyEmulator(tmp_path / "bmc", on_state=on_state) as emu:
        monkeypatch.setenv(PW_ENV, emu.password)
        power = Power(kind="redfish", address=emu.base_url, username=emu.user, password_env=PW_ENV, system_id=SYSTEM_UUID)
        target = bmc_driven(sandbox_target, host, power)
        power_cut_through_bmc(sandbox_cluster, target, sandbox_spec, host)
        assert "Off" in emu.recorder.states and emu.recorder.states[-1] == "On"
