"""Regressions as checks: a figure against the same drill's last passing runs on the same cluster."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from drills.history.regression import (
    RegressionRulesError,
    parse_regression_rules,
    regression_checks,
    rules_for,
)
from drills.history.store import history_path, import_runs
from drills.history.synthetic import FSID, make_run, rack_measurements

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_760_000_000.0
DAY = 86400.0
def rules():
    raw = {"defaults": {"window": 5, "min_runs": 3},
           "rack_power_cut": {"recovery": {"p99_latency": {"tolerance": 0.5},
                                           "iops_ratio": {"tolerance": 0.3, "severity": "fail"}}},
           "*": {"detection": {"detection_time": 0.5}}}
    return parse_regression_rules(raw, "t.toml")


def _history(tmp: Path, n: int = 3, version: str = "16.2.15 pacific") -> Path:
    for i in range(n):
        make_run(tmp, f"r{i}", T0 + i * DAY, {"rack_power_cut": rack_measurements(scale=1.0 + 0.02 * i)},
                 ceph_version=version)
    import_runs(tmp)
    return history_path(tmp)


def _by_name(checks):
    return {(c.phase, c.name): c for c in checks}


def test_parse_rules_defaults_and_direction() -> None:
    rs = rules()
    p99 = next(r for r in rs if r.metric == "p99_latency")
    iops = next(r for r in rs if r.metric == "iops_ratio")
    det = next(r for r in rs if r.metric == "detection_time")
    assert (p99.worse, p99.severity, p99.window, p99.check_name) == ("higher", "warn", 5, "p99_latency_regression_max")
    assert (iops.worse, iops.severity, iops.check_name) == ("lower", "fail", "iops_ratio_regression_min")
    assert det.drill == "*" and det.tolerance == 0.5
    assert {r.metric for r in rules_for(rs, "osd_kill")} == {"detection_time"}


@pytest.mark.parametrize("raw, message", [
    ({"rack_power_cutt": {}}, r"\[regression.rack_power_cutt\]: unknown drill"),
    ({"osd_kill": {"recovry": {}}}, r"unknown phase 'recovry'"),
    ({"osd_kill": {"recovery": {"p99_latncy": 0.5}}}, r"p99_latncy: unknown metric"),
    ({"osd_kill": {"recovery": {"p99_latency": {"tolerance": -1}}}}, r"tolerance: expected a number >= 0"),
    ({"osd_kill": {"recovery": {"p99_latency": {"worse": "up"}}}}, r"worse: expected \"higher\" or \"lower\""),
    ({"osd_kill": {"recovery": {"p99_latency": {"severity": "error"}}}}, r"severity: expected"),
    ({"osd_kill": {"recovery": {"p99_latency": {"windw": 3}}}}, r"windw: unknown key"),
    ({"defaults": {"window": 0}}, r"defaults\] window: expected a whole number"),
])
def test_bad_rules_are_one_line_errors(raw, message) -> None:
    with pytest.raises(RegressionRulesError, match=message) as e:
        parse_regression_rules(raw, "t.toml")
    assert "\n" not in str(e.value) and str(e.value).startswith("t.toml: ")


def test_first_run_says_no_baseline_yet(tmp_path: Path) -> None:
    checks = regression_checks(history_path(tmp_path), "rack_power_cut", rack_measurements(), FSID,
                               "16.2.15 pacific", rules())
    assert len(checks) == 3
    for c in checks:
        assert c.measured is None and not c.passed and c.severity == "warn" and c.source == "regression"
        assert c.detail.startswith("no baseline yet: 0 of 3") and math.isnan(c.limit)


def test_same_figures_pass_with_baseline_named(tmp_path: Path) -> None:
    db = _history(tmp_path)
    checks = _by_name(regression_checks(db, "rack_power_cut", rack_measurements(scale=1.01), FSID,
                                        "16.2.15 pacific", rules()))
    c = checks[("recovery", "iops_ratio_regression_min")]
    assert c.passed and c.measured == pytest.approx(0.404)
    assert "r2, r1, r0" in c.detail and "baseline median" in c.detail
    assert c.limit == pytest.approx(0.408 * 0.7)  # median x (1 - tolerance), spread is small


def test_halved_iops_and_tripled_p99_are_regressions(tmp_path: Path) -> None:
    db = _history(tmp_path)
    checks = _by_name(regression_checks(db, "rack_power_cut", rack_measurements(scale=0.5, p99=1.2), FSID,
                                        "16.2.15 pacific", rules()))
    iops = checks[("recovery", "iops_ratio_regression_min")]
    p99 = checks[("recovery", "p99_latency_regression_max")]
    assert not iops.passed and iops.severity == "fail" and iops.margin < 0 and "regression (-51% vs median)" in iops.detail
    assert not p99.passed and p99.severity == "warn" and "+200%" in p99.detail
    assert checks[("detection", "detection_time_regression_max")].passed


def test_only_passing_runs_on_the_same_target_count(tmp_path: Path) -> None:
    _history(tmp_path)
    # a failed run and another cluster's run with very different figures must not move the baseline
    make_run(tmp_path, "bad", T0 + 5 * DAY, {"rack_power_cut": rack_measurements(scale=0.1)},
             outcome={"rack_power_cut": "failed"})
    make_run(tmp_path, "other", T0 + 6 * DAY, {"rack_power_cut": rack_measurements(scale=0.1)}, fsid="other-fsid")
    db = history_path(tmp_path)
    import_runs(tmp_path)
    c = _by_name(regression_checks(db, "rack_power_cut", rack_measurements(), FSID, "16.2.15 pacific",
                                   rules()))[("recovery", "iops_ratio_regression_min")]
    assert "bad" not in c.detail and "other" not in c.detail and c.passed


def test_a_ceph_upgrade_starts_a_new_baseline(tmp_path: Path) -> None:
    db = _history(tmp_path)
    checks = regression_checks(db, "rack_power_cut", rack_measurements(scale=0.5), FSID, "17.2.7 quincy", rules())
    assert all(c.measured is None and c.severity == "warn" for c in checks)
    assert all(c.detail.startswith("new baseline (Ceph 16.2.15 pacific -> 17.2.7 quincy)") for c in checks)


def test_the_run_itself_is_not_its_own_baseline(tmp_path: Path) -> None:
    db = _history(tmp_path, n=3)
    checks = regression_checks(db, "rack_power_cut", rack_measurements(), FSID, "16.2.15 pacific", rules(),
                               run_id="r2")
    assert all("no baseline yet: 2 of 3" in c.detail for c in checks)


def test_not_measured_is_not_a_pass(tmp_path: Path) -> None:
    db = _history(tmp_path)
    m = rack_measurements()
    m["recovery"]["p99_latency"] = None
    c = _by_name(regression_checks(db, "rack_power_cut", m, FSID, "16.2.15 pacific", rules()))[
        ("recovery", "p99_latency_regression_max")]
    assert c.measured is None and not c.passed and c.detail.startswith("not measured")


def test_prom_lines_carry_figures_and_regression_flags(tmp_path: Path) -> None:
    from drills.history.prom import history_prom_lines

    db = _history(tmp_path)
    slow = rack_measurements(scale=0.5, p99=1.2)
    checks = regression_checks(db, "rack_power_cut", slow, FSID, "16.2.15 pacific", rules())
    run = make_run(tmp_path, "slow", T0 + 9 * DAY, {"rack_power_cut": slow}, extra_checks={"rack_power_cut": checks})
    text = "\n".join(history_prom_lines(run))
    assert 'ceph_drills_phase_figure{drill="rack_power_cut",phase="recovery",figure="p99_latency",unit="s"} 6.0' in text
    assert 'figure="rss_peak",unit="B",subject="osd.1"} 671088640.0' in text
    assert 'ceph_drills_regression{drill="rack_power_cut",phase="recovery",figure="iops_ratio"} 1' in text
    assert 'ceph_drills_regression{drill="rack_power_cut",phase="detection",figure="detection_time"} 0' in text
    assert 'ceph_drills_regression_baseline_missing{drill="rack_power_cut",phase="recovery",figure="p99_latency"} 0' in text
    assert text.count("# TYPE ceph_drills_regression gauge") == 1
    first = make_run(tmp_path / "new", "first", T0, {"rack_power_cut": slow}, extra_checks={"rack_power_cut": regression_checks(
        None, "rack_power_cut", slow, FSID, "16.2.15 pacific", rules())})
    text = "\n".join(history_prom_lines(first))
    assert "ceph_drills_regression{" not in text
    assert len(re.findall(r"^ceph_drills_regression_baseline_missing\{.*\} 1$", text, re.M)) == 3


def test_in_run_helper_reads_target_and_version_from_run_json(tmp_path: Path) -> None:
    from drills.history.regression import regression_checks_in_run

    _history(tmp_path)
    run = make_run(tmp_path, "now", T0 + 9 * DAY, {"rack_power_cut": rack_measurements()})
    checks = regression_checks_in_run(run, "rack_power_cut", rack_measurements(scale=0.5), rules())
    c = _by_name(checks)[("recovery", "iops_ratio_regression_min")]
    assert not c.passed and "r2, r1, r0" in c.detail


def test_rules_from_thresholds_files_overlay_the_defaults(tmp_path: Path) -> None:
    from drills.history.regression import load_regression_rules

    f = tmp_path / "t.toml"
    f.write_text('[rack_power_cut.after]\nlost_writes_max = 0\n\n'
                 '[regression.rack_power_cut.recovery]\np99_latency = { tolerance = 0.2, severity = "fail" }\n')
    rules_ = load_regression_rules(f)
    p99 = [r for r in rules_ if r.metric == "p99_latency" and r.drill == "rack_power_cut"]
    assert len(p99) == 1 and p99[0].tolerance == 0.2 and p99[0].source == str(f)
    f.write_text('[regression.rack_power_cut.recovery]\np99_latency = { tolerance = "lots" }\n')
    with pytest.raises(RegressionRulesError, match=r"t.toml: \[regression.rack_power_cut.recovery\] p99_latency tolerance"):
        load_regression_rules(f)


def test_a_star_rule_skips_drills_that_do_not_measure_the_figure() -> None:
    assert regression_checks(None, "smoke", {"baseline": {"iops": 500.0}}, FSID, "v", rules()) == []
    own = parse_regression_rules({"smoke": {"baseline": {"iops": 0.3}}}, "t.toml")
    (c,) = regression_checks(None, "smoke", {"after": {}}, FSID, "v", own)  # a drill's own rule always applies
    assert c.measured is None and c.detail.startswith("no baseline yet")
