"""A restart plan: would an all-at-once start of a rack's OSDs fit each host's memory, and if not, in which
order, how many at once, and with how much memory each step.

Pure: the readings come in (`PlanInputs`, gathered read-only by `drills.restart.plan_gather`), a
`RestartPlan` comes out. The model, per OSD and per host (docs/restart.md, "Restart plan"):

    predicted start-up peak(osd) = per_osd + per_pg x PGs(osd)
    need(osd)                    = max(half of osd_memory_target, peak x margin)   (the orchestrator's need)
    predicted host peak          = used by everything else on the host + sum of its OSDs' peaks
    verdict                      = "would exceed" when the host peak > the host's memory, else "fits"

A started OSD is counted at its peak until the end (measured on the sandbox: an OSD that is not restarted
stays near its start-up peak after clean), so the host's peak is the same whether its OSDs start together
or one by one; what the order changes is the headroom each start needs (the margin on top of its peak).
Steps go biggest first: the biggest need meets the emptiest host, and the last start, which sees the fullest
host, carries the smallest margin. Each step is checked with the orchestrator's own `decide`.

A reading that could not be taken is never 0: it is `Reading(None, why)`, and a host that lacks one is
"not measured" with the reason, not "fits".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from drills.restart.orchestrator import Action, HostMemory, RestartConfig, decide, start_need_from_target
from drills.units import MiB


# Defaults used when no earlier drill recorded a start-up peak with its PG count (labelled "assumed, not
# measured" wherever they are shown). From the sandbox's chain-reaction drill (docs/restart.md): an idle
# OSD's RSS was 47-48 MiB before the fault (rounded up to 64 MiB), and returning OSDs peaked at 351-474 MiB
# with 33-34 PGs after 100,000 writes while they were down, ~10-13 MiB per PG above the idle size.
DEFAULT_PER_OSD_BYTES = 64 * MiB
DEFAULT_PER_PG_BYTES = 12 * MiB
# The orchestrator's margin on a learned need (RestartConfig.need_margin), so plan and start agree.
DEFAULT_NEED_MARGIN: float = next(f.default for f in dataclasses.fields(RestartConfig) if f.name == "need_margin")  # type: ignore[assignment]

VERDICT_FITS = "fits"
VERDICT_EXCEEDS = "would exceed"
VERDICT_NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Reading:
    """One figure and where it came from; ``value`` None = not measured and ``source`` says why."""

    value: int | None
    source: str

    @property
    def measured(self) -> bool:
        return self.value is not None

    @classmethod
    def missing(cls, why: str) -> "Reading":
        return cls(None, why)


@dataclass(frozen=True)
class OsdInput:
    name: str  # "osd.3"
    host: str
    pgs: Reading  # PGs the OSD holds once up (OSD map; pg dump)
    memory_target: Reading  # its osd_memory_target (bytes)


@dataclass(frozen=True)
class HostInput:
    name: str
    memory: Reading  # what the host's daemons may use at most: cgroup limit / MemTotal, capped by a budget
    used_by_others: Reading  # used now by everything but the planned OSDs (their memory is freed by the restart)


@dataclass(frozen=True)
class StartupCost:
    """What one OSD's start costs: a fixed part and a part per PG, and whether each was measured."""

    per_pg: int  # bytes
    per_osd: int  # bytes
    per_pg_source: str
    per_osd_source: str
    margin: float = DEFAULT_NEED_MARGIN

    @property
    def measured(self) -> bool:
        return not self.per_pg_source.startswith("assumed")

    def peak(self, pgs: int) -> int:
        return self.per_osd + self.per_pg * pgs

    def need(self, pgs: int, memory_target: int | None) -> int:
        floor = start_need_from_target(memory_target) if memory_target else 0
        return max(floor, int(self.peak(pgs) * self.margin))


def assumed_cost(margin: float = DEFAULT_NEED_MARGIN, why: str = "no start-up peaks in the history") -> StartupCost:
    return StartupCost(DEFAULT_PER_PG_BYTES, DEFAULT_PER_OSD_BYTES,
                       f"assumed, not measured ({why}): {DEFAULT_PER_PG_BYTES // MiB} MiB per PG, the sandbox's figure",
                       f"assumed, not measured: {DEFAULT_PER_OSD_BYTES // MiB} MiB per OSD (an idle sandbox OSD)", margin)


@dataclass(frozen=True)
class StartupSample:
    """One OSD start an earlier drill measured: its peak RSS and its PG count."""

    run_id: str
    drill: str
    osd: str
    peak: int
    pgs: int


