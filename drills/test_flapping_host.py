"""Drill flapping_host: one host's network drops for 5 s every 15 s for the whole phase: each silence is shorter than osd_heartbeat_grace, so client IO stalls and resumes without the host being marked down.

Aimed at the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST.
Gray runbook (drills/gray_runbook.py), with fio 4k random writes and the verifying writer running throughout:
 baseline -> inject -> degraded (the fault held for a fixed time: SLOW_OPS, mark-downs, p99, IOPS)
 -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.
Limits: the `flapping_host` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.

The drill is data: its entry in drills/catalogue.py."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_flapping_host = runbook_test("flapping_host")
