"""Drill osd_kill: One OSD is killed (SIGKILL) on a live host: peers are refused at once, so detection is near-immediate.

Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `osd_kill` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
"""

from __future__ import annotations

import os

from drills.faults.kinds import DaemonKill
from drills.scenario import FaultDrill

DRILL = "osd_kill"
def _osd(t) -> str:
    """DRILL_OSD, else the first OSD of the second rack's last host (osd.3 on the default sandbox)."""
    host = t.racks[1 % len(t.racks)].hosts[-1]
    return os.environ.get("DRILL_OSD") or f"osd.{host.osd_ids[0]}"


def make_fault(t):
    return DaemonKill(t, _osd(t))


def test_osd_kill(drill, cluster, drill_target, faults, drill_image):
    outcome = FaultDrill(drill, cluster, drill_target, faults, make_fault, drill_image).run()
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
