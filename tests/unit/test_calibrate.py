"""`drill calibrate`: limits from measured distributions, loadable, commented, nothing half-written."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from drills.history import cli as history_cli
from drills.history.calibrate import CalibrationError, calibrate, calibrated_limit, toml_value
from drills.history.store import history_path, import_runs
from drills.history.synthetic import FSID, make_run, rack_measurements
from drills.thresholds import evaluate, load_thresholds, loads_thresholds

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_760_000_000.0
DAY = 86400.0


def _runs(tmp: Path, n: int = 3, **kw) -> Path:
    for i in range(n):
        make_run(tmp, f"r{i}", T0 + i * DAY, {"rack_power_cut": rack_measurements(scale=1 + 0.05 * i)}, **kw)
    import_runs(tmp)
    return history_path(tmp)


def test_rule_halving_and_tripling_fail() -> None:
    lo, _ = calibrated_limit("iops_ratio_min", [0.4, 0.42, 0.44])
    assert 0.42 / 2 < lo < 0.4  # the runs pass, half the median fails
    hi, rule = calibrated_limit("p99_latency_max", [2.0, 2.1, 2.2])
    assert 2.2 < hi < 3 * 2.1 and "2.5 x median" in rule
    stall, _ = calibrated_limit("stall_time_max", [0.0, 0.0, 0.0])
    assert stall == 10.0  # a stall-free cluster does not get a 0 s limit (stalls move in re-peering rounds)
    spread, rule = calibrated_limit("iops_ratio_min", [0.1, 0.5, 0.9])
    assert "a halving would not fail" in rule


def test_noisy_runs_get_a_limit_three_log_sds_below_their_mean() -> None:
    # the after-phase IOPS ratios of rack_power_cut's healthy runs on the 2-core sandbox
    runs = [1.85, 0.71, 0.99, 1.43, 1.35, 0.66, 0.82]
    limit, rule = calibrated_limit("iops_ratio_min", runs)
    assert limit < 0.6 * 0.99 and limit < 0.9 * 0.66 and "log-SD of the runs" in rule
    assert 0.574 > limit > 0.25 and "a halving would not fail" in rule  # said, not hidden
    # steady runs: the spread does not bind, a halving still fails
    steady, _ = calibrated_limit("iops_min", [340.0, 350.0, 360.0, 355.0, 345.0])
    assert steady == 0.6 * 350.0
    # two runs cannot give a spread: the pooled one is used, and it binds below 0.9 x lowest
    two, rule = calibrated_limit("iops_ratio_min", [1.16, 1.56])
    assert two < 0.5 * 1.16 and "pooled log-SD 0.32" in rule


def test_a_latency_from_two_runs_gets_the_pooled_latency_spread_upwards() -> None:
    from drills.history.calibrate import POOLED_LATENCY_LOG_SPREAD

    # two quiet runs of a phase's p99 (rack_partition degraded: 82 ms and 225 ms)
    limit, rule = calibrated_limit("p99_latency_max", [0.082, 0.225])
    gm = (0.082 * 0.225) ** 0.5
    assert limit == pytest.approx(gm * math.exp(3 * POOLED_LATENCY_LOG_SPREAD * math.sqrt(1.5)))
    assert limit > 2.5 * 0.1535 and f"pooled log-SD {POOLED_LATENCY_LOG_SPREAD:.2f}" in rule
    # durations that are not latencies keep the 2-run rule without a spread term
    dur, rule = calibrated_limit("time_to_clean_max", [30.0, 40.0])
    assert dur == 2.5 * 35.0 and "log-SD" not in rule


def test_values_round_away_from_the_runs() -> None:
    assert toml_value(0.12345, "s", "max") == '"124ms"'
    assert toml_value(12.34, "s", "max") == '"12.4s"'
    assert toml_value(1.5 * 2**20 + 1, "B", "max") == '"2MiB"'
    assert toml_value(0.2468, "ratio", "min") == "0.246"
    assert toml_value(479.9, "count", "min") == "479"


def test_calibrated_file_loads_and_judges_the_runs_it_came_from(tmp_path: Path) -> None:
    db = _runs(tmp_path)
    cal = calibrate(db, load_thresholds(), fsid=FSID, suite="smoke")
    assert cal.runs == ("r0", "r1", "r2")
    out = tmp_path / "cal.toml"
    out.write_text(cal.text)
    t = load_thresholds(out)  # laid over the defaults, as drill run does
    by = {(c.drill, c.phase, c.key): c for c in cal.limits}
    p99 = by[("rack_power_cut", "recovery", "p99_latency_max")]
    assert p99.calibrated and p99.limit == pytest.approx(2.5 * 2.0) and p99.old_limit == 10.0
    assert "r0, r1, r2" in p99.comment and "median 2 s" in p99.comment
    assert not by[("rack_power_cut", "after", "lost_writes_max")].calibrated
    assert "# max(2.5 x median" in cal.text and "lost_writes_max = 0" in cal.text
    # every run it was calibrated from passes it; a halved IOPS ratio and a tripled p99 fail it
    for i in range(3):
        m = rack_measurements(scale=1 + 0.05 * i)
        m["after"]["lost_writes"] = 0  # finish_drill adds it from the lost-write check
        assert [c.message() for c in evaluate(t, "rack_power_cut", m) if not c.passed] == []
    bad = {c.name + "@" + c.phase for c in evaluate(t, "rack_power_cut", rack_measurements(scale=0.5, p99=1.2))
           if not c.passed}
    assert {"iops_ratio_min@recovery", "p99_latency_max@recovery", "p99_latency_max@degraded"} <= bad


def test_too_few_runs_is_refused(tmp_path: Path) -> None:
    db = _runs(tmp_path, n=2)
    with pytest.raises(CalibrationError, match="only 2 run"):
        calibrate(db, load_thresholds(), fsid=FSID)
    with pytest.raises(CalibrationError, match="no runs of target"):
        calibrate(db, load_thresholds(), fsid="nope")
    with pytest.raises(CalibrationError, match="no runs of suite 'nightly'"):
        calibrate(db, load_thresholds(), fsid=FSID, suite="nightly")


def test_only_the_newest_ceph_version_is_used(tmp_path: Path) -> None:
    _runs(tmp_path, n=3, ceph_version="16.2.14 pacific")
    for i in range(3):
        make_run(tmp_path, f"n{i}", T0 + (10 + i) * DAY, {"rack_power_cut": rack_measurements()},
                 ceph_version="17.2.7 quincy")
    import_runs(tmp_path)
    cal = calibrate(history_path(tmp_path), load_thresholds(), fsid=FSID)
    assert cal.runs == ("n0", "n1", "n2") and "17.2.7 quincy" in cal.text


def _cli(*argv: str) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    history_cli.add_parser(sub)
    args = p.parse_args(list(argv))
    return args.func(args)


def test_cli_writes_the_file_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        make_run(tmp_path, f"r{i}", T0 + i * DAY, {"rack_power_cut": rack_measurements()})
    out = tmp_path / "out" / "cal.toml"
    assert _cli("calibrate", "--fsid", FSID, "--report-dir", str(tmp_path), "-o", str(out)) == 0
    assert "calibrated" in capsys.readouterr().out
    loads_thresholds(out.read_text())
    missing = tmp_path / "none.toml"
    assert _cli("calibrate", "--fsid", FSID, "--report-dir", str(tmp_path), "--min-runs", "9", "-o", str(missing)) == 2
    err = capsys.readouterr().err
    assert err.startswith("drill: error: only 3 run") and err.count("\n") == 1 and not missing.exists()
    assert _cli("history", "list", "--report-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out.count("\n") == 3


def test_run_first_runs_the_suite_then_calibrates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []

    def fake_drill_run(argv: list[str]) -> int:  # stands in for `drill run` (a real one needs a cluster)
        calls.append(argv)
        i = len(calls)
        make_run(tmp_path, f"r{i}", T0 + i * DAY, {"rack_power_cut": rack_measurements()})
        return 1 if i == 2 else 0  # a failed limit still leaves good figures

    p = argparse.ArgumentParser()
    history_cli.add_parser(p.add_subparsers())
    target = tmp_path / "t.toml"
    args = p.parse_args(["calibrate", "--fsid", FSID, "--suite", "smoke", "--run-first", "3", "--report-dir",
                         str(tmp_path), "-o", str(tmp_path / "cal.toml")])
    args.target = str(target)  # --target and --fsid are exclusive on the command line; both set here for the fake
    assert history_cli.run_calibrate(args, drill_run=fake_drill_run) == 2  # the target file does not exist
    assert len(calls) == 3 and calls[0][:4] == ["--target", str(target), "--suite", "smoke"]
    args.target = None
    args.run_first = 0
    assert history_cli.run_calibrate(args) == 0 and (tmp_path / "cal.toml").exists()
    args.target, args.run_first = str(target), 2
    assert history_cli.run_calibrate(args, drill_run=lambda argv: 2) == 2
    assert "drill run exited 2 on run 1 of 2" in capsys.readouterr().err


def test_max_limits_make_room_for_a_wide_spread_and_say_what_it_costs() -> None:
    # worst-second p99 of rack_power_cut's degraded phase over 7 healthy runs (s)
    wide, rule = calibrated_limit("p99_latency_max", [0.135, 0.154, 0.202, 0.207, 0.207, 0.363, 0.417])
    assert wide > 2.5 * 0.207 and "log-SD of the runs 0.42" in rule and "a tripling would not fail" in rule
    steady, rule = calibrated_limit("p99_latency_max", [0.100, 0.105, 0.110, 0.098, 0.102])
    assert steady == 2.5 * 0.102 and "WARNING" not in rule  # a steady figure keeps the tripling rule
    two, rule = calibrated_limit("p99_latency_max", [0.1, 0.2])
    assert two > 2.5 * 0.15 and "pooled log-SD" in rule  # no spread from two runs: the pooled one
