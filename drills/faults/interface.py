"""The backend interface: what a fault asks of a host (power, daemons, network), for backend authors.

A backend implements ``HostBackend`` (usually by extending ``UnsupportedOps``) and registers in
``drills.faults.backends``; faults never talk to hardware themselves."""

from __future__ import annotations

import time
from typing import Callable, Protocol, Sequence, runtime_checkable

from drills.faults.errors import FaultError, Unsupported
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
from drills.target import Host


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

    def hold_daemon(self, host: Host, daemon: str) -> None:
        """Keep the daemon from starting when the host next powers on or boots, and refuse to start it,
        until ``release_daemon``; a running daemon runs on."""

    def release_daemon(self, host: Host, daemon: str) -> None:
        """Undo ``hold_daemon`` (it does not start the daemon)."""

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

    def hold_daemon(self, host: Host, daemon: str) -> None:
        raise self._no(host, f"hold {daemon} at power-on")

    def release_daemon(self, host: Host, daemon: str) -> None:
        raise self._no(host, f"release {daemon}")

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
