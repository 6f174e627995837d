"""Faults, the backend interface they act through, and the session that guarantees heals.

Like Jepsen's nemeses: each fault is a small object with its undo beside it
(``inject``/``heal``), a short ``label`` for plots, and an ``undo_record`` - plain
JSON that the ledger keeps so that ``fault_from_record`` can rebuild the heal in
another process after a crash.

Faults never talk to hardware themselves: they call a ``HostBackend`` (SSH,
IPMI, Redfish, the sandbox) chosen per host from the target's access/power/
network kinds (see ``drills.faults.backends``).

Heals are idempotent: a heal may run after an inject that never happened or
half happened (the ledger arms *before* injecting), or twice (``drill heal``
after a runner that healed but crashed before writing "healed").
"""

from __future__ import annotations

import signal as signal_mod
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

from drills.faults.ledger import FaultLedger, LedgerEntry, ReplayReport
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
from drills.target import Host, Target, TargetError

if TYPE_CHECKING:
    from drills.faults.guard import FaultGuard
    from drills.timeline import Timeline

# --- errors --------------------------------------------------------------------


class FaultError(Exception):
    """A fault could not be injected or healed; the message names the host and why."""


class BackendUnavailable(FaultError):
    """probe() failed: the host's BMC/SSH cannot be reached or refuses the credentials."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"host {host}: {reason}")
        self.host = host
        self.reason = reason


class Unsupported(FaultError):
    """The host's backend cannot do this (e.g. power.kind = none and a power cut)."""


class HealFailed(FaultError):
    """One or more parts of a heal failed; the others were still attempted."""


class DrillSignal(BaseException):
    """SIGTERM/SIGHUP turned into an exception so that every ``finally`` (heals) runs.

    A BaseException, like KeyboardInterrupt, so ``except Exception`` in a drill
    does not swallow it.
    """

    def __init__(self, signum: int):
        super().__init__(f"received {signal_mod.Signals(signum).name}")
        self.signum = signum


# --- the backend interface -----------------------------------------------------

ROLES = ("power", "daemons", "network")  # what a fault needs from a host's backends


@runtime_checkable
class HostBackend(Protocol):
    """What faults need from a host.  One small interface; backends that cannot do
    an operation raise ``Unsupported`` (see ``UnsupportedOps``)."""

    def probe(self, host: Host, role: str) -> None:
        """Check reachability and credentials for ``role`` (one of ROLES) before any
        inject; raise BackendUnavailable(host.name, reason) - never inject anything."""

    def power_off(self, host: Host) -> None: ...

    def power_on(self, host: Host, start_daemons: bool = True) -> None: ...

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None: ...

    def start_daemon(self, host: Host, daemon: str) -> None: ...

    def stop_daemon(self, host: Host, daemon: str) -> None: ...

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        """Drop traffic between ``host`` and ``peers`` (addresses), or all traffic
        (a blackhole) when peers is None.  ``tag`` (the fault id) names the rules so
        that ``unblock_network(host, tag)`` removes exactly these."""

    def unblock_network(self, host: Host, tag: str) -> None: ...

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None: ...

    def clear_packet_loss(self, host: Host, tag: str) -> None: ...

    # Gray faults: slower, not broken (drills.faults.gray).  ``tag`` is the fault id.
    def throttle_disk(self, host: Host, daemon: str, limit: DiskLimit, tag: str) -> None:
        """Limit the daemon's device I/O (bytes/s, IOPS) until ``unthrottle_disk``."""

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None: ...

    def limit_cpu(self, host: Host, daemon: str, limit: CpuLimit, tag: str) -> None:
        """Hold the daemon to a CFS quota until ``unlimit_cpu``."""

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None: ...

    def limit_link(self, host: Host, limit: LinkLimit, tag: str) -> None:
        """Rate-limit the host's cluster link (tc tbf) until ``unlimit_link``."""

    def unlimit_link(self, host: Host, tag: str) -> None: ...


