"""The pytest plugin (entry point `pytest11: ceph_drills`): options, fixtures and the verdict for drills.

An installed harness gives any pytest run `--target`, `--report-dir`, `--run-id`,
`--thresholds`, `--skip-destructive` and the fixtures `drill_target`, `cluster`, `run_dir`,
`timeline`.  A session that collects drills (modules with a DRILL name) is admitted once
before the first drill (drills/admission.py), records pytest's outcome of every test, makes
sure every drill leaves a result whatever happens, and ends with one verdict
(drills/verdict.py) that sets the exit code and every output of the run.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest

from drills import __version__
from drills.admission import Refused, admit, plan_drills, skip_destructive_requested
from drills.cluster import CephCluster, ClusterError, WaitTimeout
from drills.drill import DrillRecorder, findings_text
from drills.faults.errors import DrillSignal
from drills.faults.guard import GuardRefused
from drills.invariants import evidence_for
from drills.report.results import DrillResult, drill_results_path, write_drill_result
from drills.verdict import INTERRUPTED_FILE, REFUSED_FILE, OutcomeLog, RunVerdict, TestOutcome, run_verdict, write_test_outcomes
from drills.faults.session import heal_pending
from drills.faults.ledger import FaultLedger
from drills.hostaccess import HostAccess
from drills.runconfig import new_run_id
from drills.sandbox.spec import default_target_path
from drills.target import Target, TargetError, load_target
from drills.telemetry.samplers import Sampler
from drills.thresholds import Thresholds, ThresholdsError, load_thresholds
from drills.timeline import Timeline
from drills.workloads.reaper import WorkloadProcesses

# Each room's fixtures live with the room; the core ones (target, cluster, run directory, timeline,
# thresholds, the drill's recorder, its image) are below.
pytest_plugins = ["drills.telemetry.fixtures", "drills.preflight.fixtures", "drills.faults.fixtures"]

RUN_DIR_KEY = pytest.StashKey[Path]()
OUTCOMES_KEY = pytest.StashKey["OutcomeLog"]()
VERDICT_KEY = pytest.StashKey["RunVerdict"]()
SKIPS_KEY = pytest.StashKey[dict]()
RECORDER_KEY = pytest.StashKey[DrillRecorder]()
STOP_SIGNAL_KEY = pytest.StashKey[int]()  # SIGTERM/SIGHUP that stopped the run
IN_TEST_KEY = pytest.StashKey[list]()  # [True] while a drill's setup, call or teardown runs

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
HARNESS_LOG = "harness-errors.log"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("ceph-drills")
    g.addoption("--target", default=None, help="target TOML file (default: $DRILL_TARGET or the sandbox's)")
    g.addoption("--report-dir", default="reports", help="where run directories are written (default ./reports)")
    g.addoption("--run-id", default=None, help="run id (default: a UTC timestamp)")
    g.addoption("--thresholds", default=None, help="thresholds TOML laid over the shipped defaults key by key")
    g.addoption("--skip-destructive", action="store_true", default=False,
                help="on a target without destructive = true, skip the drills that inject faults instead of refusing the run")


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
def drill_cluster(drill_target: Target) -> Iterator[CephCluster]:
    try:
        c = CephCluster(drill_target).connect()
    except ClusterError as e:
        raise pytest.UsageError(str(e)) from None
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def drill_run_dir(pytestconfig: pytest.Config, drill_target: Target) -> Path:
    """This run's directory under --report-dir; its timeline and report go here."""
    return _ensure_run_dir(pytestconfig)


def _ensure_run_dir(config: pytest.Config) -> Path:
    d = config.stash.get(RUN_DIR_KEY, None)
    if d is None:
        base = Path(config.getoption("--report-dir"))
        d = base / (config.getoption("--run-id") or new_run_id())
        d.mkdir(parents=True, exist_ok=True)
        config.stash[RUN_DIR_KEY] = d
    return d


