"""Evidence readers against the real test sandbox: the cluster log, crash reports, flags, unfound
objects, per-host OOM counters, and a deep scrub that finds a replica with a read error (and passes a
clean one). Kept short: no power cut here (the fault drills exercise the log under a real fault)."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from drills.cluster import CephCluster
from drills.hostfacts import oom_kill_readings
from drills.preflight.checks import running_osd_memory_target
from drills.telemetry.clusterlog import ClusterLogWatch, unexpected
from drills.telemetry.evidence import crash_ids, deep_scrub, flags_or_none, pgs_of_image, pgs_of_objects, unfound_objects
from drills.timeline import Timeline, read_events

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_cluster_log_watch_records_a_health_check_raised_and_cleared(sandbox_target, sandbox_cluster: CephCluster, tmp_path):
    with Timeline(tmp_path) as tl:
        watch = ClusterLogWatch(sandbox_target, tl, drill="evidence").start()
        sandbox_cluster.set_flag("noout")
        try:
            time.sleep(3)
        finally:
            sandbox_cluster.unset_flag("noout")
        time.sleep(2)
        reading = watch.stop()
    assert reading.measured, reading.error
    assert "OSDMAP_FLAGS" in reading.raised and "OSDMAP_FLAGS" in reading.cleared
    assert reading.max_lag_s is not None and reading.max_lag_s < 30  # stamps and this clock agree
    # The same reading judged against two allow-lists: the check can fail.
    assert any("OSDMAP_FLAGS" in line for line in unexpected(reading, {"OSD_DOWN"}))
    assert unexpected(reading, {"OSDMAP_FLAGS"}) == []
    kinds = {(e.kind, e.label) for e in read_events(tmp_path)}
    assert ("health.raised", "OSDMAP_FLAGS") in kinds and ("health.cleared", "OSDMAP_FLAGS") in kinds


@pytest.mark.timeout(60)
def test_crash_ids_see_a_posted_crash_and_flags_and_unfound_are_read(sandbox_cluster: CephCluster):
    before = crash_ids(sandbox_cluster)
    assert before is not None
    crash_id = f"{time.strftime('%Y-%m-%dT%H:%M:%S.000000Z', time.gmtime())}_{uuid.uuid4()}"
    meta = {"crash_id": crash_id, "timestamp": time.strftime("%Y-%m-%d %H:%M:%S.000000Z", time.gmtime()),
            "entity_name": "osd.99", "process_name": "ceph-osd", "ceph_version": "16.2.15", "backtrace": ["drill test"]}
    ret, _, err = sandbox_cluster.rados.mgr_command(json.dumps({"prefix": "crash post"}), json.dumps(meta).encode(), timeout=30)
    assert ret == 0, err
    try:
        after = crash_ids(sandbox_cluster)
        assert after is not None and after - before == {crash_id}
    finally:
        sandbox_cluster.mgr_command("crash rm", id=crash_id)  # else RECENT_CRASH stays raised
    assert crash_ids(sandbox_cluster) == before
    flags = flags_or_none(sandbox_cluster)
    assert flags is not None and "noout" not in flags
    assert unfound_objects(sandbox_cluster) == 0
    assert running_osd_memory_target(sandbox_cluster) > 0


def test_oom_kills_are_read_per_host_from_the_sandbox_cgroups(sandbox_target):
    readings = oom_kill_readings(sandbox_target)
    osd_hosts = [h.name for h in sandbox_target.hosts if h.osd_ids]
    assert osd_hosts and all(isinstance(readings[h].value, int) for h in osd_hosts), readings
    # the service host (mon, mgr, radosgw) has its own unlimited memory cgroup too: its kills are its own
    svc = [h.name for h in sandbox_target.service_hosts]
    assert svc and all(isinstance(readings[h].value, int) and "cgroup" in readings[h].source for h in svc), readings


@pytest.mark.timeout(300)
def test_deep_scrub_passes_clean_pgs_and_finds_a_replica_read_error(sandbox_target, sandbox_cluster: CephCluster):
    c, pool = sandbox_cluster, sandbox_target.cluster.rados_pool
    names = [f"evidence-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    with c.open_ioctx(pool) as io:
        for n in names:
            io.write_full(n, os.urandom(64 << 10))
    victim_name = names[0]
    where = c.mon_command("osd map", pool=pool, object=victim_name)
    pg, replica = where["pgid"], where["acting"][-1]  # a replica, not the primary
    injected = False
    try:
        with c.scratch_image(sandbox_target.cluster.rbd_pool, 8 << 20, "evidence") as image:
            image_pgs = pgs_of_image(c, sandbox_target.cluster.rbd_pool, image)
            assert image_pgs and all(p.split(".")[0].isdigit() for p in image_pgs)
        pgs = pgs_of_objects(c, pool, names)
        assert pg in pgs
        clean = deep_scrub(c, pgs)
        assert clean.measured and clean.ok and set(clean.pgs_scrubbed) == pgs, clean.summary()

        # A replica whose copy can no longer be read (BlueStore's debug read-error injection).
        c.mon_command("config set", who=f"osd.{replica}", name="bluestore_debug_inject_read_err", value="true")
        injected = True
        c.osd_command(replica, "injectdataerr", pool=pool, objname=victim_name)
        bad = deep_scrub(c, {pg})
        assert bad.measured, bad.summary()
        assert [p.pgid for p in bad.inconsistent] == [pg], bad.summary()
        assert "inconsistent" in bad.inconsistent[0].state and bad.inconsistent[0].scrub_errors
        assert victim_name in bad.inconsistent[0].detail and f"osd.{replica}" in bad.inconsistent[0].detail
    finally:
        with c.open_ioctx(pool) as io:
            for n in names:
                io.remove_object(n)  # also drops BlueStore's injected-error mark for the object
        if injected:
            c.mon_command("config rm", who=f"osd.{replica}", name="bluestore_debug_inject_read_err")
            # Test clean-up only (the harness never repairs): leave the shared sandbox consistent.
            c.mgr_command("pg repair", pgid=pg)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                state = next(p["state"] for p in c.mgr_command("pg ls-by-pool", poolstr=pool)["pg_stats"] if p["pgid"] == pg)
                if "inconsistent" not in state and "repair" not in state:
                    break
                time.sleep(1)
