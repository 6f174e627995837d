"""The soak's schedule, drawn from a seeded random.Random before anything runs (pure: no I/O).

A Jepsen-style schedule: each step is a quiet spell, then one fault (or, when asked, up to
`max_concurrent` faults at once) injected and held, then healed, then a settle until the cluster is
active+clean again. Everything random is drawn here, in one order, from `random.Random(seed)`:

    per step: quiet seconds, hold seconds, how many faults (only when max_concurrent > 1),
              then per fault: its kind (uniform over the kinds that have an admissible aim),
              then its aim (uniform over that kind's admissible CRUSH names)

Admissible: the faults of the step together take down no more failure domains than every pool survives
and leave the monitors a quorum (drills/faults/guard.py, the same guard FaultSession applies at each
inject), and two faults of one step act on different hosts. Steps are drawn until their estimated
lengths (quiet + hold + the kind's settle estimate) fill `duration_s`. The same seed with the same
parameters, target topology and pools gives the same schedule (`Schedule.fingerprint`); timing at run
time will differ (the settle lasts as long as the cluster takes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from drills.faults.fault import Fault, Outage
from drills.faults.guard import FaultGuard, PoolSpec, impact_of
from drills.target import Target
from drills.units import parse_seconds

SEED_MAX = 2**63 - 1


class SoakError(ValueError):
    """Bad soak input (one line: what is wrong and what to write instead); nothing was touched."""


# --- the kinds the soak draws from --------------------------------------------------------------


@dataclass(frozen=True)
class SoakKind:
    """A fault kind of the registry (drills/faults/session.py FAULT_TYPES) as the soak aims it."""

    kind: str  # the registry's name, as in the ledger
    level: str  # "rack" | "host" | "osd": what its aim names
    build: Callable[[Target, str, float], Fault]  # (target, aim, hold seconds) -> the fault
    settle_estimate_s: float  # heal -> active+clean on the sandbox, for fitting steps into the duration
    what: str


def _hosts_of_rack(t: Target, rack: str) -> list[str]:
    return [h.name for h in t.rack(rack).hosts]


def _kinds() -> dict[str, SoakKind]:
    # lazy: the kinds and the gray faults' sizes live with the catalogue
    from drills.catalogue import FLAP_DOWN_S, FLAP_UP_S, SLOW_LINK_LIMIT, SLOW_OSD_LIMIT
    from drills.faults.gray import CpuStarvation, Flapping, SlowDisk, SlowLink
    from drills.faults.kinds import (Blackhole, DaemonHang, DaemonKill, DaemonStop, NetworkPartition, PacketLoss,
                                     PowerCut, RackPowerCut)

    kinds = (
        SoakKind("rack_power_cut", "rack", lambda t, a, h: RackPowerCut(t, a), 60, "every host of a rack loses power"),
        SoakKind("power_cut", "host", lambda t, a, h: PowerCut(t, [a]), 45, "one host loses power"),
        SoakKind("daemon_kill", "osd", lambda t, a, h: DaemonKill(t, a), 30, "an OSD is killed (SIGKILL)"),
        SoakKind("daemon_stop", "osd", lambda t, a, h: DaemonStop(t, a), 30, "an OSD is stopped gracefully"),
        SoakKind("daemon_hang", "osd", lambda t, a, h: DaemonHang(t, a), 30, "an OSD is frozen (SIGSTOP)"),
        SoakKind("network_partition", "rack", lambda t, a, h: NetworkPartition(t, _hosts_of_rack(t, a)), 45,
                 "a rack is cut off from the rest of the network"),
        SoakKind("blackhole", "host", lambda t, a, h: Blackhole(t, [a]), 45, "a host's network drops everything"),
        SoakKind("packet_loss", "host", lambda t, a, h: PacketLoss(t, a, 20), 10, "a host loses 20 % of its packets"),
        SoakKind("slow_disk", "osd", lambda t, a, h: SlowDisk(t, a, SLOW_OSD_LIMIT), 15,
                 f"an OSD's disk is throttled ({SLOW_OSD_LIMIT.describe()})"),
        SoakKind("cpu_starvation", "osd", lambda t, a, h: CpuStarvation(t, a, 0.05), 10, "an OSD gets 5 % of one CPU"),
        SoakKind("slow_link", "host", lambda t, a, h: SlowLink(t, a, SLOW_LINK_LIMIT), 10,
                 f"a host's link is rate-limited ({SLOW_LINK_LIMIT.describe()})"),
        SoakKind("flapping", "host",
                 lambda t, a, h: Flapping(t, a, down_s=FLAP_DOWN_S, up_s=FLAP_UP_S, duration_s=h + 60), 15,
                 f"a host's network drops for {FLAP_DOWN_S:g} s every {FLAP_DOWN_S + FLAP_UP_S:g} s"),
    )
    return {k.kind: k for k in kinds}


# The default mix: fail-stop and gray, every level. daemon_stop, blackhole, packet_loss and cpu_starvation
# are drawn only when asked (--faults): they repeat what the default kinds already exercise.
DEFAULT_KINDS = ("rack_power_cut", "power_cut", "daemon_kill", "daemon_hang", "network_partition", "slow_disk",
                 "slow_link", "flapping")


def soak_kinds() -> dict[str, SoakKind]:
    return _kinds()


def parse_kinds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'rack_power_cut,slow_disk' -> sorted kinds; unknown names are refused with the list."""
    if text is None or text == "" or text == ():
        return tuple(sorted(DEFAULT_KINDS))
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if any(not n for n in names):
        raise SoakError(f"--faults {text!r}: an empty name; write kinds separated by commas, e.g. rack_power_cut,slow_disk")
    known = _kinds()
    bad = [n for n in names if n not in known]
    if bad:
        from drills.faults.session import FAULT_TYPES

        why = "; ".join(f"{n!r} is a fault kind the soak does not draw (it needs its own runbook)" if n in FAULT_TYPES
                        else f"unknown fault kind {n!r}" for n in bad)
        raise SoakError(f"--faults: {why}; choose from {', '.join(sorted(known))}")
    return tuple(sorted(set(names)))