@pytest.fixture(scope="session")
def drill_timeline(drill_run_dir: Path, drill_target: Target, drill_cluster: CephCluster, pytestconfig: pytest.Config) -> Iterator[Timeline]:
    tl = Timeline(drill_run_dir)
    try:
        versions = drill_cluster.versions()
    except ClusterError:
        versions = {}
    tl.write_meta(
        run_id=drill_run_dir.name,
        harness_version=__version__,
        started=time.time(),
        ceph_version=_ceph_version(versions),
        runner_host=socket.gethostname(),
        target=_describe_target(drill_target),
        ceph_versions=versions,
        thresholds=pytestconfig.getoption("--thresholds") or "shipped defaults",
        suite=os.environ.get("DRILL_SUITE", ""),
        pace=os.environ.get("DRILL_PACE", "smoke"),
    )
    from drills.runconfig import RunConfigError, write_resolved_config
    from drills.scenario import current_pace

    try:  # what this run used, after layering: for the report, the history and --rerun-failed
        write_resolved_config(drill_run_dir, load_thresholds(pytestconfig.getoption("--thresholds")),
                              os.environ.get("DRILL_SUITE", ""), current_pace(), dict(os.environ),
                              {"ceph": _ceph_version(versions), "ceph_versions": versions, "harness": __version__})
    except (RunConfigError, ValueError, ThresholdsError) as e:
        raise pytest.UsageError(str(e)) from None
    annotator = None
    from drills.notify import FaultAnnotator, NotifyConfig, NotifyConfigError

    try:
        notify = NotifyConfig.from_env()
    except NotifyConfigError as e:
        raise pytest.UsageError(str(e)) from None
    if notify.grafana_url:
        annotator = FaultAnnotator(notify, drill_run_dir).start()
    try:
        yield tl
    finally:
        if annotator is not None:
            annotator.stop()  # posts the faults that healed last; never raises
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
def drill_thresholds(pytestconfig: pytest.Config) -> Thresholds:
    try:
        return load_thresholds(pytestconfig.getoption("--thresholds"))
    except ThresholdsError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def drill_regression_rules(pytestconfig: pytest.Config) -> list:
    """The [regression] rules of the defaults and the --thresholds file (drills/history/regression.py)."""
    from drills.history.regression import RegressionRulesError, load_regression_rules

    try:
        return load_regression_rules(pytestconfig.getoption("--thresholds"))
    except RegressionRulesError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def drill_host_access(drill_target: Target) -> Iterator[HostAccess]:
    """One connection per host for the session: the fault backends, the samplers, preflight and the
    evidence's OOM counters all run their host commands through it (drills/hostaccess.py)."""
    with HostAccess(drill_target) as access:
        yield access


@pytest.fixture
def drill(request: pytest.FixtureRequest, drill_timeline: Timeline, drill_thresholds: Thresholds, drill_run_dir: Path,
          drill_samplers: list[Sampler]) -> Iterator[DrillRecorder]:
    """The drill's recorder, named by the module's DRILL (thresholds section) or the test's name."""
    name = getattr(request.module, "DRILL", request.node.name)
    recorder = DrillRecorder(name, drill_timeline, drill_thresholds, drill_run_dir,
                             regression_rules=request.getfixturevalue("drill_regression_rules"))
    drill_cluster = request.getfixturevalue("drill_cluster")
    target = request.getfixturevalue("drill_target")
    recorder.evidence = evidence_for(drill_cluster, target, drill_run_dir.name, timeline=drill_timeline, drill=name,
                                     allowed_health=drill_thresholds.health_allowed(name),
                                     host_access=request.getfixturevalue("drill_host_access"))
    request.node.stash[RECORDER_KEY] = recorder  # the plugin finishes it if the drill cannot
    try:
        yield recorder
    finally:
        recorder.evidence.close()  # a drill that never judged itself still unsubscribes from the log


@pytest.fixture
def drill_image(drill_cluster: CephCluster, drill_target: Target) -> Iterator[str]:
    """A fresh 256 MiB RBD image for the drill's fio job, removed afterwards."""
    with drill_cluster.scratch_image(drill_target.cluster.rbd_pool, 256 << 20, "drill") as name:
        yield name


def pytest_sessionstart(session: pytest.Session) -> None:
    # Bad thresholds are a set-up error before anything runs (exit 2 from `drill run`).
    path = session.config.getoption("--thresholds", None)
    if path is not None:
        from drills.history.regression import RegressionRulesError, load_regression_rules

        try:
            load_thresholds(path)
            load_regression_rules(path)
        except (ThresholdsError, RegressionRulesError) as e:
            raise pytest.UsageError(str(e)) from None


