"""The locust S3 workload: spec validation, per-second aggregation (pure), and real locust runs
(standalone and master + 2 workers on 127.0.0.1) against a small stand-in S3 server in this process."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from drills.timeline import Timeline, read_events, read_series
from drills.workloads import locust_s3
from drills.workloads.locust_s3 import (Distributed, S3ConfigError, S3Endpoint, S3Workload, S3WorkloadError,
                                        SecondAggregator, bucket_value_ms, percentile_from_hist, run_s3)

needs_locust = pytest.mark.skipif(not (Path(sys.executable).parent / "locust").exists(), reason="locust not installed")


# ------------------------------------------------------------------------------------------------
# spec
# ------------------------------------------------------------------------------------------------


def test_unknown_fields_are_named() -> None:
    with pytest.raises(S3ConfigError, match=r"s3 workload 'mixed': unknown field\(s\) objsize, userz"):
        S3Workload.from_mapping({"userz": 3, "objsize": "4k"}, name="mixed")


@pytest.mark.parametrize("spec, message", [
    ({"mix": {"put": 1, "list": 1}}, "unknown op"),
    ({"mix": {"get": 1}}, "put weight"),
    ({"mix": {"put": -1}}, "integers >= 0"),
    ({"users": 0}, "users must be a positive integer"),
    ({"object_size": "4 parsecs"}, "object_size"),
    ({"bucket": "Bad_Bucket"}, "valid S3 bucket"),
    ({"read_timeout_s": 0}, "read_timeout_s"),
])
def test_bad_values_are_refused(spec: dict, message: str) -> None:
    with pytest.raises(S3ConfigError, match=message):
        S3Workload.from_mapping(spec, name="w")


def test_defaults_and_derived_values() -> None:
    w = S3Workload.from_mapping({"object_size": "64KiB", "mix": {"put": 3, "get": 1}}, name="Big_Objects")
    assert w.object_bytes == 65536 and w.ops == ("put", "get") and w.mix_text() == "put:3,get:1,delete:0"
    assert w.bucket_name == "drills-big-objects"


# ------------------------------------------------------------------------------------------------
# aggregation (pure)
# ------------------------------------------------------------------------------------------------


def test_percentile_follows_fio_rule() -> None:
    hist = {100: 98, 200: 1, 300: 1}  # 100 requests
    assert percentile_from_hist(hist, 50) == bucket_value_ms(100)
    assert percentile_from_hist(hist, 99) == bucket_value_ms(200)  # the 99th request is in bucket 200
    assert percentile_from_hist(hist, 100) == bucket_value_ms(300)
    assert percentile_from_hist({}, 99) is None


def test_locustfile_buckets_match_the_harness() -> None:
    # the locustfile imports locust (gevent patching): check it in a child interpreter
    code = ("from drills.workloads.locustfile_s3 import bucket_of, BUCKET_RATIO; "
            "print(BUCKET_RATIO, *[bucket_of(x) for x in (0.0004, 1.0, 7.3, 250.0, 30000.0)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) == locust_s3.BUCKET_RATIO
    for latency_ms, bucket in zip((0.0004, 1.0, 7.3, 250.0, 30000.0), map(int, out[1:])):
        upper = bucket_value_ms(bucket)
        assert max(latency_ms, 0.001) <= upper * 1.0000001 <= max(latency_ms, 0.001) * 1.0101


def _record(second: int, op: str, source: str, ok: int, errors: int = 0, bucket: int = 900) -> dict:
    return {"second": second, "op": op, "source": source, "ok": ok, "errors": errors,
            "hist": {str(bucket): ok} if ok else {}, "error_kinds": {"ReadTimeoutError": errors} if errors else {}}


def test_aggregator_merges_sources_fills_empty_seconds_and_counts_late_records(tmp_path: Path) -> None:
    tl = Timeline(tmp_path)
    agg = SecondAggregator("w", ("put", "get"), tl)
    agg.add(_record(100, "PUT", "a", 10, bucket=800))
    agg.add(_record(100, "PUT", "b", 10, bucket=1000))
    agg.add(_record(100, "GET", "a", 5, errors=2))
    agg.add(_record(102, "PUT", "a", 4))  # second 101: nothing completed (a stall)
    closed = agg.close_before(102)  # 102 is still open
    assert [(s.t, s.op) for s in closed] == [(101.0, "put"), (101.0, "get"), (102.0, "put"), (102.0, "get")]
    put100 = closed[0]
    assert put100.rps == 20 and put100.lat_p50_ms == bucket_value_ms(800) and put100.lat_p99_ms == bucket_value_ms(1000)
    assert closed[2].rps == 0 and closed[2].lat_p99_ms is None  # a gap, not a zero latency
    agg.add(_record(100, "PUT", "c", 3))  # late: its second was already written
    assert agg.late_records == 1
    agg.close_before(None)
    tl.close()
    series = read_series(tmp_path)
    errors = [(s.t, s.value) for s in series if s.metric == "s3.errors"]
    assert errors == [(101.0, 2.0), (102.0, 0.0), (103.0, 0.0)]
    assert [s.value for s in series if s.metric == "s3.put.lat_p99_ms"] == [bucket_value_ms(1000), None,
                                                                            bucket_value_ms(900)]
    totals = agg.op_totals(3.0)
    assert totals["put"].ok == 27 and totals["get"].errors == 2
    assert totals["get"].error_kinds == {"ReadTimeoutError": 2}


# ------------------------------------------------------------------------------------------------
# real locust against a stand-in S3 server
# ------------------------------------------------------------------------------------------------


class _FakeS3(http.server.BaseHTTPRequestHandler):
    """Path-style S3 just enough for boto3's head/create bucket and put/get/delete object."""

    protocol_version = "HTTP/1.1"
    objects: dict[str, bytes] = {}
    lock = threading.Lock()
    fail_gets = False

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_HEAD(self) -> None:
        self._reply(200)

    def do_PUT(self) -> None:
        data = self._body()
        with self.lock:
            self.objects[self.path] = data
        self._reply(200, headers={"ETag": '"0123456789abcdef0123456789abcdef"'})

    def do_GET(self) -> None:
        if self.fail_gets:
            self._reply(503, b"<Error><Code>SlowDown</Code><Message>fake</Message></Error>")
            return
        with self.lock:
            data = self.objects.get(self.path)
        if data is None:
            self._reply(404, b"<Error><Code>NoSuchKey</Code><Message>none</Message></Error>")
        else:
            self._reply(200, data, {"Content-Type": "application/octet-stream"})

    def do_DELETE(self) -> None:
        self._body()
        with self.lock:
            self.objects.pop(self.path, None)
        self._reply(204)


