"""Drill hung_osd: one OSD is frozen (SIGSTOP): alive to the kernel, silent to its peers, so only the heartbeat grace notices it.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_hung_osd = runbook_test("hung_osd")