# --- SIGTERM / SIGHUP stop the whole run (a nightly timer's `systemctl stop`), not just the drill in hand --


def _stop_run(session: pytest.Session, signum: int) -> None:
    session.config.stash[STOP_SIGNAL_KEY] = signum
    session.shouldstop = f"stopped by {signal.Signals(signum).name}"  # pytest runs no further drill


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Any:
    """While drills run, SIGTERM and SIGHUP end the run: the drill in hand gets DrillSignal (its fault
    session heals on the way out, as it does for a signal while faults are armed), no further drill
    starts, and the report is written; `drill run` exits 128 + the signal. A fault session's own handler
    takes over while faults are armed and raises DrillSignal itself (see pytest_runtest_makereport)."""
    if not _drill_items(list(session.items)) or threading.current_thread() is not threading.main_thread():
        return (yield)
    in_test = session.config.stash.setdefault(IN_TEST_KEY, [False])

    def on_signal(signum: int, frame: object) -> None:
        _stop_run(session, signum)
        if in_test[0]:  # inside a runtest phase pytest reports the exception; elsewhere it must not fly
            raise DrillSignal(signum)

    previous = {s: signal.signal(s, on_signal) for s in _STOP_SIGNALS}
    try:
        return (yield)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    in_test = item.config.stash.get(IN_TEST_KEY, None)
    if in_test is None or item.session.shouldstop:
        return (yield)
    in_test[0] = True
    try:
        return (yield)
    finally:
        in_test[0] = False


def heal_leftovers(config: pytest.Config, target: Target) -> None:
    """A session that drills a target first stops the clients and undoes the faults a crashed run left
    behind on it, and says so."""
    reaped = WorkloadProcesses(target.state_dir).reap()
    if reaped.stopped or reaped.failed:
        capture = config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            config.get_terminal_writer().line(f"ceph-drills: {reaped.summary()}", yellow=True)
    if not reaped.ok:
        raise pytest.UsageError(f"workloads of an earlier run on {target.path} could not be stopped: {reaped.summary()}")
    pending = FaultLedger(target.state_dir).pending()
    if not pending:
        return
    with HostAccess(target) as access:
        report = heal_pending(target, host_access=access)
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # said out loud, not into a test's captured output
        config.get_terminal_writer().line(
            f"ceph-drills: healed leftovers of an earlier run on {target.cluster.name}: {report.summary()}", yellow=True)
    if not report.ok:
        raise pytest.UsageError(f"faults from an earlier run could not be undone on {target.path}:\n{report.summary()}")


# --- admission: once, after collection, before the first drill -----------------------------------


