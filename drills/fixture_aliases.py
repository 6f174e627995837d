"""The plugin's fixtures under their old, unprefixed names, for drill modules written before the prefix.

The plugin loads into every pytest session of the venv, so its fixtures carry the project's prefix
(`drill_cluster`, `drill_faults`, ...) and never shadow another project's `cluster` or `timeline`.
A drill module that still asks for the old names opts in to these aliases:

    pytest_plugins = ["drills.fixture_aliases"]      # in the module or its conftest.py
    pytest -p drills.fixture_aliases ...             # or for one session
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.cluster import CephCluster
from drills.faults.session import FaultSession
from drills.preflight.gate import PreflightGate
from drills.telemetry.samplers import Sampler
from drills.thresholds import Thresholds
from drills.timeline import Timeline


@pytest.fixture(scope="session")
def cluster(drill_cluster: CephCluster) -> CephCluster:
    return drill_cluster


@pytest.fixture(scope="session")
def run_dir(drill_run_dir: Path) -> Path:
    return drill_run_dir


@pytest.fixture(scope="session")
def timeline(drill_timeline: Timeline) -> Timeline:
    return drill_timeline


@pytest.fixture(scope="session")
def thresholds(drill_thresholds: Thresholds) -> Thresholds:
    return drill_thresholds


@pytest.fixture(scope="session")
def regression_rules(drill_regression_rules: list) -> list:
    return drill_regression_rules


@pytest.fixture(scope="session")
def samplers(drill_samplers: list[Sampler]) -> list[Sampler]:
    return drill_samplers


@pytest.fixture(scope="session")
def preflight_gate(drill_preflight_gate: PreflightGate) -> PreflightGate:
    return drill_preflight_gate


@pytest.fixture
def faults(drill_faults: FaultSession) -> FaultSession:
    return drill_faults
