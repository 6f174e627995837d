"""Drill host_power_cut: One host loses power: a smaller blast radius than a rack, the same silence.

Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `host_power_cut` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
"""

from __future__ import annotations

import os

from drills.faults.kinds import PowerCut
from drills.scenario import FaultDrill

DRILL = "host_power_cut"
def _host(t) -> str:
    """DRILL_HOST, else the last host of the first rack (r1h2 on the default sandbox)."""
    return os.environ.get("DRILL_HOST") or t.racks[0].hosts[-1].name


def make_fault(t):
    return PowerCut(t, [_host(t)])


def test_host_power_cut(drill, cluster, drill_target, faults, drill_image):
    outcome = FaultDrill(drill, cluster, drill_target, faults, make_fault, drill_image).run()
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
