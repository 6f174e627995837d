"""The guard: refuse a fault before it is injected if it would do more than the drill means.

Two checks, both before anything is touched:

1. The target must say ``destructive = true`` and the live cluster's fsid must
   equal the file's (a target file pointed at the wrong cluster is refused).
2. What the fault takes down (hosts, racks, OSDs, monitors) must leave every
   pool at or above its min_size and the monitors in quorum, unless the drill
   asks for ``allow_unavailable=True`` (a drill *about* unavailability).

Counting: CRUSH places at most one copy of a PG per failure domain, so with D
domains of a pool's type down a PG loses at most min(D, size) copies; the pool
stays writable while size - min(D, size) >= min_size, i.e. D <= size - min_size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from drills.faults.fault import Fault, Outage
from drills.target import Target

FAILURE_DOMAINS = ("osd", "host", "rack")


class GuardRefused(Exception):
    """The fault was refused; nothing was injected.  The message says why and what to change."""


@dataclass(frozen=True)
class PoolSpec:
    name: str
    size: int
    min_size: int
    failure_domain: str = "host"  # the CRUSH rule's chooseleaf type: osd | host | rack

    def __post_init__(self) -> None:
        if self.failure_domain not in FAILURE_DOMAINS:
            raise ValueError(f"pool {self.name}: failure domain {self.failure_domain!r} is not one of {', '.join(FAILURE_DOMAINS)}")
        if not 1 <= self.min_size <= self.size:
            raise ValueError(f"pool {self.name}: need 1 <= min_size ({self.min_size}) <= size ({self.size})")

    @property
    def tolerates(self) -> int:
        """How many failure domains may be down with the pool still writable."""
        return self.size - self.min_size

    @classmethod
    def from_osd_dump(cls, pool: dict[str, Any], rule_domains: dict[int, str]) -> "PoolSpec":
        """From one entry of ``ceph osd dump -f json`` ['pools'] and a rule id -> domain map."""
        return cls(
            name=pool["pool_name"],
            size=int(pool["size"]),
            min_size=int(pool["min_size"]),
            failure_domain=rule_domains.get(int(pool.get("crush_rule", 0)), "host"),
        )


@dataclass(frozen=True)
class Impact:
    """What a fault takes down, in every failure-domain unit the guard counts."""

    hosts: frozenset[str] = frozenset()  # hosts with at least one OSD down
    racks: frozenset[str] = frozenset()  # racks with at least one OSD down
    osds: frozenset[int] = frozenset()
    mons_down: int = 0
    mons_total: int = 0

    def domains_down(self, domain: str) -> int:
        return {"osd": len(self.osds), "host": len(self.hosts), "rack": len(self.racks)}[domain]

    def describe(self) -> str:
        parts = []
        if self.racks:
            parts.append(f"rack(s) {', '.join(sorted(self.racks))}")
        if self.hosts:
            parts.append(f"host(s) {', '.join(sorted(self.hosts))}")
        if self.osds:
            parts.append(f"osd(s) {', '.join(str(i) for i in sorted(self.osds))}")
        if self.mons_down:
            parts.append(f"{self.mons_down}/{self.mons_total} monitor(s)")
        return "; ".join(parts) or "nothing"


def impact_of(target: Target, outage: Outage) -> Impact:
    """Map hosts/daemons a fault takes down onto the target's CRUSH topology."""
    down_osds: set[int] = set(outage.osds())
    down_daemons = set(outage.daemons)
    for name in outage.hosts:
        h = target.host(name)
        down_osds.update(h.osd_ids)
        down_daemons.update(h.daemons)
    hosts: set[str] = set()
    racks: set[str] = set()
    for h in target.hosts:
        if set(h.osd_ids) & down_osds:
            hosts.add(h.name)
            rack = target.rack_of(h.name)
            if rack is not None:
                racks.add(rack.name)
    mons = [d for h in target.hosts for d in h.daemons if d.startswith("mon.")]
    return Impact(
        hosts=frozenset(hosts),
        racks=frozenset(racks),
        osds=frozenset(down_osds),
        mons_down=sum(1 for m in mons if m in down_daemons),
        mons_total=len(mons),
    )


