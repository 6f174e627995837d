"""fio workload: parsing fio's json+ stream into per-interval figures, and running the real fio binary.

Recorded output comes from short real fio runs (null engine, rate-limited, a few seconds); the
hand-computed cases use small synthetic reports shaped like fio's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from drills.timeline import Timeline, read_events, read_series
from drills.workloads.fio import (FioConfigError, FioError, FioJob, IntervalDeriver, JsonDocumentSplitter,
                                  iter_documents, parse_fio_output, percentile_from_bins, run_job, start_job,
                                  verify_written)

FIO = "/usr/bin/fio"
needs_fio = pytest.mark.skipif(not os.path.exists(FIO), reason="fio not installed")

# fio's own percentile keys for the ones we derive
FIO_PCT_KEYS = {"lat_p50_ms": "50.000000", "lat_p99_ms": "99.000000", "lat_p999_ms": "99.900000"}


@pytest.fixture(scope="module")
def recorded_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real `--output-format=json+ --status-interval=1` stream: 3 s, null engine, 2000 r/s + 1000 w/s."""
    out = tmp_path_factory.mktemp("fio") / "out.json"
    subprocess.run([FIO, "--name=rec", "--ioengine=null", "--rw=randrw", "--bs=4k", "--size=64m",
                    "--runtime=3", "--time_based", "--iodepth=1", "--rate_iops=2000,1000",
                    "--lat_percentiles=1", "--group_reporting", "--eta=never",
                    "--output-format=json+", "--status-interval=1", f"--output={out}"],
                   check=True, timeout=30, capture_output=True)
    return out.read_text()


@needs_fio
def test_recorded_output_is_a_stream_of_cumulative_reports(recorded_output: str) -> None:
    docs = [json.loads(d) for d in iter_documents(recorded_output)]
    assert len(docs) >= 3  # one a second plus the final report
    ios = [d["jobs"][0]["write"]["total_ios"] for d in docs]
    assert ios == sorted(ios)  # cumulative


@needs_fio
def test_interval_iops_add_up_to_the_totals(recorded_output: str) -> None:
    result = parse_fio_output(recorded_output, "rec", directions=("read", "write"))
    final = [json.loads(d) for d in iter_documents(recorded_output)][-1]["jobs"][0]
    for d in ("read", "write"):
        summed = sum(iv.directions[d].iops * iv.seconds for iv in result.intervals)
        assert summed == pytest.approx(final[d]["total_ios"], rel=1e-9)
        assert sum(iv.directions[d].bytes for iv in result.intervals) == final[d]["io_bytes"]
        assert result.totals[d].ios == final[d]["total_ios"]
    assert sum(iv.seconds for iv in result.intervals) == pytest.approx(final["job_runtime"] / 1000.0)
    # whole-second intervals run at the rate limit
    full = [iv for iv in result.intervals if iv.seconds >= 0.8]
    assert full, result.intervals
    for iv in full:
        assert iv.directions["read"].iops == pytest.approx(2000, rel=0.1)
        assert iv.directions["write"].iops == pytest.approx(1000, rel=0.1)
        # io_bytes and total_ios are snapshotted a moment apart by fio: equal only to within an IO or two
        # (rel 0.06: on a loaded machine, load average 30, the gap reached ~47 IOs of ~1000)
        assert iv.directions["write"].bw_bytes == pytest.approx(iv.directions["write"].iops * 4096, rel=0.06)


@needs_fio
def test_percentiles_match_fios_own_where_it_reports_them(recorded_output: str) -> None:
    """The first interval's histogram difference is the first cumulative histogram, and the totals come
    from the final one: for both, fio printed its own percentiles, which we must reproduce exactly."""
    docs = [json.loads(d) for d in iter_documents(recorded_output)]
    result = parse_fio_output(recorded_output, "rec", directions=("read", "write"))
    for d in ("read", "write"):
        first_pct = docs[0]["jobs"][0][d]["lat_ns"]["percentile"]
        final_pct = docs[-1]["jobs"][0][d]["lat_ns"]["percentile"]
        for ours, key in FIO_PCT_KEYS.items():
            assert getattr(result.intervals[0].directions[d], ours) == first_pct[key] / 1e6
            assert getattr(result.totals[d], ours) == final_pct[key] / 1e6
        first_lat, final_lat = docs[0]["jobs"][0][d]["lat_ns"], docs[-1]["jobs"][0][d]["lat_ns"]
        assert result.intervals[0].directions[d].lat_mean_ms == pytest.approx(first_lat["mean"] / 1e6)
        assert result.totals[d].lat_mean_ms == pytest.approx(final_lat["mean"] / 1e6)
        # interval means weighted by their completions (the histogram's count, not `ios`: an IO counted at
        # one boundary may complete after it on a busy machine) give back fio's overall mean
        weighted = sum((iv.directions[d].lat_mean_ms or 0.0) * sum(iv.directions[d].bins.values())
                       for iv in result.intervals)
        assert weighted / final_lat["N"] == pytest.approx(final_lat["mean"] / 1e6, rel=1e-6)