def _drill_items(items: list[pytest.Item]) -> list[pytest.Item]:
    return [i for i in items if isinstance(i, pytest.Function) and hasattr(i.module, "DRILL")]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[OUTCOMES_KEY] = OutcomeLog()
    config.stash[SKIPS_KEY] = {}


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: admit only the drills that will run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse the whole run before anything runs (exit 2, one line), or mark the drills to skip."""
    drill_items = _drill_items(items)
    if not drill_items or config.getoption("--collect-only"):
        return
    path = config.getoption("--target") or default_target_path()
    try:
        target = load_target(path)
    except TargetError as e:
        _refuse(config, str(e))
    modules = list({i.module.__name__: i.module for i in drill_items}.values())
    try:
        plan = plan_drills(modules, target)
        try:
            cluster = CephCluster(target).connect()
        except ClusterError as e:
            raise Refused(str(e)) from None
        try:
            skips = admit(target, cluster, plan, skip_destructive_requested(config))
        finally:
            cluster.close()
    except Refused as e:
        _refuse(config, str(e))
    config.stash[SKIPS_KEY] = skips
    from drills.progress import register_progress

    register_progress(config, lambda: config.stash.get(RUN_DIR_KEY, None))
    for item in drill_items:
        reason = skips.get(item.module.DRILL)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _refuse(config: pytest.Config, reason: str) -> None:
    """The run directory, if one was asked for, says "refused" and why; no drill report is made."""
    if config.getoption("--run-id"):
        from drills.report.summary import write_refused

        write_refused(_ensure_run_dir(config), reason)
    raise pytest.UsageError(f"refused: {reason}")


# --- outcomes: every test recorded, every drill left with a result ---------------------------------


def _classify(excinfo: pytest.ExceptionInfo[BaseException] | None) -> str:
    if excinfo is None:
        return "pass"
    from drills.scenario import DrillAborted

    if excinfo.errisinstance((DrillAborted, WaitTimeout, DrillSignal)):
        return "stop"  # a stop condition, or SIGTERM/SIGHUP stopping the run
    if excinfo.errisinstance(GuardRefused):
        return "refused"
    if excinfo.errisinstance((AssertionError, pytest.fail.Exception)):
        return "check"
    if excinfo.errisinstance(pytest.skip.Exception):
        return "skip"
    return "harness"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    config = item.config
    drill = getattr(getattr(item, "module", None), "DRILL", None)
    run_dir = config.stash.get(RUN_DIR_KEY, None)
    if drill is None and run_dir is None:
        return rep  # not a drill, not a drill run: another project's test (or ours), left as pytest made it
    kind = _classify(call.excinfo)
    recorder = item.stash.get(RECORDER_KEY, None)
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, DrillSignal) and exc.signum in _STOP_SIGNALS:
        _stop_run(item.session, exc.signum)
    message = ""
    if rep.skipped:
        kind = "skip"
        message = str(rep.longrepr[2]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr or "")
        if drill and rep.when in ("setup", "call"):
            _write_skipped(config, drill, message)
    elif rep.failed:
        if recorder is not None and recorder.result is None and rep.when == "call":
            # The drill ended before it judged itself: judge what it measured, with why it ended.
            if kind == "stop":
                recorder.event("abort", _one_line(str(exc)))
                recorder.finish(stop_condition=_one_line(str(exc)))
            elif kind in ("harness", "refused"):
                recorder.finish(error=f"{type(exc).__name__}: {_one_line(str(exc))}")
        if kind == "harness" or kind == "refused":
            where = _log_harness_error(run_dir, item, call)
            message = f"{type(exc).__name__}: {_one_line(str(exc))}"
            rep.longrepr = f"harness error in {item.nodeid} ({rep.when}): {message}" + (
                f"\n  full traceback: {where}" if where else "")
            if drill and recorder is None and run_dir is not None and not drill_results_path(run_dir, drill).exists():
                now = time.time()
                write_drill_result(run_dir, DrillResult(drill, now, now, error=f"{rep.when}: {message}",
                                                        outcome="error"))
        elif recorder is not None and recorder.result is not None:
            message = _one_line(findings_text(recorder.result).splitlines()[0])
            rep.longrepr = findings_text(recorder.result)
        else:
            message = _one_line(str(exc)) if exc is not None else _one_line(str(rep.longrepr))
    wrote = recorder is not None and recorder.result is not None
    outcome = "skipped" if rep.skipped else "passed" if rep.passed else ("error" if rep.when != "call" else "failed")
    if rep.when == "call" or not rep.passed:
        config.stash[OUTCOMES_KEY].add(TestOutcome(item.nodeid, drill, outcome, kind, message, wrote))
    return rep


def _write_skipped(config: pytest.Config, drill: str, reason: str) -> None:
    run_dir = config.stash.get(RUN_DIR_KEY, None)
    if run_dir is None:
        run_dir = _ensure_run_dir(config)
    if not drill_results_path(run_dir, drill).exists():
        now = time.time()
        write_drill_result(run_dir, DrillResult(drill, now, now, outcome="skipped", error=reason.removeprefix("Skipped: ")))


def _log_harness_error(run_dir: Path | None, item: pytest.Item, call: pytest.CallInfo[None]) -> str:
    """The full traceback goes to the run directory; the terminal gets one line."""
    if run_dir is None or call.excinfo is None:
        return ""
    path = run_dir / HARNESS_LOG
    with path.open("a") as f:
        f.write(f"=== {item.nodeid} ({call.when}) at {dt.datetime.now(dt.timezone.utc).isoformat()}\n")
        f.write("".join(traceback.format_exception(call.excinfo.type, call.excinfo.value, call.excinfo.tb)))
        f.write("\n")
    return str(path)


# --- the verdict ----------------------------------------------------------------------------------------


@pytest.hookimpl(trylast=True)  # after the JUnit writer, whose file the verdict annotates
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    d = config.stash.get(RUN_DIR_KEY, None)
    if d is None and config.getoption("--run-id") and _drill_items(list(session.items)):
        d = _ensure_run_dir(config)
    if d is None:
        return
    from drills.report import render_run, write_prom, write_summary_json

    refused = (d / REFUSED_FILE).exists()
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        stopped = config.stash.get(STOP_SIGNAL_KEY, None)
        how = f"stopped by {signal.Signals(stopped).name}" if stopped else "interrupted (Ctrl-C)"
        (d / INTERRUPTED_FILE).write_text(f"the run was {how}; faults were healed on the way out\n")
    if not refused:
        write_test_outcomes(d, config.stash[OUTCOMES_KEY].all())
    verdict = run_verdict(d)
    config.stash[VERDICT_KEY] = verdict
    write_summary_json(d)
    write_prom(d)
    if not refused:  # no report of drills that never ran
        render_run(d)
    _after_run(config, d)
    _annotate_junit(config, verdict)
    latest = d.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        os.symlink(d.name, latest)
    except OSError:
        pass
    if exitstatus in (0, 1):  # interrupted, internal or usage errors keep pytest's own code
        session.exitstatus = verdict.exit_code


def _after_run(config: pytest.Config, d: Path) -> None:
    """History, notifications and the trends page: none of them may change the run's verdict."""
    from drills.history.regression import RegressionRulesError, load_regression_rules
    from drills.history.session import after_run
    from drills.notify import NotifyConfig, NotifyConfigError
    from drills.report import render_index
    from drills.report.trends import render_trends_index

    try:
        notify: NotifyConfig | None = NotifyConfig.from_env()
    except NotifyConfigError:
        notify = None  # refused at session start already
    for note in after_run(d, notify):
        config.get_terminal_writer().line(f"ceph-drills: {note}", yellow=True)
    try:
        render_trends_index(d.parent, load_regression_rules(config.getoption("--thresholds")))
    except (RegressionRulesError, OSError, ValueError) as e:
        config.get_terminal_writer().line(f"ceph-drills: trends page not drawn ({e}); the plain index instead", yellow=True)
        render_index(d.parent)


