"""A full stall: fio prints no report until IO resumes; the timeline still shows it second by second."""

from drills.report.analysis import PhaseSpan, longest_zero_run
from drills.timeline import Timeline, read_series
from drills.workloads.fio import DirectionInterval, FioInterval, write_interval


def interval(t: float, seconds: float, ios: int, p99: float) -> FioInterval:
    d = DirectionInterval(ios=ios, bytes=ios * 4096, iops=ios / seconds, bw_bytes=ios * 4096 / seconds,
                          lat_mean_ms=p99 / 3, lat_p50_ms=p99 / 4, lat_p99_ms=p99, lat_p999_ms=p99)
    return FioInterval(t=t, seconds=seconds, client=None, directions={"write": d})


def test_a_26_second_report_becomes_25_zero_seconds_and_one_burst(tmp_path):
    with Timeline(tmp_path) as tl:
        write_interval(tl, "j", interval(100.0, 1.0, 1000, 40.0))  # normal second
        write_interval(tl, "j", interval(126.0, 26.0, 16, 17000.0))  # the stall
        write_interval(tl, "j", interval(127.0, 1.0, 1200, 30.0))
    iops = [(s.t, s.value) for s in read_series(tmp_path) if s.metric == "fio.write.iops"]
    p99 = [(s.t, s.value) for s in read_series(tmp_path) if s.metric == "fio.write.lat_p99_ms"]
    assert [v for t, v in iops if 100 < t < 126] == [0.0] * 25
    assert dict(iops)[126.0] == 16  # every completion of the stall lands in its last second
    assert sum(v for _, v in iops) == 1000 + 16 + 1200  # no IO invented or lost
    assert all(v is None for t, v in p99 if 100 < t < 126)  # no latency measured: gaps, not zeros
    assert dict(p99)[126.0] == 17000.0
    assert longest_zero_run(iops, PhaseSpan("detection", 100.5, 126.5)) == 25.0


def test_a_normal_interval_is_written_as_is(tmp_path):
    with Timeline(tmp_path) as tl:
        write_interval(tl, "j", interval(50.0, 1.2, 600, 20.0))  # a slightly late report is not a stall
    iops = [(s.t, s.value) for s in read_series(tmp_path) if s.metric == "fio.write.iops"]
    assert iops == [(50.0, 500.0)]
