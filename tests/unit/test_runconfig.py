"""The run's resolved configuration (config.json, resolved-thresholds.toml) and `--rerun-failed`'s plan."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from drills.history.regression import load_regression_rules
from drills.report.results import DrillResult, finish_drill, write_drill_result
from drills.runconfig import (
    CONFIG_FILE,
    RESOLVED_THRESHOLDS_FILE,
    RunConfigError,
    drill_env,
    rerun_plan,
    resolved_thresholds_toml,
    write_resolved_config,
)
from drills.scenario import Pace
from drills.thresholds import Thresholds, load_thresholds, loads_thresholds
from drills.timeline import Timeline
from drills.verdict import TestOutcome, write_test_outcomes

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_800_000_000.0
TARGET = "/etc/ceph-drills/staging.toml"
USER_FILE = """
[rack_power_cut.detection]
detection_time_max = "30s"
[rack_power_cut.after]
rss_after_recovery_ratio_max = { limit = 1.25, severity = "fail" }
[osd_kill.recovery]
time_to_clean_max = { limit = "7min", severity = "warn" }
[oom_chain_reaction.after]
rss_after_heap_release_ratio_max = 3
[rack_power_cut.health]
allow = ["OSD_DOWN", "PG_DEGRADED", "OSD_HOST_DOWN"]

