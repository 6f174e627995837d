"""The preflight room's pytest fixtures (loaded by drills/plugin.py through `pytest_plugins`)."""

from __future__ import annotations

import pytest

from drills.hostaccess import HostAccess
from drills.preflight.gate import PreflightGate


@pytest.fixture(scope="session")
def drill_preflight_gate(drill_host_access: HostAccess) -> PreflightGate:
    """Preflight once per target per session (swap, memory per OSD, daemons, clock, MTU)."""
    return PreflightGate(access=drill_host_access)
