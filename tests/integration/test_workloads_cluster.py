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
from drills.workloads.fio import FioJob, run_job, start_job, verify_written
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


def test_verifier_over_rados_objects_catches_an_earlier_write_lost(sandbox_cluster: CephCluster,
                                                                   sandbox_target: Target, tmp_path: Path) -> None:
    with sandbox_cluster.open_ioctx(sandbox_target.cluster.rados_pool) as io:
        backend = RadosObjectBackend(io, prefix=f"wl-{uuid.uuid4().hex[:8]}")
        with VerifyingWriter(backend, tmp_path / "j.jsonl", config=VerifierConfig(num_keys=16)) as writer:
            _write(writer, 40)  # every key gets 2-3 writes, each in its own 4 KiB slot
            clean = writer.check()
            assert clean.passed and clean.verified == clean.acknowledged == 40, clean.summary()
            assert io.stat(backend.name(5))[0] == 3 * 4096  # seqs 6, 22, 38: nothing overwritten
            io.write(backend.name(5), bytes(4096), 0)  # seq 6, not key 5's latest write, vanishes
            remove_behind_verifier(backend, 9)  # and key 9's object with seqs 10, 26
            report = writer.check()
            # the same verdict from the journal, as another process would reach it
            from_journal = check_backend(backend, load_journal(tmp_path / "j.jsonl"))
            for i in range(16):
                backend.remove(i)
    assert not report.passed and (report.verified, report.lost) == (37, 3), report.summary()
    assert [(c.seq, c.status, c.location) for c in report.problems] == [
        (6, "lost", f"{backend.name(5)}@0"), (10, "lost", f"{backend.name(9)}@0"), (26, "lost", f"{backend.name(9)}@4096")]
    assert [(c.seq, c.status) for c in from_journal.problems] == [(6, "lost"), (10, "lost"), (26, "lost")]


def test_verifier_over_rbd_image_catches_an_earlier_write_lost(sandbox_cluster: CephCluster,
                                                               sandbox_target: Target, rbd_image: str,
                                                               tmp_path: Path) -> None:
    import rbd

    with sandbox_cluster.open_ioctx(sandbox_target.cluster.rbd_pool) as io, rbd.Image(io, rbd_image) as image:
        backend = RbdImageBackend(image, first_offset=1 << 20, slots_per_key=64)
        backend.check_capacity(16)
        with VerifyingWriter(backend, tmp_path / "j.jsonl", config=VerifierConfig(num_keys=16)) as writer:
            _write(writer, 40)
            assert writer.check().passed
            backend.zero_slot(9, 0)  # seq 10; key 9 also holds seq 26
            report = writer.check()
    assert [(c.seq, c.status, c.location) for c in report.problems] == [(10, "lost", f"rbd@{(1 << 20) + 9 * 64 * 4096}")]
    assert report.verified == 39


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
        rows = [s for s in series if s.metric == f"s3.{op}.rps"]
        seconds = [int(s.t) for s in rows]
        # one row per second, no gaps; locust's --run-time includes its own start-up and the users' spawn
        # (1-2 s on a loaded 2-core machine), so 10 s of run time gives 7-10 whole seconds of records
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds))) and len(rows) >= 7, seconds
        assert sum(s.value for s in rows) == result.totals[op].ok > 0
    full = [s for s in result.seconds if s.op == "put"][1:-1]
    per_second_total = [sum(x.rps for x in result.seconds if x.t == s.t) for s in full]
    assert all(25 <= r <= 55 for r in per_second_total), per_second_total  # 3 users x 15/s
    assert all(s.lat_p99_ms is not None for s in full)
    assert [s.value for s in series if s.metric == "s3.errors"] == [0.0] * len({s.t for s in result.seconds})


def _fio_job(target: Target, image: str, **kw: object) -> FioJob:
    return FioJob(name="wl-verify", pool=target.cluster.rbd_pool, rbdname=image, size="16M", iodepth=16,
                  clientname=target.cluster.client.removeprefix("client."), conf=target.cluster.conf,
                  verify="crc32c", **kw)  # type: ignore[arg-type]


def _corrupt_a_written_block(cluster: CephCluster, target: Target, image: str) -> int:
    """Flip one byte in the data of a block fio wrote (found by fio's header magic), through librbd."""
    import rbd

    with cluster.open_ioctx(target.cluster.rbd_pool) as io, rbd.Image(io, image) as img:
        data = img.read(0, 16 << 20)
        offset = next(o for o in range(0, len(data), 4096) if data[o:o + 2] == b"\xca\xac")
        block = bytearray(data[offset:offset + 4096])
        block[2000] ^= 0xFF
        img.write(bytes(block), offset)
        img.flush()
    return offset


def test_fio_verify_after_a_signal_stop_passes_then_catches_one_corrupted_block(
        sandbox_cluster: CephCluster, sandbox_target: Target, rbd_image: str, tmp_path: Path) -> None:
    import time

    job = _fio_job(sandbox_target, rbd_image, runtime=24 * 3600)  # the drill's shape: time-based, stopped by us
    runner = start_job(job)
    time.sleep(8)
    result = runner.stop()
    assert result.stopped and result.totals["write"].ios > 0
    tl = Timeline(tmp_path / "run")
    clean = verify_written(job, result, tl)
    tl.close()
    assert clean.passed, clean
    assert clean.written_blocks == min(result.totals["write"].ios, 4096)
    assert clean.written_blocks - 16 <= clean.verified_blocks <= clean.written_blocks
    offset = _corrupt_a_written_block(sandbox_cluster, sandbox_target, rbd_image)
    bad = verify_written(job, result)
    assert bad.measured and bad.errors == 1 and not bad.passed, bad
    assert any(f"offset {offset}" in line for line in bad.failures), bad.failures


def test_fio_verify_after_a_fixed_runtime_job(sandbox_target: Target, rbd_image: str) -> None:
    job = _fio_job(sandbox_target, rbd_image, runtime=4)  # the smoke drill's shape: run_job to completion
    result = run_job(job)
    check = verify_written(job, result)
    assert check.passed and check.verified_blocks and check.verified_blocks > 0, check