@dataclass
class FaultGuard:
    """Checks every fault of a session against one target, its live fsid and its pools."""

    target: Target
    live_fsid: str | None  # read from the cluster by the caller; None = could not read it
    pools: Sequence[PoolSpec] = field(default_factory=tuple)
    allow_unavailable: bool = False  # for the whole session; a single inject may also allow

    def check_target(self) -> None:
        t = self.target
        where = t.path or "the target"
        if not t.destructive:
            raise GuardRefused(
                f"{where} does not say destructive = true: faults are refused on it. "
                "Add `destructive = true` to the target file only for a cluster you may break."
            )
        if not self.live_fsid:
            raise GuardRefused(f"could not read the live cluster's fsid; refusing to inject into {where} blind")
        if self.live_fsid.strip().lower() != t.cluster.fsid.strip().lower():
            raise GuardRefused(
                f"live cluster fsid {self.live_fsid} differs from {where}'s cluster.fsid {t.cluster.fsid}: "
                "the target file points at another cluster; refusing"
            )

    def unavailable_reasons(self, impact: Impact) -> list[str]:
        reasons = []
        for p in self.pools:
            down = impact.domains_down(p.failure_domain)
            if down > p.tolerates:
                reasons.append(
                    f"pool {p.name} (size {p.size}, min_size {p.min_size}, failure domain {p.failure_domain}) "
                    f"survives {p.tolerates} {p.failure_domain}(s) down; this takes down {down}"
                )
        if impact.mons_total and impact.mons_down > (impact.mons_total - 1) // 2:
            reasons.append(
                f"{impact.mons_down} of {impact.mons_total} monitors down loses quorum "
                f"(at most {(impact.mons_total - 1) // 2} may be down)"
            )
        return reasons

    def check(self, fault: Fault, *, allow_unavailable: bool = False) -> Impact:
        """Raise GuardRefused (nothing injected) or return what the fault takes down."""
        if fault.destructive:
            self.check_target()
        impact = impact_of(self.target, fault.takes_down())
        if allow_unavailable or self.allow_unavailable:
            return impact
        reasons = self.unavailable_reasons(impact)
        if reasons:
            raise GuardRefused(
                f"refusing {fault.label}: it takes down {impact.describe()}, and\n  - "
                + "\n  - ".join(reasons)
                + "\nPass allow_unavailable=True if the drill is meant to make data unavailable."
            )
        return impact

    def check_all(self, faults: Iterable[Fault], *, allow_unavailable: bool = False) -> Impact:
        """Faults in force together: their outages add up."""
        faults = list(faults)
        if len(faults) == 1:
            return self.check(faults[0], allow_unavailable=allow_unavailable)
        if any(f.destructive for f in faults):
            self.check_target()
        impact = impact_of(self.target, Outage.together(faults))
        if not (allow_unavailable or self.allow_unavailable):
            reasons = self.unavailable_reasons(impact)
            if reasons:
                raise GuardRefused(
                    f"refusing {', '.join(f.label for f in faults)} together: they take down {impact.describe()}, and\n  - "
                    + "\n  - ".join(reasons)
                )
        return impact


def rule_failure_domains(crush_rule_dump: list[dict[str, Any]]) -> dict[int, str]:
    """Rule id -> the bucket type its chooseleaf/choose step spreads copies over."""
    out: dict[int, str] = {}
    for rule in crush_rule_dump:
        for step in rule.get("steps", []):
            if step.get("op", "").startswith(("chooseleaf", "choose")) and step.get("type") in FAILURE_DOMAINS:
                out[int(rule["rule_id"])] = step["type"]
    return out


def guard_from_cluster(target: Target, cluster: Any, *, allow_unavailable: bool = False) -> FaultGuard:
    """A guard with the live fsid and every pool's size, min_size and failure domain."""
    domains = rule_failure_domains(cluster.crush_rules())
    pools = [PoolSpec.from_osd_dump(p, domains) for p in cluster.osd_dump()["pools"]]
    return FaultGuard(target, cluster.fsid(), pools, allow_unavailable=allow_unavailable)