class UnsupportedOps:
    """Base for partial backends (a BMC only does power): everything else refuses clearly."""

    kind = "?"

    def _no(self, host: Host, what: str) -> FaultError:
        return Unsupported(f"host {host.name}: the {self.kind} backend cannot {what}")

    def probe(self, host: Host, role: str) -> None:
        raise self._no(host, f"do {role} faults")

    def power_off(self, host: Host) -> None:
        raise self._no(host, "power off")

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        raise self._no(host, "power on")

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None:
        raise self._no(host, f"signal {daemon}")

    def start_daemon(self, host: Host, daemon: str) -> None:
        raise self._no(host, f"start {daemon}")

    def stop_daemon(self, host: Host, daemon: str) -> None:
        raise self._no(host, f"stop {daemon}")

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        raise self._no(host, "block its network")

    def unblock_network(self, host: Host, tag: str) -> None:
        raise self._no(host, "unblock its network")

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None:
        raise self._no(host, "drop packets")

    def clear_packet_loss(self, host: Host, tag: str) -> None:
        raise self._no(host, "clear packet loss")

    def throttle_disk(self, host: Host, daemon: str, limit: DiskLimit, tag: str) -> None:
        raise self._no(host, f"throttle the disk of {daemon}")

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None:
        raise self._no(host, f"lift the disk throttle of {daemon}")

    def limit_cpu(self, host: Host, daemon: str, limit: CpuLimit, tag: str) -> None:
        raise self._no(host, f"limit the CPU of {daemon}")

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None:
        raise self._no(host, f"lift the CPU limit of {daemon}")

    def limit_link(self, host: Host, limit: LinkLimit, tag: str) -> None:
        raise self._no(host, "rate-limit its link")

    def unlimit_link(self, host: Host, tag: str) -> None:
        raise self._no(host, "lift its link rate limit")


BackendResolver = Callable[[Host], HostBackend]


def _default_resolver(target: Target) -> BackendResolver:
    from drills.faults.backends import BackendRegistry  # late: backends import this module

    return BackendRegistry(target).for_host


