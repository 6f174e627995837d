"""Drill rack_partition: one rack is cut off from the rest of the network in both directions; its daemons keep running.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_rack_partition = runbook_test("rack_partition")
