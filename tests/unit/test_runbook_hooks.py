"""FaultDrill's hooks: a drill with a recovery step of its own (the controlled restart) runs it in place of
a plain heal, and the fault session's heal still follows, whatever the step did."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from drills.scenario import FaultDrill, Pace


class Recorder:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def phase(self, name: str, **data: Any) -> None:
        self.calls.append(("phase", name))

    def event(self, kind: str, label: str, **data: Any) -> None:
        self.calls.append(("event", kind))

    def measure(self, phase: str, key: str, value: Any) -> None:
        self.calls.append(("measure", key))


class Cluster:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def wait_for_osds(self, up: set, timeout: float) -> None:
        self.calls.append(("osds up", tuple(sorted(up))))

    def wait_for_active(self, timeout: float) -> None:
        self.calls.append(("active",))

    def wait_for_clean(self, timeout: float) -> None:
        self.calls.append(("clean",))


class Faults:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def heal(self, fault: Any) -> None:
        self.calls.append(("heal", fault))


class Cut:
    label = "rack power cut rack2"

    def __repr__(self) -> str:
        return "cut"


CUT = Cut()


def _drill(calls: list, **hooks: Any) -> FaultDrill:
    pace = dataclasses.replace(Pace.named("smoke"), after=0)
    return FaultDrill(drill=Recorder(calls), cluster=Cluster(calls), target=None, faults=Faults(calls),  # type: ignore[arg-type]
                      make_fault=lambda t: None, image="img", pace=pace, **hooks)  # type: ignore[arg-type, return-value]


def test_the_restore_step_runs_in_place_of_a_plain_heal_and_the_heal_follows() -> None:
    calls: list = []
    d = _drill(calls, restore=lambda fault: calls.append(("restore", fault)))
    d._recover(CUT, {3}, d.pace)
    assert calls[:3] == [("phase", "recovery"), ("restore", CUT), ("heal", CUT)]
    assert ("osds up", (3,)) in calls and calls[-1] == ("phase", "after") and d.t_heal is not None


def test_a_failed_restore_step_still_heals_and_stops_the_runbook() -> None:
    calls: list = []

    def broken(fault: Any) -> None:
        raise RuntimeError("budget cannot be met")

    d = _drill(calls, restore=broken)
    with pytest.raises(RuntimeError, match="budget"):
        d._recover(CUT, {3}, d.pace)
    assert ("heal", CUT) in calls and ("clean",) not in calls


def test_without_hooks_recovery_is_the_plain_heal() -> None:
    calls: list = []
    d = _drill(calls)
    d._recover(CUT, set(), d.pace)
    assert [c for c in calls if c[0] in ("restore", "heal")] == [("heal", CUT)]