def test_percentile_from_bins_by_hand() -> None:
    assert percentile_from_bins({}, 50) is None
    assert percentile_from_bins({10: 1}, 99.9) == 10
    bins = {1000: 90, 5000: 9, 9000: 1}  # 100 samples
    assert percentile_from_bins(bins, 50) == 1000  # 50 <= 90
    assert percentile_from_bins(bins, 90) == 1000  # 90 reaches 90 exactly
    assert percentile_from_bins(bins, 99) == 5000  # 99 reached at 90+9
    assert percentile_from_bins(bins, 99.9) == 9000  # 99.9 needs the last sample


def _report(job_runtime_ms: int, write_ios: int, write_bins: dict[int, int], read_ios: int = 0,
            timestamp_ms: int | None = None) -> dict:
    """A report shaped like fio's json+ (only the fields the parser reads)."""
    def direction(ios: int, bins: dict[int, int]) -> dict:
        mean = sum(v * n for v, n in bins.items()) / ios if ios else 0.0
        hist = {"N": ios, "mean": mean, "bins": {str(k): v for k, v in bins.items()}}
        return {"total_ios": ios, "io_bytes": ios * 4096, "clat_ns": dict(hist), "lat_ns": dict(hist)}
    return {"fio version": "fio-3.33", "timestamp_ms": timestamp_ms or 1_700_000_000_000 + job_runtime_ms,
            "jobs": [{"jobname": "hand", "job_runtime": job_runtime_ms,
                      "read": direction(read_ios, {100: read_ios} if read_ios else {}),
                      "write": direction(write_ios, write_bins)}]}


def _stream(*reports: dict) -> str:
    # fio's layout: "{" and "}" alone on their lines, interleaved with the odd warning
    return "fio: some warning\n" + "\n".join(json.dumps(r, indent=2) for r in reports) + "\n"


def test_interval_figures_from_histogram_differences_by_hand(tmp_path: Path) -> None:
    r1 = _report(1000, 100, {100: 50, 200: 50})
    # second second: 100 more writes, all slower: diff = {1000: 90, 5000: 9, 9000: 1}
    r2 = _report(2000, 200, {100: 50, 200: 50, 1000: 90, 5000: 9, 9000: 1})
    r3 = _report(3000, 200, {100: 50, 200: 50, 1000: 90, 5000: 9, 9000: 1})  # a stall: nothing completed
    with Timeline(tmp_path) as tl:
        result = parse_fio_output(_stream(r1, r2, r3), "hand", directions=("write",), timeline=tl)
    assert result.notes == ["fio: some warning"]
    iv1, iv2, iv3 = result.intervals
    assert (iv1.seconds, iv1.directions["write"].iops) == (1.0, 100.0)
    assert iv1.directions["write"].lat_p50_ms == 100 / 1e6  # 50 of 100 at 100 ns
    assert iv1.directions["write"].lat_p99_ms == 200 / 1e6
    w2 = iv2.directions["write"]
    assert (w2.ios, w2.iops, w2.bw_bytes) == (100, 100.0, 409600.0)
    assert (w2.lat_p50_ms, w2.lat_p99_ms, w2.lat_p999_ms) == (0.001, 0.005, 0.009)
    # mean of the second interval alone: (90*1000 + 9*5000 + 1*9000) / 100 ns, from the cumulative means
    assert iv1.directions["write"].lat_mean_ms == pytest.approx(150 / 1e6)
    assert w2.lat_mean_ms == pytest.approx(1440 / 1e6)
    w3 = iv3.directions["write"]
    assert (w3.iops, w3.lat_mean_ms, w3.lat_p50_ms, w3.lat_p99_ms, w3.lat_p999_ms) == (0.0, None, None, None, None)
    assert iv2.t == pytest.approx(1_700_000_002.0)

    series = read_series(tmp_path)
    names = {s.metric for s in series}
    assert names == {f"fio.write.{m}" for m in ("iops", "bw_bytes", "lat_mean_ms", "lat_p50_ms", "lat_p99_ms",
                                                "lat_p999_ms")}
    stalled = [s for s in series if s.t == iv3.t]
    assert {s.metric: s.value for s in stalled}["fio.write.lat_p99_ms"] is None  # a gap, not a zero
    assert {s.metric: s.value for s in stalled}["fio.write.iops"] == 0.0
    assert all(s.labels == {"job": "hand"} for s in series)


