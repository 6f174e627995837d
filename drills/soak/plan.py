"""What admission and the dry-run plan of `drill run` need of the soak: its faults and a few lines of plan.

Both draw the schedule the drill will draw (the same DRILL_SOAK_* parameters, the live cluster's pools; a seed
drawn here is put into the environment, so the drill in the same process draws the same one)."""

from __future__ import annotations

from drills.faults.fault import Fault
from drills.target import Target


def _schedule(target: Target):  # type: ignore[no-untyped-def]
    from drills.admission import Refused
    from drills.cluster import CephCluster, ClusterError
    from drills.faults.guard import guard_from_cluster
    from drills.soak.schedule import SoakError, SoakParams, draw_schedule

    try:
        params = SoakParams.from_env()
    except SoakError as e:
        raise Refused(f"soak: {e}") from None
    try:
        with CephCluster(target) as cluster:
            pools = guard_from_cluster(target, cluster).pools
    except ClusterError as e:
        raise Refused(str(e)) from None
    try:
        return draw_schedule(params, target, pools)
    except SoakError as e:
        raise Refused(f"soak: {e}") from None


def planned_faults(target: Target) -> tuple[Fault, ...]:
    """Every fault of the drawn schedule (admission weighs each against the guard)."""
    return tuple(f for step in _schedule(target).steps for f in step.build(target))


def plan_notes(target: Target) -> list[str]:
    """The schedule the drill would draw now; without the cluster, what it will be drawn from."""
    from drills.admission import Refused
    from drills.soak.schedule import SoakError, SoakParams

    try:
        return _schedule(target).lines(target)
    except Refused as e:
        try:
            p = SoakParams.from_env()
        except SoakError as bad:
            raise Refused(f"soak: {bad}") from None
        return [f"soak: seed {p.seed}, {p.duration_s / 60:g} min of faults drawn from {', '.join(p.kinds)}; the schedule "
                f"is drawn from the live pools at run time (not now: {e})",
                "workloads: fio rbd 4k randwrite + verifying writer (RADOS) + locust S3 mix + verifying writer (S3 PUTs)"]
