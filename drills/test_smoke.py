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

from drills.workloads.fio import FioJob, run_job
from drills.workloads.verifier import RadosObjectBackend, VerifierConfig, VerifyingWriter

DRILL = "smoke"
SMOKE_SECONDS = int(os.environ.get("DRILL_SMOKE_SECONDS", "20"))


def test_health_and_io(drill, cluster, drill_target, timeline, drill_image, run_dir):
    t0 = time.monotonic()
    cluster.wait_for_health_ok(timeout=300)
    drill.event("note", "HEALTH_OK", seconds=round(time.monotonic() - t0, 1))

    drill.phase("baseline")
    job = FioJob(
        name="smoke-randwrite", rw="randwrite", bs="4k", iodepth=16, runtime=SMOKE_SECONDS, size="256M",
        ioengine="rbd", pool=drill_target.cluster.rbd_pool, rbdname=drill_image,
        clientname=drill_target.cluster.client.removeprefix("client."), conf=drill_target.cluster.conf,
    )
    with cluster.open_ioctx(drill_target.cluster.rados_pool) as io:
        writer = VerifyingWriter(
            RadosObjectBackend(io, prefix=f"drill-smoke-{uuid.uuid4().hex[:8]}"),
            run_dir / "smoke-verifier.jsonl", timeline, VerifierConfig(num_keys=64, rate_per_s=20),
        )
        with writer:
            writer.start()
            result = run_job(job, timeline)
            writer.stop()
            drill.phase("after")
            report = writer.check()
    errors = 0 if result.returncode == 0 else 1
    drill.measure("baseline", "io_errors", errors + writer.ledger.unacked_count)
    drill.note(f"fio {job.name}: {result.totals['write'].iops:.0f} IOPS, p99 {result.totals['write'].lat_p99_ms:.1f} ms over {SMOKE_SECONDS} s")
    drill.note(report.summary().splitlines()[0])
    outcome = drill.finish(lost_writes=drill.lost_writes(writer, report, "rados objects: latest acknowledged seq + crc per key"))
    drill.assert_passed(outcome)


def test_rados_object_round_trip(cluster, drill_target, timeline):
    name = f"drill-smoke-{uuid.uuid4().hex}"
    payload = os.urandom(1 << 20)
    with cluster.open_ioctx(drill_target.cluster.rados_pool) as io:
        io.write_full(name, payload)
        try:
            back = io.read(name, len(payload) + 1)
        finally:
            io.remove_object(name)
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_drill_image_round_trip(cluster, drill_target, drill_image):
    import rbd

    size = 16 << 20
    payload = os.urandom(size)
    with cluster.open_ioctx(drill_target.cluster.rbd_pool) as io:
        with rbd.Image(io, drill_image) as img:
            img.write(payload, 0)
            img.flush()
            back = img.read(0, size)
    assert back == payload, "RBD image did not read back bit-exact"
