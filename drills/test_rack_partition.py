"""Drill rack_partition: one rack is cut off from the rest of the network in both directions; its daemons keep running.

Aimed at the last rack (rack3 on the default sandbox); DRILL_RACK.
Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `rack_partition` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_rack_partition = runbook_test("rack_partition")
