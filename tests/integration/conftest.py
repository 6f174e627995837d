"""One real sandbox per test session, apart from the user's own (own directory, prefix, subnet)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from drills.cluster import CephCluster
from drills.sandbox import bootstrap
from drills.sandbox.spec import SandboxSpec
from drills.target import Target, load_target

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.sshd import Sshd  # noqa: E402

# Overridable so that two test sessions on one machine use separate sandboxes.
TEST_SANDBOX = SandboxSpec(
    dir=os.environ.get("DRILLS_TEST_SANDBOX_DIR", "/var/lib/ceph-drills/test-sandbox"),
    prefix=os.environ.get("DRILLS_TEST_SANDBOX_PREFIX", "cdt"),
    subnet=os.environ.get("DRILLS_TEST_SANDBOX_SUBNET", "10.213.9.0/24"),
    # CI time: a silent fault is noticed after 10 s of missed heartbeats instead of the sandbox's 20 s
    # (five drills and two tests wait it out); the drills' detection limits are upper bounds, and the
    # tests that time detection read the grace from the cluster.
    extra_conf={"osd_heartbeat_grace": os.environ.get("DRILLS_TEST_SANDBOX_GRACE", "10")},
    # CI time: 16 PGs per pool instead of 32 peer, recover and deep-scrub (every drill ends with one) sooner
    pool_pgs=int(os.environ.get("DRILLS_TEST_SANDBOX_PGS", "16")),
)


@pytest.fixture(scope="session")
def sandbox_spec() -> SandboxSpec:
    return TEST_SANDBOX


@pytest.fixture(scope="session")
def sandbox(sandbox_spec: SandboxSpec) -> Iterator[bootstrap.UpResult]:
    result = bootstrap.up(sandbox_spec, log=lambda m: print(f"sandbox: {m}"))
    try:
        yield result
    finally:
        bootstrap.down(sandbox_spec, log=lambda m: None)


@pytest.fixture
def sandbox_target(sandbox: bootstrap.UpResult, sandbox_spec: SandboxSpec) -> Target:
    # Read fresh each time: a test may have rebuilt the sandbox (new fsid).
    return load_target(sandbox_spec.target_path)


@pytest.fixture
def sandbox_cluster(sandbox_target: Target) -> Iterator[CephCluster]:
    with CephCluster(sandbox_target) as c:
        yield c


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 (its own host and client keys) for the module; skipped where sshd is absent."""
    missing = Sshd.available()
    if missing:
        pytest.skip(missing)
    with Sshd(tmp_path_factory.mktemp("sshd")) as d:
        yield d
