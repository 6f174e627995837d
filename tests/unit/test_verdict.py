"""One verdict for a run: drill results and pytest outcomes in, exit code and every output out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drills.drill import findings_text
from drills.invariants import invariant
from drills.report import render_run, write_prom, write_summary_json
from drills.report.results import DrillResult, LostWrites, finish_drill, write_drill_result
from drills.thresholds import (SHIPPED_DEFAULTS, Check, ThresholdsError, evaluate, load_thresholds,
                               loads_thresholds)
from drills.timeline import Timeline
from drills.verdict import TestOutcome, decide, run_verdict, write_test_outcomes

T0 = 1_790_000_000.0


def check(name: str = "iops_min", passed: bool = True, severity: str = "fail") -> Check:
    return Check(name, "baseline", 5.0 if not passed else 50.0, 10.0, "count", passed, -5.0 if not passed else 40.0,
                 severity=severity, source=SHIPPED_DEFAULTS)


def result(drill: str = "smoke", *checks: Check, **kw) -> DrillResult:
    return DrillResult(drill, T0, T0 + 60, checks=tuple(checks), **kw)


def test_all_passed_is_exit_0() -> None:
    v = decide([result("smoke", check()), result("rack_power_cut", check())])
    assert (v.outcome, v.exit_code, v.reasons) == ("passed", 0, ())


def test_a_failed_check_is_exit_1_and_named() -> None:
    v = decide([result("smoke", check()), result("rack_power_cut", check(), check("p99_latency_max", False))])
    assert (v.outcome, v.exit_code) == ("failed", 1)
    assert v.reasons[0].startswith("rack_power_cut: 1 of 2 checks failed: FAIL baseline p99_latency_max")


def test_a_failed_warn_check_is_counted_and_does_not_fail() -> None:
    v = decide([result("smoke", check(), check("rss_after_recovery_ratio_max", False, "warn"))])
    assert (v.outcome, v.exit_code, v.warnings) == ("passed", 0, 1)


def test_a_stop_condition_fails_even_when_every_measured_check_passed() -> None:
    r = result("rack_power_cut", check(), stop_condition="3 unfound objects", phase="degraded")
    assert r.verdict == "failed"
    v = decide([r])
    assert (v.outcome, v.exit_code) == ("failed", 1) and "stopped: 3 unfound objects" in v.reasons[0]
    assert "stop condition: 3 unfound objects" in findings_text(r) and "in phase degraded" in findings_text(r)


def test_a_harness_error_outranks_a_failed_check() -> None:
    v = decide([result("smoke", check("iops_min", False)), result("osd_kill", error="RuntimeError: boom")])
    assert (v.outcome, v.exit_code) == ("error", 2)
    assert any("osd_kill: harness error: RuntimeError: boom" in r for r in v.reasons)
    assert any(r.startswith("smoke: 1 of 1 checks failed") for r in v.reasons)


def test_a_drill_that_judged_nothing_is_an_error_not_a_pass() -> None:
    assert result("smoke").verdict == "error"
    assert decide([result("smoke")]).exit_code == 2


def test_a_failed_test_without_a_result_still_counts() -> None:
    passed = [result("smoke", check())]
    assertion = TestOutcome("drills/test_smoke.py::test_drill_image_round_trip", "smoke", "failed", "check",
                            "RBD image did not read back bit-exact")
    crash = TestOutcome("drills/test_osd_kill.py::test_osd_kill", "osd_kill", "error", "harness", "ClusterError: x")
    assert decide(passed, [assertion]).outcome == "failed"
    assert decide(passed, [assertion, crash]).exit_code == 2
    # a drill test that wrote its result is judged by that result, not twice
    wrote = TestOutcome("drills/test_smoke.py::test_health_and_io", "smoke", "failed", "check", "x", wrote_result=True)
    assert decide(passed, [wrote]).outcome == "passed"


def test_skipped_drills_and_refusals() -> None:
    skipped = result("rack_power_cut", outcome="skipped", error="injects faults and t.toml does not say destructive")
    assert decide([result("smoke", check()), skipped]).outcome == "passed"
    everything_skipped = decide([skipped])
    assert (everything_skipped.outcome, everything_skipped.exit_code) == ("skipped", 2)
    assert decide([], refused="wrong cluster").exit_code == 2
    nothing = decide([])
    assert (nothing.outcome, nothing.exit_code) == ("error", 2)


def test_an_interrupted_run_exits_as_the_signal_that_stopped_it() -> None:
    done = [result("smoke", check())]
    ctrl_c = decide(done, interrupted="the run was interrupted (Ctrl-C); faults were healed on the way out")
    term = decide(done, interrupted="the run was stopped by SIGTERM; faults were healed on the way out")
    hup = decide(done, interrupted="the run was stopped by SIGHUP; faults were healed on the way out")
    assert (ctrl_c.outcome, ctrl_c.exit_code) == ("interrupted", 130)
    assert (term.outcome, term.exit_code) == ("interrupted", 143) and (hup.outcome, hup.exit_code) == ("interrupted", 129)
    assert "stopped by SIGTERM" in term.reasons[0]


def test_invariants_fail_when_not_measured() -> None:
    assert invariant("unfound_objects_max", 0).passed
    assert not invariant("unfound_objects_max", 2).passed
    c = invariant("new_crashes_max", None, "not measured: mgr crash module did not answer")
    assert not c.passed and c.fails_drill and "not measured" in c.message()


# --- thresholds: a user's file overlays the defaults, never drops them -------------------------------------


def test_a_user_file_without_lost_writes_max_keeps_the_default(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('schema_version = 1\n[smoke.baseline]\niops_min = 500\n')
    t = load_thresholds(f)
    by = {(x.drill, x.phase, x.key): x for x in t.entries}
    assert by[("smoke", "after", "lost_writes_max")].source == SHIPPED_DEFAULTS  # still there
    mine = by[("smoke", "baseline", "iops_min")]
    assert (mine.limit, mine.source) == (500, str(f))
    checks = evaluate(t, "smoke", {"after": {"lost_writes": 1}, "baseline": {"iops": 900}})
    lost = next(c for c in checks if c.name == "lost_writes_max")
    assert not lost.passed and lost.fails_drill


def test_severity_is_data(tmp_path: Path) -> None:
    t = loads_thresholds('[rack_power_cut.after]\nrss_after_recovery_ratio_max = { limit = 1.5, severity = "warn" }\n')
    (c,) = evaluate(t, "rack_power_cut", {"after": {"rss_after_recovery_ratio": {"osd.0": 2.0}}})
    assert not c.passed and c.warned and not c.fails_drill and c.message().startswith("WARN")
    with pytest.raises(ThresholdsError, match=r"severity 'loud' is not one of fail, warn"):
        loads_thresholds('[smoke.baseline]\niops_min = { limit = 1, severity = "loud" }\n', "x.toml")
    with pytest.raises(ThresholdsError, match=r"x.toml: \[smoke.baseline\] iops_min: a limit table takes 'limit'"):
        loads_thresholds('[smoke.baseline]\niops_min = { value = 1 }\n', "x.toml")


def test_health_allow_lists_are_data() -> None:
    t = loads_thresholds('[osd_kill.health]\nallow = ["OSD_DOWN", "PG_DEGRADED"]\n')
    assert t.health_allowed("osd_kill") == {"OSD_DOWN", "PG_DEGRADED"}
    with pytest.raises(ThresholdsError, match="health-check codes"):
        loads_thresholds('[osd_kill.health]\nallow = ["osd down"]\n')


# --- every output says the same ----------------------------------------------------------------------------


def test_a_stopped_drill_is_failed_in_summary_prom_and_html(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Timeline(run) as tl:
        tl.write_meta(run_id="run", started=T0)
    t = load_thresholds()
    lost = LostWrites(written=10, acknowledged=10, verified=10, lost=0, method="test")
    write_drill_result(run, finish_drill("smoke", T0, T0 + 30, {"baseline": {"iops": 900, "p99_latency": 0.05,
                                                                               "io_errors": 0, "rss_peak": {"osd.0": 1e8}}},
                                         t, lost_writes=lost))
    write_drill_result(run, finish_drill("rack_power_cut", T0 + 40, T0 + 90, {}, t,
                                         stop_condition="12 PGs inactive for more than 90 s", phase="degraded"))
    write_test_outcomes(run, [])
    v = run_verdict(run)
    assert (v.outcome, v.exit_code) == ("failed", 1)
    summary = json.loads(write_summary_json(run).read_text())
    assert (summary["verdict"], summary["exit_code"]) == ("failed", 1)
    prom = write_prom(run).read_text()
    assert "ceph_drills_run_passed 0" in prom and "ceph_drills_run_exit_code 1" in prom
    assert 'ceph_drills_drill_outcome{drill="rack_power_cut",outcome="failed"} 1' in prom
    html = render_run(run).read_text()
    assert 'class="badge failed">failed' in html and "12 PGs inactive for more than 90 s" in html


# --- admission: refusals before the first drill -------------------------------------------------------------


def test_a_non_destructive_target_refuses_fault_drills_or_skips_them() -> None:
    import dataclasses

    import drills.test_osd_kill as osd_kill
    import drills.test_smoke as smoke
    from drills.admission import Refused, admit, plan_drills
    from drills.target import load_target

    t = dataclasses.replace(load_target(Path(__file__).resolve().parents[2] / "examples" / "staging-target.toml"),
                            destructive=False)
    plan = plan_drills([smoke, osd_kill], t)
    assert [(d.drill, d.destructive) for d in plan] == [("smoke", False), ("osd_kill", True)]
    with pytest.raises(Refused, match=r"does not say destructive = true, and the selected drills osd_kill inject faults.*--skip-destructive"):
        admit(t, None, plan, skip_destructive=False)
    skips = admit(t, None, plan, skip_destructive=True)  # no cluster touched: nothing will be injected
    assert set(skips) == {"osd_kill"} and "destructive = true" in skips["osd_kill"]
    assert admit(t, None, plan[:1], skip_destructive=False) == {}  # smoke alone runs anywhere


def test_drill_run_exits_with_the_verdict_whatever_pytest_returned(tmp_path: Path) -> None:
    from drills.runner import run_exit_code

    # a harness error: the verdict says 2, and pytest (whose exit status the plugin set to it) also says 2,
    # which is pytest's "interrupted": the run must not exit 130
    write_drill_result(tmp_path, result("smoke", error="FixtureLookupError: cluster"))
    write_test_outcomes(tmp_path, [])
    write_summary_json(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["exit_code"] == 2
    assert run_exit_code(2, tmp_path) == 2
    assert run_exit_code(2, tmp_path / "no-verdict") == 130 and run_exit_code(4, tmp_path / "no-verdict") == 2
