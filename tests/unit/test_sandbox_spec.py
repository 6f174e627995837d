"""Sandbox topology, names, and refusal of impossible requests (no cluster)."""

import subprocess
import sys

import pytest

from drills.sandbox.bootstrap import ceph_conf, keyring_text, make_key, to_target
from drills.sandbox.spec import GiB, SandboxError, SandboxSpec


def test_default_topology():
    s = SandboxSpec()
    assert [h.name for h in s.osd_hosts] == ["r1h1", "r1h2", "r2h1", "r2h2", "r3h1", "r3h2"]
    assert [h.rack for h in s.osd_hosts] == ["rack1", "rack1", "rack2", "rack2", "rack3", "rack3"]
    assert sorted(i for h in s.osd_hosts for i in h.osd_ids) == list(range(6))
    addresses = [h.address for h in s.hosts]
    assert len(set(addresses)) == len(addresses)  # each host its own identity
    assert len({h.netns for h in s.hosts}) == len(s.hosts)
    assert all(len(h.veth_bridge) <= 15 and len(h.veth_host) <= 15 for h in s.hosts)


def test_target_mirrors_topology():
    t = to_target(SandboxSpec(racks=2, hosts_per_rack=3, osds_per_host=2), "fsid-1")
    assert [r.name for r in t.racks] == ["rack1", "rack2"]
    assert len(t.racks[0].hosts) == 3 and t.osd_ids == list(range(12))
    assert t.destructive and t.cluster.fsid == "fsid-1"
    assert t.host("svc").daemons == ("mon.a", "mgr.x", "client.rgw.sandbox")


def test_conf_sets_failure_detection_and_rack_failure_domain():
    conf = ceph_conf(SandboxSpec(), "f")
    for line in ("osd_crush_chooseleaf_type = 3", "mon_osd_reporter_subtree_level = host", "osd_pool_default_size = 3",
                 "osd_pool_default_min_size = 2", "auth_cluster_required = cephx", "crush_location = root=default rack=rack2 host=r2h1"):
        assert line in conf


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(racks=0), "racks must be at least 1"),
        (dict(hosts_per_rack=0), "hosts per rack must be at least 1"),
        (dict(prefix="Bad-Prefix"), "prefix"),
        (dict(subnet="10.1.2.0/29"), "too small"),
        (dict(subnet="nonsense"), "not an IPv4 network"),
        (dict(dir="relative/dir"), "absolute path"),
        (dict(pool_pgs=24), "power of two"),
        (dict(pool_pgs=4), "from 8 to 256"),
    ],
)
def test_impossible_requests_are_refused(kw, message):
    with pytest.raises(SandboxError, match=message):
        SandboxSpec(**kw).validate()


def test_too_many_osds_for_memory():
    with pytest.raises(SandboxError, match="use fewer OSDs"):
        SandboxSpec(racks=10, hosts_per_rack=4, osds_per_host=2).validate(mem_available=24 * GiB)


def test_osd_files_must_fit_the_disk_when_full():
    with pytest.raises(SandboxError, match="smaller --osd-size"):
        SandboxSpec(osd_size=16 * GiB).validate(disk_free=50 * GiB)
    SandboxSpec(osd_size=8 * GiB).validate(disk_free=50 * GiB)


def test_key_format():
    import base64

    raw = base64.b64decode(make_key())
    assert len(raw) == 2 + 4 + 4 + 2 + 16 and raw[:2] == b"\x01\x00"
    assert 'caps mon = "allow *"' in keyring_text("client.admin", "K", {"mon": "allow *"})


