"""Drill osd_kill: one OSD is killed (SIGKILL) on a live host: peers are refused at once, so detection is near-immediate.

Aimed at the first OSD of the second rack's last host (osd.3 on the default sandbox); DRILL_OSD.
Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `osd_kill` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_osd_kill = runbook_test("osd_kill")
