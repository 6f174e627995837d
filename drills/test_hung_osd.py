"""Drill hung_osd: One OSD hangs (SIGSTOP): it holds its sockets and answers nothing, until SIGCONT.

Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `hung_osd` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
"""

from __future__ import annotations

import os

from drills.faults.kinds import DaemonHang
from drills.scenario import FaultDrill

DRILL = "hung_osd"
def _osd(t) -> str:
    """DRILL_OSD, else the first OSD of the first rack's last host (osd.1 on the default sandbox)."""
    return os.environ.get("DRILL_OSD") or f"osd.{t.racks[0].hosts[-1].osd_ids[0]}"


def make_fault(t):
    return DaemonHang(t, _osd(t))


def test_hung_osd(drill, cluster, drill_target, faults, drill_image):
    outcome = FaultDrill(drill, cluster, drill_target, faults, make_fault, drill_image).run()
    result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    drill.assert_passed(result)
