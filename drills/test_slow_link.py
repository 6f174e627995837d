"""Drill slow_link: one host's link is rate-limited to 2 Mbit/s both ways (a bad NIC or cable): replication through it slows, heartbeats arrive late but arrive.

Aimed at the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST.
Gray runbook (drills/gray_runbook.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> degraded (the fault held for a fixed time: SLOW_OPS, mark-downs, p99, IOPS)
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `slow_link` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_slow_link = runbook_test("slow_link")
