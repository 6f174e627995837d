"""The fault session, for runners: guards, probes, ledgers and heals every fault, on success,
failure, Ctrl-C, SIGTERM and SIGHUP; ``heal_pending`` is what ``drill heal`` does after a crash.
The registry of fault kinds is data ("module:Class"), resolved on lookup."""

from __future__ import annotations

import importlib
import signal as signal_mod
import threading
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Iterator

from drills.faults.errors import DrillSignal, FaultError, HealFailed
from drills.faults.fault import Fault, _default_resolver
from drills.faults.interface import BackendResolver
from drills.faults.ledger import FaultLedger, LedgerEntry, ReplayReport
from drills.target import Target, TargetError

if TYPE_CHECKING:
    from drills.faults.guard import FaultGuard
    from drills.hostaccess import HostAccess
    from drills.timeline import Timeline


# The registry that rebuilds faults from ledger records: data ("module:Class"), resolved on lookup (as
# testinfra's backend registry does), so this module imports no fault kind and no room that defines one.
# A new fault kind is one class and one line here.
FAULT_TYPES: dict[str, str] = {
    "power_cut": "drills.faults.kinds:PowerCut",
    "rack_power_cut": "drills.faults.kinds:RackPowerCut",
    "daemon_kill": "drills.faults.kinds:DaemonKill",
    "daemon_stop": "drills.faults.kinds:DaemonStop",
    "daemon_hang": "drills.faults.kinds:DaemonHang",
    "daemon_hold": "drills.faults.kinds:DaemonHold",
    "network_partition": "drills.faults.kinds:NetworkPartition",
    "blackhole": "drills.faults.kinds:Blackhole",
    "packet_loss": "drills.faults.kinds:PacketLoss",
    "slow_disk": "drills.faults.gray:SlowDisk",
    "cpu_starvation": "drills.faults.gray:CpuStarvation",
    "slow_link": "drills.faults.gray:SlowLink",
    "flapping": "drills.faults.gray:Flapping",
    "read_errors": "drills.faults.gray:ReadErrors",
    "cluster_flags": "drills.restart.flags:ClusterFlags",
}
LAZY_FAULT_TYPES = FAULT_TYPES  # the older name


