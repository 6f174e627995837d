"""The degraded-write model from "Ceph. Anatomy of a catastrophe" (seed 002).

A write to an object whose copy on a returning OSD is stale cannot just be
replicated: the primary first brings that copy up to date by recovering the
WHOLE object (read it, send it, write it), then does the small write.  With

    w  latency of a small write            (article: 4 KiB write = 1 ms)
    r  latency of a full-object recovery   (article: read 4 MiB 22 ms + write 4 MiB 22 ms = 44 ms)
    f  fraction of writes that land on a degraded object

the mean write latency is

    f * (r + w) + (1 - f) * w  =  w + f * r          (article: f = 1 -> 45 ms, 45x slower)

When it applies: only while a stale copy is back in the acting set, i.e. after the
failed domain returns (the "recovery" phase).  While the domain is still down the
PG writes to the surviving copies only, which is why the article's degraded plateau
is, if anything, faster than normal.

Failure domains: CRUSH puts each PG's `size` copies in `size` distinct failure
domains.  If it picks them uniformly among N equal domains, a PG avoids k lost
domains with probability C(N-k, size) / C(N, size), so the degraded fraction of
PGs is 1 - C(N-k, size)/C(N, size); for k = 1 that is exactly size/N.  With size 3
this gives the article's table: 3 racks -> 100 % -> 45 ms, 10 -> 30 % -> 14 ms,
20 -> 15 % -> 8 ms.  (The article's "approximately 10 % PG" for 20 domains is loose;
its 8 ms only follows from 15 %.)  This is the worst case for the write model: it
assumes every object of an affected PG was written while the domain was away.  The
real f is what the cluster reports as degraded (see `object_fraction_from_degraded_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Mapping, Sequence

# The article's test cluster (SSD, 4 MiB RBD objects).
ARTICLE_SMALL_WRITE_MS = 1.0
ARTICLE_OBJECT_READ_MS = 22.0
ARTICLE_OBJECT_WRITE_MS = 22.0


@dataclass(frozen=True)
class WriteCosts:
    """Measured costs the model needs, in milliseconds."""

    small_write_ms: float  # w: a client write to a clean object
    object_recovery_ms: float  # r: bringing one whole object up to date on the stale copy

    def __post_init__(self) -> None:
        if self.small_write_ms < 0 or self.object_recovery_ms < 0:
            raise ValueError(f"latencies must be >= 0, got w={self.small_write_ms} r={self.object_recovery_ms}")


ARTICLE_COSTS = WriteCosts(ARTICLE_SMALL_WRITE_MS, ARTICLE_OBJECT_READ_MS + ARTICLE_OBJECT_WRITE_MS)


def object_recovery_ms(object_read_ms: float, object_write_ms: float) -> float:
    """r: a forced recovery reads the whole object on the primary and writes it on the stale copy."""
    return object_read_ms + object_write_ms


def expected_write_latency_ms(costs: WriteCosts, degraded_fraction: float) -> float:
    """Mean write latency f*(r+w) + (1-f)*w for a fraction f of writes hitting degraded objects."""
    f = _fraction(degraded_fraction)
    w, r = costs.small_write_ms, costs.object_recovery_ms
    return f * (r + w) + (1 - f) * w


def slowdown(costs: WriteCosts, degraded_fraction: float) -> float:
    """Expected mean latency / clean latency (article: 45x at f = 1)."""
    if costs.small_write_ms == 0:
        raise ValueError("slowdown needs a small-write latency > 0")
    return expected_write_latency_ms(costs, degraded_fraction) / costs.small_write_ms


def _fraction(f: float) -> float:
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"a degraded fraction is between 0 and 1, got {f}")
    return f


def object_fraction_from_degraded_ratio(degraded_ratio: float, pool_size: int, missing_copies: int = 1) -> float:
    """Fraction of objects that are degraded, from Ceph's degraded_ratio.

    Ceph reports degraded object *copies* / all copies.  When one failure domain is
    lost each degraded object misses exactly one of its `pool_size` copies, so the
    object fraction is ratio * size / missing_copies (capped at 1).
    """
    if pool_size < 1 or missing_copies < 1:
        raise ValueError("pool_size and missing_copies must be >= 1")
    if degraded_ratio < 0:
        raise ValueError(f"degraded_ratio must be >= 0, got {degraded_ratio}")
    return min(1.0, degraded_ratio * pool_size / missing_copies)


def predict_latency_series(costs: WriteCosts, degraded_fractions: Sequence[float | None]) -> list[float | None]:
    """Per-second predicted mean write latency (ms) for a per-second degraded-fraction series.

    A gap (None) in the input stays a gap: no sample means no prediction, not a clean one.
    """
    return [None if f is None else expected_write_latency_ms(costs, min(1.0, max(0.0, f))) for f in degraded_fractions]


def predict_iops_series(costs: WriteCosts, degraded_fractions: Sequence[float | None],
                        queue_depth: int = 1) -> list[float | None]:
    """Per-second IOPS a closed-loop client with `queue_depth` outstanding writes would see (Little's law)."""
    out: list[float | None] = []
    for lat in predict_latency_series(costs, degraded_fractions):
        out.append(None if lat is None or lat <= 0 else queue_depth * 1000.0 / lat)
    return out


# --- failure domains ---------------------------------------------------------------


def degraded_pg_fraction(failure_domains: int, pool_size: int = 3, lost_domains: int = 1) -> float:
    """Fraction of PGs with a copy in one of `lost_domains` of `failure_domains` equal domains.

    1 - C(N-k, size) / C(N, size): each PG's copies sit in `size` distinct domains chosen
    uniformly.  For k = 1 this is size / N.
    """
    n, k, s = failure_domains, lost_domains, pool_size
    if s < 1 or n < s:
        raise ValueError(f"a pool of size {s} needs at least {s} failure domains, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"cannot lose {k} of {n} failure domains")
    return 1.0 - comb(n - k, s) / comb(n, s)


def degraded_pg_fraction_weighted(domain_weights: Mapping[str, float], lost: Sequence[str],
                                  pool_size: int = 3) -> float:
    """Like `degraded_pg_fraction` for unequal domains (e.g. racks with different OSD counts).

    Models CRUSH as drawing `pool_size` distinct domains one after another, each with
    probability proportional to its weight among those not yet drawn (what straw2
    approximates).  Exact for that model; equal weights give 1 - C(N-k,s)/C(N,s).
    """
    weights = {d: float(w) for d, w in domain_weights.items() if w > 0}
    unknown = [d for d in lost if d not in domain_weights]
    if unknown:
        raise ValueError(f"lost domain(s) {', '.join(unknown)} not in the topology ({', '.join(domain_weights)})")
    if len(weights) < pool_size:
        raise ValueError(f"a pool of size {pool_size} needs {pool_size} domains with weight > 0, got {len(weights)}")
    lost_set = set(lost)

    def avoid(remaining: frozenset[str], draws: int) -> float:
        # Probability that the next `draws` picks from `remaining` all miss the lost domains.
        if draws == 0:
            return 1.0
        total = sum(weights[d] for d in remaining)
        return sum(weights[d] / total * avoid(remaining - {d}, draws - 1) for d in remaining if d not in lost_set)

    return 1.0 - avoid(frozenset(weights), pool_size)


@dataclass(frozen=True)
class FailureDomainRow:
    failure_domains: int
    lost_domains: int
    degraded_fraction: float  # of PGs (worst case: of hot objects)
    mean_write_ms: float
    slowdown: float


def failure_domain_table(domain_counts: Sequence[int] = (3, 4, 5, 6, 10, 20), pool_size: int = 3,
                         lost_domains: int = 1, costs: WriteCosts = ARTICLE_COSTS) -> list[FailureDomainRow]:
    """The article's table: for N domains with `lost_domains` lost, degraded fraction and expected latency."""
    rows = []
    for n in domain_counts:
        if n < pool_size or n < lost_domains:
            continue
        f = degraded_pg_fraction(n, pool_size, lost_domains)
        rows.append(FailureDomainRow(n, lost_domains, f, expected_write_latency_ms(costs, f), slowdown(costs, f)))
    return rows


@dataclass(frozen=True)
class Topology:
    """Failure domains of a cluster as the model sees them: name -> weight (OSD count or CRUSH weight)."""

    domain_type: str  # "rack" | "host"
    domains: dict[str, float]
    pool_size: int = 3

    @classmethod
    def from_target(cls, target: object, domain_type: str = "rack", pool_size: int = 3) -> "Topology":
        """Racks (or hosts) of a drills.target.Target, weighted by their OSD count."""
        racks = getattr(target, "racks")
        if domain_type == "rack":
            domains = {r.name: float(sum(len(h.osd_ids) for h in r.hosts)) for r in racks}
        elif domain_type == "host":
            domains = {h.name: float(len(h.osd_ids)) for r in racks for h in r.hosts}
        else:
            raise ValueError(f"domain_type is 'rack' or 'host', got {domain_type!r}")
        return cls(domain_type, domains, pool_size)

    def degraded_fraction(self, lost: Sequence[str]) -> float:
        return degraded_pg_fraction_weighted(self.domains, lost, self.pool_size)

    def table(self, costs: WriteCosts = ARTICLE_COSTS) -> list[tuple[str, float, float, float]]:
        """For losing each one domain: (domain, degraded fraction, mean write ms, slowdown)."""
        rows = []
        for name, weight in self.domains.items():
            if weight <= 0:
                continue
            f = self.degraded_fraction([name])
            rows.append((name, f, expected_write_latency_ms(costs, f), slowdown(costs, f)))
        return rows