def test_report_held_back_by_a_stall_is_placed_at_its_sampling_time() -> None:
    # Measured on the sandbox (rbd engine, a host power cut): fio samples job_runtime and the counters,
    # then waits for its job thread, blocked in librbd, before printing; two reports sampled at 2 s and
    # 3 s came out 26 s later. Their time must come from job_runtime, not from timestamp_ms.
    base = 1_700_000_000_000
    r1 = _report(1000, 100, {100: 100}, timestamp_ms=base + 1000)
    r2 = _report(2000, 180, {100: 180}, timestamp_ms=base + 28_000)
    r3 = _report(3000, 196, {100: 180, 9000: 16}, timestamp_ms=base + 28_010)
    r4 = _report(29_000, 700, {100: 684, 9000: 16}, timestamp_ms=base + 29_000)
    result = parse_fio_output(_stream(r1, r2, r3, r4), "hand", directions=("write",))
    assert [round(iv.t - base / 1000, 3) for iv in result.intervals] == [1.0, 2.0, 3.0, 29.0]
    assert [iv.seconds for iv in result.intervals] == [1.0, 1.0, 1.0, 26.0]


def test_numjobs_divides_the_summed_job_runtime() -> None:
    deriver = IntervalDeriver(("write",), numjobs=4)
    deriver.add(_report(4000, 1000, {100: 1000})["jobs"][0], t=1.0)  # 4 clones x 1 s
    iv = deriver.add(_report(8000, 3000, {100: 3000})["jobs"][0], t=2.0)
    assert iv is not None and iv.seconds == 1.0 and iv.directions["write"].iops == 2000.0


def test_counter_reset_starts_a_fresh_base_and_repeats_are_skipped() -> None:
    deriver = IntervalDeriver(("write",))
    deriver.add(_report(1000, 500, {100: 500})["jobs"][0], t=1.0)
    assert deriver.add(_report(1000, 500, {100: 500})["jobs"][0], t=1.0) is None  # no run time added
    # ramp_time over: fio zeroes its stats
    iv = deriver.add(_report(800, 80, {300: 80})["jobs"][0], t=2.0)
    assert iv is not None and iv.directions["write"].ios == 80 and iv.directions["write"].lat_p50_ms == 0.0003


def test_splitter_fed_line_by_line_and_a_torn_report_is_skipped() -> None:
    text = _stream(_report(1000, 10, {100: 10}))
    splitter = JsonDocumentSplitter()
    docs = [d for d in (splitter.feed_line(line)[0] for line in text.splitlines(keepends=True)) if d]
    assert len(docs) == 1 and json.loads(docs[0])["jobs"][0]["jobname"] == "hand"
    torn = "{\n  \"jobs\": [\nfio: pid=1, err=5/file:io_u.c\n}\n" + _stream(_report(1000, 10, {100: 10}))
    result = parse_fio_output(torn, "hand", directions=("write",))
    assert len(result.intervals) == 1
    assert any("unparsable" in n for n in result.notes)


# ---- configuration errors ----

def test_unknown_fields_name_the_workload() -> None:
    with pytest.raises(FioConfigError, match=r"fio workload 'seqw': unknown field\(s\) blocksize, depth"):
        FioJob.from_mapping({"rw": "write", "blocksize": "4k", "depth": 4, "ioengine": "null", "size": "1m"},
                            name="seqw")


