"""The fail-stop fault catalogue: power cuts, daemon kill/stop/hang, partitions, packet loss.
(Gray faults: drills.faults.gray.)"""

from __future__ import annotations

import signal as signal_mod
import time
from typing import Any, Sequence

from drills.faults.errors import BackendUnavailable, FaultError
from drills.faults.fault import Fault, Outage, _each
from drills.faults.interface import BackendResolver
from drills.target import Host, Target


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


class DaemonHold(_DaemonFault):
    """Hold a daemon at the host's next power-on or boot (`systemctl mask` of its unit; on the sandbox, a
    file the sandbox's power-on reads): armed before a power cut, the host comes back with the daemon not
    started, for a controlled start to start it when its turn comes. A running daemon runs on: nothing is
    down while the hold alone is in force. Heal: release the hold, then start the daemon (it ran before the
    hold; starting a running one does nothing)."""

    kind = "daemon_hold"

    @property
    def label(self) -> str:
        return f"hold {self.daemon} at power-on"

    def takes_down(self) -> Outage:
        return Outage()

    def manual_heal(self) -> str:
        return (f"on host {self.host.name}: unmask and start {self.daemon} (systemctl unmask <its unit>; "
                f"systemctl start <its unit>), or `drill heal`")

    def inject(self) -> None:
        self.injected = True
        self.backend(self.host).hold_daemon(self.host, self.daemon)

    def release(self) -> None:
        """The hold alone lifted, the daemon not started (a controlled start starts it next)."""
        self.backend(self.host).release_daemon(self.host, self.daemon)

    # A heal may come while the host is still booting after the power cut's own heal (an abort, `drill
    # heal`): it waits for the host to answer rather than leave the daemon held and down.
    boot_wait_s: float = 900.0
    boot_poll_s: float = 5.0

    def heal(self) -> None:
        deadline = time.monotonic() + self.boot_wait_s
        while True:
            try:
                self.release()
                break
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(self.boot_poll_s)
        self.backend(self.host).start_daemon(self.host, self.daemon)
        self.injected = False


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
