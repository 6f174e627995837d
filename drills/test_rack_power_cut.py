"""Drill rack_power_cut: Every host of one rack loses power at the same instant: its OSDs die and its network falls silent.

Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `rack_power_cut` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
"""

from __future__ import annotations

import os

from drills.faults.kinds import RackPowerCut
from drills.scenario import FaultDrill

DRILL = "rack_power_cut"
def _rack(t) -> str:
    """DRILL_RACK, else the second rack (rack2 on the default sandbox)."""
    return os.environ.get("DRILL_RACK") or t.racks[1 % len(t.racks)].name


def make_fault(t):
    return RackPowerCut(t, _rack(t))


def test_rack_power_cut(drill, cluster, drill_target, faults, drill_image):
    outcome = FaultDrill(drill, cluster, drill_target, faults, make_fault, drill_image).run()
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
