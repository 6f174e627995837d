"""Backends: how a fault reaches a host.  One module per backend; nothing else to edit.

Each module in this package declares

    HANDLES: dict[str, tuple[str, ...]]   # role -> the target kinds it serves, e.g.
                                          # {"power": ("ipmi",)} or {"daemons": ("ssh",)}
    def make_backend(target: Target, host_access: HostAccess | None = None) -> HostBackend

and the registry finds it by those kinds.  A host's three roles are routed
separately: ``power`` by ``host.power.kind``, ``daemons`` by ``host.access.kind``,
``network`` by ``host.network.kind`` - except ``nft``, which means "run nft
through the host's access backend" (SSH on a real host).  Kind ``none`` means
the target offers no such control: a fault needing it is refused at probe time.

``host_access`` is the run's one drills.hostaccess.HostAccess (None: the backend
makes its own); a backend that runs commands on hosts goes through it.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Sequence

from drills.faults.errors import BackendUnavailable, Unsupported

from drills.faults.interface import HostBackend, ROLES, UnsupportedOps
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
from drills.hostaccess import HostAccess
from drills.target import Host, Target


def _backend_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return mods


def role_kind(host: Host, role: str) -> str:
    if role == "power":
        return host.power.kind
    if role == "daemons":
        return host.access.kind
    if role == "network":
        return host.network.kind
    raise ValueError(f"unknown backend role {role!r}; roles: {', '.join(ROLES)}")


class NoControl(UnsupportedOps):
    """A role whose kind is ``none``: refuse with the target key to change."""

    def __init__(self, role: str):
        self.role = role
        self.kind = "none"

    def probe(self, host: Host, role: str) -> None:
        key = {"power": "power.kind", "daemons": "access.kind", "network": "network.kind"}[self.role]
        raise BackendUnavailable(host.name, f"{key} = none in the target: no way to do {self.role} faults on it")


@dataclass
class BackendRegistry:
    """Resolves a host to a HostBackend; one backend instance per module per target."""

    target: Target
    host_access: HostAccess | None = None  # shared by every backend that runs commands on hosts
    _instances: dict[str, HostBackend] = field(default_factory=dict)
    _modules: list[ModuleType] | None = None

    def module_for(self, role: str, kind: str) -> ModuleType:
        if self._modules is None:
            self._modules = _backend_modules()
        for m in self._modules:
            if kind in getattr(m, "HANDLES", {}).get(role, ()):
                return m
        known = sorted({k for m in self._modules for k in getattr(m, "HANDLES", {}).get(role, ())})
        raise Unsupported(f"no backend handles {role} kind {kind!r} (known: {', '.join(known) or 'none'})")

    def backend(self, host: Host, role: str) -> HostBackend:
        kind = role_kind(host, role)
        if kind == "none":
            return NoControl(role)  # type: ignore[return-value]
        if role == "network" and kind == "nft":
            role, kind = "daemons", host.access.kind  # nft rules go in over the access channel
        m = self.module_for(role, kind)
        if m.__name__ not in self._instances:
            self._instances[m.__name__] = m.make_backend(self.target, self.host_access)
        return self._instances[m.__name__]

    def for_host(self, host: Host) -> HostBackend:
        return RoutedBackend(self, host)  # type: ignore[return-value]


@dataclass
class RoutedBackend:
    """The HostBackend a fault sees: each call goes to the backend of its role."""

    registry: BackendRegistry
    host: Host

    def _b(self, role: str) -> HostBackend:
        return self.registry.backend(self.host, role)

    def probe(self, host: Host, role: str) -> None:
        self._b(role).probe(host, role)

    def power_off(self, host: Host) -> None:
        self._b("power").power_off(host)

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        self._b("power").power_on(host, start_daemons)

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None:
        self._b("daemons").kill_daemon(host, daemon, sig)

    def start_daemon(self, host: Host, daemon: str) -> None:
        self._b("daemons").start_daemon(host, daemon)

    def stop_daemon(self, host: Host, daemon: str) -> None:
        self._b("daemons").stop_daemon(host, daemon)

    def hold_daemon(self, host: Host, daemon: str) -> None:
        self._b("daemons").hold_daemon(host, daemon)

    def release_daemon(self, host: Host, daemon: str) -> None:
        self._b("daemons").release_daemon(host, daemon)

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        self._b("network").block_network(host, peers, tag)

    def unblock_network(self, host: Host, tag: str) -> None:
        self._b("network").unblock_network(host, tag)

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None:
        self._b("network").set_packet_loss(host, percent, tag)

    def clear_packet_loss(self, host: Host, tag: str) -> None:
        self._b("network").clear_packet_loss(host, tag)

    def throttle_disk(self, host: Host, daemon: str, limit: DiskLimit, tag: str) -> None:
        self._b("daemons").throttle_disk(host, daemon, limit, tag)

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None:
        self._b("daemons").unthrottle_disk(host, daemon, tag)

    def limit_cpu(self, host: Host, daemon: str, limit: CpuLimit, tag: str) -> None:
        self._b("daemons").limit_cpu(host, daemon, limit, tag)

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None:
        self._b("daemons").unlimit_cpu(host, daemon, tag)

    def limit_link(self, host: Host, limit: LinkLimit, tag: str) -> None:
        self._b("network").limit_link(host, limit, tag)

    def unlimit_link(self, host: Host, tag: str) -> None:
        self._b("network").unlimit_link(host, tag)
