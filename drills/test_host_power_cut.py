"""Drill host_power_cut: one host loses power: a smaller blast radius than a rack, the same silence.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_host_power_cut = runbook_test("host_power_cut")
