"""Drill rack_power_cut: every host of one rack loses power at the same instant: its OSDs die and its network falls silent (the article's drill).

Aimed at the second rack (rack2 on the default sandbox); DRILL_RACK.
Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `rack_power_cut` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_rack_power_cut = runbook_test("rack_power_cut")
