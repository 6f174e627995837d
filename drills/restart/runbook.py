"""A controlled restart with its flags held through the fault ledger (library entry point)."""

from __future__ import annotations

from typing import Sequence

from drills.cluster import CephCluster
from drills.faults.session import FaultSession
from drills.restart.flags import DEFAULT_RESTART_FLAGS, ClusterFlags
from drills.restart.orchestrator import ControlledRestart, RestartResult
from drills.target import Target


def run_with_flags(session: FaultSession, target: Target, cluster: CephCluster, restart: ControlledRestart,
                   flags: Sequence[str] = DEFAULT_RESTART_FLAGS) -> tuple[RestartResult, ClusterFlags]:
    """Set the flags (armed in the ledger first), run the controlled start, unset them whatever happens."""
    fault = ClusterFlags(target, flags, already_set=sorted(cluster.flags() & set(flags)), cluster=cluster)
    session.inject(fault)
    try:
        return restart.run(), fault
    finally:
        session.heal(fault)


def start_need_default(cluster: CephCluster) -> int:
    """Without --start-need: half of osd_memory_target (an OSD grows towards the target once running;
    the first start's measured peak replaces the estimate when larger). Raises NotMeasured (a
    ClusterError) when no OSD answers, rather than assuming Ceph's 4 GiB default."""
    from drills.preflight.checks import NotMeasured, running_osd_memory_target
    from drills.restart.orchestrator import start_need_from_target

    try:
        return start_need_from_target(running_osd_memory_target(cluster))
    except NotMeasured as e:
        raise NotMeasured(f"{e}; pass --start-need SIZE (memory one OSD needs to start)") from None
