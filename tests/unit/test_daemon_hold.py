"""Holding OSDs at power-on: the sandbox's hold (a file its power-on reads), and the controlled start lifting
the holds one OSD at a time through the fault session, so the ledger follows each start."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID  # noqa: E402

from drills.faults.backends.sandbox import SandboxBackend  # noqa: E402
from drills.faults.errors import FaultError  # noqa: E402
from drills.faults.guard import FaultGuard, PoolSpec  # noqa: E402
from drills.faults.kinds import DaemonHold  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.faults.session import FaultSession  # noqa: E402
from drills.restart.power_return import HeldUntilStarted  # noqa: E402
from drills.sandbox.bootstrap import save_spec, to_target  # noqa: E402
from drills.sandbox.spec import SandboxSpec  # noqa: E402

POOLS = [PoolSpec("rbd", 3, 2, "rack")]


@pytest.fixture
def sandbox_backend(tmp_path):
    spec = SandboxSpec(dir=str(tmp_path / "sb"), prefix="hd0", subnet="198.18.9.0/24", racks=1, hosts_per_rack=1)
    (spec.path / "run").mkdir(parents=True)
    spec.conf_path.write_text("")
    save_spec(spec)
    target = dataclasses.replace(to_target(spec, FSID), state_dir=str(tmp_path / "state"), destructive=True)
    return SandboxBackend(target), target


def test_a_held_sandbox_daemon_is_skipped_at_power_on_and_its_start_refused(sandbox_backend, monkeypatch):
    backend, target = sandbox_backend
    host = target.racks[0].hosts[0]
    osd = next(d for d in host.daemons if d.startswith("osd."))
    started = []
    monkeypatch.setattr(backend, "_nft", lambda h, ruleset: None)  # no namespace here: the power switch alone
    monkeypatch.setattr("drills.faults.backends.sandbox.hostctl.start_daemon",
                        lambda spec, h, daemon, procs=None: started.append(daemon))

    backend.hold_daemon(host, osd)
    assert backend.held(osd)
    backend.power_on(host, start_daemons=True)
    assert osd not in started and started == [d for d in host.daemons if d != osd]
    with pytest.raises(FaultError, match=rf"{osd} is held at power-on"):
        backend.start_daemon(host, osd)
    backend.release_daemon(host, osd)
    backend.release_daemon(host, osd)  # idempotent, as an unmask is
    backend.start_daemon(host, osd)
    assert started[-1] == osd and not backend.held(osd)


class RecordingHostOps:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, host, daemon) -> None:
        self.started.append(daemon)

    def running(self, host, daemon) -> bool:
        return daemon in self.started


def test_the_controlled_start_lifts_each_hold_at_its_turn_and_the_ledger_follows(target, fake):
    with FaultSession(target, guard=FaultGuard(target, FSID, POOLS), resolve=fake.resolve) as s:
        holds = {osd: s.inject(DaemonHold(target, osd)) for osd in ("osd.0", "osd.1")}
        inner = RecordingHostOps()
        ops = HeldUntilStarted(inner, s, holds)
        host = target.host_of_daemon("osd.0")
        ops.start(host, "osd.0")  # held: the heal unmasks and starts it, nothing else
        assert fake.ops("release_daemon", "start_daemon") == [("release_daemon", host.name, "osd.0"),
                                                              ("start_daemon", host.name, "osd.0")]
        assert inner.started == [] and holds["osd.0"] not in s.active and holds["osd.1"] in s.active
        pending = {e.fault_id for e in FaultLedger(target.state_dir).pending()}
        assert pending == {holds["osd.1"].fault_id}
        ops.start(host, "osd.0")  # no longer held (a restart of the biggest): the host ops start it
        assert inner.started == ["osd.0"] and ops.running(host, "osd.0")
    # what the controlled start left held is started when the session heals it
    assert fake.ops("release_daemon")[-1][2] == "osd.1" and FaultLedger(target.state_dir).pending() == []


def test_every_backend_operation_is_routed_and_refused_where_unsupported():
    """A fault calls its host's RoutedBackend; an operation missing there fails only when a drill injects."""
    import inspect

    from drills.faults.backends import RoutedBackend
    from drills.faults.interface import HostBackend, UnsupportedOps

    ops = {n for n, _ in inspect.getmembers(HostBackend, inspect.isfunction) if not n.startswith("_")}
    assert {"hold_daemon", "release_daemon", "power_on", "limit_link"} <= ops
    assert ops <= set(dir(RoutedBackend)), ops - set(dir(RoutedBackend))
    assert ops <= set(dir(UnsupportedOps)), ops - set(dir(UnsupportedOps))
