"""Drill osd_kill: one OSD is killed (SIGKILL) on a live host: peers are refused at once, so detection is near-immediate.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_osd_kill = runbook_test("osd_kill")