def wait_for_power_state(read_state: Callable[[], str], host: Host, state: str, timeout_s: float,
                         poll_interval_s: float, label: str = "power") -> None:
    """Poll a BMC until it reports `state`; errors reading it (credentials, reachability) propagate."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = read_state()
        if now == state:
            return
        if time.monotonic() > deadline:
            raise FaultError(f"host {host.name}: BMC still reports {label} {now} {timeout_s:.0f}s after asking for {state}")
        time.sleep(poll_interval_s)


# --- what a fault takes down (input to the guard) -------------------------------


@dataclass(frozen=True)
class Outage:
    """Hosts that go dark and daemons that stop serving while a fault is in force."""

    hosts: frozenset[str] = frozenset()
    daemons: frozenset[str] = frozenset()

    def osds(self) -> frozenset[int]:
        return frozenset(int(d.split(".", 1)[1]) for d in self.daemons if d.startswith("osd."))


# --- faults ----------------------------------------------------------------------


class Fault(ABC):
    """One fault: ``inject()`` then ``heal()``; ``with fault:`` heals whatever happens."""

    kind: ClassVar[str]  # registry key, stored in the ledger
    destructive: ClassVar[bool] = True  # refused on targets not marked destructive

    def __init__(self, target: Target, *, resolve: BackendResolver | None = None, fault_id: str | None = None):
        self.target = target
        self._resolve = resolve
        self.fault_id = fault_id or f"{self.kind.replace('_', '')}-{uuid.uuid4().hex[:8]}"
        self.injected = False

    # -- description --
    @property
    @abstractmethod
    def label(self) -> str:
        """Short, for plots: 'rack power cut r1', 'kill -9 osd.3'."""

    @property
    def description(self) -> str:
        return self.label

    @abstractmethod
    def undo_record(self) -> dict[str, Any]:
        """JSON-serialisable data ``from_undo`` rebuilds this fault from (no secrets)."""

    @classmethod
    @abstractmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        ...

    @abstractmethod
    def manual_heal(self) -> str:
        """The exact step an operator runs if the automatic heal cannot."""

    # -- what it touches --
    @abstractmethod
    def host_names(self) -> list[str]:
        """Hosts whose backends this fault acts through."""

    role: ClassVar[str] = "daemons"  # which backend role it needs (for probe)

    def takes_down(self) -> Outage:
        return Outage()

    # -- plumbing --
    def backend(self, host: Host) -> HostBackend:
        if self._resolve is None:
            self._resolve = _default_resolver(self.target)
        return self._resolve(host)

    def hosts(self) -> list[Host]:
        return [self.target.host(n) for n in self.host_names()]

    def probe(self) -> None:
        """Every backend reachable and accepting credentials, or BackendUnavailable."""
        for h in self.hosts():
            self.backend(h).probe(h, self.role)

    @abstractmethod
    def inject(self) -> None: ...

    @abstractmethod
    def heal(self) -> None: ...

    def ledger_entry(self, run_id: str = "") -> LedgerEntry:
        return LedgerEntry(
            fault_id=self.fault_id,
            kind=self.kind,
            label=self.label,
            undo=self.undo_record(),
            target=self.target.path,
            run_id=run_id,
            manual=self.manual_heal(),
        )

    def __enter__(self) -> "Fault":
        try:
            self.inject()
        except BaseException:
            self.heal()  # a half-done inject is undone before the error propagates
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.heal()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fault_id}: {self.label}>"


def _each(hosts: Sequence[Host], action: Callable[[Host], None], what: str) -> None:
    """Run ``action`` on every host even if some fail; raise one error naming them all."""
    errors: list[str] = []
    for h in hosts:
        try:
            action(h)
        except Exception as e:  # noqa: BLE001 - the other hosts still get their turn
            errors.append(f"{h.name}: {e}")
    if errors:
        raise HealFailed(f"{what} failed on {len(errors)} host(s): " + "; ".join(errors))


class PowerCut(Fault):
    """Hosts lose power at once (through their BMC, or the sandbox's kill -9 of everything)."""

    kind = "power_cut"
    role = "power"

    def __init__(self, target: Target, hosts: Sequence[str], *, rack: str = "", **kw: Any):
        super().__init__(target, **kw)
        if not hosts:
            raise FaultError("a power cut needs at least one host")
        for n in hosts:
            target.host(n)  # unknown names fail now, not half-way through an inject
        self._hosts = list(hosts)
        self.rack = rack

    @property
    def label(self) -> str:
        return f"rack power cut {self.rack}" if self.rack else f"power cut {','.join(self._hosts)}"

    @property
    def description(self) -> str:
        return f"cut power to {', '.join(self._hosts)}" + (f" (all of rack {self.rack})" if self.rack else "")

    def host_names(self) -> list[str]:
        return list(self._hosts)

    def takes_down(self) -> Outage:
        hs = self.hosts()
        return Outage(frozenset(h.name for h in hs), frozenset(d for h in hs for d in h.daemons))

    def undo_record(self) -> dict[str, Any]:
        return {"hosts": self._hosts, "rack": self.rack}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "PowerCut":
        return cls(target, undo["hosts"], rack=undo.get("rack", ""), fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        steps = []
        for h in self.hosts():
            p = h.power
            if p.kind == "ipmi":
                port = f" -p {p.port}" if p.port else ""
                steps.append(f"IPMI_PASSWORD=... ipmitool -I lanplus -H {p.address}{port} -U {p.username} -E chassis power on")
            elif p.kind == "redfish":
                steps.append(
                    f"curl -u {p.username} -X POST -H 'Content-Type: application/json' -d '{{\"ResetType\": \"On\"}}' "
                    f"{p.address.rstrip('/')}/redfish/v1/Systems/{p.system_id or '<id>'}/Actions/ComputerSystem.Reset"
                )
            else:
                steps.append(f"power on host {h.name} ({p.kind})")
        return "; ".join(steps)

    def inject(self) -> None:
        self.injected = True  # before acting: a partial power-off still needs its heal
        for h in self.hosts():  # stop at the first failure: do not cut more than planned-and-working
            self.backend(h).power_off(h)

    def heal(self) -> None:
        _each(self.hosts(), lambda h: self.backend(h).power_on(h, start_daemons=True), "power on")
        self.injected = False


class RackPowerCut(PowerCut):
    """Every host of one rack loses power: the failure a CRUSH rack domain is for."""

    kind = "rack_power_cut"

    def __init__(self, target: Target, rack: str, **kw: Any):
        super().__init__(target, [h.name for h in target.rack(rack).hosts], rack=rack, **kw)

    def undo_record(self) -> dict[str, Any]:
        return {"rack": self.rack, "hosts": self._hosts}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "PowerCut":
        # Heal the hosts that were cut, even if the rack was since edited in the target file.
        return PowerCut(target, undo["hosts"], rack=undo["rack"], fault_id=fault_id, resolve=resolve)


class _DaemonFault(Fault):
    def __init__(self, target: Target, daemon: str, **kw: Any):
        super().__init__(target, **kw)
        self.daemon = daemon
        self.host = target.host_of_daemon(daemon)

    def host_names(self) -> list[str]:
        return [self.host.name]

    def takes_down(self) -> Outage:
        return Outage(daemons=frozenset({self.daemon}))

    def undo_record(self) -> dict[str, Any]:
        return {"daemon": self.daemon, "host": self.host.name}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["daemon"], fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        return f"on host {self.host.name}: start {self.daemon} (systemctl start <its unit>, or `drill heal`)"

    def heal(self) -> None:
        self.backend(self.host).start_daemon(self.host, self.daemon)
        self.injected = False


class DaemonKill(_DaemonFault):
    """Signal a daemon (default SIGKILL: a crash); heal starts it again."""

    kind = "daemon_kill"

    def __init__(self, target: Target, daemon: str, signal: int = signal_mod.SIGKILL, **kw: Any):
        super().__init__(target, daemon, **kw)
        self.signal = int(signal)

    @property
    def label(self) -> str:
        return f"kill -{signal_mod.Signals(self.signal).name.removeprefix('SIG')} {self.daemon}"

    def undo_record(self) -> dict[str, Any]:
        return {**super().undo_record(), "signal": self.signal}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["daemon"], signal=undo.get("signal", signal_mod.SIGKILL), fault_id=fault_id, resolve=resolve)

    def inject(self) -> None:
        self.injected = True
        self.backend(self.host).kill_daemon(self.host, self.daemon, self.signal)


class DaemonStop(_DaemonFault):
    """Graceful stop (the daemon tells the monitors it is going); heal starts it."""

    kind = "daemon_stop"

    @property
    def label(self) -> str:
        return f"stop {self.daemon}"

    def inject(self) -> None:
        self.injected = True
        self.backend(self.host).stop_daemon(self.host, self.daemon)


class DaemonHang(_DaemonFault):
    """SIGSTOP: the process lives, holds its sockets, answers nothing; heal is SIGCONT."""

    kind = "daemon_hang"

    @property
    def label(self) -> str:
        return f"hang {self.daemon}"

    def manual_heal(self) -> str:
        return f"on host {self.host.name}: send SIGCONT to {self.daemon} (systemctl kill -s SIGCONT <its unit>)"

    def inject(self) -> None:
        self.injected = True
        self.backend(self.host).kill_daemon(self.host, self.daemon, signal_mod.SIGSTOP)

    def heal(self) -> None:
        self.backend(self.host).kill_daemon(self.host, self.daemon, signal_mod.SIGCONT)
        self.injected = False


REST = "rest"


class NetworkPartition(Fault):
    """Side A cannot talk to side B (both directions); each side still talks within itself.

    Rules go on side A's hosts only (they drop traffic to and from B's
    addresses), so name the smaller side first.
    """

    kind = "network_partition"
    role = "network"

    def __init__(self, target: Target, side_a: Sequence[str], side_b: Sequence[str] | str = REST, **kw: Any):
        super().__init__(target, **kw)
        self.side_a = list(side_a)
        if not self.side_a:
            raise FaultError("a partition needs at least one host on side A")
        for n in self.side_a:
            target.host(n)
        if side_b == REST:
            self.side_b = [h.name for h in target.hosts if h.name not in self.side_a]
        else:
            self.side_b = list(side_b)
            for n in self.side_b:
                target.host(n)
        overlap = set(self.side_a) & set(self.side_b)
        if overlap:
            raise FaultError(f"hosts on both sides of a partition: {', '.join(sorted(overlap))}")
        if not self.side_b:
            raise FaultError("side B of the partition is empty")
        missing = [n for n in self.side_b if not target.host(n).address]
        if missing:
            raise FaultError(f"a partition needs the addresses of side B; no address in the target for {', '.join(missing)}")

    @property
    def label(self) -> str:
        return f"partition {','.join(self.side_a)} | {','.join(self.side_b)}"

    def host_names(self) -> list[str]:
        return list(self.side_a)

    def peers(self) -> list[str]:
        return [self.target.host(n).address for n in self.side_b]

    def takes_down(self) -> Outage:
        """The side without a majority of monitors goes dark to the cluster (both, if neither has one)."""
        mons = [d for h in self.target.hosts for d in h.daemons if d.startswith("mon.")]
        a_hosts = [self.target.host(n) for n in self.side_a]
        b_hosts = [self.target.host(n) for n in self.side_b]
        a_mons = sum(1 for h in a_hosts for d in h.daemons if d.startswith("mon."))
        b_mons = sum(1 for h in b_hosts for d in h.daemons if d.startswith("mon."))
        quorum = len(mons) // 2 + 1
        down: list[Host] = []
        if a_mons < quorum:
            down += a_hosts
        if b_mons < quorum:
            down += b_hosts
        return Outage(frozenset(h.name for h in down), frozenset(d for h in down for d in h.daemons))

    def undo_record(self) -> dict[str, Any]:
        return {"side_a": self.side_a, "side_b": self.side_b}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["side_a"], undo["side_b"], fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        from drills.faults.nft import FAMILY, table_name

        return "; ".join(f"on host {n}: nft delete table {FAMILY} {table_name(self.fault_id)}" for n in self.side_a)

    def inject(self) -> None:
        self.injected = True
        peers = self.peers()
        for h in self.hosts():
            self.backend(h).block_network(h, peers, self.fault_id)

    def heal(self) -> None:
        _each(self.hosts(), lambda h: self.backend(h).unblock_network(h, self.fault_id), "unblock network")
        self.injected = False


class Blackhole(NetworkPartition):
    """Hosts fall silent: every packet in or out dropped (not refused), loopback spared."""

    kind = "blackhole"

    def __init__(self, target: Target, hosts: Sequence[str], **kw: Any):
        Fault.__init__(self, target, **kw)
        if not hosts:
            raise FaultError("a blackhole needs at least one host")
        for n in hosts:
            target.host(n)
        self.side_a = list(hosts)
        self.side_b = [h.name for h in target.hosts if h.name not in self.side_a]

    @property
    def label(self) -> str:
        return f"blackhole {','.join(self.side_a)}"

    def undo_record(self) -> dict[str, Any]:
        return {"hosts": self.side_a}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["hosts"], fault_id=fault_id, resolve=resolve)

    def inject(self) -> None:
        self.injected = True
        for h in self.hosts():
            self.backend(h).block_network(h, None, self.fault_id)