@pytest.mark.parametrize("kwargs, message", [
    ({"ioengine": "rbd"}, "rbd engine needs pool, rbdname"),
    ({"ioengine": "null"}, "ioengine=null needs size"),
    ({"ioengine": "psync", "size": "1m"}, "needs filename or directory"),
    ({"ioengine": "null", "size": "1m", "rw": "sideways"}, "rw='sideways'"),
    ({"ioengine": "null", "size": "1m", "iodepth": 0}, "iodepth must be a positive integer"),
    ({"ioengine": "null", "size": "1m", "extra": {"status_interval": 5}}, "extra sets status_interval"),
    ({"ioengine": "null", "size": "1m", "extra": {"buffer_pattern": "md5\n[evil]"}}, "newline or bracket"),
    ({"ioengine": "null", "size": "1m", "extra": {"verify": "md5"}}, "extra sets verify, which"),
    ({"ioengine": "null", "size": "1m", "verify": "pattern"}, "verify='pattern' is not one of"),
    ({"ioengine": "null", "size": "1m", "verify": "crc32c", "rw": "randrw"}, "verify needs rw=write or randwrite"),
    ({"ioengine": "rbd", "pool": "p", "rbdname": "i", "verify": "crc32c"}, "verify needs size"),
    ({"ioengine": "null", "size": "1m", "verify": "crc32c", "bs": "4k-16k"}, "one block size"),
    ({"ioengine": "null", "size": "1m", "verify": "crc32c", "extra": {"norandommap": 1}}, "cannot replay"),
    ({"ioengine": "null", "size": "1m", "verify_only": True}, "verify_only needs verify"),
])
def test_bad_definitions(kwargs: dict, message: str) -> None:
    with pytest.raises(FioConfigError, match=message) as err:
        FioJob(name="w1", **kwargs)
    assert "'w1'" in str(err.value)


def test_rbd_job_file() -> None:
    job = FioJob(name="rbdw", pool="drills", rbdname="img1", clientname="admin", conf="/etc/ceph/x.conf",
                 extra={"rate_iops": 500})
    text = job.job_file_text()
    assert text.startswith("[rbdw]\n")
    for line in ("ioengine=rbd", "pool=drills", "rbdname=img1", "clientname=admin", "invalidate=0",
                 "rate_iops=500", "time_based=1", "group_reporting=1", "lat_percentiles=1"):
        assert line in text.splitlines()
    assert "conf" not in text  # the conf file reaches librados through CEPH_CONF, not the job file


# ---- running the real binary ----

def test_fio_missing() -> None:
    job = FioJob(name="nofio", ioengine="null", size="1m", runtime=1)
    with pytest.raises(FioError, match="^fio not found; install Debian package fio$"):
        run_job(job, fio_binary="fio-not-installed-here")