def startup_cost_from_history(samples: Sequence[StartupSample], margin: float = DEFAULT_NEED_MARGIN,
                              per_osd: int = DEFAULT_PER_OSD_BYTES) -> StartupCost:
    """The per-PG cost as the largest (peak - per_osd) / PGs over earlier starts (the orchestrator also keeps
    the largest learned need); the fixed part stays the assumed default (one PG count per OSD cannot
    separate the two). No usable sample: the assumed defaults."""
    usable = [s for s in samples if s.pgs > 0 and s.peak > 0]
    if not usable:
        return assumed_cost(margin)
    worst = max(usable, key=lambda s: ((s.peak - per_osd) / s.pgs, s.run_id))
    per_pg = max(0, int((worst.peak - per_osd) / worst.pgs))
    runs = sorted({s.run_id for s in usable})
    return StartupCost(
        per_pg, per_osd,
        f"measured: the largest of {len(usable)} OSD start(s) in {len(runs)} run(s) ({runs[0]}..{runs[-1]}): "
        f"{worst.osd} in {worst.run_id} ({worst.drill}) peaked at {worst.peak / MiB:.0f} MiB with {worst.pgs} PGs",
        f"assumed, not measured: {per_osd // MiB} MiB per OSD (an idle sandbox OSD)", margin)


@dataclass(frozen=True)
class PlanInputs:
    selection: str  # "rack rack1" / "host r1h1"
    osds: tuple[OsdInput, ...]
    hosts: tuple[HostInput, ...]
    cost: StartupCost


# --- the plan ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OsdStart:
    osd: str
    pgs: int
    peak: int  # predicted start-up peak, bytes
    need: int  # what the orchestrator would want free before starting it (peak x margin, floor)


@dataclass(frozen=True)
class PlanStep:
    index: int  # 1-based, per host
    osds: tuple[OsdStart, ...]  # started together
    budget: int  # the host's memory this step needs: used by others + earlier steps' peaks + this step's needs
    fits: bool  # the orchestrator's decide says start (within the host's memory)


@dataclass(frozen=True)
class HostPlan:
    host: str
    memory: Reading
    used_by_others: Reading
    osds: tuple[OsdStart, ...]  # in safe order (biggest need first)
    predicted_peak: int | None  # all at once (and, as counted here, one at a time): None = not measured
    steps: tuple[PlanStep, ...]
    verdict: str  # fits | would exceed | not measured
    missing: tuple[str, ...] = ()  # every reading that could not be taken, with why
    notes: tuple[str, ...] = ()

    @property
    def margin(self) -> int | None:
        """Memory left at the predicted peak (negative: short by that much)."""
        if self.predicted_peak is None or self.memory.value is None:
            return None
        return self.memory.value - self.predicted_peak

    @property
    def max_concurrent(self) -> int | None:
        """How many of its OSDs may start at once (0: not even one fits); None = not measured."""
        if self.verdict == VERDICT_NOT_MEASURED:
            return None
        return max((len(s.osds) for s in self.steps if s.fits), default=0)

    @property
    def one_at_a_time_fits(self) -> bool | None:
        return None if self.verdict == VERDICT_NOT_MEASURED else all(s.fits for s in self.steps)


@dataclass(frozen=True)
class RestartPlan:
    selection: str
    cost: StartupCost
    hosts: tuple[HostPlan, ...]
    order: tuple[str, ...]  # the start order over all hosts (round-robin over hosts, each biggest first)

    @property
    def complete(self) -> bool:
        return all(h.verdict != VERDICT_NOT_MEASURED for h in self.hosts)

    @property
    def missing(self) -> list[str]:
        return [f"host {h.host}: {m}" for h in self.hosts for m in h.missing]

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.host == name)

    def to_dict(self) -> dict[str, Any]:
        def reading(r: Reading) -> dict[str, Any]:
            return {"bytes": r.value, "source": r.source} if r.measured else {"bytes": None, "not_measured": r.source}

        return {
            "selection": self.selection,
            "complete": self.complete,
            "order": list(self.order),
            "startup_cost": {"per_pg_bytes": self.cost.per_pg, "per_pg_source": self.cost.per_pg_source,
                             "per_osd_bytes": self.cost.per_osd, "per_osd_source": self.cost.per_osd_source,
                             "need_margin": self.cost.margin, "measured": self.cost.measured},
            "hosts": [{
                "host": h.host, "verdict": h.verdict, "memory": reading(h.memory),
                "used_by_others": reading(h.used_by_others), "predicted_peak_bytes": h.predicted_peak,
                "margin_bytes": h.margin, "max_concurrent_starts": h.max_concurrent,
                "one_at_a_time_fits": h.one_at_a_time_fits,
                "osds": [dataclasses.asdict(o) for o in h.osds],
                "steps": [{"step": s.index, "osds": [o.osd for o in s.osds], "budget_bytes": s.budget, "fits": s.fits}
                          for s in h.steps],
                "missing": list(h.missing), "notes": list(h.notes),
            } for h in self.hosts],
        }


