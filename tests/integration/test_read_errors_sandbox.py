"""The read-error fault on the real test sandbox (Ceph 16.2): what a deep scrub and a client read of an object
whose primary copy returns EIO get, and that the heal leaves the cluster clean (the option as it was, no
inconsistent PG, the OSD never marked down)."""

from __future__ import annotations

import time

import pytest
import rados

from drills.cluster import CephCluster
from drills.faults.gray import READ_ERR_OPTION, ReadErrors, marked_payload, shards_repaired
from drills.telemetry.evidence import deep_scrub, pgs_of_objects

pytestmark = pytest.mark.integration


def repaired(c: CephCluster, osd_id: int) -> int | None:
    return shards_repaired(c.mgr_command("pg dump", dumpcontents=["osds"]), osd_id)


@pytest.mark.timeout(600)
def test_read_errors_scrub_read_and_heal(sandbox_target, sandbox_cluster: CephCluster, capsys):
    c, t = sandbox_cluster, sandbox_target
    osd_id = t.racks[0].hosts[-1].osd_ids[0]
    fault = ReadErrors(t, osd_id, pool=t.cluster.rados_pool, objects=2)
    fault.probe()
    assert len(fault.names) == 2
    assert all(c.mon_command("osd map", pool=fault.pool, object=n)["acting_primary"] == osd_id for n in fault.names)
    scrubbed, read = fault.names
    scrub_pg = pgs_of_objects(c, fault.pool, [scrubbed]).pop()
    before = repaired(c, osd_id)
    try:
        fault.inject()
        assert c.osd_running_config(osd_id, READ_ERR_OPTION) == "true"

        # A deep scrub meets the primary's unreadable copy: the PG is inconsistent, the shard has a read error.
        found = deep_scrub(c, {scrub_pg})
        assert found.measured, found.summary()
        assert [p.pgid for p in found.inconsistent] == [scrub_pg], found.summary()
        bad = found.inconsistent[0]
        assert "inconsistent" in bad.state and bad.scrub_errors, found.summary()
        if "not installed" not in bad.detail:
            assert scrubbed in bad.detail and f"osd.{osd_id}" in bad.detail and "read_error" in bad.detail, bad.detail

        # A client read gets the written bytes: the primary's EIO is repaired from a replica before the reply.
        with c.open_ioctx(fault.pool) as io:
            t0 = time.monotonic()
            first = io.read(read, 8192, 0)
            first_s = time.monotonic() - t0
            t0 = time.monotonic()
            again = io.read(read, 8192, 0)
            again_s = time.monotonic() - t0
        assert first == marked_payload(read) and again == marked_payload(read)
        assert osd_id in c.osds_up()
        time.sleep(8)  # the OSD reports its stats to the mgr every few seconds
        after = repaired(c, osd_id)
        with capsys.disabled():
            print(f"\nread errors on osd.{osd_id}: scrub of {scrub_pg}: {bad.state}, {bad.scrub_errors} scrub error(s), "
                  f"{bad.detail}; first read {first_s:.3f} s, again {again_s:.3f} s; num_shards_repaired {before} -> {after}")
        assert before is not None and after is not None and after > before
    finally:
        fault.heal()

    with capsys.disabled():
        print(f"heal: repaired PG(s) {fault.repaired_pgs}, restarted {fault.restarted}")
    assert fault.repaired_pgs == [scrub_pg]
    assert c.osd_running_config(osd_id, READ_ERR_OPTION) == fault.running_before
    with c.open_ioctx(fault.pool) as io:
        for n in fault.names:
            with pytest.raises(rados.ObjectNotFound):
                io.stat(n)
    clean = deep_scrub(c, pgs_of_objects(c, fault.pool, fault.names))
    assert clean.measured and clean.ok, clean.summary()
    assert osd_id in c.osds_up()
    c.wait_for_health_ok(timeout=120)
