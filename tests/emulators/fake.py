"""A recording fake HostBackend and a small target, for fast unit tests of faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from drills.faults.errors import BackendUnavailable, FaultError
from drills.target import Access, Cluster, Host, Network, Power, Rack, Target

FSID = "5e1b1c0c-0000-4000-8000-00000000d811"


def make_target(state_dir: str, *, destructive: bool = True, racks: int = 3, hosts_per_rack: int = 2) -> Target:
    """racks x hosts_per_rack OSD hosts (2 OSDs each, addresses 198.18.x.y) and a service host with 3 mons."""
    rs = []
    osd = 0
    for r in range(racks):
        hs = []
        for i in range(hosts_per_rack):
            daemons = (f"osd.{osd}", f"osd.{osd + 1}")
            osd += 2
            hs.append(
                Host(
                    name=f"r{r}h{i}",
                    address=f"198.18.{r}.{i + 10}",
                    daemons=daemons,
                    access=Access(kind="local"),
                    power=Power(kind="sandbox"),
                    network=Network(kind="sandbox"),
                )
            )
        rs.append(Rack(name=f"rack{r}", hosts=tuple(hs)))
    svc = Host(name="svc", address="198.18.9.1", daemons=("mon.a", "mon.b", "mon.c", "mgr.x"))
    return Target(
        cluster=Cluster(name="test", fsid=FSID, conf="/dev/null", keyring="/dev/null", deployment="sandbox"),
        state_dir=state_dir,
        destructive=destructive,
        racks=tuple(rs),
        service_hosts=(svc,),
        path=f"{state_dir}/target.toml",
    )


@dataclass
class FakeBackend:
    """Records every call as a tuple; ``fail`` maps an operation (or 'op:host') to an error."""

    calls: list[tuple] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> reason for probe

    def _do(self, op: str, host: Host, *args: object) -> None:
        self.calls.append((op, host.name, *args))
        for key in (f"{op}:{host.name}", op):
            if key in self.fail:
                raise self.fail[key]

    def probe(self, host: Host, role: str) -> None:
        self.calls.append(("probe", host.name, role))
        if host.name in self.unreachable:
            raise BackendUnavailable(host.name, self.unreachable[host.name])

    def power_off(self, host: Host) -> None:
        self._do("power_off", host)

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        self._do("power_on", host, start_daemons)

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None:
        self._do("kill_daemon", host, daemon, int(sig))

    def start_daemon(self, host: Host, daemon: str) -> None:
        self._do("start_daemon", host, daemon)

    def stop_daemon(self, host: Host, daemon: str) -> None:
        self._do("stop_daemon", host, daemon)

    def hold_daemon(self, host: Host, daemon: str) -> None:
        self._do("hold_daemon", host, daemon)

    def release_daemon(self, host: Host, daemon: str) -> None:
        self._do("release_daemon", host, daemon)

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        self._do("block_network", host, None if peers is None else tuple(peers), tag)

    def unblock_network(self, host: Host, tag: str) -> None:
        self._do("unblock_network", host, tag)

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None:
        self._do("set_packet_loss", host, percent, tag)

    def clear_packet_loss(self, host: Host, tag: str) -> None:
        self._do("clear_packet_loss", host, tag)

    def throttle_disk(self, host: Host, daemon: str, limit: object, tag: str) -> None:
        self._do("throttle_disk", host, daemon, limit, tag)

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None:
        self._do("unthrottle_disk", host, daemon, tag)

    def limit_cpu(self, host: Host, daemon: str, limit: object, tag: str) -> None:
        self._do("limit_cpu", host, daemon, limit, tag)

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None:
        self._do("unlimit_cpu", host, daemon, tag)

    def limit_link(self, host: Host, limit: object, tag: str) -> None:
        self._do("limit_link", host, limit, tag)

    def unlimit_link(self, host: Host, tag: str) -> None:
        self._do("unlimit_link", host, tag)

    def ops(self, *names: str) -> list[tuple]:
        return [c for c in self.calls if c[0] in names]

    def resolve(self, host: Host) -> "FakeBackend":
        return self


__all__ = ["FakeBackend", "make_target", "FSID", "FaultError"]
