"""Drill flapping_host: one host's network drops for 5 s every 15 s for the whole phase: each silence is shorter than osd_heartbeat_grace, so client IO stalls and resumes without the host being marked down.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_flapping_host = runbook_test("flapping_host")
