"""Drill host_power_cut: one host loses power: a smaller blast radius than a rack, the same silence.

Aimed at the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST.
Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `host_power_cut` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_host_power_cut = runbook_test("host_power_cut")
