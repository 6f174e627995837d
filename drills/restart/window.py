"""The chain-reaction drill's budget window, from a probe taken in the same run (pure).

The probe (drills/test_oom_chain_reaction.py, round "probe") starts the returning rack's OSDs all at
once under no limit, lets them recover, then restarts each and lets it settle. Per OSD it gives:

    peak       its RSS peak while the rack started all at once (power-on to HEALTH_OK)
    held       its RSS once clean, never restarted (glibc keeps the heap it grew: it stays near the peak)
    restarted  its RSS peak after a restart once clean (a short restart comes back small)

and per host the all-at-once peak of the host's anonymous memory. From those, per host:

    controlled need (the window's floor): what the controlled start needs in the drill's order: step k
        holds the earlier OSDs at their restarted size (restart-biggest does that) and needs room for the
        larger of its learned need (the largest alone peak so far x the need margin) and its own alone
        peak; an OSD started alone peaks higher than among others (docs/restart.md), so an alone peak is
        the all-at-once peak x the alone factor:

            floor = max over k of  sum(restarted[j] for j < k) + max(margin x max(alone[j] for j < k), alone[k])

    cascade ceiling (the window's top), in anonymous memory (RSS less file-backed pages) where the probe
        has it: the memory the OSDs hold once recovered (sum of held), less the
        most that any one of them gives back when the kernel kills it and it comes back at its restarted
        size. Below it, every OOM kill leaves a killed OSD that cannot rejoin beside the others' held
        heaps without another kill; never above the all-at-once peak (above that nobody is killed):

            ceiling = min(all-at-once host peak, sum(held) - max over k of (held[k] - restarted[k]))

The budget is placed at ``position`` between floor (0) and ceiling (1), 0.4 by default. A window exists when
the ceiling is above the floor; the drill judges its width, ceiling / floor, against
``budget_window_ratio_min`` (drills/default_thresholds.toml).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from drills.units import MiB


@dataclass(frozen=True)
class OsdProbe:
    daemon: str
    peak: int  # bytes: RSS peak while all started at once
    held: int  # bytes: RSS once clean, not restarted
    restarted: int  # bytes: RSS peak after a restart once clean
    # The same two as anonymous memory (RSS less its file-backed pages: the binary and libraries, shared
    # and charged to the host's cgroup once), which is what fills the budget; None: use the RSS figures.
    held_anon: int | None = None
    restarted_anon: int | None = None

    @property
    def held_heap(self) -> int:
        return self.held if self.held_anon is None else self.held_anon

    @property
    def restarted_heap(self) -> int:
        return self.restarted if self.restarted_anon is None else self.restarted_anon


@dataclass(frozen=True)
class HostProbe:
    host: str
    osds: tuple[OsdProbe, ...]  # in the controlled start's order
    all_at_once_peak: int  # bytes: the host's anonymous memory peak, all started at once, no limit


@dataclass(frozen=True)
class WindowConfig:
    need_margin: float = 1.1  # the controlled start's margin on a learned need (RestartConfig.need_margin)
    alone_factor: float = 1.15  # an OSD alone peaks this much higher than among the others (measured 1.01-1.12)
    position: float = 0.4  # where the budget sits between floor (0) and ceiling (1): nearer the floor, whose margins are wider

    def __post_init__(self) -> None:
        if self.need_margin < 1.0 or self.alone_factor < 1.0:
            raise ValueError("need margin and alone factor must be at least 1.0")
        if not 0.0 <= self.position <= 1.0:
            raise ValueError("position must be within 0..1")


@dataclass(frozen=True)
class Step:
    daemon: str
    held_before: int  # bytes: the earlier OSDs at their restarted size
    need: int  # bytes: the room this step asks for
    requirement: int  # held_before + need


@dataclass(frozen=True)
class Window:
    host: str
    floor: int  # bytes: the controlled start's need
    ceiling: int  # bytes: the cascade's top
    budget: int  # bytes: where the drill runs both rounds
    steps: tuple[Step, ...] = field(default=())
    ceiling_from: str = ""  # "held" or "all-at-once peak": which bound set the ceiling
    killed_gives_back: str = ""  # the OSD whose kill frees the most (held - restarted)

    @property
    def found(self) -> bool:
        return self.ceiling > self.floor

    @property
    def ratio(self) -> float:
        """ceiling / floor: above 1 a window exists; its width relative to the floor."""
        return self.ceiling / self.floor if self.floor > 0 else 0.0

    def describe(self) -> str:
        m = lambda b: f"{b / MiB:.0f} MiB"  # noqa: E731
        state = "window" if self.found else "NO window"
        steps = "; ".join(f"{s.daemon} {m(s.held_before)} held + {m(s.need)}" for s in self.steps)
        return (f"host {self.host}: {state} {m(self.floor)} (controlled start's need: {steps}) .. {m(self.ceiling)} "
                f"(cascade ceiling from {self.ceiling_from}"
                + (f", a kill of {self.killed_gives_back} gives back the most" if self.ceiling_from == "held" else "")
                + f"); budget {m(self.budget)} (ceiling/floor {self.ratio:.2f})")


def controlled_steps(osds: Sequence[OsdProbe], cfg: WindowConfig) -> list[Step]:
    steps = []
    held = 0
    largest_alone = 0.0
    for o in osds:
        alone = o.peak * cfg.alone_factor
        need = max(cfg.need_margin * largest_alone, alone)
        steps.append(Step(o.daemon, held, int(need), int(held + need)))
        held += o.restarted
        largest_alone = max(largest_alone, alone)
    return steps


def pick_window(probe: HostProbe, cfg: WindowConfig = WindowConfig()) -> Window:
    if not probe.osds:
        raise ValueError(f"host {probe.host}: no OSDs probed")
    steps = controlled_steps(probe.osds, cfg)
    floor = max(s.requirement for s in steps)
    # The floor is in RSS, as the controlled start reckons its need; the ceiling in heaps (anonymous memory),
    # as the kernel charges the host: counting each OSD's mapped binary again would lift it above the cascade.
    gives_back = max(probe.osds, key=lambda o: (o.held_heap - o.restarted_heap, o.daemon))
    by_held = sum(o.held_heap for o in probe.osds) - (gives_back.held_heap - gives_back.restarted_heap)
    ceiling, source = (by_held, "held") if by_held <= probe.all_at_once_peak else (probe.all_at_once_peak, "all-at-once peak")
    budget = int(floor + (ceiling - floor) * cfg.position) if ceiling > floor else int((floor + ceiling) / 2)
    return Window(probe.host, int(floor), int(ceiling), (budget // MiB) * MiB, tuple(steps), source, gives_back.daemon)
