"""The pytest plugin (entry point `pytest11: ceph_drills`): options and fixtures for drills.

An installed harness gives any pytest run `--target`, `--report-dir`, `--run-id`,
`--thresholds` and the fixtures `drill_target`, `cluster`, `run_dir`, `timeline`.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import socket
from pathlib import Path
from typing import Iterator

import pytest

from drills import __version__
from drills.cluster import CephCluster, ClusterError
from drills.drill import DrillRecorder
from drills.faults.base import FaultSession, heal_pending
from drills.faults.guard import guard_from_cluster
from drills.faults.ledger import FaultLedger
from drills.preflight.gate import PreflightFailed, PreflightGate
from drills.target import Target, TargetError, load_target
from drills.telemetry.samplers import Sampler, default_samplers
from drills.thresholds import Thresholds, ThresholdsError, load_thresholds
from drills.timeline import Timeline

RUN_DIR_KEY = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ceph-drills")
    g.addoption("--target", default=None, help="target TOML file (default: $DRILL_TARGET or the sandbox's)")
    g.addoption("--report-dir", default="reports", help="where run directories are written (default ./reports)")
    g.addoption("--run-id", default=None, help="run id (default: a UTC timestamp)")
    g.addoption("--thresholds", default=None, help="thresholds TOML (default: the shipped one)")


def default_target_path() -> str:
    from drills.cli import default_target_path as d

    return d()


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture(scope="session")
def drill_target(pytestconfig: pytest.Config) -> Target:
    path = pytestconfig.getoption("--target") or default_target_path()
    try:
        target = load_target(path)
    except TargetError as e:
        raise pytest.UsageError(str(e)) from None
    heal_leftovers(pytestconfig, target)  # before the session's first drill touches the target
    return target


@pytest.fixture(scope="session")
def cluster(drill_target: Target) -> Iterator[CephCluster]:
    try:
        c = CephCluster(drill_target).connect()
    except ClusterError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config, drill_target: Target) -> Path:
    """This run's directory under --report-dir; its timeline and report go here."""
    base = Path(pytestconfig.getoption("--report-dir"))
    run_id = pytestconfig.getoption("--run-id") or new_run_id()
    d = base / run_id
    d.mkdir(parents=True, exist_ok=True)
    pytestconfig.stash[RUN_DIR_KEY] = d
    return d


@pytest.fixture(scope="session")
def timeline(run_dir: Path, drill_target: Target, cluster: CephCluster, pytestconfig: pytest.Config) -> Iterator[Timeline]:
    tl = Timeline(run_dir)
    try:
        versions = cluster.versions()
    except ClusterError:
        versions = {}
    tl.write_meta(
        run_id=run_dir.name,
        harness_version=__version__,
        started=time.time(),
        ceph_version=_ceph_version(versions),
        runner_host=socket.gethostname(),
        target=_describe_target(drill_target),
        ceph_versions=versions,
        thresholds=pytestconfig.getoption("--thresholds"),
    )
    try:
        yield tl
    finally:
        tl.write_meta(finished=time.time())
        tl.close()


def _ceph_version(versions: dict) -> str:
    """'16.2.15 (pacific)' from `ceph versions`; several when daemons differ (mid-upgrade)."""
    found: set[str] = set()
    for v in versions.get("overall", {}):
        words = v.split()  # "ceph version 16.2.15 (<sha>) pacific (stable)"
        found.add(f"{words[2]} {words[4]}" if v.startswith("ceph version") and len(words) > 4 else v)
    return ", ".join(sorted(found))


def _describe_target(t: Target) -> dict:
    return {
        "path": t.path,
        "cluster": t.cluster.name,
        "fsid": t.cluster.fsid,
        "deployment": t.cluster.deployment,
        "destructive": t.destructive,
        "racks": {r.name: {h.name: list(h.daemons) for h in r.hosts} for r in t.racks},
        "service_hosts": {h.name: list(h.daemons) for h in t.service_hosts},
    }


