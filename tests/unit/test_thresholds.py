"""Thresholds: strict parsing of the TOML file, and evaluation that lists every breach."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.thresholds import (
    DRILLS,
    PHASES,
    SPECS,
    Check,
    ThresholdsError,
    evaluate,
    failures,
    format_value,
    load_thresholds,
    loads_thresholds,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize("text, seconds", [
    ("45s", 45.0), ("250ms", 0.25), ("10min", 600.0), ("1h", 3600.0), ("1.5s", 1.5), ("2 min", 120.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, size", [
    ("2GiB", 2 * 1024**3), ("512MiB", 512 * 1024**2), ("64KiB", 65536), ("100B", 100), ("1.5 GiB", 1.5 * 1024**3),
])
def test_sizes(text: str, size: float) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["45", "45 sec", "10m", "1.5.2s", "-5s", "s", "", "45S"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_minutes_hint() -> None:
    with pytest.raises(ValueError, match="minutes are 'min'"):
        parse_duration("10m")


@pytest.mark.parametrize("text", ["2GB", "2G", "2gib", "2 GiBs", "2048", "MiB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_shipped_defaults_load_and_cover_every_drill() -> None:
    t = load_thresholds()
    assert {e.drill for e in t.entries} == set(DRILLS)
    for drill in DRILLS:
        assert t.for_drill(drill), drill
    rpc = {(e.phase, e.key): e for e in t.for_drill("rack_power_cut")}
    # calibrated from measured runs (docs/thresholds.md), not placeholders: a detection limit above the
    # heartbeat grace, a baseline floor far above the old "10 IOPS", a halving of the degraded plateau fails
    assert 20.0 < rpc[("detection", "detection_time_max")].limit < 120.0
    assert rpc[("baseline", "iops_min")].limit > 100
    assert rpc[("degraded", "iops_ratio_min")].limit > 0.5
    assert rpc[("after", "lost_writes_max")].limit == 0
    rss = rpc[("after", "rss_after_recovery_ratio_max")]
    assert (rss.limit, rss.severity) == (1.5, "warn")  # a finding with a remedy, not a failure
    assert rpc[("recovery", "model_error_ratio_max")].severity == "warn"
    assert {e.phase for e in t.for_drill("rack_power_cut")} == set(PHASES)
    assert all(e.source == "shipped defaults" for e in t.entries)


GOOD = """
schema_version = 1
[rack_power_cut.detection]
detection_time_max = "45s"
[rack_power_cut.degraded]
iops_ratio_min = 0.2
p99_latency_max = "250ms"
[rack_power_cut.recovery]
time_to_clean_max = "10min"
rss_peak_max = "2GiB"
[rack_power_cut.after]
lost_writes_max = 0
rss_after_recovery_ratio_max = 1.5
"""


@pytest.mark.parametrize("text, message", [
    ('[rack_power_cut.detection]\ndetection_time = "45s"', r"t\.toml: \[rack_power_cut\.detection\] detection_time: unknown key"),
    ('[rack_powercut.detection]\ndetection_time_max = "45s"', r"t\.toml: \[rack_powercut\]: unknown drill"),
    ('[rack_power_cut.detect]\ndetection_time_max = "45s"', r"\[rack_power_cut\.detect\]: unknown phase 'detect'"),
    ('[rack_power_cut.detection]\ndetection_time_max = 45', r"detection_time_max: a duration is a string with a unit"),
    ('[rack_power_cut.detection]\ndetection_time_max = "45"', r"detection_time_max: '45' is not a duration"),
    ('[rack_power_cut.detection]\ndetection_time_max = "45 parsecs"', r"unit 'parsecs' is not one of ms, s, min, h"),
    ('[rack_power_cut.recovery]\nrss_peak_max = "2GB"', r"\[rack_power_cut\.recovery\] rss_peak_max: '2GB': unit 'GB'"),
    ('[rack_power_cut.recovery]\nrss_peak_max = 2147483648', r"rss_peak_max: a size is a string with a unit"),
    ('[rack_power_cut.degraded]\niops_ratio_min = "0.2"', r"iops_ratio_min: expected a plain number like 0.2"),
    ('[rack_power_cut.degraded]\niops_ratio_min = "20%"', r"iops_ratio_min: expected a plain number"),
    ('[rack_power_cut.degraded]\niops_ratio_min = -0.1', r"iops_ratio_min: must be a finite number >= 0"),
    ('[rack_power_cut.degraded]\niops_ratio_min = true', r"iops_ratio_min: expected a plain number"),
    ('[rack_power_cut.degraded]\niops_ratio_min = nan', r"iops_ratio_min: must be a finite number"),
    ('[rack_power_cut.after]\nlost_writes_max = 0.5', r"lost_writes_max: a count is a whole number"),
    ('[rack_power_cut.after]\nlost_writes_max = "0"', r"lost_writes_max: expected a whole number"),
    ('[rack_power_cut.baseline]\ndetection_time_max = "45s"', r"detection_time_max: not a limit of phase 'baseline'"),
    ('rack_power_cut = 3', r"rack_power_cut: expected a table"),
    ('[rack_power_cut]\ndetection = 3', r"\[rack_power_cut\.detection\]: expected a table of limits"),
    ('schema_version = 2', r"schema_version 2 is not supported"),
    ('[rack_power_cut.detection\n', r"t\.toml: not valid TOML"),
])
def test_every_bad_file_is_a_one_line_error_naming_file_table_and_key(text: str, message: str) -> None:
    with pytest.raises(ThresholdsError, match=message) as e:
        loads_thresholds(text, "t.toml")
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"nope\.toml: thresholds file does not exist"):
        load_thresholds(tmp_path / "nope.toml")


def test_unknown_drill_in_evaluate() -> None:
    with pytest.raises(ThresholdsError, match="unknown drill 'rack_power'"):
        evaluate(loads_thresholds(GOOD), "rack_power", {})


def test_every_spec_names_its_direction_and_phases() -> None:
    for key, spec in SPECS.items():
        assert key.endswith(("_max", "_min")) and spec.phases and set(spec.phases) <= set(PHASES)


def test_evaluate_lists_every_breach_with_measured_and_limit() -> None:
    t = loads_thresholds(GOOD)
    measured = {
        "detection": {"detection_time": 50.0},  # over 45 s
        "degraded": {"iops_ratio": 0.1, "p99_latency": 0.2},  # iops under 0.2; latency fine
        "recovery": {"time_to_clean": 900.0, "rss_peak": {"osd.0": 3 * 1024**3, "osd.1": 1024**3, "osd.2": 2.5 * 1024**3}},
        "after": {"lost_writes": 2},  # rss_after_recovery_ratio not measured
    }
    checks = evaluate(t, "rack_power_cut", measured)
    assert len(checks) == 7  # every limit, not stop-at-first
    by = {(c.phase, c.name): c for c in checks}
    bad = {(c.phase, c.name) for c in failures(checks)}
    assert bad == {("detection", "detection_time_max"), ("degraded", "iops_ratio_min"),
                   ("recovery", "time_to_clean_max"), ("recovery", "rss_peak_max"),
                   ("after", "lost_writes_max"), ("after", "rss_after_recovery_ratio_max")}
    det = by[("detection", "detection_time_max")]
    assert (det.measured, det.limit, det.unit, det.margin) == (50.0, 45.0, "s", -5.0)
    assert det.message() == "FAIL detection detection_time_max: measured 50 s, limit <= 45 s, breached by 5 s (11%)"
    iops = by[("degraded", "iops_ratio_min")]
    assert iops.margin == pytest.approx(-0.1) and "breached by 0.1" in iops.message()
    lat = by[("degraded", "p99_latency_max")]
    assert lat.passed and lat.margin == pytest.approx(0.05) and "headroom 50 ms (20%)" in lat.message()
    rss = by[("recovery", "rss_peak_max")]
    assert rss.measured == 3 * 1024**3 and rss.unit == "B"
    assert "worst osd.0" in rss.detail and "osd.0 3.00 GiB" in rss.detail and "osd.2 2.50 GiB" in rss.detail
    assert "osd.1" not in rss.detail.split("over the limit:")[1]
    lost = by[("after", "lost_writes_max")]
    assert "measured 2, limit <= 0, breached by 2" in lost.message()


def test_missing_measurement_fails_and_says_not_measured() -> None:
    checks = evaluate(loads_thresholds(GOOD), "rack_power_cut", {"degraded": {"iops_ratio": None}})
    assert checks and not any(c.passed for c in checks)
    for c in checks:
        assert c.measured is None and c.margin is None and c.detail.startswith("not measured")
        assert "not measured" in c.message()


def test_a_daemon_not_measured_fails_the_per_daemon_check() -> None:
    t = loads_thresholds('[osd_kill.recovery]\nrss_peak_max = "2GiB"')
    (c,) = evaluate(t, "osd_kill", {"recovery": {"rss_peak": {"osd.0": 1024.0, "osd.1": None}}})
    assert not c.passed and c.measured == 1024.0 and "not measured: osd.1" in c.detail


def test_min_limit_at_exact_value_passes_and_nan_is_not_measured() -> None:
    t = loads_thresholds("[smoke.baseline]\niops_min = 10")
    (ok,) = evaluate(t, "smoke", {"baseline": {"iops": 10}})
    assert ok.passed and ok.margin == 0
    (nan,) = evaluate(t, "smoke", {"baseline": {"iops": float("nan")}})
    assert not nan.passed and nan.detail == "not measured"


def test_non_number_measurement_is_an_error() -> None:
    with pytest.raises(ThresholdsError, match="baseline.iops: expected a number"):
        evaluate(loads_thresholds("[smoke.baseline]\niops_min = 10"), "smoke", {"baseline": {"iops": "fast"}})


def test_check_round_trips() -> None:
    c = Check("p99_latency_max", "recovery", 0.4, 0.25, "s", False, -0.15, "")
    assert Check.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("value, unit, text", [
    (0.412, "s", "412 ms"), (45.0, "s", "45 s"), (600.0, "s", "10 min"), (2 * 1024**3, "B", "2.00 GiB"),
    (0.2, "ratio", "0.2"), (3.0, "count", "3"), (None, "s", "—"), (0.0, "s", "0 s"),
])
def test_format_value(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text