class PacketLoss(Fault):
    """A host drops ``percent`` % of its packets at random, each direction."""

    kind = "packet_loss"
    role = "network"

    def __init__(self, target: Target, host: str, percent: int, **kw: Any):
        super().__init__(target, **kw)
        if not 0 < int(percent) <= 100:
            raise FaultError(f"packet loss percent must be 1..100, got {percent}")
        self.host = target.host(host)
        self.percent = int(percent)

    @property
    def label(self) -> str:
        return f"{self.percent}% loss {self.host.name}"

    def host_names(self) -> list[str]:
        return [self.host.name]

    def undo_record(self) -> dict[str, Any]:
        return {"host": self.host.name, "percent": self.percent}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["host"], undo["percent"], fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        from drills.faults.nft import FAMILY, table_name

        return f"on host {self.host.name}: nft delete table {FAMILY} {table_name(self.fault_id)}"

    def inject(self) -> None:
        self.injected = True
        self.backend(self.host).set_packet_loss(self.host, self.percent, self.fault_id)

    def heal(self) -> None:
        self.backend(self.host).clear_packet_loss(self.host, self.fault_id)
        self.injected = False


# The registry that rebuilds faults from ledger records: a constant, not mutated at run time.
FAULT_TYPES: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (PowerCut, RackPowerCut, DaemonKill, DaemonStop, DaemonHang, NetworkPartition, Blackhole, PacketLoss)
}
# Fault kinds defined in rooms that build on this module, as data ("module:Class"), resolved on lookup (as
# testinfra's backend registry does): importing them here would be an import cycle.
LAZY_FAULT_TYPES: dict[str, str] = {
    "cluster_flags": "drills.restart.flags:ClusterFlags",
    "slow_disk": "drills.faults.gray:SlowDisk",
    "cpu_starvation": "drills.faults.gray:CpuStarvation",
    "slow_link": "drills.faults.gray:SlowLink",
    "flapping": "drills.faults.gray:Flapping",
}


def fault_type(kind: str) -> type[Fault]:
    """The fault class of a ledger record's kind; KeyError if none."""
    if kind in FAULT_TYPES:
        return FAULT_TYPES[kind]
    import importlib

    module, _, name = LAZY_FAULT_TYPES[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def fault_kinds() -> list[str]:
    return sorted({*FAULT_TYPES, *LAZY_FAULT_TYPES})


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


def heal_pending(target: Target, *, resolve: BackendResolver | None = None, ledger: FaultLedger | None = None) -> ReplayReport:
    """What ``drill heal`` does: undo every pending fault of the target, newest first."""
    ledger = ledger or FaultLedger(target.state_dir)
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
    active: list[Fault] = field(default_factory=list, init=False)
    _previous_handlers: dict[int, Any] = field(default_factory=dict, init=False)
    _deferred_signal: int | None = field(default=None, init=False)
    _healing: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.ledger is None:
            self.ledger = FaultLedger(self.target.state_dir)
        if self.resolve is None:
            self.resolve = _default_resolver(self.target)

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
