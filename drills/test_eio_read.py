"""Drill eio_read: reads of 3 objects whose primary is one OSD fail on that OSD with EIO (BlueStore's read-error injection, a bad sector): the primary should read them from a replica and rewrite its own copy, so the client reads succeed and the OSD stays up.

The drill is data: its entry in drills/catalogue.py says where it aims, which runbook and suites;
`drill run --dry-run` prints its plan and limits."""

from drills.catalogue import runbook_test

DRILL, make_fault, test_eio_read = runbook_test("eio_read")