def test_ceph_conf_reaches_fio_and_stderr_tail_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "fakefio"
    fake.write_text("#!/bin/sh\necho \"CEPH_CONF=$CEPH_CONF\" >&2\necho 'fio: boom' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    job = FioJob(name="envcheck", pool="p", rbdname="i", conf="/tmp/sandbox/ceph.conf", runtime=1)
    with pytest.raises(FioError, match=r"(?s)'envcheck' exited with status 3.*CEPH_CONF=/tmp/sandbox/ceph.conf"
                                       r".*fio: boom"):
        run_job(job, fio_binary=str(fake))


@needs_fio
def test_fio_nonzero_exit_includes_its_stderr() -> None:
    job = FioJob(name="badopt", ioengine="null", size="1m", runtime=1, extra={"no_such_fio_option": 1})
    with pytest.raises(FioError, match=r"(?s)'badopt' exited with status 1.*no_such_fio_option"):
        run_job(job)


@needs_fio
def test_live_run_writes_the_timeline_while_fio_runs_and_stops_early(tmp_path: Path) -> None:
    job = FioJob(name="live", rw="write", ioengine="null", size="1g", runtime=30, iodepth=1,
                 extra={"rate_iops": 500})
    with Timeline(tmp_path) as tl:
        runner = start_job(job, tl)
        deadline = time.monotonic() + 15
        while len(runner.intervals()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.running, "fio should still be running: the stream is parsed incrementally"
        seen_while_running = [s for s in read_series(tmp_path) if s.metric == "fio.write.iops"]
        assert len(seen_while_running) >= 2
        result = runner.stop()
    assert result.stopped and len(result.intervals) >= 2
    assert all(iv.directions["write"].iops == pytest.approx(500, rel=0.15)
               for iv in result.intervals if iv.seconds >= 0.8)
    assert set(result.intervals[0].directions) == {"write"}
    kinds = [(e.kind, e.label) for e in read_events(tmp_path)]
    assert ("workload.start", "fio:live") in kinds and ("workload.stop", "fio:live") in kinds
    assert all(s.labels == {"job": "live"} for s in read_series(tmp_path))


@needs_fio
def test_numjobs_group_reporting_on_the_real_binary() -> None:
    """fio sums job_runtime over a group's clones; intervals must still be ~1 s and IOPS the group's."""
    job = FioJob(name="clones", rw="randwrite", ioengine="null", size="64m", runtime=2, iodepth=1, numjobs=2,
                 extra={"rate_iops": 300})
    result = run_job(job)
    assert sum(iv.seconds for iv in result.intervals) == pytest.approx(2.0, abs=0.05)
    assert all(iv.directions["write"].iops == pytest.approx(600, rel=0.15)
               for iv in result.intervals if iv.seconds >= 0.8)
    assert result.totals["write"].ios == pytest.approx(1200, rel=0.05)


# ---- fio's own verify, read back after the job stopped (real fio on a file; the rbd engine is in
# ---- tests/integration/test_workloads_cluster.py) ----

def _verify_job(tmp_path: Path, name: str, size: str, runtime: int = 2, rate: int = 400) -> FioJob:
    return FioJob(name=name, rw="randwrite", bs="4k", ioengine="psync", filename=str(tmp_path / f"{name}.dat"),
                  size=size, iodepth=1, runtime=runtime, verify="crc32c", extra={"rate_iops": rate})


def _flip_a_written_block(path: Path) -> int:
    data = bytearray(path.read_bytes())
    offset = next(o for o in range(0, len(data), 4096) if data[o:o + 2] == b"\xca\xac")  # fio's header magic
    data[offset + 2000] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset


@needs_fio
def test_verify_reads_back_a_fixed_runtime_job_and_catches_a_flipped_byte(tmp_path: Path) -> None:
    job = _verify_job(tmp_path, "vfix", "8m", runtime=1)  # ~400 of 2048 blocks: the replay must stop there
    assert {"verify=crc32c", "do_verify=0", "verify_state_save=1"} <= set(job.job_file_text().splitlines())
    result = run_job(job)
    assert list(result.verify_state) == ["local-vfix-0-verify.state"]
    with Timeline(tmp_path / "run") as tl:
        clean = verify_written(job, result, tl)
    assert clean.passed and clean.errors == 0 and clean.error == "", clean
    assert clean.written_blocks == result.totals["write"].ios
    assert clean.written_blocks - 1 <= clean.verified_blocks <= clean.written_blocks
    assert clean.verified_bytes == clean.verified_blocks * 4096
    assert "fio verify=crc32c" in clean.method and "read back after it stopped" in clean.method
    [event] = [e for e in read_events(tmp_path / "run") if e.kind == "workload.verify"]
    assert event.data["errors"] == 0 and event.data["verified_blocks"] == clean.verified_blocks

    offset = _flip_a_written_block(tmp_path / "vfix.dat")
    bad = verify_written(job, result)
    assert not bad.passed and bad.measured and bad.errors == 1, bad
    assert any(f"offset {offset}" in line for line in bad.failures), bad.failures


@needs_fio
def test_verify_after_a_time_based_job_stopped_by_signal_over_many_passes(tmp_path: Path) -> None:
    job = _verify_job(tmp_path, "vsig", "64k", runtime=3600)  # 16 blocks, rewritten ~100 times
    runner = start_job(job)
    time.sleep(1.5)
    result = runner.stop()
    assert result.stopped and result.totals["write"].ios > 100
    check = verify_written(job, result)
    assert check.passed and check.written_blocks == check.verified_blocks == 16, check


@needs_fio
def test_verify_not_measured_is_never_zero_errors(tmp_path: Path) -> None:
    plain = FioJob(name="noverify", ioengine="null", size="1m", runtime=1)
    res = verify_written(plain, None)
    assert res.errors is None and not res.passed and "without verify" in res.error
    job = _verify_job(tmp_path, "vgone", "256k")
    result = run_job(dataclasses.replace(job, runtime=1))
    result.verify_state = {}  # what a SIGKILLed fio leaves
    res = verify_written(job, result)
    assert res.errors is None and not res.measured and "saved no verify state" in res.error
    (tmp_path / "vgone.dat").unlink()
    result = run_job(dataclasses.replace(job, runtime=1))
    (tmp_path / "vgone.dat").write_bytes(b"")  # the data is gone: fio cannot even lay out the file
    res = verify_written(job, result)
    assert res.errors is not None or res.error, res  # a verdict either way, never a silent pass
    assert not res.passed


@needs_fio
def test_interval_histograms_reach_the_timeline_and_add_up_to_the_totals(recorded_output: str, tmp_path: Path) -> None:
    from drills.timeline import read_histograms

    with Timeline(tmp_path) as tl:
        result = parse_fio_output(recorded_output, "rec", directions=("read", "write"), timeline=tl)
    hists = [h for h in read_histograms(tmp_path) if h.metric == "fio.write.lat_ns"]
    assert hists and sum(sum(h.bins.values()) for h in hists) == result.totals["write"].ios
