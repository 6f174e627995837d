"""Refusals before the first drill: the target loads, the cluster answers, its fsid matches, and
every selected drill that injects a fault is allowed on this target.

Checked once per session, after collection and before any drill runs, so that a wrong cluster or
a target without ``destructive = true`` is one line and exit 2 - not five drill errors, and not a
refusal that reads like a finding about the cluster halfway through a run.  The same guard checks
(drills/faults/guard.py) run again at each inject; this is the early, whole-suite copy of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterable


from drills.faults.fault import Fault
from drills.faults.guard import GuardRefused, guard_from_cluster
from drills.target import Target, TargetError


class Refused(Exception):
    """The run may not start; the message is one line naming the cause and the fix."""


@dataclass(frozen=True)
class PlannedDrill:
    drill: str
    module: str
    faults: tuple[Fault, ...]  # empty: the drill injects nothing
    allow_unavailable: bool = False

    @property
    def destructive(self) -> bool:
        return any(f.destructive for f in self.faults)


def planned_faults(module: ModuleType, target: Target) -> tuple[Fault, ...]:
    """The faults a drill module will inject: its `planned_faults(target)`, else its `make_fault(target)`."""
    plan = getattr(module, "planned_faults", None)
    if plan is not None:
        return tuple(plan(target))
    make = getattr(module, "make_fault", None)
    return (make(target),) if make is not None else ()


def plan_drills(modules: Iterable[ModuleType], target: Target) -> list[PlannedDrill]:
    out = []
    for m in modules:
        try:
            faults = planned_faults(m, target)
        except Exception as e:  # noqa: BLE001 - a drill that cannot aim its fault refuses the run, in one line
            raise Refused(f"drill {getattr(m, 'DRILL', m.__name__)} cannot aim its fault at {target.path}: {e}") from None
        out.append(PlannedDrill(getattr(m, "DRILL", m.__name__), m.__name__, faults,
                                bool(getattr(m, "ALLOW_UNAVAILABLE", False))))
    return out


def admit(target: Target, cluster: Any, drills: list[PlannedDrill], skip_destructive: bool) -> dict[str, str]:
    """Refuse (raise Refused) or return drill -> skip reason for drills to skip.

    The cluster's fsid was checked when `cluster` connected (CephCluster.connect refuses a
    wrong cluster); here: destructive permission and blast radius, for every fault planned.
    """
    skips: dict[str, str] = {}
    destructive = [d for d in drills if d.destructive]
    if destructive and not target.destructive:
        names = ", ".join(d.drill for d in destructive)
        if not skip_destructive:
            raise Refused(
                f"{target.path} does not say destructive = true, and the selected drills {names} inject faults; "
                "add `destructive = true` to the target if this cluster may be broken, or pass --skip-destructive "
                "to run only the drills that inject nothing")
        for d in destructive:
            skips[d.drill] = f"injects faults and {target.path} does not say destructive = true (--skip-destructive)"
        return skips
    if not destructive:
        return skips
    from drills.target import check_credentials

    try:
        check_credentials(target)  # an unset BMC password refuses the run now, not at the first power cut
    except TargetError as e:
        raise Refused(str(e)) from None
    try:
        guard = guard_from_cluster(target, cluster)
    except Exception as e:  # noqa: BLE001 - any failure to read pools is a refusal to inject blind
        raise Refused(f"cannot read the pools of {target.cluster.name} to check the blast radius ({e}); "
                      "check the cluster's health and the client's caps") from None
    for d in destructive:
        for f in d.faults:
            try:
                guard.check(f, allow_unavailable=d.allow_unavailable)
            except GuardRefused as e:
                first = str(e).replace("\n", " ")
                raise Refused(f"drill {d.drill}: {first}; aim it elsewhere (see the drill's knobs in "
                              f"`drill run --dry-run`) or leave it out") from None
    return skips


def skip_destructive_requested(config: Any) -> bool:
    return bool(config.getoption("--skip-destructive", False)) or os.environ.get("DRILL_SKIP_DESTRUCTIVE") == "1"
