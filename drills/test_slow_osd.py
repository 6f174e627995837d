"""Drill slow_osd: one OSD's disk is throttled to 4 KiB/s of writes (a dying disk): it keeps heartbeating, so it is not marked down, while every client write that needs it waits until SLOW_OPS is raised.

Aimed at the first OSD of the first rack's last host (osd.1 on the default sandbox); DRILL_OSD.
Gray runbook (drills/gray_runbook.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> degraded (the fault held for a fixed time: SLOW_OPS, mark-downs, p99, IOPS)
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `slow_osd` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_slow_osd = runbook_test("slow_osd")
