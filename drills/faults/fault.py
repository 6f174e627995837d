"""The fault base class, for authors of fault kinds: a small object with its undo beside it
(``inject``/``heal``), a ``label`` for plots, and an ``undo_record`` the ledger keeps so that the heal
can be rebuilt in another process after a crash. Heals are idempotent."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, ClassVar, Iterable, Sequence

from drills.faults.errors import HealFailed
from drills.faults.interface import BackendResolver, HostBackend
from drills.faults.ledger import LedgerEntry
from drills.hostaccess import HostAccess
from drills.target import Host, Target


def _default_resolver(target: Target, host_access: HostAccess | None = None) -> BackendResolver:
    """The target's backend registry: resolved on first use, so this layer sits below the backends.
    ``host_access``: the run's shared drills.hostaccess.HostAccess (None: each backend makes its own)."""
    from drills.faults.backends import BackendRegistry

    return BackendRegistry(target, host_access=host_access).for_host


# --- what a fault takes down (input to the guard) -------------------------------


@dataclass(frozen=True)
class Outage:
    """Hosts that go dark and daemons that stop serving while a fault is in force."""

    hosts: frozenset[str] = frozenset()
    daemons: frozenset[str] = frozenset()

    def osds(self) -> frozenset[int]:
        return frozenset(int(d.split(".", 1)[1]) for d in self.daemons if d.startswith("osd."))

    @classmethod
    def together(cls, faults: Iterable["Fault"]) -> "Outage":
        """What faults in force together take down: their outages added up."""
        outages = [f.takes_down() for f in faults]
        return cls(frozenset().union(*(o.hosts for o in outages)), frozenset().union(*(o.daemons for o in outages)))


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
