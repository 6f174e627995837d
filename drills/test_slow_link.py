"""Drill slow_link: one host's link is rate-limited to 2 Mbit/s both ways (a bad NIC or cable): replication through it slows, heartbeats arrive late but arrive.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_slow_link = runbook_test("slow_link")