def parse_seed(text: str | int) -> int:
    """A seed: a whole number 0 .. 2**63-1 (decimal, or 0x hex)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().replace("_", "")
        try:
            value = int(s, 16) if s.lower().startswith("0x") else int(s, 10)
        except ValueError:
            raise SoakError(f"--seed {text!r} is not a whole number; write e.g. --seed 42") from None
    if not 0 <= value <= SEED_MAX:
        raise SoakError(f"--seed {text!r} is out of range; a seed is 0 .. {SEED_MAX}")
    return value


def _seconds(text: str | float, what: str) -> float:
    try:
        value = parse_seconds(text)
    except ValueError as e:
        raise SoakError(f"{what}: {e}") from None
    return value


def parse_range(text: str | tuple[float, float], what: str) -> tuple[float, float]:
    """'20s..60s' -> (20.0, 60.0); a single duration is a range of one value."""
    if isinstance(text, tuple):
        lo, hi = text
    else:
        lo_s, sep, hi_s = str(text).partition("..")
        lo = _seconds(lo_s.strip(), what)
        hi = _seconds(hi_s.strip(), what) if sep else lo
    if lo > hi:
        raise SoakError(f"{what} {text!r}: the low end is above the high end; write e.g. 20s..60s")
    return float(lo), float(hi)


# --- parameters ------------------------------------------------------------------------------------

ENV = {  # SoakParams field -> the environment knob a pytest run of the soak reads (drill soak sets them)
    "seed": "DRILL_SOAK_SEED", "duration_s": "DRILL_SOAK_DURATION", "kinds": "DRILL_SOAK_FAULTS",
    "hold": "DRILL_SOAK_HOLD", "quiet": "DRILL_SOAK_QUIET", "settle_s": "DRILL_SOAK_SETTLE",
    "max_concurrent": "DRILL_SOAK_MAX_CONCURRENT",
}
DEFAULT_DURATION = "20min"  # the full suite's soak
DEFAULT_HOLD, DEFAULT_QUIET, DEFAULT_SETTLE = "20s..60s", "10s..30s", "10min"


@dataclass(frozen=True)
class SoakParams:
    seed: int
    duration_s: float  # the schedule's length (estimated); warm-up, baseline and read-back come on top
    kinds: tuple[str, ...] = tuple(sorted(DEFAULT_KINDS))
    hold: tuple[float, float] = (20.0, 60.0)  # seconds a fault is held, drawn uniformly (whole seconds)
    quiet: tuple[float, float] = (10.0, 30.0)  # seconds of calm before each fault: the step's "before"
    settle_s: float = 600.0  # bound on heal -> active+clean; past it the soak stops (a stop condition)
    max_concurrent: int = 1  # faults in force at once (1: one at a time)

    def __post_init__(self) -> None:
        parse_seed(self.seed)
        if self.max_concurrent < 1:
            raise SoakError(f"--max-concurrent {self.max_concurrent}: at least 1 (one fault at a time)")
        if self.hold[0] < 1:
            raise SoakError(f"--hold: a fault is held at least 1 s, got {self.hold[0]:g} s")
        if self.settle_s <= 0:
            raise SoakError("--settle: the bound on the settle must be more than 0 s")
        kinds = _kinds()
        settle = min(kinds[k].settle_estimate_s for k in self.kinds)
        shortest = self.quiet[0] + self.hold[0] + settle
        if self.duration_s < shortest:
            raise SoakError(f"--duration {self.duration_s:g} s is shorter than one step (at least {shortest:g} s: quiet "
                            f"{self.quiet[0]:g} s + hold {self.hold[0]:g} s + settle {settle:g} s); give a longer --duration")

    @classmethod
    def build(cls, *, seed: str | int | None, duration: str | float, kinds: str | Sequence[str] | None = None,
              hold: str = DEFAULT_HOLD, quiet: str = DEFAULT_QUIET, settle: str | float = DEFAULT_SETTLE,
              max_concurrent: int | str = 1) -> "SoakParams":
        """From text as written on the command line or in the environment; SoakError on bad input."""
        try:
            concurrent = int(max_concurrent)
        except ValueError:
            raise SoakError(f"--max-concurrent {max_concurrent!r} is not a whole number") from None
        return cls(seed=new_seed() if seed in (None, "") else parse_seed(seed),
                   duration_s=_seconds(duration, "--duration"), kinds=parse_kinds(kinds),
                   hold=parse_range(hold, "--hold"), quiet=parse_range(quiet, "--quiet"),
                   settle_s=_seconds(settle, "--settle"), max_concurrent=concurrent)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SoakParams":
        """The soak's parameters from DRILL_SOAK_* (a pytest run of drills/test_soak.py; `drill soak` sets them).
        Without DRILL_SOAK_SEED a seed is drawn and put into the environment, so that admission and the drill
        of one run draw the same schedule."""
        e = os.environ if env is None else env
        if not e.get(ENV["seed"]):
            seed = str(new_seed())
            if env is None:
                os.environ[ENV["seed"]] = seed
        else:
            seed = e[ENV["seed"]]
        return cls.build(seed=seed, duration=e.get(ENV["duration_s"]) or DEFAULT_DURATION,
                         kinds=e.get(ENV["kinds"]) or None, hold=e.get(ENV["hold"]) or DEFAULT_HOLD,
                         quiet=e.get(ENV["quiet"]) or DEFAULT_QUIET, settle=e.get(ENV["settle_s"]) or DEFAULT_SETTLE,
                         max_concurrent=e.get(ENV["max_concurrent"]) or 1)

    def to_env(self) -> dict[str, str]:
        return {ENV["seed"]: str(self.seed), ENV["duration_s"]: f"{self.duration_s:g}s", ENV["kinds"]: ",".join(self.kinds),
                ENV["hold"]: f"{self.hold[0]:g}s..{self.hold[1]:g}s", ENV["quiet"]: f"{self.quiet[0]:g}s..{self.quiet[1]:g}s",
                ENV["settle_s"]: f"{self.settle_s:g}s", ENV["max_concurrent"]: str(self.max_concurrent)}

    def command(self) -> str:
        """The `drill soak` arguments that draw this schedule again (with the same target and pools)."""
        return (f"drill soak --duration {self.duration_s:g}s --seed {self.seed} --faults {','.join(self.kinds)} "
                f"--hold {self.hold[0]:g}s..{self.hold[1]:g}s --quiet {self.quiet[0]:g}s..{self.quiet[1]:g}s "
                f"--settle {self.settle_s:g}s --max-concurrent {self.max_concurrent}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"], d["hold"], d["quiet"] = list(self.kinds), list(self.hold), list(self.quiet)
        return d


def new_seed() -> int:
    return secrets.randbits(32)


# --- the schedule -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    aim: str  # a CRUSH name: rack, host or osd.N

    def build(self, target: Target, hold_s: float) -> Fault:
        return _kinds()[self.kind].build(target, self.aim, hold_s)


@dataclass(frozen=True)
class SoakStep:
    index: int  # 1-based
    faults: tuple[FaultSpec, ...]
    quiet_s: float
    hold_s: float
    estimate_s: float  # quiet + hold + the slowest kind's settle estimate

    def build(self, target: Target) -> list[Fault]:
        return [f.build(target, self.hold_s) for f in self.faults]

    def label(self, target: Target | None = None) -> str:
        if target is not None:
            return " + ".join(f.label for f in self.build(target))
        return " + ".join(f"{f.kind} {f.aim}" for f in self.faults)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "faults": [asdict(f) for f in self.faults], "quiet_s": self.quiet_s,
                "hold_s": self.hold_s, "estimate_s": self.estimate_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SoakStep":
        return cls(int(d["index"]), tuple(FaultSpec(f["kind"], f["aim"]) for f in d["faults"]), float(d["quiet_s"]),
                   float(d["hold_s"]), float(d["estimate_s"]))


@dataclass(frozen=True)
class Schedule:
    params: SoakParams
    steps: tuple[SoakStep, ...]
    topology: dict[str, Any] = field(default_factory=dict)  # what the aims were drawn from
    pools: tuple[PoolSpec, ...] = ()

    @property
    def estimated_s(self) -> float:
        return sum(s.estimate_s for s in self.steps)

    @property
    def fingerprint(self) -> str:
        """Identical for identical schedules: the seed, the parameters, the topology and every step. The pools are
        recorded beside it, not in it: they count through the steps they admit (a pool radosgw creates on its first
        bucket, with the same size and failure domain, changes nothing)."""
        text = json.dumps({k: v for k, v in self.to_dict().items() if k not in ("fingerprint", "pools")}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = {"seed": self.params.seed, "params": self.params.to_dict(), "topology": self.topology,
             "pools": [asdict(p) for p in self.pools], "steps": [s.to_dict() for s in self.steps],
             "estimated_s": self.estimated_s}
        return d

    def record(self) -> dict[str, Any]:
        """What goes into the run directory (soak-schedule.json) and the report."""
        return {**self.to_dict(), "fingerprint": self.fingerprint, "command": self.params.command(),
                "replay": f"the same seed ({self.params.seed}) with the same parameters, target and pools draws this "
                          "schedule again; timing differs from run to run (each settle lasts as long as the cluster takes)"}

    def lines(self, target: Target | None = None) -> list[str]:
        """The schedule as a person reads it (the dry run prints these)."""
        p = self.params
        out = [f"soak schedule: seed {p.seed}, {len(self.steps)} step(s), estimated {self.estimated_s / 60:.1f} min of "
               f"{p.duration_s / 60:.1f} min asked; fingerprint {self.fingerprint}",
               f"  kinds: {', '.join(p.kinds)}; hold {p.hold[0]:g}-{p.hold[1]:g} s, quiet {p.quiet[0]:g}-{p.quiet[1]:g} s, "
               f"settle bound {p.settle_s:g} s, at most {p.max_concurrent} fault(s) at once",
               "  pools: " + (_pools_text(self.pools) or "none given")]
        at = 0.0
        for s in self.steps:
            out.append(f"  {s.index:3d}. t+{at / 60:5.1f} min  quiet {s.quiet_s:3.0f} s, then {s.label(target)} "
                       f"held {s.hold_s:.0f} s, heal, settle")
            at += s.estimate_s
        return out


def _pools_text(pools: Sequence[PoolSpec]) -> str:
    """'rbd, drills (size 3, min_size 2, failure domain rack)': pools grouped by what the guard weighs."""
    groups: dict[tuple[int, int, str], list[str]] = {}
    for p in pools:
        groups.setdefault((p.size, p.min_size, p.failure_domain), []).append(p.name)
    return "; ".join(f"{', '.join(names)} (size {size}, min_size {min_size}, failure domain {domain}: "
                     f"{size - min_size} {domain}(s) may be down)" for (size, min_size, domain), names in groups.items())


def topology_of(target: Target) -> dict[str, Any]:
    """The part of the target the draw reads: racks -> hosts -> OSDs, in file order."""
    return {r.name: {h.name: sorted(h.osd_ids) for h in r.hosts} for r in target.racks}


def aims_of(target: Target, level: str) -> list[str]:
    if level == "rack":
        return [r.name for r in target.racks if any(h.osd_ids for h in r.hosts)]
    if level == "host":
        return [h.name for r in target.racks for h in r.hosts if h.osd_ids]
    return [f"osd.{i}" for r in target.racks for h in r.hosts for i in sorted(h.osd_ids)]


def admissible(target: Target, pools: Sequence[PoolSpec], faults: Sequence[Fault]) -> bool:
    """The guard's rule, before anything runs: together the faults leave every pool writable and the
    monitors a quorum; no two act on the same host."""
    seen: set[str] = set()
    for f in faults:
        hosts = set(f.host_names())
        if hosts & seen:
            return False
        seen |= hosts
    impact = impact_of(target, Outage.together(faults))
    return not FaultGuard(target, None, pools).unavailable_reasons(impact)


def draw_schedule(params: SoakParams, target: Target, pools: Sequence[PoolSpec]) -> Schedule:
    """The schedule of `params` on `target` with `pools` (see the module's docstring). SoakError when no
    fault of the kinds can be aimed anywhere the guard allows."""
    kinds = _kinds()
    rng = random.Random(params.seed)
    hold_s = lambda: float(round(rng.uniform(*params.hold)))  # noqa: E731 - whole seconds read better
    quiet_s = lambda: float(round(rng.uniform(*params.quiet)))  # noqa: E731
    steps: list[SoakStep] = []
    used = 0.0
    while True:
        quiet, hold = quiet_s(), hold_s()
        count = 1 if params.max_concurrent == 1 else rng.randint(1, params.max_concurrent)
        chosen: list[FaultSpec] = []
        built: list[Fault] = []
        for _ in range(count):
            options: dict[str, list[tuple[str, Fault]]] = {}
            for kind in params.kinds:
                for aim in aims_of(target, kinds[kind].level):
                    if any(c.kind == kind and c.aim == aim for c in chosen):
                        continue
                    fault = kinds[kind].build(target, aim, hold)
                    if admissible(target, pools, [*built, fault]):
                        options.setdefault(kind, []).append((aim, fault))
            if not options:
                break
            kind = rng.choice(sorted(options))
            aim, fault = rng.choice(options[kind])
            chosen.append(FaultSpec(kind, aim))
            built.append(fault)
        if not chosen:
            raise SoakError(f"no fault of {', '.join(params.kinds)} can be aimed anywhere on {target.path or 'the target'} "
                            "without taking down more failure domains than the pools survive; choose other --faults")
        settle = max(kinds[c.kind].settle_estimate_s for c in chosen)
        estimate = quiet + hold + settle
        if used + estimate > params.duration_s:
            if steps:
                break
            # the first step always fits a duration of at least one step: shortest quiet, then as long a hold as fits
            quiet = params.quiet[0]
            hold = max(params.hold[0], float(int(params.duration_s - quiet - settle)))
            estimate = quiet + hold + settle
        steps.append(SoakStep(len(steps) + 1, tuple(chosen), quiet, hold, estimate))
        used += estimate
    return Schedule(params, tuple(steps), topology_of(target), tuple(pools))