def _steps(host: str, memory: int, used: int, starts: Sequence[OsdStart]) -> list[PlanStep]:
    """Greedy, biggest first: each step takes the next OSDs while the orchestrator's `decide` still says
    start for their summed need on top of what earlier steps left (at their peaks)."""

    def fits(group: Sequence[OsdStart], held: int) -> bool:
        mem = HostMemory(host, memory, used + held, {})
        need = sum(o.need for o in group)
        d = decide(group[0].osd, need, mem, waited_s=0.0, settle_s=0.0, restarted=(), max_restarts=0)
        return d.action is Action.START

    steps: list[PlanStep] = []
    held = 0  # predicted peaks of the OSDs started in earlier steps
    rest = list(starts)
    while rest:
        group = [rest.pop(0)]
        ok = fits(group, held)
        while ok and rest and fits(group + [rest[0]], held):
            group.append(rest.pop(0))
        steps.append(PlanStep(len(steps) + 1, tuple(group), used + held + sum(o.need for o in group), ok))
        held += sum(o.peak for o in group)
    return steps


def plan_host(host: HostInput, osds: Sequence[OsdInput], cost: StartupCost) -> HostPlan:
    missing = [f"memory not measured: {host.memory.source}"] if not host.memory.measured else []
    if not host.used_by_others.measured:
        missing.append(f"memory in use not measured: {host.used_by_others.source}")
    notes: list[str] = []
    starts: list[OsdStart] = []
    for o in osds:
        if not o.pgs.measured:
            missing.append(f"{o.name}: PG count not measured: {o.pgs.source}")
            continue
        if not o.memory_target.measured:
            notes.append(f"{o.name}: osd_memory_target not measured ({o.memory_target.source}): its need has no "
                         "half-of-target floor")
        assert o.pgs.value is not None
        starts.append(OsdStart(o.name, o.pgs.value, cost.peak(o.pgs.value), cost.need(o.pgs.value, o.memory_target.value)))
    # Biggest need first; ties by OSD id so the order is stable.
    starts.sort(key=lambda s: (-s.need, -s.peak, int(s.osd.split(".", 1)[1])))
    if missing or host.memory.value is None or host.used_by_others.value is None:
        return HostPlan(host.name, host.memory, host.used_by_others, tuple(starts), None, (), VERDICT_NOT_MEASURED,
                        tuple(missing), tuple(notes))
    peak = host.used_by_others.value + sum(s.peak for s in starts)
    steps = _steps(host.name, host.memory.value, host.used_by_others.value, starts)
    verdict = VERDICT_EXCEEDS if peak > host.memory.value else VERDICT_FITS
    if verdict == VERDICT_FITS and not all(s.fits for s in steps):
        notes.append("the peak fits, but not with the orchestrator's margin on every start: it would wait, "
                     "restart the biggest daemon or stop")
    return HostPlan(host.name, host.memory, host.used_by_others, tuple(starts), peak, tuple(steps), verdict, (), tuple(notes))


def make_plan(inputs: PlanInputs) -> RestartPlan:
    """Pure: one HostPlan per host that has planned OSDs, and the order over all of them."""
    by_host: dict[str, list[OsdInput]] = {}
    for o in inputs.osds:
        by_host.setdefault(o.host, []).append(o)
    hosts = tuple(plan_host(h, by_host.get(h.name, []), inputs.cost) for h in inputs.hosts if h.name in by_host)
    return RestartPlan(inputs.selection, inputs.cost, hosts, _round_robin([list(h.osds) for h in hosts]))


def _round_robin(queues: Sequence[Sequence[OsdStart]]) -> tuple[str, ...]:
    """Hosts take turns (as the orchestrator's --order host), each in its own safe order; within a turn the
    biggest need goes first, so the order over all hosts also starts with the biggest OSD."""
    out: list[str] = []
    for i in range(max((len(q) for q in queues), default=0)):
        turn = sorted((q[i] for q in queues if i < len(q)), key=lambda s: (-s.need, -s.peak, int(s.osd.split(".", 1)[1])))
        out.extend(s.osd for s in turn)
    return tuple(out)


# --- predicted vs measured -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeakComparison:
    host: str
    predicted: int | None
    measured: int | None
    why: str = ""  # when either is missing

    @property
    def error_ratio(self) -> float | None:
        """|measured - predicted| / predicted (as the drills' model_error_ratio); None when not measured."""
        if self.predicted is None or self.measured is None or self.predicted <= 0:
            return None
        return abs(self.measured - self.predicted) / self.predicted

    def line(self) -> str:
        if self.error_ratio is None:
            return f"host {self.host}: restart plan not compared: {self.why}"
        assert self.predicted is not None and self.measured is not None
        return (f"host {self.host}: restart plan predicted a peak of {self.predicted / MiB:.0f} MiB, measured "
                f"{self.measured / MiB:.0f} MiB (error {self.error_ratio:.2f} of the prediction)")


def compare_peaks(plan: RestartPlan, measured_peaks: Mapping[str, int | None]) -> list[PeakComparison]:
    """Pure: each host's predicted peak against the peak measured while its OSDs started. A measured 0
    (never looked at) counts as not measured."""
    out = []
    for h in plan.hosts:
        measured = measured_peaks.get(h.host) or None
        why = ("; ".join(h.missing) or "the plan made no prediction") if h.predicted_peak is None else (
            "" if measured is not None else "no peak measured for the host")
        out.append(PeakComparison(h.host, h.predicted_peak, measured, why))
    return out