[regression."*".detection]
detection_time = 0.4
[regression.rack_power_cut.recovery]
iops_ratio = { tolerance = 0.3, severity = "fail", window = 10 }
"""
ENV = {"DRILL_PACE": "nightly", "DRILL_PACE_OVERRIDES": "max_inactive=5", "DRILL_RACK": "rack3",
       "DRILL_RESTORE_COUNT": "4", "DRILLS_GRAFANA_TOKEN": "glsa_secret", "DRILL_BMC_PASSWORD": "hunter2",
       "DRILLS_WEBHOOK_URL": "https://hooks.example/T0/B0/secret", "HOME": "/root"}


def _limits(t: Thresholds) -> dict[tuple[str, str, str], tuple[float, str]]:
    return {(e.drill, e.phase, e.key): (e.limit, e.severity) for e in t.entries}


@pytest.fixture
def user_thresholds(tmp_path: Path) -> Path:
    p = tmp_path / "staging-thresholds.toml"
    p.write_text(USER_FILE)
    return p


def test_resolved_thresholds_load_to_the_same_limits(tmp_path: Path, user_thresholds: Path) -> None:
    original = load_thresholds(user_thresholds)
    write_resolved_config(tmp_path, original, "nightly", "nightly", ENV, {})
    back = load_thresholds(tmp_path / RESOLVED_THRESHOLDS_FILE)
    assert _limits(back) == _limits(original)
    assert _limits(back)[("rack_power_cut", "detection", "detection_time_max")] == (30.0, "fail")
    assert _limits(back)[("osd_kill", "recovery", "time_to_clean_max")] == (420.0, "warn")
    assert _limits(back)[("rack_power_cut", "after", "rss_after_recovery_ratio_max")] == (1.25, "fail")
    assert ("oom_chain_reaction", "after", "rss_after_heap_release_ratio_max") in _limits(back)  # not in the defaults
    assert back.health_allowed("rack_power_cut") == frozenset({"OSD_DOWN", "PG_DEGRADED", "OSD_HOST_DOWN"})
    # the file stands on its own: laid over nothing, it already holds every limit
    alone = loads_thresholds((tmp_path / RESOLVED_THRESHOLDS_FILE).read_text(), "resolved")
    assert _limits(alone) == _limits(original)
    # the [regression] rules of the user's file come along
    assert {(r.drill, r.phase, r.metric, r.tolerance, r.severity, r.window) for r in
            load_regression_rules(tmp_path / RESOLVED_THRESHOLDS_FILE)} == \
        {(r.drill, r.phase, r.metric, r.tolerance, r.severity, r.window) for r in load_regression_rules(user_thresholds)}


def test_resolved_file_names_each_limits_source(user_thresholds: Path) -> None:
    text = resolved_thresholds_toml(load_thresholds(user_thresholds))
    assert f'detection_time_max = {{ limit = "30s", severity = "fail" }}  # from {user_thresholds}' in text
    assert 'time_to_active_max = { limit = "90s", severity = "fail" }  # from shipped defaults' in text


def test_a_limit_that_would_not_round_trip_is_refused(tmp_path: Path) -> None:
    """The writer checks its own output: limits that load back different are an error, nothing written."""
    t = load_thresholds()
    i = next(i for i, e in enumerate(t.entries) if e.spec.unit == "s")
    entries = list(t.entries)
    entries[i] = dataclasses.replace(entries[i], written="999s")  # says 999 s, holds the real limit
    broken = Thresholds(t.path, tuple(entries), t.allowed_health)
    with pytest.raises(RunConfigError, match="differ when loaded back"):
        write_resolved_config(tmp_path, broken, "smoke", "smoke", {}, {})
    assert not (tmp_path / RESOLVED_THRESHOLDS_FILE).exists() and not (tmp_path / CONFIG_FILE).exists()


def test_config_json_holds_limits_knobs_pace_versions(tmp_path: Path, user_thresholds: Path) -> None:
    pace = dataclasses.replace(Pace.named("nightly"), max_inactive=5)
    path = write_resolved_config(tmp_path, load_thresholds(user_thresholds), "nightly", pace, ENV,
                                 {"ceph": "16.2.15 pacific", "harness": "0.1.0"}, seed=1234)
    c = json.loads(path.read_text())
    assert c["suite"] == "nightly" and c["seed"] == 1234
    assert c["versions"] == {"ceph": "16.2.15 pacific", "harness": "0.1.0"}
    assert c["env"] == {"DRILL_PACE": "nightly", "DRILL_PACE_OVERRIDES": "max_inactive=5", "DRILL_RACK": "rack3",
                        "DRILL_RESTORE_COUNT": "4"}
    assert "glsa_secret" not in path.read_text() and "hunter2" not in path.read_text()
    assert c["pace"]["name"] == "nightly + max_inactive=5" and c["pace"]["max_inactive"] == 5
    assert c["pace"]["degraded"] == Pace.named("nightly").degraded
    limit = next(x for x in c["thresholds"]["limits"] if (x["drill"], x["phase"], x["key"]) ==
                 ("osd_kill", "recovery", "time_to_clean_max"))
    assert limit == {"drill": "osd_kill", "phase": "recovery", "key": "time_to_clean_max", "limit": 420.0,
                     "written": "7min", "severity": "warn", "source": str(user_thresholds)}
    assert c["thresholds"]["health_allow"]["rack_power_cut"] == ["OSD_DOWN", "OSD_HOST_DOWN", "PG_DEGRADED"]
    assert c["thresholds"]["resolved_file"] == RESOLVED_THRESHOLDS_FILE


def test_drill_env_keeps_knobs_only() -> None:
    assert drill_env({"DRILL_OSD": "osd.3", "DRILLS_PROGRESS": "off", "DRILL_API_KEY": "k", "PATH": "/bin"}) == \
        {"DRILL_OSD": "osd.3"}


# --- rerun_plan ------------------------------------------------------------------------------------


def _run(run_dir: Path, outcomes: dict[str, str], *, config: bool = True, tests: list[TestOutcome] | None = None,
         thresholds: Path | None = None) -> Path:
    """A run directory as the plugin leaves it: run.json, drills/*.json, tests.json, config.json."""
    th = load_thresholds(thresholds)
    with Timeline(run_dir) as tl:
        tl.write_meta(run_id=run_dir.name, started=T0, suite="nightly", pace="nightly",
                      thresholds=str(thresholds) if thresholds else "shipped defaults",
                      target={"path": TARGET, "racks": {}})
    for i, (drill, outcome) in enumerate(outcomes.items()):
        t = T0 + 100 * i
        if outcome == "error":
            result = DrillResult(drill, t, t + 5, error="ClusterError: mon unreachable", outcome="error")
        elif outcome == "skipped":
            result = DrillResult(drill, t, t, outcome="skipped", error="needs 2+ OSDs per host")
        else:
            ok = outcome == "passed"
            result = finish_drill(drill, t, t + 50, {"after": {"lost_writes": 0 if ok else 3}}, th)
            result = dataclasses.replace(result, checks=tuple(c for c in result.checks if c.name == "lost_writes_max"))
        write_drill_result(run_dir, result)
    if tests is None:
        tests = [TestOutcome(f"drills/test_{d}.py::test_{d}", d, {"error": "failed"}.get(o, o), "check", "", True)
                 for d, o in outcomes.items()]
    write_test_outcomes(run_dir, tests)
    if config:
        write_resolved_config(run_dir, th, "nightly", "nightly", {"DRILL_PACE": "nightly", "DRILL_RACK": "rack3"},
                              {"ceph": "16.2.15"})
    return run_dir


def test_rerun_repeats_the_failed_and_errored_drills_only(tmp_path: Path, user_thresholds: Path) -> None:
    run = _run(tmp_path / "r1", {"smoke": "passed", "rack_power_cut": "failed", "osd_kill": "error",
                                 "oom_chain_reaction": "skipped", "hung_osd": "passed"}, thresholds=user_thresholds)
    plan = rerun_plan(run)
    assert plan.modules == ["drills.test_rack_power_cut", "drills.test_osd_kill"]  # in the suite's order
    assert plan.pytest_k == "test_rack_power_cut or test_osd_kill"
    assert plan.drills == ("rack_power_cut", "osd_kill")
    assert plan.target_path == TARGET and plan.suite == "nightly"
    assert plan.env == {"DRILL_PACE": "nightly", "DRILL_RACK": "rack3"}
    assert plan.thresholds_path == str(run / RESOLVED_THRESHOLDS_FILE)
    assert _limits(load_thresholds(plan.thresholds_path)) == _limits(load_thresholds(user_thresholds))


def test_rerun_picks_failed_tests_of_a_drill_module(tmp_path: Path) -> None:
    """smoke's drill passed but one of its plain tests failed: only that test runs again."""
    tests = [TestOutcome("drills/test_smoke.py::test_health_and_io", "smoke", "passed", "pass", "", True),
             TestOutcome("drills/test_smoke.py::test_rados_object_round_trip", "smoke", "failed", "check",
                         "digest differs", False),
             TestOutcome("drills/test_smoke.py::test_drill_image_round_trip[4M]", "smoke", "error", "harness", "x", False),
             TestOutcome("drills/test_rack_power_cut.py::test_rack_power_cut", "rack_power_cut", "passed", "pass", "", True)]
    run = _run(tmp_path / "r2", {"smoke": "passed", "rack_power_cut": "passed"}, tests=tests)
    plan = rerun_plan(run)
    assert plan.modules == ["drills.test_smoke"]
    assert plan.pytest_k == "test_drill_image_round_trip or test_rados_object_round_trip"
    assert plan.drills == ()


def test_rerun_of_a_failed_drill_without_test_outcomes_runs_its_module(tmp_path: Path) -> None:
    run = _run(tmp_path / "r3", {"smoke": "failed"}, tests=[])
    plan = rerun_plan(run)
    assert plan.modules == ["drills.test_smoke"] and plan.pytest_k == "test_smoke"


def test_nothing_to_rerun(tmp_path: Path) -> None:
    run = _run(tmp_path / "r4", {"smoke": "passed", "rack_power_cut": "passed"})
    with pytest.raises(RunConfigError, match="^nothing to rerun: every drill passed in run r4$"):
        rerun_plan(run)


def test_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunConfigError, match="not a run directory"):
        rerun_plan(tmp_path / "empty")
    with pytest.raises(RunConfigError, match="no such directory"):
        rerun_plan(tmp_path / "missing")


def test_an_older_run_without_config_says_what_is_missing(tmp_path: Path, user_thresholds: Path) -> None:
    run = _run(tmp_path / "r5", {"rack_power_cut": "failed"}, config=False, thresholds=user_thresholds)
    with pytest.raises(RunConfigError) as e:
        rerun_plan(run)
    msg = str(e.value)
    assert "\n" not in msg
    assert "no config.json" in msg and "DRILL_* settings are unknown" in msg
    assert f"drill run --target {TARGET} --suite nightly --thresholds {user_thresholds}" in msg


def test_a_refused_run_has_nothing_to_rerun(tmp_path: Path) -> None:
    from drills.runner import write_refused

    write_refused(tmp_path / "r6", "target is not destructive")
    with pytest.raises(RunConfigError, match="refused before any drill ran"):
        rerun_plan(tmp_path / "r6")
