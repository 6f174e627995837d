"""Faults and FaultSession against a recording fake backend: heals on every exit path."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID, FakeBackend, make_target  # noqa: E402

from drills.faults.backends import BackendRegistry  # noqa: E402
from drills.faults.errors import BackendUnavailable, DrillSignal, FaultError, HealFailed, Unsupported
from drills.faults.kinds import (
    Blackhole,
    DaemonHang,
    DaemonKill,
    DaemonHold,
    DaemonStop,
    NetworkPartition,
    PacketLoss,
    PowerCut,
    RackPowerCut,
)
from drills.faults.session import FAULT_TYPES, FaultSession, PendingFaults, fault_from_record, heal_pending
from drills.faults.guard import FaultGuard, GuardRefused, PoolSpec  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.timeline import Timeline, read_events  # noqa: E402

POOLS = [PoolSpec("rbd", 3, 2, "rack")]


def session(target, fake, **kw):
    return FaultSession(target, guard=FaultGuard(target, FSID, POOLS), resolve=fake.resolve, **kw)


def all_faults(target, resolve):
    return [
        PowerCut(target, ["r0h0", "r0h1"], resolve=resolve),
        RackPowerCut(target, "rack1", resolve=resolve),
        DaemonKill(target, "osd.3", resolve=resolve),
        DaemonKill(target, "osd.4", signal=signal.SIGTERM, resolve=resolve),
        DaemonStop(target, "mon.a", resolve=resolve),
        DaemonHang(target, "osd.0", resolve=resolve),
        DaemonHold(target, "osd.2", resolve=resolve),
        NetworkPartition(target, ["r2h0"], resolve=resolve),
        NetworkPartition(target, ["r2h0"], ["r1h1"], resolve=resolve),
        Blackhole(target, ["r2h1"], resolve=resolve),
        PacketLoss(target, "r0h0", 20, resolve=resolve),
    ]


# --- individual faults -------------------------------------------------------------


def test_each_fault_injects_and_heals_through_the_backend(target, fake):
    r = fake.resolve
    cut = RackPowerCut(target, "rack0", resolve=r)
    with cut:
        assert fake.ops("power_off") == [("power_off", "r0h0"), ("power_off", "r0h1")]
    assert fake.ops("power_on") == [("power_on", "r0h0", True), ("power_on", "r0h1", True)]
    assert cut.label == "rack power cut rack0"

    fake.calls.clear()
    with DaemonHang(target, "osd.3", resolve=r) as f:
        assert f.label == "hang osd.3"
    assert fake.calls == [("kill_daemon", "r0h1", "osd.3", signal.SIGSTOP), ("kill_daemon", "r0h1", "osd.3", signal.SIGCONT)]

    fake.calls.clear()
    with DaemonKill(target, "osd.3", resolve=r) as f:
        assert f.label == "kill -KILL osd.3"
    assert fake.calls == [("kill_daemon", "r0h1", "osd.3", signal.SIGKILL), ("start_daemon", "r0h1", "osd.3")]

    fake.calls.clear()
    p = NetworkPartition(target, ["r0h0"], ["r1h0", "r1h1"], resolve=r)
    with p:
        pass
    assert fake.calls == [
        ("block_network", "r0h0", ("198.18.1.10", "198.18.1.11"), p.fault_id),
        ("unblock_network", "r0h0", p.fault_id),
    ]

    fake.calls.clear()
    b = Blackhole(target, ["r0h0"], resolve=r)
    with b:
        pass
    assert fake.calls == [("block_network", "r0h0", None, b.fault_id), ("unblock_network", "r0h0", b.fault_id)]

    fake.calls.clear()
    loss = PacketLoss(target, "r0h0", 30, resolve=r)
    with loss:
        pass
    assert fake.calls == [("set_packet_loss", "r0h0", 30, loss.fault_id), ("clear_packet_loss", "r0h0", loss.fault_id)]


def test_a_hold_masks_now_and_its_heal_unmasks_then_starts(target, fake):
    hold = DaemonHold(target, "osd.3", resolve=fake.resolve)
    assert hold.label == "hold osd.3 at power-on"
    assert not hold.takes_down().hosts and not hold.takes_down().daemons  # the daemon runs on until a power-on
    with hold:
        assert fake.calls == [("hold_daemon", "r0h1", "osd.3")]
    assert fake.calls[1:] == [("release_daemon", "r0h1", "osd.3"), ("start_daemon", "r0h1", "osd.3")]
    fake.calls.clear()
    hold.inject()
    hold.release()  # the controlled start lifts the hold alone, and starts the OSD itself
    assert fake.calls == [("hold_daemon", "r0h1", "osd.3"), ("release_daemon", "r0h1", "osd.3")]


def test_a_hold_heal_waits_for_a_booting_host_then_gives_up_naming_it(target, fake):
    from drills.faults.errors import BackendUnavailable

    hold = DaemonHold(target, "osd.3", resolve=fake.resolve)
    hold.boot_poll_s = 0.01
    tries = []

    def booting(host, daemon):
        tries.append(daemon)
        if len(tries) < 3:
            raise BackendUnavailable(host.name, "connection refused")

    fake.release_daemon = booting
    hold.heal()  # two refusals while the host boots, then the unmask goes through and the OSD starts
    assert len(tries) == 3 and fake.ops("start_daemon") == [("start_daemon", "r0h1", "osd.3")]
    hold.boot_wait_s = 0.05
    fake.release_daemon = lambda host, daemon: (_ for _ in ()).throw(BackendUnavailable(host.name, "no route to host"))
    with pytest.raises(BackendUnavailable, match="r0h1.*no route to host"):
        hold.heal()


def test_with_fault_heals_on_exception(target, fake):
    with pytest.raises(ZeroDivisionError):
        with DaemonStop(target, "osd.1", resolve=fake.resolve):
            1 / 0
    assert fake.calls == [("stop_daemon", "r0h0", "osd.1"), ("start_daemon", "r0h0", "osd.1")]


def test_power_heal_tries_every_host_even_if_one_fails(target, fake):
    fake.fail["power_on:r0h0"] = RuntimeError("BMC timeout")
    cut = RackPowerCut(target, "rack0", resolve=fake.resolve)
    cut.inject()
    with pytest.raises(HealFailed, match="r0h0: BMC timeout"):
        cut.heal()
    assert [c[1] for c in fake.ops("power_on")] == ["r0h0", "r0h1"]


def test_undo_records_are_json_and_rebuild_the_same_heal(target, fake):
    for f in all_faults(target, fake.resolve):
        rec = json.loads(json.dumps(f.ledger_entry().to_record()))
        rebuilt = fault_from_record(rec, target, resolve=fake.resolve)
        assert type(rebuilt).kind in FAULT_TYPES
        assert rebuilt.fault_id == f.fault_id and rebuilt.label == f.label, f
        fake.calls.clear()
        f.heal()
        expected = list(fake.calls)
        fake.calls.clear()
        rebuilt.heal()
        assert fake.calls == expected, f
        assert "password" not in json.dumps(rec).lower()


def test_fault_arguments_are_checked_before_anything_happens(target):
    with pytest.raises(Exception, match="unknown host"):
        PowerCut(target, ["nope"])
    with pytest.raises(Exception, match="unknown daemon"):
        DaemonKill(target, "osd.99")
    with pytest.raises(FaultError, match="both sides"):
        NetworkPartition(target, ["r0h0"], ["r0h0"])
    with pytest.raises(FaultError, match="1..100"):
        PacketLoss(target, "r0h0", 0)
    with pytest.raises(FaultError, match="unknown fault kind"):
        fault_from_record({"kind": "meteor", "undo": {}, "fault_id": "x"}, target)


# --- the session -------------------------------------------------------------------


def test_session_records_ledger_and_timeline_and_heals_at_exit(target, fake, tmp_path):
    tl = Timeline(tmp_path / "run")
    with session(target, fake, timeline=tl, run_id="run1") as s:
        a = s.inject(DaemonKill(target, "osd.9"))  # in rack2: together still one rack down
        b = s.inject(RackPowerCut(target, "rack2"))
        assert [e.fault_id for e in s.ledger.pending()] == [a.fault_id, b.fault_id]
        assert s.ledger.pending()[0].run_id == "run1"
    tl.close()
    # Healed newest first.
    assert [c[0] for c in fake.calls if c[0] != "probe"] == [
        "kill_daemon", "power_off", "power_off", "power_on", "power_on", "start_daemon",
    ]
    assert FaultLedger(target.state_dir).pending() == []
    events = [(e.kind, e.label, e.data["ok"]) for e in read_events(tmp_path / "run")]
    assert events == [
        ("fault.inject", "kill -KILL osd.9", True),
        ("fault.inject", "rack power cut rack2", True),
        ("fault.heal", "rack power cut rack2", True),
        ("fault.heal", "kill -KILL osd.9", True),
    ]


def test_injected_context_heals_at_block_end(target, fake):
    with session(target, fake) as s:
        with s.injected(DaemonStop(target, "osd.2")):
            assert len(s.ledger.pending()) == 1
        assert s.ledger.pending() == [] and s.active == []


def test_session_heals_on_exception_and_keyboard_interrupt(target, fake):
    for exc in (RuntimeError("drill failed"), KeyboardInterrupt()):
        fake.calls.clear()
        with pytest.raises(type(exc)):
            with session(target, fake) as s:
                s.inject(DaemonStop(target, "osd.2"))
                raise exc
        assert fake.ops("start_daemon") == [("start_daemon", "r0h1", "osd.2")]
        assert FaultLedger(target.state_dir).pending() == []


def test_probe_failure_injects_nothing_and_leaves_ledger_unchanged(target, fake):
    fake.unreachable["r0h1"] = "BMC 10.0.0.5: wrong password (the BMC rejected the credentials)"
    with session(target, fake) as s:
        with pytest.raises(BackendUnavailable, match=r"^host r0h1: BMC 10\.0\.0\.5: wrong password"):
            s.inject(RackPowerCut(target, "rack0"))
        assert s.active == []
    assert fake.ops("power_off", "power_on") == []
    assert not Path(target.state_dir, "fault-ledger.jsonl").exists()


def test_guard_refusal_injects_nothing(target, fake):
    with session(target, fake) as s:
        s.inject(RackPowerCut(target, "rack0"))
        with pytest.raises(GuardRefused):
            s.inject(RackPowerCut(target, "rack1"))  # two racks at once with size 3 / min_size 2
        assert len(s.ledger.pending()) == 1
    assert [c[1] for c in fake.ops("power_off")] == ["r0h0", "r0h1"]


def test_failed_inject_is_healed_at_once(target, fake):
    fake.fail["power_off:r0h1"] = RuntimeError("BMC hiccup")
    with session(target, fake) as s:
        with pytest.raises(RuntimeError, match="hiccup"):
            s.inject(RackPowerCut(target, "rack0"))
        assert s.active == [] and s.ledger.pending() == []
    assert [c[1] for c in fake.ops("power_on")] == ["r0h0", "r0h1"]  # r0h0 was already off


def test_failed_heal_stays_pending_with_manual_step_and_others_still_heal(target, fake):
    fake.fail["start_daemon:r0h0"] = RuntimeError("unit masked")
    with pytest.raises(HealFailed, match=r"unit masked[\s\S]*manual step: on host r0h0: start osd.1"):
        with session(target, fake) as s:
            s.inject(DaemonKill(target, "osd.1"))
            s.inject(DaemonHang(target, "osd.3"))
    assert ("kill_daemon", "r0h1", "osd.3", signal.SIGCONT) in fake.calls
    pend = FaultLedger(target.state_dir).pending()
    assert [e.label for e in pend] == ["kill -KILL osd.1"]
    assert pend[0].errors == ("unit masked",)
    # Next run refuses until healed; drill heal then works.
    with pytest.raises(PendingFaults, match="drill heal"):
        with session(target, fake):
            pass
    del fake.fail["start_daemon:r0h0"]
    report = heal_pending(target, resolve=fake.resolve)
    assert report.ok and [e.label for e in report.healed] == ["kill -KILL osd.1"]
    with session(target, fake):
        pass


def test_heal_pending_first_option(target, fake):
    led = FaultLedger(target.state_dir)
    led.arm(DaemonStop(target, "osd.5").ledger_entry())
    with session(target, fake, heal_pending_first=True):
        pass
    assert fake.ops("start_daemon") == [("start_daemon", "r1h0", "osd.5")]


def test_signal_handlers_restored(target, fake):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGINT)
    with session(target, fake):
        assert signal.getsignal(signal.SIGTERM) != before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP), signal.getsignal(signal.SIGINT)) == before


# --- across processes: SIGTERM, SIGHUP, kill -9 -----------------------------------


class FileBackend(FakeBackend):
    """Appends each call to a file, so the parent sees what a child process did."""

    def __init__(self, log: str):
        super().__init__()
        self.log = log

    def _do(self, op, host, *args):
        with open(self.log, "a") as f:
            f.write(json.dumps([op, host.name, *args]) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _child_runner(state_dir: str, log: str, ready) -> None:
    target = make_target(state_dir)
    be = FileBackend(log)
    try:
        with FaultSession(target, guard=FaultGuard(target, FSID, POOLS), resolve=be.resolve) as s:
            s.inject(RackPowerCut(target, "rack0"))
            s.inject(DaemonHang(target, "osd.3"))  # same rack: the guard allows both
            ready.set()
            time.sleep(30)
    except DrillSignal as e:
        with open(log, "a") as f:
            f.write(json.dumps(["exit", e.signum]) + "\n")
        os._exit(3)
    os._exit(0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGKILL], ids=lambda s: signal.Signals(s).name)
def test_child_runner_heals_on_signal_or_leaves_ledger_for_drill_heal(tmp_path, sig):
    state, log = str(tmp_path / "state"), str(tmp_path / "calls.log")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_child_runner, args=(state, log, ready))
    p.start()
    assert ready.wait(20), "child never injected"
    os.kill(p.pid, sig)
    p.join(20)
    calls = [json.loads(x) for x in Path(log).read_text().splitlines()]
    ops = [c[0] for c in calls]
    target = make_target(state)
    if sig == signal.SIGKILL:
        assert "power_on" not in ops
        pend = FaultLedger(state).pending()
        assert [e.kind for e in pend] == ["rack_power_cut", "daemon_hang"]
        fake = FakeBackend()
        report = heal_pending(target, resolve=fake.resolve)
        assert report.ok
        assert fake.calls == [
            ("kill_daemon", "r0h1", "osd.3", signal.SIGCONT),
            ("power_on", "r0h0", True),
            ("power_on", "r0h1", True),
        ]
    else:
        # Healed newest first, then the exception reached the runner.
        heals = [["kill_daemon", "r0h1", "osd.3", signal.SIGCONT], ["power_on", "r0h0", True], ["power_on", "r0h1", True]]
        if sig == signal.SIGINT:  # KeyboardInterrupt, as Ctrl-C always was
            assert calls[-3:] == heals and p.exitcode != 0
        else:
            assert calls[-4:] == [*heals, ["exit", sig]] and p.exitcode == 3
        assert FaultLedger(state).pending() == []


# --- backend routing ---------------------------------------------------------------


def test_registry_routes_by_kind_and_refuses_none(tmp_path):
    import dataclasses

    from drills.faults.backends.ipmi import IpmiBackend
    from drills.faults.backends.ssh import SshBackend
    from drills.target import Access, Network, Power

    t = make_target(str(tmp_path))
    h = dataclasses.replace(
        t.host("r0h0"),
        access=Access(kind="ssh", host="127.0.0.1"),
        power=Power(kind="ipmi", address="127.0.0.1"),
        network=Network(kind="nft"),
    )
    reg = BackendRegistry(t)
    assert isinstance(reg.backend(h, "power"), IpmiBackend)
    assert isinstance(reg.backend(h, "daemons"), SshBackend)
    assert reg.backend(h, "network") is reg.backend(h, "daemons")  # nft goes over SSH
    bare = dataclasses.replace(h, power=Power(kind="none"))
    with pytest.raises(BackendUnavailable, match="host r0h0: power.kind = none"):
        reg.for_host(bare).probe(bare, "power")
    with pytest.raises(Unsupported, match="cannot power off"):
        reg.backend(h, "daemons").power_off(h)
    odd = dataclasses.replace(h, power=Power(kind="carrier-pigeon"))
    with pytest.raises(Unsupported, match="no backend handles power kind 'carrier-pigeon'"):
        reg.backend(odd, "power")
