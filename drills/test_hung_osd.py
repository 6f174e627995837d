"""Drill hung_osd: one OSD is frozen (SIGSTOP): alive to the kernel, silent to its peers, so only the heartbeat grace notices it.

Aimed at the first OSD of the first rack's last host (osd.1 on the default sandbox); DRILL_OSD.
Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `hung_osd` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_hung_osd = runbook_test("hung_osd")
