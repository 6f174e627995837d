"""Drill soak: a seeded chaos soak (drills/soak/, docs/soak.md). Faults drawn from the catalogue at random
(inject, hold, heal, settle) while fio, the verifying writers (RADOS and S3) and locust's S3 mix run throughout;
every acknowledged write read back at the end. Parameters: DRILL_SOAK_* (`drill soak` sets them; the full suite
runs a 20-minute soak with a fresh seed, recorded in soak-schedule.json)."""

from drills.soak.plan import plan_notes, planned_faults  # noqa: F401 - admission and the dry-run plan read them

DRILL = "soak"
OWN_RUNBOOK = True


def test_soak(drill, drill_cluster, drill_target, drill_faults, drill_image) -> None:  # type: ignore[no-untyped-def]
    from drills.soak.runner import run_soak  # lazy: the runbook imports the cluster client and the workloads

    run_soak(drill, drill_cluster, drill_target, drill_faults, drill_image)