@pytest.fixture
def fake_s3() -> Iterator[tuple[S3Endpoint, type[_FakeS3]]]:
    handler = type("Handler", (_FakeS3,), {"objects": {}, "fail_gets": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{server.server_address[1]}", "AK", "SK"), handler
    finally:
        server.shutdown()
        server.server_close()


def _workload(**kw: object) -> S3Workload:
    spec = {"users": 2, "runtime_s": 4, "object_size": "1KiB", "rate_per_user": 20.0, "cleanup": False}
    spec.update(kw)
    return S3Workload.from_mapping(spec, name="unit")


@needs_locust
def test_standalone_run_writes_per_second_rate_and_p99(tmp_path: Path, fake_s3: tuple) -> None:
    endpoint, handler = fake_s3
    tl = Timeline(tmp_path / "run")
    # 6 s: locust's own start-up (gevent, the runner) takes 1-2 s of a loaded 2-core machine, and the
    # per-second series needs at least three whole seconds after it (seen failing with 4 s under load)
    result = run_s3(_workload(runtime_s=6), endpoint, tl, workdir=tmp_path / "work")
    tl.close()
    series = read_series(tmp_path / "run")
    put_rps = [s.value for s in series if s.metric == "s3.put.rps"]
    assert len(put_rps) >= 3 and sum(put_rps) == result.totals["put"].ok > 0
    full_seconds = [s for s in result.seconds if s.op == "put"][1:-1]
    total_rate = sum(s.rps for s in result.seconds if s.t == full_seconds[0].t)
    assert 25 <= total_rate <= 50  # 2 users x 20 requests/s, one second
    assert all(s.lat_p99_ms is not None and 0 < s.lat_p99_ms < 1000 for s in full_seconds)
    assert result.errors == 0 and len(result.sources) == 1
    kinds = {e.kind for e in read_events(tmp_path / "run")}
    assert {"workload.start", "workload.stop"} <= kinds
    assert handler.objects  # the PUTs reached the server


@needs_locust
def test_failed_requests_are_counted_as_errors(tmp_path: Path, fake_s3: tuple) -> None:
    endpoint, handler = fake_s3
    handler.fail_gets = True
    # 8 s, not 4: on a loaded machine locust can spend the first seconds starting, and no GET is counted
    tl = Timeline(tmp_path / "run")
    result = run_s3(_workload(mix={"put": 1, "get": 3}, runtime_s=8), endpoint, tl, workdir=tmp_path / "work")
    tl.close()
    assert result.totals["get"].errors > 10 and result.totals["get"].ok == 0
    assert result.totals["get"].lat_p99_ms is None
    series = read_series(tmp_path / "run")
    assert sum(s.value for s in series if s.metric == "s3.errors") == result.totals["get"].errors
    assert all(s.value is None for s in series if s.metric == "s3.get.lat_p99_ms")


@needs_locust
def test_distributed_master_and_two_local_workers(tmp_path: Path, fake_s3: tuple) -> None:
    endpoint, _handler = fake_s3
    import socket

    with socket.socket() as s:  # a free port for the master
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tl = Timeline(tmp_path / "run")
    result = run_s3(_workload(users=4, rate_per_user=10.0), endpoint, tl, workdir=tmp_path / "work",
                    distributed=Distributed(expect_workers=2, local_workers=2, master_port=port))
    tl.close()
    assert len(result.sources) == 2  # both workers' records reached the master's record file
    assert result.totals["put"].ok > 0 and result.errors == 0
    assert any(s.metric == "s3.put.lat_p99_ms" and s.value for s in read_series(tmp_path / "run"))


def test_unreachable_radosgw_is_one_line_naming_workload_and_endpoint(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(S3WorkloadError) as info:
        run_s3(_workload(), S3Endpoint(f"http://127.0.0.1:{port}", "a", "b"), None, workdir=tmp_path)
    assert str(info.value) == f"s3 workload 'unit': radosgw at http://127.0.0.1:{port} unreachable: connection refused"


def test_locust_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(locust_s3.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(S3WorkloadError, match=re.escape("locust not found; install it into the venv")):
        locust_s3.find_locust()


def test_remote_workers_need_a_launcher() -> None:
    with pytest.raises(S3ConfigError, match="no remote_launcher"):
        locust_s3.LocustS3Runner(_workload(), S3Endpoint("http://x", "a", "b"),
                                 distributed=Distributed(expect_workers=3, local_workers=1))
    cmd = locust_s3.worker_command("locust", "10.0.0.5", 5557)
    assert cmd == ["locust", "-f", "-", "--worker", "--master-host", "10.0.0.5", "--master-port", "5557",
                   "--loglevel", "WARNING"]
