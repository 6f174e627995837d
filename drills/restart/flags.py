"""Cluster flags as a fault: set through the fault ledger, so they are always unset again.

A controlled restart sets ``noout`` (the held OSDs must not be marked out and backfilled
elsewhere), ``nodeep-scrub`` (no scrub load while memory is tight) and, where the release has
it, ``noautoscale``. The flags are armed in the ledger *before* they are set, so a failure, a
Ctrl-C or a kill -9 of the runner leaves a record that ``drill heal`` (or the next session)
replays. Only flags this fault set are unset: a flag an operator had already set stays.
"""

from __future__ import annotations

from typing import Any, Sequence

from drills.faults.errors import FaultError

from drills.faults.interface import BackendResolver

from drills.faults.fault import Fault
from drills.target import Host, Target

DEFAULT_RESTART_FLAGS = ("noout", "nodeep-scrub", "noautoscale")


class ClusterFlags(Fault):
    kind = "cluster_flags"
    destructive = False  # flags alone take nothing down
    role = "daemons"

    def __init__(self, target: Target, flags: Sequence[str] = DEFAULT_RESTART_FLAGS, *, already_set: Sequence[str] = (),
                 cluster: Any = None, **kw: Any):
        super().__init__(target, **kw)
        if not flags:
            raise FaultError("cluster flags: name at least one flag")
        self.flags = list(flags)
        self.already_set = sorted(already_set)  # present before inject: never unset by heal
        self.unsupported: list[str] = []  # flags this release refused (e.g. noautoscale before 17)
        self._cluster = cluster

    @property
    def label(self) -> str:
        return "flags " + ",".join(self.flags)

    @property
    def description(self) -> str:
        return f"set cluster flags {', '.join(self.flags)} (restored afterwards)"

    def host_names(self) -> list[str]:
        return []

    def probe(self) -> None:  # the cluster connection is the only backend
        return None

    def undo_record(self) -> dict[str, Any]:
        return {"flags": self.flags, "already_set": self.already_set}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "ClusterFlags":
        return cls(target, undo["flags"], already_set=undo.get("already_set", ()), fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        owned = [f for f in self.flags if f not in self.already_set]
        return "; ".join(f"ceph osd unset {f}" for f in owned) or "nothing to unset"

    def _with_cluster(self, fn: Any) -> Any:
        if self._cluster is not None:
            return fn(self._cluster)
        from drills.cluster import CephCluster

        with CephCluster(self.target) as c:
            return fn(c)

    def inject(self) -> None:
        from drills.cluster import ClusterError

        self.injected = True

        def go(c: Any) -> None:
            before = c.flags()
            self.already_set = sorted(set(self.already_set) | (set(self.flags) & before))
            for f in self.flags:
                if f in before:
                    continue
                try:
                    c.set_flag(f)
                except ClusterError as e:
                    if f == "noautoscale":  # Ceph 17+ only; absent is not an error
                        self.unsupported.append(f)
                        continue
                    raise FaultError(f"cannot set flag {f}: {e}") from None

        self._with_cluster(go)

    def heal(self) -> None:
        from drills.cluster import ClusterError

        def go(c: Any) -> None:
            now = c.flags()
            errors = []
            for f in self.flags:
                if f in self.already_set or f not in now:
                    continue
                try:
                    c.unset_flag(f)
                except ClusterError as e:
                    errors.append(f"{f}: {e}")
            if errors:
                raise FaultError("could not unset " + "; ".join(errors))

        self._with_cluster(go)
        self.injected = False

    def hosts(self) -> list[Host]:
        return []