@pytest.fixture(scope="session")
def thresholds(pytestconfig: pytest.Config) -> Thresholds:
    try:
        return load_thresholds(pytestconfig.getoption("--thresholds"))
    except ThresholdsError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def samplers(timeline: Timeline, drill_target: Target, cluster: CephCluster) -> Iterator[list[Sampler]]:
    """1 Hz cluster and memory samplers running for the whole session."""
    host_command = None
    ssh = None
    if drill_target.cluster.deployment != "sandbox" and any(h.access.kind == "ssh" for h in drill_target.hosts):
        from drills.faults.backends.ssh import SshBackend

        ssh = SshBackend(drill_target)  # daemon memory on staging hosts is read over SSH
        host_command = lambda host, cmd: ssh.run(host, cmd, check=False).stdout  # noqa: E731
    running = [s.start() for s in default_samplers(timeline, drill_target, cluster, host_command=host_command)]
    try:
        yield running
    finally:
        for s in running:
            s.stop()
        if ssh is not None:
            ssh.close()


@pytest.fixture
def drill(request: pytest.FixtureRequest, timeline: Timeline, thresholds: Thresholds, run_dir: Path, samplers: list[Sampler]) -> DrillRecorder:
    """The drill's recorder, named by the module's DRILL (thresholds section) or the test's name."""
    name = getattr(request.module, "DRILL", request.node.name)
    return DrillRecorder(name, timeline, thresholds, run_dir)


@pytest.fixture(scope="session")
def preflight_gate() -> PreflightGate:
    """Preflight once per target per session (swap, memory per OSD, daemons, clock, MTU)."""
    return PreflightGate()


@pytest.fixture
def faults(drill_target: Target, cluster: CephCluster, timeline: Timeline, run_dir: Path, preflight_gate: PreflightGate) -> Iterator[FaultSession]:
    """A fault session for one test: preflighted, guarded, ledgered, healed at the end whatever happens."""
    try:
        preflight_gate.require(drill_target)  # a failed preflight blocks destructive drills (override: DRILLS_SKIP_PREFLIGHT=1)
    except PreflightFailed as e:
        pytest.fail(str(e), pytrace=False)
    with FaultSession(drill_target, guard=guard_from_cluster(drill_target, cluster), timeline=timeline, run_id=run_dir.name) as s:
        yield s


@pytest.fixture
def drill_image(cluster: CephCluster, drill_target: Target) -> Iterator[str]:
    """A fresh 256 MiB RBD image for the drill's fio job, removed afterwards."""
    with cluster.scratch_image(drill_target.cluster.rbd_pool, 256 << 20, "drill") as name:
        yield name


def pytest_sessionstart(session: pytest.Session) -> None:
    # Bad thresholds are a set-up error before anything runs (exit 2 from `drill run`).
    path = session.config.getoption("--thresholds", None)
    if path is not None:
        try:
            load_thresholds(path)
        except ThresholdsError as e:
            raise pytest.UsageError(str(e)) from None


def heal_leftovers(config: pytest.Config, target: Target) -> None:
    """A session that drills a target first undoes faults a crashed run left armed on it, and says so."""
    pending = FaultLedger(target.state_dir).pending()
    if not pending:
        return
    report = heal_pending(target)
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # said out loud, not into a test's captured output
        config.get_terminal_writer().line(
            f"ceph-drills: healed leftovers of an earlier run on {target.cluster.name}: {report.summary()}", yellow=True)
    if not report.ok:
        raise pytest.UsageError(f"faults from an earlier run could not be undone on {target.path}:\n{report.summary()}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    d = session.config.stash.get(RUN_DIR_KEY, None)
    if d is None:
        return
    from drills.report import render_index, render_run, write_prom, write_summary_json

    write_summary_json(d)
    write_prom(d)
    render_run(d)
    render_index(d.parent)
    latest = d.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        os.symlink(d.name, latest)
    except OSError:
        pass
