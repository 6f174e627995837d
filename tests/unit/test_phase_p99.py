"""A phase's p99 is the p99 of every write that completed in it (fio's interval histograms merged)."""

from __future__ import annotations

from pathlib import Path

from drills.report.analysis import LAT_HIST, Window, measure_phases, phase_p99_from_histograms
from drills.timeline import Event, Histogram, Sample, Timeline, read_histograms

MS = 1_000_000  # ns


def _phases(t0: float) -> list[Event]:
    return [Event(t0, "phase", "baseline"), Event(t0 + 10, "phase", "degraded"), Event(t0 + 20, "phase", "end")]


def _second(t: float, fast: int, slow: int = 0, slow_ms: int = 900) -> tuple[list[Sample], Histogram]:
    bins = {5 * MS: fast, **({slow_ms * MS: slow} if slow else {})}
    ios = fast + slow
    p99 = slow_ms if slow and slow / ios > 0.01 else 5
    return ([Sample(t, "fio.write.iops", float(ios)), Sample(t, "fio.write.lat_p99_ms", float(p99))],
            Histogram(t, LAT_HIST, bins, {"job": "w"}))


def _run(seconds: list[tuple[float, int, int]]) -> tuple[list[Sample], list[Histogram]]:
    samples, hists = [], []
    for t, fast, slow in seconds:
        s, h = _second(t, fast, slow)
        samples += s
        hists.append(h)
    return samples, hists


def test_one_slow_second_does_not_make_a_phase_p99_but_a_slow_plateau_does() -> None:
    t0 = 1000.0
    # baseline: 10 s of 400 fast writes; degraded: one second where 20 of 420 writes took 900 ms
    secs = [(t0 + i + 0.5, 400, 0) for i in range(10)] + [(t0 + 10.5, 400, 20)] + \
           [(t0 + 10 + i + 0.5, 400, 0) for i in range(1, 10)]
    samples, hists = _run(secs)
    m = measure_phases(samples, _phases(t0), Window(t0, t0 + 20), hists)
    assert m["degraded"]["p99_latency"] == 0.005  # 20 of 4020 writes are slow: under 1 %
    old = measure_phases(samples, _phases(t0), Window(t0, t0 + 20))  # without histograms: the worst second
    assert old["degraded"]["p99_latency"] == 0.9
    # a plateau where 5 % of every second's writes are slow: the phase p99 says so
    secs = [(t0 + i + 0.5, 400, 0) for i in range(10)] + [(t0 + 10 + i + 0.5, 380, 20) for i in range(10)]
    samples, hists = _run(secs)
    m = measure_phases(samples, _phases(t0), Window(t0, t0 + 20), hists)
    assert m["degraded"]["p99_latency"] == 0.9
    assert m["degraded"]["p99_latency_ratio"] == 0.9 / 0.005


def test_the_slowest_job_is_what_a_user_sees_and_no_histogram_is_not_measured() -> None:
    span = Window(0, 10)
    fast = Histogram(1.0, LAT_HIST, {5 * MS: 1000}, {"job": "a"})
    slow = Histogram(1.0, LAT_HIST, {50 * MS: 100}, {"job": "b"})
    assert phase_p99_from_histograms([fast, slow], span) == 0.05
    assert phase_p99_from_histograms([fast], Window(2, 3)) is None


def test_histograms_round_trip_through_the_run_directory(tmp_path: Path) -> None:
    with Timeline(tmp_path) as tl:
        tl.histogram(LAT_HIST, {5 * MS: 3, 7 * MS: 1}, t=12.0, job="w")
    (h,) = read_histograms(tmp_path)
    assert h == Histogram(12.0, LAT_HIST, {5 * MS: 3, 7 * MS: 1}, {"job": "w"})
    assert read_histograms(tmp_path / "elsewhere") == []
