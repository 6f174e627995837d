"""IPMI and Redfish power backends against real emulators on 127.0.0.1.

ipmi_sim (OpenIPMI) runs a chassis_control script that creates/removes a file;
sushy-emulator's fake driver notifies a recorder in this process on each power
change.  So "power off" is seen to have really happened, not just answered.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.ipmi_sim import IpmiSim  # noqa: E402
from emulators.sushy import SYSTEM_UUID, SushyEmulator  # noqa: E402

from drills.faults.backends.ipmi import IpmiBackend  # noqa: E402
from drills.faults.backends.redfish import RedfishBackend  # noqa: E402
from drills.faults.errors import BackendUnavailable
from drills.faults.kinds import PowerCut
from drills.faults.session import FaultSession  # noqa: E402
from drills.faults.guard import FaultGuard  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.target import Cluster, Host, Power, Target  # noqa: E402

FSID = "0b5e55ed-0000-4000-8000-00000000b3c0"
PW_ENV = "DRILLS_TEST_BMC_PASSWORD"


def bmc_target(state_dir: Path, power: Power) -> Target:
    host = Host(name="node1", address="127.0.0.2", daemons=("osd.0",), power=power)
    return Target(
        cluster=Cluster(name="bmc", fsid=FSID, conf="/dev/null", keyring="/dev/null", deployment="package"),
        state_dir=str(state_dir),
        destructive=True,
        service_hosts=(host,),
    )


def session(target: Target) -> FaultSession:
    return FaultSession(target, guard=FaultGuard(target, live_fsid=FSID))  # real backend registry


# --- IPMI ----------------------------------------------------------------------------

ipmi_missing = IpmiSim.available()


@pytest.fixture
def ipmi_sim(tmp_path):
    if ipmi_missing:
        pytest.skip(ipmi_missing)
    with IpmiSim(tmp_path / "bmc") as sim:
        yield sim


def ipmi_power(sim: IpmiSim, port: int | None = None) -> Power:
    return Power(kind="ipmi", address="127.0.0.1", port=port or sim.port, username=sim.user, password_env=PW_ENV)


@pytest.mark.timeout(60)
def test_ipmi_power_cut_really_runs_the_chassis_action_and_heals(ipmi_sim, tmp_path, monkeypatch):
    monkeypatch.setenv(PW_ENV, ipmi_sim.password)
    argvs: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv, *a, **kw):
        argvs.append(list(argv))
        return real_run(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "run", spy)
    target = bmc_target(tmp_path / "state", ipmi_power(ipmi_sim))
    assert ipmi_sim.power_file.exists()
    with session(target) as s:
        cut = s.inject(PowerCut(target, ["node1"]))
        assert not ipmi_sim.power_file.exists(), "BMC power off did not run the chassis action"
        assert "set power 0" in ipmi_sim.calls
        assert IpmiBackend().power_state(target.host("node1")) == "off"
        assert [e.fault_id for e in FaultLedger(target.state_dir).pending()] == [cut.fault_id]
    assert ipmi_sim.power_file.exists(), "heal did not power the host back on"
    assert "set power 1" in ipmi_sim.calls
    assert FaultLedger(target.state_dir).pending() == []
    ipmitool_argvs = [a for a in argvs if a and a[0] == "ipmitool"]
    assert ipmitool_argvs and all(ipmi_sim.password not in " ".join(a) for a in ipmitool_argvs)
    assert all("-P" not in a for a in ipmitool_argvs)


@pytest.mark.timeout(60)
def test_ipmi_wrong_password_is_one_clear_error_and_nothing_happens(ipmi_sim, tmp_path, monkeypatch):
    monkeypatch.setenv(PW_ENV, "not-the-password")
    target = bmc_target(tmp_path / "state", ipmi_power(ipmi_sim))
    with session(target) as s:
        with pytest.raises(BackendUnavailable) as e:
            s.inject(PowerCut(target, ["node1"]))
    msg = str(e.value)
    assert msg.startswith("host node1: BMC 127.0.0.1: ") and "wrong password" in msg
    assert "not-the-password" not in msg
    assert ipmi_sim.power_file.exists() and not any(c.startswith("set") for c in ipmi_sim.calls)
    assert not Path(target.state_dir, "fault-ledger.jsonl").exists()


@pytest.mark.timeout(60)
def test_ipmi_unreachable_bmc_and_missing_password(tmp_path, monkeypatch):
    if ipmi_missing:
        pytest.skip(ipmi_missing)
    from emulators.common import free_port
    import socket

    monkeypatch.setenv(PW_ENV, "whatever")
    dead = Power(kind="ipmi", address="127.0.0.1", port=free_port(socket.SOCK_DGRAM), username="drill", password_env=PW_ENV)
    target = bmc_target(tmp_path / "state", dead)
    with pytest.raises(BackendUnavailable, match=r"host node1: BMC 127\.0\.0\.1: .*no answer from the BMC"):
        IpmiBackend(timeout_s=1, retries=1).probe(target.host("node1"), "power")
    monkeypatch.delenv(PW_ENV)
    with pytest.raises(BackendUnavailable, match=f"host node1: .*{PW_ENV} is not set"):
        IpmiBackend().probe(target.host("node1"), "power")


# --- Redfish -------------------------------------------------------------------------

sushy_missing = SushyEmulator.available()


@pytest.fixture
def sushy(tmp_path):
    if sushy_missing:
        pytest.skip(sushy_missing)
    with SushyEmulator(tmp_path / "redfish") as emu:
        yield emu


def redfish_power(emu: SushyEmulator, system_id: str = SYSTEM_UUID) -> Power:
    return Power(kind="redfish", address=emu.base_url, username=emu.user, password_env=PW_ENV, system_id=system_id)


@pytest.mark.timeout(60)
def test_redfish_power_cut_really_changes_power_and_heals(sushy, tmp_path, monkeypatch):
    monkeypatch.setenv(PW_ENV, sushy.password)
    target = bmc_target(tmp_path / "state", redfish_power(sushy))
    backend = RedfishBackend(poll_interval_s=0.2)
    host = target.host("node1")
    assert backend.power_state(host) == "on"
    with session(target) as s:
        s.inject(PowerCut(target, ["node1"]))
        assert backend.power_state(host) == "off"
        assert "Off" in sushy.recorder.states, sushy.recorder.states
    assert backend.power_state(host) == "on"
    assert sushy.recorder.states[-1] == "On"
    assert FaultLedger(target.state_dir).pending() == []


@pytest.mark.timeout(60)
def test_redfish_bad_credentials_system_and_address(sushy, tmp_path, monkeypatch):
    monkeypatch.setenv(PW_ENV, "wrong")
    target = bmc_target(tmp_path / "state", redfish_power(sushy))
    with session(target) as s:
        with pytest.raises(BackendUnavailable, match=r"^host node1: BMC http://127\.0\.0\.1:\d+: credentials rejected \(HTTP 401\)"):
            s.inject(PowerCut(target, ["node1"]))
    assert sushy.recorder.states == []  # nothing was powered
    assert not Path(target.state_dir, "fault-ledger.jsonl").exists()

    monkeypatch.setenv(PW_ENV, sushy.password)
    wrong_id = bmc_target(tmp_path / "s2", redfish_power(sushy, system_id="no-such-system"))
    with pytest.raises(BackendUnavailable, match="check power.system_id"):
        RedfishBackend().probe(wrong_id.host("node1"), "power")

    from emulators.common import free_port

    dead = Power(kind="redfish", address=f"http://127.0.0.1:{free_port()}", username="u", password_env=PW_ENV, system_id="x")
    with pytest.raises(BackendUnavailable, match="cannot connect"):
        RedfishBackend().probe(bmc_target(tmp_path / "s3", dead).host("node1"), "power")
