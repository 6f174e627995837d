"""The fault room's pytest fixtures (loaded by drills/plugin.py through `pytest_plugins`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from drills.cluster import CephCluster
from drills.faults.guard import guard_from_cluster
from drills.faults.session import FaultSession
from drills.hostaccess import HostAccess
from drills.preflight.gate import PreflightFailed, PreflightGate
from drills.target import Target
from drills.timeline import Timeline


@pytest.fixture
def drill_faults(drill_target: Target, drill_cluster: CephCluster, drill_timeline: Timeline, drill_run_dir: Path,
                 drill_preflight_gate: PreflightGate, drill_host_access: HostAccess) -> Iterator[FaultSession]:
    """A fault session for one test: preflighted, guarded, ledgered, healed at the end whatever happens."""
    try:
        drill_preflight_gate.require(drill_target)  # a failed preflight blocks destructive drills (override: DRILLS_SKIP_PREFLIGHT=1)
    except PreflightFailed as e:
        pytest.fail(str(e), pytrace=False)
    with FaultSession(drill_target, guard=guard_from_cluster(drill_target, drill_cluster), timeline=drill_timeline,
                      run_id=drill_run_dir.name, host_access=drill_host_access) as s:
        yield s
