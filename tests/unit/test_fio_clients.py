"""fio client/server mode against two real `fio --server` processes on loopback (two ports).

fio 3.33 prints client mode's results once, at exit, as one document whose `client_stats` array holds
every server's interval reports in order (plus "All clients" aggregates), with hostname/port per entry.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from drills.timeline import Timeline, read_series
from drills.workloads.fio import FioError, FioJob, iter_documents, parse_fio_output, run_clients

FIO = "/usr/bin/fio"
pytestmark = pytest.mark.skipif(not os.path.exists(FIO), reason="fio not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"fio --server on port {port} did not come up")


@pytest.fixture(scope="module")
def fio_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Two `fio --server=ip:127.0.0.1,<port>` processes, loopback only; stopped by their pids."""
    logdir = tmp_path_factory.mktemp("fio-servers")
    procs, ports = [], []
    try:
        for i in range(2):
            port = _free_port()
            log = open(logdir / f"server{i}.log", "w")
            # own session: the server forks a child per client connection; teardown signals the group
            procs.append(subprocess.Popen([FIO, f"--server=ip:127.0.0.1,{port}"], stdout=log,
                                          stderr=subprocess.STDOUT, cwd=logdir, start_new_session=True))
            ports.append(port)
        for port in ports:
            _wait_listening(port)
        yield ports
    finally:
        for p in procs:
            _signal_group(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(p.pid, signal.SIGKILL)
                p.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def test_two_servers_merged_timeline(fio_servers: list[int], tmp_path: Path) -> None:
    job = FioJob(name="cs", rw="randrw", ioengine="null", size="64m", runtime=3, iodepth=1,
                 extra={"rate_iops": "1000,500"})
    hosts = [f"127.0.0.1:{p}" for p in fio_servers]
    with Timeline(tmp_path) as tl:
        result = run_clients(job, hosts, tl)
    assert result.clients == sorted(hosts)
    for host in hosts:
        mine = [iv for iv in result.intervals if iv.client == host]
        assert len(mine) >= 3, mine  # interval reports, not only the final one
        for d, rate in (("read", 1000), ("write", 500)):
            total = result.client_totals[host][d].ios
            assert sum(iv.directions[d].iops * iv.seconds for iv in mine) == pytest.approx(total)
            assert total == pytest.approx(rate * 3, rel=0.05)
            # Each interval's IOPS is its own IOs over its own length (fio's rate limiter may wobble
            # under CPU load; what is checked is the derivation, not the limiter).
            assert all(iv.directions[d].iops == pytest.approx(iv.directions[d].ios / iv.seconds) for iv in mine)
        times = [iv.t for iv in mine]
        assert times == sorted(times)
    for d in ("read", "write"):
        assert result.totals[d].ios == sum(result.client_totals[h][d].ios for h in hosts)

    series = read_series(tmp_path)
    by_client = {h: [s for s in series if s.labels == {"job": "cs", "client": h}] for h in hosts}
    for host, samples in by_client.items():
        metrics = {s.metric for s in samples}
        assert {"fio.read.iops", "fio.write.iops", "fio.write.lat_p99_ms", "fio.read.lat_p999_ms"} <= metrics
    assert len(series) == sum(len(v) for v in by_client.values())


def test_recorded_client_stats_percentiles_match_fio(fio_servers: list[int], tmp_path: Path) -> None:
    """Parse a recorded client-mode run (file engine on the servers) and check the first interval of each
    client against the percentiles fio printed for that entry."""
    data = tmp_path / "data"
    data.mkdir()
    job = FioJob(name="csfile", rw="randwrite", ioengine="psync", directory=str(data), size="4m",
                 runtime=2, iodepth=1, extra={"rate_iops": 300})
    job_file = tmp_path / "csfile.fio"
    job_file.write_text(job.job_file_text())
    cmd = [FIO, "--output-format=json+", "--eta=never"]
    for port in fio_servers:
        cmd += [f"--client=127.0.0.1,{port}", "--status-interval=1", str(job_file)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout

    docs = [json.loads(d) for d in iter_documents(out)]
    assert len(docs) == 1 and "client_stats" in docs[0]
    entries = [e for e in docs[0]["client_stats"] if e["jobname"] == "csfile"]
    result = parse_fio_output(out, "csfile", directions=("write",), client_start_time=1000.0)
    for port in fio_servers:
        label = f"127.0.0.1:{port}"
        first_entry = next(e for e in entries if e["port"] == port)
        first_iv = next(iv for iv in result.intervals if iv.client == label)
        pct = first_entry["write"]["lat_ns"]["percentile"]
        w = first_iv.directions["write"]
        assert (w.lat_p50_ms, w.lat_p99_ms, w.lat_p999_ms) == (
            pct["50.000000"] / 1e6, pct["99.000000"] / 1e6, pct["99.900000"] / 1e6)
        assert first_iv.t == pytest.approx(1000.0 + first_entry["job_runtime"] / 1000.0)
        last_entry = [e for e in entries if e["port"] == port][-1]
        assert result.client_totals[label]["write"].ios == last_entry["write"]["total_ios"]


def test_unreachable_server_is_a_clear_error() -> None:
    job = FioJob(name="nobody", ioengine="null", size="1m", runtime=1)
    with pytest.raises(FioError, match=r"(?s)'nobody' exited with status 1.*connect"):
        run_clients(job, [f"127.0.0.1:{_free_port()}"])