def test_cli_refuses_zero_racks_and_creates_nothing(tmp_path):
    d = tmp_path / "sb"
    p = subprocess.run([sys.executable, "-m", "drills.cli", "sandbox", "up", "--dir", str(d), "--racks", "0"], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "racks must be at least 1" in p.stderr
    assert not d.exists()


def test_cli_unknown_flag_is_one_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "drills.cli", "sandbox", "up", "--rackz", "3"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "unrecognized arguments: --rackz" in p.stderr.splitlines()[-1]


def _status(health="HEALTH_OK", up=6, states=(("active+clean", 64),), num_pgs=64):
    return {"health": {"status": health}, "osdmap": {"osdmap": {"epoch": 30, "num_up_osds": up}},
            "pgmap": {"num_pgs": num_pgs, "pgs_by_state": [{"state_name": s, "count": n} for s, n in states]}}


def test_cluster_ready_needs_every_osd_up_every_pg_clean_and_health_ok():
    from drills.sandbox.bootstrap import cluster_ready

    assert cluster_ready(_status(), 6)
    assert not cluster_ready(_status(up=5), 6)
    assert not cluster_ready(_status(health="HEALTH_WARN"), 6)
    # health can read OK while fresh PGs are still unknown/creating: not ready
    assert not cluster_ready(_status(states=(("active+clean", 60), ("unknown", 4))), 6)
    assert not cluster_ready(_status(states=(), num_pgs=0), 6)  # no PGs reported yet


def test_step_durations_and_step_keys():
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "benchmarks"))
    from sandbox_startup import step_durations

    assert step_durations([("a", 1.0), ("b", 3.5), ("c", 3.5)]) == [("a", 1.0), ("b", 2.5), ("c", 0.0)]


def test_mgr_module_path_holds_only_the_modules_asked_for(tmp_path):
    from drills.sandbox.bootstrap import link_mgr_modules, mgr_module_dir

    source = tmp_path / "mgr"
    for m in ("balancer", "dashboard", "iostat", "volumes"):
        (source / m).mkdir(parents=True)
        (source / m / "__init__.py").write_text("")
    (source / "mgr_module.py").write_text("")
    spec = SandboxSpec(dir=str(tmp_path / "sb"))
    linked = link_mgr_modules(spec, ["balancer", "volumes", "iostat", "not_installed"], source)
    assert linked == ["balancer", "iostat", "volumes"]  # a module the release lacks is left out
    assert sorted(p.name for p in mgr_module_dir(spec).iterdir()) == ["balancer", "iostat", "mgr_module.py", "volumes"]
    assert (mgr_module_dir(spec) / "volumes").resolve() == source / "volumes"
    assert link_mgr_modules(spec, ["balancer", "volumes", "iostat"], source) == linked  # again: no error
    assert f"mgr_module_path = {spec.dir}/mgr-modules" in ceph_conf(spec, "f")


def test_a_failed_start_up_step_is_named_not_the_step_it_stopped():
    """The sandbox starts mgr, OSDs and pools at once; when the OSDs fail, the mgr's wait stops with "another
    step failed": the error raised is the OSDs' own, whatever order the parts are listed in."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from drills.sandbox.bootstrap import _Aborted, _first_cause, _flag_failure
    from drills.sandbox.spec import SandboxError

    failed = threading.Event()

    def mgr() -> None:
        failed.wait(5)
        raise _Aborted("stopped waiting for mgr.x active: another start-up step failed")

    def osds() -> None:
        raise SandboxError("osd.3 failed to start (exit 1)")

    with ThreadPoolExecutor(max_workers=2) as ex:
        with pytest.raises(SandboxError, match="osd.3 failed to start"):
            _first_cause([ex.submit(_flag_failure, part, failed) for part in (mgr, osds)])

    failed.clear()

    def rgw() -> None:
        raise SandboxError("radosgw did not answer")

    with ThreadPoolExecutor(max_workers=2) as ex:
        r = ex.submit(_flag_failure, rgw, failed)
        with pytest.raises(SandboxError, match="radosgw did not answer"):
            _first_cause([ex.submit(_flag_failure, mgr, failed)], also=[r])


def test_aio_limit_is_raised_only_when_the_osds_would_not_fit():
    from drills.sandbox.bootstrap import AIO_PER_OSD, AIO_RAISED_TO, aio_limit_needed

    assert aio_limit_needed(65536, 0, 6) is None  # one default sandbox on a fresh machine fits
    assert aio_limit_needed(65536, 65536, 6) == AIO_RAISED_TO  # four sandboxes took it all: seen here
    assert aio_limit_needed(65536, 62000, 1) == AIO_RAISED_TO
    huge = aio_limit_needed(AIO_RAISED_TO, AIO_RAISED_TO, 300)
    assert huge == AIO_RAISED_TO + 2 * 300 * AIO_PER_OSD  # never lowered, always room for the OSDs
