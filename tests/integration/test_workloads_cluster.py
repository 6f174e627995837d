"""Workloads against the session's sandbox cluster: the verifier over RADOS objects and an RBD image,
fio through the rbd engine, locust against radosgw. Kept short (about a minute of IO in all)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest

from drills.cluster import CephCluster
from drills.target import Target
from drills.timeline import Timeline, read_series
from drills.workloads.fio import FioJob, run_job
from drills.workloads.locust_s3 import S3Endpoint, S3Workload, run_s3
from drills.workloads.verifier import (RadosObjectBackend, RbdImageBackend, VerifierConfig, VerifyingWriter,
                                       check_backend, load_journal, remove_behind_verifier)

pytestmark = pytest.mark.integration


@pytest.fixture
def rbd_image(sandbox_cluster: CephCluster, sandbox_target: Target) -> Iterator[str]:
    with sandbox_cluster.scratch_image(sandbox_target.cluster.rbd_pool, 128 << 20, "wl") as name:
        yield name


def _write(writer: VerifyingWriter, n: int) -> None:
    for _ in range(n):
        w = writer.write_one()
        assert not hasattr(w, "error"), f"write not acknowledged: {w}"


def test_verifier_over_rados_objects_catches_a_removed_write(sandbox_cluster: CephCluster,
                                                             sandbox_target: Target, tmp_path: Path) -> None:
    with sandbox_cluster.open_ioctx(sandbox_target.cluster.rados_pool) as io:
        backend = RadosObjectBackend(io, prefix=f"wl-{uuid.uuid4().hex[:8]}")
        with VerifyingWriter(backend, tmp_path / "j.jsonl", config=VerifierConfig(num_keys=16)) as writer:
            _write(writer, 40)  # every key rewritten 2-3 times
            clean = writer.check()
            assert clean.passed and clean.counts["ok"] == 16, clean.summary()
            remove_behind_verifier(backend, 5)
            report = writer.check()
            # the same verdict from the journal, as another process would reach it
            from_journal = check_backend(backend, load_journal(tmp_path / "j.jsonl"))
            for i in range(16):
                backend.remove(i)
    assert not report.passed
    assert [(c.index, c.status) for c in report.problems] == [(5, "lost")], report.summary()
    assert report.problems[0].expected_seq == 38 and report.problems[0].location == backend.describe(5)
    assert [(c.index, c.status) for c in from_journal.problems] == [(5, "lost")]


def test_verifier_over_rbd_image_catches_a_removed_write(sandbox_cluster: CephCluster, sandbox_target: Target,
                                                         rbd_image: str, tmp_path: Path) -> None:
    import rbd

    with sandbox_cluster.open_ioctx(sandbox_target.cluster.rbd_pool) as io, rbd.Image(io, rbd_image) as image:
        backend = RbdImageBackend(image, slot_size=4096, first_offset=1 << 20)
        backend.check_capacity(16)
        with VerifyingWriter(backend, tmp_path / "j.jsonl", config=VerifierConfig(num_keys=16)) as writer:
            _write(writer, 40)
            assert writer.check().passed
            remove_behind_verifier(backend, 9)
            report = writer.check()
    assert [(c.index, c.status, c.location) for c in report.problems] == [(9, "lost", f"rbd@{(1 << 20) + 9 * 4096}")]


def test_fio_rbd_engine_writes_per_second_iops_and_p99(sandbox_target: Target, rbd_image: str,
                                                      tmp_path: Path) -> None:
    tl = Timeline(tmp_path / "run")
    job = FioJob(name="wl-rbd", pool=sandbox_target.cluster.rbd_pool, rbdname=rbd_image,
                 clientname=sandbox_target.cluster.client.removeprefix("client."), conf=sandbox_target.cluster.conf,
                 runtime=10, iodepth=8, size="128M")
    result = run_job(job, tl)
    tl.close()
    assert result.returncode == 0
    series = read_series(tmp_path / "run")
    iops = [s for s in series if s.metric == "fio.write.iops"]
    p99 = [s for s in series if s.metric == "fio.write.lat_p99_ms"]
    assert 9 <= len(iops) <= 12 and len(p99) == len(iops)
    assert all(s.labels == {"job": "wl-rbd"} for s in iops)
    full = iops[1:-1]  # the first and last intervals may be partial
    assert all(s.value > 20 for s in full), [s.value for s in iops]
    assert all(s.value is not None and 0 < s.value < 5000 for s in p99[1:-1])
    # per-interval IOs add up to fio's own total
    total = sum(iv.directions["write"].ios for iv in result.intervals)
    assert total == result.totals["write"].ios > 0


def test_locust_against_sandbox_radosgw(sandbox_target: Target, tmp_path: Path) -> None:
    endpoint = S3Endpoint.from_target(sandbox_target)
    tl = Timeline(tmp_path / "run")
    workload = S3Workload(name="wl-s3", users=3, runtime_s=10, object_size="4KiB", rate_per_user=15.0)
    result = run_s3(workload, endpoint, tl, workdir=tmp_path / "locust")
    tl.close()
    assert result.errors == 0, result.totals
    series = read_series(tmp_path / "run")
    for op in ("put", "get", "delete"):
        rps = [s.value for s in series if s.metric == f"s3.{op}.rps"]
        assert len(rps) >= 9 and sum(rps) == result.totals[op].ok > 0
    full = [s for s in result.seconds if s.op == "put"][1:-1]
    per_second_total = [sum(x.rps for x in result.seconds if x.t == s.t) for s in full]
    assert all(25 <= r <= 55 for r in per_second_total), per_second_total  # 3 users x 15/s
    assert all(s.lat_p99_ms is not None for s in full)
    assert [s.value for s in series if s.metric == "s3.errors"] == [0.0] * len({s.t for s in result.seconds})
