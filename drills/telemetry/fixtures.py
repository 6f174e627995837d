"""The telemetry room's pytest fixtures (loaded by drills/plugin.py through `pytest_plugins`)."""

from __future__ import annotations

from typing import Iterator

import pytest

from drills.cluster import CephCluster
from drills.hostaccess import HostAccess
from drills.target import Target
from drills.telemetry.samplers import Sampler, default_samplers
from drills.timeline import Timeline


@pytest.fixture(scope="session")
def drill_samplers(drill_timeline: Timeline, drill_target: Target, drill_cluster: CephCluster,
                   drill_host_access: HostAccess) -> Iterator[list[Sampler]]:
    """1 Hz cluster and memory samplers running for the whole session (daemon memory on ssh hosts is
    read through the session's host access)."""
    running = [s.start() for s in default_samplers(drill_timeline, drill_target, drill_cluster, host_access=drill_host_access)]
    try:
        yield running
    finally:
        for s in running:
            s.stop()
