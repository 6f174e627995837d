"""Drill rack_power_cut: every host of one rack loses power at the same instant: its OSDs die and its network falls silent (the article's drill).

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_rack_power_cut = runbook_test("rack_power_cut")
