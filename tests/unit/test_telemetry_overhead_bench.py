"""The telemetry benchmark's pairing: ABBA order and the paired interval that judges the IOPS goal."""

from benchmarks.telemetry_overhead import paired_ratio, run_order


def test_rounds_alternate_which_mode_runs_first():
    assert [run_order(r) for r in (1, 2, 3, 4)] == [(False, True), (True, False), (False, True), (True, False)]


def test_a_linear_drift_does_not_land_on_one_mode():
    # IOPS falls 10 per run whatever the mode; telemetry costs nothing: in ABBA order the pairs' errors cancel.
    runs, t = {}, 0
    for r in range(1, 5):
        for telemetry in run_order(r):
            runs[(r, telemetry)] = 1000 - 10 * t
            t += 1
    est, low, high = paired_ratio([(runs[(r, False)], runs[(r, True)]) for r in range(1, 5)])
    assert abs(est - 1.0) < 0.001 and low < 1.0 < high


def test_interval_excludes_the_goal_when_every_round_loses_the_same():
    est, low, high = paired_ratio([(100, 90), (200, 181), (150, 134), (120, 108)])
    assert high < 0.99 and low <= est <= high


def test_one_pair_is_not_an_interval():
    assert paired_ratio([(100, 99)]) is None
    assert paired_ratio([]) is None