def _annotate_junit(config: pytest.Config, verdict: RunVerdict) -> None:
    """The JUnit file says the same as the verdict: its properties carry it, and a drill that ended in a
    harness error is an <error>, not a <failure>."""
    path = config.getoption("xmlpath", None)
    if not path or not os.path.exists(path):
        return
    import xml.etree.ElementTree as ET

    tree = ET.parse(path)
    root = tree.getroot()
    errored = {dv.drill for dv in verdict.drills if dv.outcome == "error"}
    for suite in root.iter("testsuite"):
        props = suite.find("properties")
        if props is None:
            props = ET.Element("properties")
            suite.insert(0, props)
        for name, value in (("ceph_drills_verdict", verdict.outcome), ("ceph_drills_exit_code", str(verdict.exit_code))):
            ET.SubElement(props, "property", name=name, value=value)
        for case in suite.iter("testcase"):
            module = case.get("classname", "").rsplit(".", 1)[-1]
            failure = case.find("failure")
            if failure is not None and module.removeprefix("test_") in errored:
                failure.tag = "error"
    tree.write(path, encoding="utf-8", xml_declaration=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    verdict = config.stash.get(VERDICT_KEY, None)
    if verdict is None:
        return
    tr = terminalreporter
    color = {"passed": {"green": True}, "failed": {"red": True}}.get(verdict.outcome, {"yellow": True})
    tr.section("ceph-drills verdict", **color)
    for dv in verdict.drills:
        tr.write_line(f"{dv.drill:22s} {dv.outcome:8s} {dv.summary}")
    for r in verdict.reasons:
        if not any(r.startswith(f"{dv.drill}:") for dv in verdict.drills):
            tr.write_line(r)
    run_dir = config.stash.get(RUN_DIR_KEY, None)
    tr.write_line(f"verdict: {verdict.outcome} (exit {verdict.exit_code})"
                  + (f", {verdict.warnings} warning(s)" if verdict.warnings else "")
                  + (f"; report {run_dir / 'index.html'}" if run_dir else ""), bold=True, **color)
