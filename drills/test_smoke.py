"""Smoke drill: the cluster is healthy and takes IO through RADOS, librbd and fio.

Runbook:
 1. the cluster reaches HEALTH_OK with every PG active+clean;
 2. baseline: fio (rbd engine, 4k random writes) and the verifying writer (RADOS objects)
    run side by side for SMOKE_SECONDS while the samplers record PG states and daemon RSS;
 3. after: every acknowledged write of the verifier reads back intact;
 4. an object written through RADOS and an RBD image written through librbd read back bit-exact.
The limits are the `smoke` section of the thresholds file. Non-destructive: no fault is
injected, so it may run against any target.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

from drills.scenario import canary_backend
from drills.invariants import FioVerification
from drills.workloads.fio import FioJob, run_job, verify_written
from drills.workloads.reaper import WorkloadProcesses
from drills.workloads.verifier import RadosObjectBackend, VerifierConfig, VerifyingWriter

DRILL = "smoke"
SMOKE_SECONDS = int(os.environ.get("DRILL_SMOKE_SECONDS", "20"))


def test_health_and_io(drill, drill_cluster, drill_target, drill_timeline, drill_image, drill_run_dir):
    t0 = time.monotonic()
    drill_cluster.wait_for_health_ok(timeout=300)
    drill.event("note", "HEALTH_OK", seconds=round(time.monotonic() - t0, 1))

    drill.phase("baseline")
    job = FioJob(
        name="smoke-randwrite", rw="randwrite", bs="4k", iodepth=16, runtime=SMOKE_SECONDS, size="256M",
        ioengine="rbd", pool=drill_target.cluster.rbd_pool, rbdname=drill_image,
        clientname=drill_target.cluster.client.removeprefix("client."), conf=drill_target.cluster.conf,
        verify="crc32c",  # headers in every block, read back after the job
    )
    with drill_cluster.open_ioctx(drill_target.cluster.rados_pool) as io:
        prefix = f"drill-smoke-{uuid.uuid4().hex[:8]}"
        writer = VerifyingWriter(
            canary_backend(RadosObjectBackend(io, prefix=prefix), drill),
            drill_run_dir / "smoke-verifier.jsonl", drill_timeline, VerifierConfig(num_keys=64, rate_per_s=20),
        )
        with writer:
            writer.start()
            result = run_job(job, drill_timeline, processes=WorkloadProcesses(drill_target.state_dir))
            writer.stop()
            drill.phase("after")
            report = writer.check()
    if drill.evidence is not None:
        drill.evidence.track_image(drill_target.cluster.rbd_pool, drill_image)
        drill.evidence.track_objects(drill_target.cluster.rados_pool, [f"{prefix}.{i:06d}" for i in writer.ledger.keys()])
        drill.evidence.start_scrub()  # scrubbed while fio's blocks are read back
    fio_check = verify_written(job, result, drill_timeline)
    if drill.evidence is not None:
        drill.evidence.add_fio(FioVerification(fio_check.errors, fio_check.method, fio_check.error))
    drill.note(fio_check.method if fio_check.errors is not None else f"fio verify not measured: {fio_check.error}")
    errors = 0 if result.returncode == 0 else 1
    drill.measure("baseline", "io_errors", errors + writer.ledger.unacked_count)
    drill.note(f"fio {job.name}: {result.totals['write'].iops:.0f} IOPS, p99 {result.totals['write'].lat_p99_ms:.1f} ms over {SMOKE_SECONDS} s")
    drill.note(report.summary().splitlines()[0])
    outcome = drill.finish(lost_writes=drill.lost_writes(writer, report, report.method))
    drill.assert_passed(outcome)


def test_rados_object_round_trip(drill_cluster, drill_target, drill_timeline):
    name = f"drill-smoke-{uuid.uuid4().hex}"
    payload = os.urandom(1 << 20)
    with drill_cluster.open_ioctx(drill_target.cluster.rados_pool) as io:
        io.write_full(name, payload)
        try:
            back = io.read(name, len(payload) + 1)
        finally:
            io.remove_object(name)
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_drill_image_round_trip(drill_cluster, drill_target, drill_image):
    import rbd

    size = 16 << 20
    payload = os.urandom(size)
    with drill_cluster.open_ioctx(drill_target.cluster.rbd_pool) as io:
        with rbd.Image(io, drill_image) as img:
            img.write(payload, 0)
            img.flush()
            back = img.read(0, size)
    assert back == payload, "RBD image did not read back bit-exact"