def fault_type(kind: str) -> type[Fault]:
    """The fault class of a ledger record's kind; KeyError if none."""
    module, _, name = FAULT_TYPES[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if getattr(cls, "kind", None) != kind:
        raise KeyError(f"{FAULT_TYPES[kind]} has kind {getattr(cls, 'kind', None)!r}, not {kind!r}")
    return cls


def fault_kinds() -> list[str]:
    return sorted(FAULT_TYPES)


def fault_from_record(
    record: LedgerEntry | dict[str, Any], target: Target, resolve: BackendResolver | None = None
) -> Fault:
    """Rebuild a fault (and so its heal) from a ledger entry, in any process."""
    if isinstance(record, LedgerEntry):
        kind, undo, fault_id = record.kind, record.undo, record.fault_id
    else:
        kind, undo, fault_id = record["kind"], record["undo"], record["fault_id"]
    try:
        cls = fault_type(kind)
    except KeyError:
        raise FaultError(f"unknown fault kind {kind!r} in the ledger (known: {', '.join(fault_kinds())})") from None
    try:
        fault = cls.from_undo(target, undo, fault_id=fault_id, resolve=resolve)
    except (KeyError, TargetError) as e:
        raise FaultError(f"cannot rebuild {kind} {fault_id} from its ledger record: {e}") from None
    fault.injected = True
    return fault


def heal_pending(target: Target, *, resolve: BackendResolver | None = None, ledger: FaultLedger | None = None,
                 host_access: "HostAccess | None" = None) -> ReplayReport:
    """What ``drill heal`` does: undo every pending fault of the target, newest first. Every heal goes
    through one backend registry (on ``host_access``, when given): one connection per host."""
    ledger = ledger or FaultLedger(target.state_dir)
    resolve = resolve or _default_resolver(target, host_access)
    return ledger.replay(lambda entry: fault_from_record(entry, target, resolve).heal())


# --- the session -----------------------------------------------------------------


class PendingFaults(FaultError):
    """Faults from an earlier run are still armed; heal them before injecting new ones."""


_HANDLED_SIGNALS = (signal_mod.SIGTERM, signal_mod.SIGHUP)


@dataclass
class FaultSession:
    """Owns the ledger for one run: guards, probes, records and heals every fault.

    ``with FaultSession(target, guard=...) as s: s.inject(fault)``; at exit (normal,
    exception, Ctrl-C, SIGTERM, SIGHUP) every fault still injected is healed, newest
    first.  A kill -9 of the runner leaves armed records that ``drill heal`` replays.
    """

    target: Target
    guard: "FaultGuard"
    timeline: "Timeline | None" = None
    resolve: BackendResolver | None = None
    ledger: FaultLedger | None = None
    run_id: str = ""
    heal_pending_first: bool = False  # True: replay an earlier crash's faults on entry
    host_access: "HostAccess | None" = None  # the run's shared host connections (None: the backends make their own)
    active: list[Fault] = field(default_factory=list, init=False)
    _previous_handlers: dict[int, Any] = field(default_factory=dict, init=False)
    _deferred_signal: int | None = field(default=None, init=False)
    _healing: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.ledger is None:
            self.ledger = FaultLedger(self.target.state_dir)
        if self.resolve is None:
            self.resolve = _default_resolver(self.target, self.host_access)

    # -- lifecycle --
    def __enter__(self) -> "FaultSession":
        assert self.ledger is not None
        self.ledger.acquire()
        try:
            pending = self.ledger.pending()
            if pending and self.heal_pending_first:
                report = heal_pending(self.target, resolve=self.resolve, ledger=self.ledger)
                if not report.ok:
                    raise PendingFaults("faults from an earlier run could not be healed:\n" + report.summary())
            elif pending:
                raise PendingFaults(
                    f"{len(pending)} fault(s) from an earlier run are still armed in {self.ledger.path} "
                    f"({', '.join(e.label for e in pending)}): run `drill heal` first"
                )
            self._install_handlers()
        except BaseException:
            self.ledger.release()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        assert self.ledger is not None
        try:
            self._healing = True  # signals now are remembered, not raised: the heals must finish
            errors = self.heal_all()
        finally:
            self._healing = False
            self._restore_handlers()
            self.ledger.release()
        if errors and et is None:
            raise HealFailed("could not heal:\n" + "\n".join(errors))
        if self._deferred_signal is not None and et is None:
            raise DrillSignal(self._deferred_signal)

    # -- signals --
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._healing:
            self._deferred_signal = self._deferred_signal or signum
            return
        raise DrillSignal(signum)

    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python only allows handlers in the main thread; the caller's own apply
        for s in _HANDLED_SIGNALS:
            self._previous_handlers[s] = signal_mod.signal(s, self._on_signal)
        # Ctrl-C during the final heals is deferred like SIGTERM (see _on_signal).
        self._previous_handlers[signal_mod.SIGINT] = signal_mod.signal(signal_mod.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self._healing:
            self._deferred_signal = self._deferred_signal or signum
            return
        raise KeyboardInterrupt

    def _restore_handlers(self) -> None:
        for s, h in self._previous_handlers.items():
            signal_mod.signal(s, h)
        self._previous_handlers.clear()

    # -- faults --
    def _event(self, kind: str, fault: Fault, **data: Any) -> None:
        if self.timeline is not None:
            self.timeline.event(kind, fault.label, fault_id=fault.fault_id, fault=fault.kind, **data)

    def bind(self, fault: Fault) -> Fault:
        if fault._resolve is None:
            fault._resolve = self.resolve
        return fault

    def inject(self, fault: Fault, *, allow_unavailable: bool = False) -> Fault:
        """Guard, probe, arm in the ledger, inject.  On a failed inject, heal at once and re-raise."""
        assert self.ledger is not None
        self.bind(fault)
        # Faults in force together add up: a second rack cut is judged with the first still on.
        self.guard.check_all([*self.active, fault], allow_unavailable=allow_unavailable)
        fault.probe()  # nothing touched, nothing recorded yet if a BMC or host is unreachable
        self.ledger.arm(fault.ledger_entry(self.run_id))
        self.active.append(fault)
        try:
            fault.inject()
        except BaseException as e:
            self._event("fault.inject", fault, ok=False, error=str(e), description=fault.description)
            self._heal_one(fault)
            raise
        outage = fault.takes_down()
        self._event("fault.inject", fault, ok=True, description=fault.description,
                    hosts=sorted(outage.hosts), daemons=sorted(outage.daemons))  # the blast radius, for the record
        return fault

    def heal(self, fault: Fault) -> None:
        if fault not in self.active:
            return
        err = self._heal_one(fault)
        if err:
            raise HealFailed(err)

    def release(self, fault: Fault, reason: str) -> None:
        """Leave a fault in place on purpose (the caller tells the operator): out of the ledger and the
        session, so neither the session's exit nor `drill heal` undoes it."""
        assert self.ledger is not None
        if fault not in self.active:
            return
        self.ledger.mark_released(fault.fault_id, reason)
        self.active.remove(fault)
        self._event("fault.release", fault, reason=reason)

    def _heal_one(self, fault: Fault) -> str:
        assert self.ledger is not None
        try:
            fault.heal()
        except Exception as e:  # noqa: BLE001 - reported, left pending in the ledger
            msg = f"{fault.label} [{fault.fault_id}]: {e}\n    manual step: {fault.manual_heal()}"
            self.ledger.mark_heal_failed(fault.fault_id, str(e))
            self._event("fault.heal", fault, ok=False, error=str(e), manual=fault.manual_heal())
            return msg
        self.ledger.mark_healed(fault.fault_id)
        if fault in self.active:
            self.active.remove(fault)
        self._event("fault.heal", fault, ok=True)
        return ""

    def heal_all(self) -> list[str]:
        """Heal everything still injected, newest first; failures never stop the rest."""
        errors = []
        for fault in list(reversed(self.active)):
            err = self._heal_one(fault)
            if err:
                errors.append(err)
                self.active.remove(fault)  # stays pending in the ledger for `drill heal`
        return errors

    def injected(self, fault: Fault, *, allow_unavailable: bool = False) -> "_Injected":
        """``with session.injected(fault):`` - heal when the block ends."""
        return _Injected(self, fault, allow_unavailable)


@dataclass
class _Injected:
    session: FaultSession
    fault: Fault
    allow_unavailable: bool

    def __enter__(self) -> Fault:
        return self.session.inject(self.fault, allow_unavailable=self.allow_unavailable)

    def __exit__(self, *exc: object) -> None:
        self.session.heal(self.fault)


def iter_fault_types() -> Iterator[tuple[str, type[Fault]]]:
    return iter((kind, fault_type(kind)) for kind in fault_kinds())
