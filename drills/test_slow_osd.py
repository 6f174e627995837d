"""Drill slow_osd: one OSD's disk is throttled to 4 KiB/s of writes (a dying disk): it keeps heartbeating, so it is not marked down, while every client write that needs it waits until SLOW_OPS is raised.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_slow_osd = runbook_test("slow_osd")
