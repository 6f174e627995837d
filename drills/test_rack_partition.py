"""Drill rack_partition: One rack is cut off from the rest of the network in both directions; its daemons keep running.

Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `rack_partition` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
"""

from __future__ import annotations

import os

from drills.faults.kinds import NetworkPartition
from drills.scenario import FaultDrill

DRILL = "rack_partition"
def _rack(t) -> str:
    """DRILL_RACK, else the last rack (rack3 on the default sandbox)."""
    return os.environ.get("DRILL_RACK") or t.racks[-1].name


def make_fault(t):
    return NetworkPartition(t, [h.name for h in t.rack(_rack(t)).hosts])


def test_rack_partition(drill, cluster, drill_target, faults, drill_image):
    outcome = FaultDrill(drill, cluster, drill_target, faults, make_fault, drill_image).run()
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
