"""Bring a real Ceph cluster up on this machine, and take it down leaving nothing behind.

Real ceph-mon, ceph-mgr, ceph-osd (BlueStore on sparse files) and radosgw from Debian's
packages, cephx on, one network namespace per logical host on a bridge. See
docs/sandbox.md for the Ceph options chosen and why.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import psutil

from drills.sandbox import host as hostctl
from drills.sandbox.spec import GiB, SandboxError, SandboxHost, SandboxSpec
from drills.target import (
    S3,
    Access,
    Cluster,
    Host,
    Network,
    Power,
    Rack,
    Target,
    dump_target,
    load_target,
)
from drills.workloads.reaper import WorkloadProcesses

REQUIRED_BINARIES = ("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-authtool", "monmaptool", "radosgw", "radosgw-admin", "nft", "ip")
MON_ID = "a"
MGR_ID = "x"
RGW = "client.rgw.sandbox"
RGW_PORT = 7480
S3_USER = "drills"
SYSTEM_MGR_MODULES = Path("/usr/share/ceph/mgr")
MGR_INITIAL_MODULES = ("iostat",)  # enabled at the mgr's first start, besides the always-on ones

if TYPE_CHECKING:
    from drills.cluster import CephCluster

Log = Callable[[str], None]


@dataclass(frozen=True)
class UpResult:
    target: Target
    seconds: float
    steps: list[tuple[str, float]]  # (step, seconds since start when it was done)
    # (step, seconds the step itself took): steps run side by side, so these overlap
    step_seconds: list[tuple[str, float]] = field(default_factory=list)


def make_key() -> str:
    """A cephx secret: le16 type (1 = AES), le32 sec, le32 nsec, le16 length, 16 random bytes."""
    now = time.time()
    return base64.b64encode(struct.pack("<HIIH", 1, int(now), 0, 16) + secrets.token_bytes(16)).decode()


def keyring_text(entity: str, key: str, caps: dict[str, str]) -> str:
    lines = [f"[{entity}]", f"\tkey = {key}"]
    lines += [f'\tcaps {k} = "{v}"' for k, v in caps.items()]
    return "\n".join(lines) + "\n"


# Ceph 16.2's default bluestore_rocksdb_options with write_buffer_size 256 MiB -> 32 MiB and
# max_total_wal_size 1 GiB -> 256 MiB (see ceph_conf).
ROCKSDB_OPTIONS = (
    "compression=kNoCompression,max_write_buffer_number=4,min_write_buffer_number_to_merge=1,recycle_log_file_num=4,"
    "write_buffer_size=33554432,writable_file_max_buffer_size=0,compaction_readahead_size=2097152,"
    "max_background_compactions=2,max_total_wal_size=268435456"
)


def ceph_conf(spec: SandboxSpec, fsid: str) -> str:
    svc = spec.service_host
    d = spec.dir
    opts: dict[str, dict[str, str]] = {
        "global": {
            "fsid": fsid,
            "mon_host": f"[v2:{svc.address}:3300,v1:{svc.address}:6789]",
            "public_network": spec.subnet,
            "auth_cluster_required": "cephx",
            "auth_service_required": "cephx",
            "auth_client_required": "cephx",
            "auth_allow_insecure_global_id_reclaim": "false",
            "run_dir": f"{d}/run",
            "admin_socket": f"{d}/run/$name.asok",
            "pid_file": f"{d}/run/$name.pid",
            "log_file": f"{d}/log/$name.log",
            "crash_dir": f"{d}/crash",
            "log_to_stderr": "false",
            "err_to_stderr": "false",
            "mon_cluster_log_file": f"{d}/log/$cluster.log",
            # The default rule replicates across racks: one rack may fail without data loss.
            "osd_crush_chooseleaf_type": "3",
            "osd_pool_default_size": str(spec.pool_size),
            "osd_pool_default_min_size": str(spec.pool_min_size),
            "osd_pool_default_pg_num": "8",
            "osd_pool_default_pgp_num": "8",
            "osd_pool_default_pg_autoscale_mode": "off",
            "mon_allow_pool_delete": "true",
            "mon_max_pg_per_osd": "500",
            # Failure detection as on a real cluster: reports must come from 2 OSDs on
            # different hosts, after osd_heartbeat_grace of silence.
            "mon_osd_reporter_subtree_level": "host",
            "mon_osd_min_down_reporters": "2",
            "osd_heartbeat_grace": "20",
            "mon_osd_down_out_interval": "600",
            # One disk shared by every "host": don't raise space alarms for the machine's disk.
            "mon_data_avail_warn": "2",
            "mon_data_avail_crit": "1",
            "mon_warn_on_pool_no_redundancy": "false" if spec.pool_size == 1 else "true",
            "mon_warn_on_pool_pg_num_not_power_of_two": "false",
            "mgr_initial_modules": " ".join(MGR_INITIAL_MODULES),
        },
        # The drills' cluster-log watch refills an entry its subscription missed from `log last`
        # (drills/telemetry/clusterlog.py); Ceph keeps 50 per channel by default, a few seconds of a busy mgr.
        "mon": {"mon_data": f"{d}/mon/$cluster-$id", "mon_log_max_summary": "10000"},
        # only the modules the mgr runs (see link_mgr_modules): it imports all it finds at start
        "mgr": {"mgr_data": f"{d}/mgr/$cluster-$id", "mgr_module_path": f"{d}/mgr-modules"},
        "osd": {
            "osd_data": f"{d}/osd/$cluster-$id",
            "osd_objectstore": "bluestore",
            "bluestore_block_create": "true",
            "bluestore_block_size": str(spec.osd_size),
            "bluestore_fsck_on_mkfs": "false",
            "bluestore_fsck_on_mount": "false",
            # Memory that fits a 24 GiB machine running every daemon of the cluster.
            "osd_memory_target": str(spec.osd_memory_target),
            # Two cores for all OSDs: fewer op shards keep thread counts sane.
            "osd_op_num_shards": "2",
            "osd_op_num_threads_per_shard": "1",
            "osd_crush_update_on_start": "true",
            # Small writes on these (rotational) OSDs are deferred through RocksDB's WAL, so
            # their data sits in the memtable: Ceph's 256 MiB write buffers make OSD RSS climb
            # for minutes under a drill's load. 32 MiB buffers turn over in seconds, so RSS
            # before a fault is a steady state and RSS after recovery shows what recovery left.
            "bluestore_rocksdb_options": ROCKSDB_OPTIONS,
            # Every drill ends with a deep scrub of its own PGs (drills/invariants.py): without the
            # backoff those scrubs start at once (measured: 17 s instead of 55-63 s for a drill's 52 PGs).
            "osd_scrub_backoff_ratio": "0",
        },
    }
    for h in spec.osd_hosts:
        for i in h.osd_ids:
            opts[f"osd.{i}"] = {"crush_location": f"root=default rack={h.rack} host={h.name}", "public_addr": h.address}
    opts[f"mon.{MON_ID}"] = {"public_addr": svc.address}
    # Clients that read only ceph.conf (fio's rbd engine, radosgw-admin) find the admin key here.
    opts["client.admin"] = {"keyring": str(spec.admin_keyring)}
    # Drills measure the cluster, not librbd's writeback cache acking from client memory.
    opts["client"] = {"rbd_cache": "false"}
    if spec.rgw:
        opts[RGW] = {
            "rgw_frontends": f"beast endpoint={svc.address}:{RGW_PORT}",
            "rgw_data": f"{d}/rgw",
            "keyring": f"{d}/keyring/{RGW}.keyring",
        }
    for k, v in spec.extra_conf.items():
        opts["global"][k] = v
    out = []
    for section, kv in opts.items():
        out.append(f"[{section}]")
        out += [f"\t{k} = {v}" for k, v in kv.items()]
        out.append("")
    return "\n".join(out)


def check_prerequisites(spec: SandboxSpec) -> None:
    spec.validate()  # the cheap refusals first: nothing is touched for an impossible request
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root (network namespaces, nftables); run as root")
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        raise SandboxError(f"missing {', '.join(missing)}; run scripts/setup.sh to install the Debian packages")
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        raise SandboxError("python3-rados/python3-rbd are not importable; use the venv made by scripts/setup.sh") from None
    spec.validate(psutil.virtual_memory().available + _own_sandbox_memory(spec), _disk_free_for(spec))


def _disk_free_for(spec: SandboxSpec) -> int:
    """Free space where the sandbox will live, counting what a sandbox there now holds (up replaces it)."""
    p = spec.path
    while not p.exists():
        p = p.parent
    held = 0
    if spec.path.exists():
        for f in spec.path.rglob("*"):
            try:
                if f.is_file() and not f.is_symlink():
                    held += f.stat().st_blocks * 512
            except OSError:
                pass
    return shutil.disk_usage(p).free + held


def _own_sandbox_memory(spec: SandboxSpec) -> int:
    """Memory held by a running sandbox in the same directory, which `up` will replace."""
    total = 0
    for p in hostctl.sandbox_processes(spec):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def to_target(spec: SandboxSpec, fsid: str) -> Target:
    def host(h: SandboxHost, daemons: tuple[str, ...]) -> Host:
        return Host(
            name=h.name,
            address=h.address,
            daemons=daemons,
            access=Access(kind="local", netns=h.netns),
            power=Power(kind="sandbox"),
            network=Network(kind="sandbox"),
            memory_budget=spec.host_memory if h.osd_ids else 0,
        )

    racks = []
    for r in range(1, spec.racks + 1):
        hs = [h for h in spec.osd_hosts if h.rack == f"rack{r}"]
        racks.append(Rack(f"rack{r}", tuple(host(h, tuple(f"osd.{i}" for i in h.osd_ids)) for h in hs)))
    svc_daemons = (f"mon.{MON_ID}", f"mgr.{MGR_ID}") + ((RGW,) if spec.rgw else ())
    return Target(
        cluster=Cluster(
            name="sandbox",
            fsid=fsid,
            conf=str(spec.conf_path),
            keyring=str(spec.admin_keyring),
            client="client.admin",
            deployment="sandbox",
        ),
        state_dir=str(spec.path / "state"),
        destructive=True,
        racks=tuple(racks),
        service_hosts=(host(spec.service_host, svc_daemons),),
        s3=S3(endpoint=f"http://{spec.service_host.address}:{RGW_PORT}", credentials_file=str(spec.path / "s3-credentials.json"))
        if spec.rgw
        else S3(),
    )


SPEC_FILE = "sandbox.json"


def save_spec(spec: SandboxSpec) -> None:
    from dataclasses import asdict

    (spec.path / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2))


def load_spec(directory: str) -> SandboxSpec | None:
    p = Path(directory) / SPEC_FILE
    if not p.exists():
        return None
    try:
        return SandboxSpec(**json.loads(p.read_text()))
    except (TypeError, json.JSONDecodeError):
        return None


def spec_of_target(target: Target) -> SandboxSpec:
    """The sandbox behind a target the sandbox wrote (its spec file sits beside the target)."""
    d = str(Path(target.cluster.conf).parent)
    spec = load_spec(d)
    if spec is None:
        raise SandboxError(f"{d} holds no sandbox (no {SPEC_FILE}); is this target a sandbox's?")
    return spec


# --- up ------------------------------------------------------------------------


def up(spec: SandboxSpec, log: Log = print, timeout: float = 300) -> UpResult:
    """Start a sandbox from nothing (replacing whatever a crashed one left) and wait for HEALTH_OK.

    Idempotent: if a healthy sandbox of the same shape is already running, returns it.
    """
    from drills.cluster import CephCluster, ClusterError

    t0 = time.monotonic()
    steps: list[tuple[str, float]] = []
    step_seconds: list[tuple[str, float]] = []
    lock = threading.Lock()

    def step(name: str, started: float | None = None) -> None:
        """Record a finished step (`started`: when it began, monotonic; default: when the one before ended)."""
        now = time.monotonic()
        with lock:  # steps finish in several threads
            began = started if started is not None else t0 + (steps[-1][1] if steps else 0.0)
            steps.append((name, now - t0))
            step_seconds.append((name, now - began))
        log(f"[{now - t0:5.1f}s] {name}")

    check_prerequisites(spec)
    step("prerequisites checked")

    existing = load_spec(spec.dir)
    if existing == spec and spec.target_path.exists():
        try:
            t = load_target(spec.target_path)
            if spec.conf_path.read_text() != ceph_conf(spec, t.cluster.fsid):
                raise SandboxError("the running sandbox's ceph.conf differs from this version's")
            with CephCluster(t, connect_timeout=5) as c:
                if c.health_status() == "HEALTH_OK" and len(c.osds_up()) == spec.osd_count:
                    log("sandbox already up and HEALTH_OK")
                    return UpResult(t, time.monotonic() - t0, steps, step_seconds)
        except (ClusterError, SandboxError, Exception):  # noqa: BLE001 - anything wrong: rebuild
            pass
    if existing is not None or spec.path.exists() or _leftovers(spec):
        log("replacing what an earlier sandbox left behind")
        down(existing or spec, log=lambda m: None)
        if existing is not None and existing.prefix != spec.prefix:
            down(spec, log=lambda m: None)
        step("earlier sandbox removed")

    try:
        target = _bring_up(spec, step, timeout)
        return UpResult(target, time.monotonic() - t0, steps, step_seconds)
    except BaseException:
        log("start-up failed: tearing the half-built sandbox down")
        down(spec, log=lambda m: None)
        raise


def _leftovers(spec: SandboxSpec) -> bool:
    return bool(hostctl.sandbox_processes(spec)) or any(n.startswith(f"{spec.prefix}-") for n in hostctl.list_netns()) or hostctl.link_exists(spec.bridge)


Step = Callable[..., None]  # step(name, started=None): record a finished step


def _bring_up(spec: SandboxSpec, step: Step, timeout: float) -> Target:
    """Build the sandbox. After the mon, what does not depend on each other runs side by side: the mgr,
    the OSDs (each made and started on its own), the pools (created before the OSDs exist, so that all
    their PGs peer at once when the OSDs come up) and radosgw (which waits for its pools itself). Then
    one wait for every OSD up, every PG active+clean and HEALTH_OK, polled on `ceph status`."""
    from drills.cluster import CephCluster

    d = spec.path
    for sub in ("run", "log", "keyring", "mon", "mgr", "osd", "rgw", "crash", "state"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    save_spec(spec)
    hostctl.set_allocator(spec, spec.allocator)  # before the first daemon starts: every start reads it
    fsid = str(uuid.uuid4())
    spec.conf_path.write_text(ceph_conf(spec, fsid))

    hostctl.create_network(spec)
    step(f"network: bridge {spec.bridge}, {len(spec.hosts)} namespaces on {spec.subnet}")

    # Keys: mon., client.admin, mgr and rgw go into the mon's initial keyring.
    started = time.monotonic()
    admin_key = make_key()
    spec.admin_keyring.write_text(keyring_text("client.admin", admin_key, {"mon": "allow *", "osd": "allow *", "mgr": "allow *", "mds": "allow *"}))
    os.chmod(spec.admin_keyring, 0o600)
    mgr_key, rgw_key = make_key(), make_key()
    mon_keyring = d / "keyring" / "mon.keyring"
    mon_keyring.write_text(
        keyring_text("mon.", make_key(), {"mon": "allow *"})
        + spec.admin_keyring.read_text()
        + keyring_text(f"mgr.{MGR_ID}", mgr_key, {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"})
        + keyring_text(RGW, rgw_key, {"mon": "allow rw", "osd": "allow rwx", "mgr": "allow rw"})
    )
    os.chmod(mon_keyring, 0o600)
    svc = spec.service_host
    monmap = d / "monmap"
    hostctl.sh("monmaptool", "--create", "--fsid", fsid, "--addv", MON_ID, f"[v2:{svc.address}:3300,v1:{svc.address}:6789]", str(monmap), "--clobber")
    hostctl.sh("ceph-mon", "-c", str(spec.conf_path), "--mkfs", "-i", MON_ID, "--monmap", str(monmap), "--keyring", str(mon_keyring))
    svc_procs = svc_cgroup_procs(spec)
    hostctl.start_daemon(spec, svc, f"mon.{MON_ID}", svc_procs)
    target = to_target(spec, fsid)
    dump_target(target, spec.target_path, header=TARGET_HEADER)
    cluster = CephCluster(target, connect_timeout=30).connect()
    step("mon.a started", started)

    raised = ensure_aio_capacity(spec.osd_count)
    if raised is not None:
        step(f"fs.aio-max-nr raised from {raised[0]} to {raised[1]} (each BlueStore OSD on this machine sets up "
             f"~{AIO_PER_OSD} async-IO events; an OSD that finds none left fails to start with EAGAIN)")
    failed = threading.Event()  # one part failed: the others stop waiting
    deadline = time.monotonic() + timeout

    def start_mgr() -> None:
        began = time.monotonic()
        always_on = cluster.mon_command("mgr module ls").get("always_on_modules", [])
        link_mgr_modules(spec, [*always_on, *MGR_INITIAL_MODULES])
        mgr_dir = d / "mgr" / f"ceph-{MGR_ID}"
        mgr_dir.mkdir(parents=True, exist_ok=True)
        (mgr_dir / "keyring").write_text(keyring_text(f"mgr.{MGR_ID}", mgr_key, {}))
        hostctl.start_daemon(spec, svc, f"mgr.{MGR_ID}", svc_procs)
        step("mgr.x started", began)
        began = time.monotonic()
        # Until the mgr is active there are no PG states (status shows none): the usual last step of `up`.
        _wait_until(lambda: bool(cluster.mon_command("mgr dump").get("available")), deadline, "mgr.x active", failed)
        step("mgr.x active", began)

    def make_and_start_osds() -> None:
        began = time.monotonic()
        ids = [i for h in spec.osd_hosts for i in h.osd_ids]
        osd_uuids = {i: str(uuid.uuid4()) for i in ids}
        osd_keys = {i: make_key() for i in ids}
        procs = host_cgroup_procs(spec)

        def make_and_start(i: int) -> None:
            # `osd new` from every thread at once: the mon commits them in one or two osdmap epochs
            cluster.mon_command("osd new", inbuf=json.dumps({"cephx_secret": osd_keys[i]}).encode(), uuid=osd_uuids[i], id=i)
            odir = d / "osd" / f"ceph-{i}"
            odir.mkdir(parents=True, exist_ok=True)
            (odir / "keyring").write_text(keyring_text(f"osd.{i}", osd_keys[i], {}))
            hostctl.sh("ceph-osd", "-c", str(spec.conf_path), "-i", str(i), "--mkfs", "--osd-uuid", osd_uuids[i], timeout=300)
            h = spec.host_of_osd(i)
            hostctl.start_daemon(spec, h, f"osd.{i}", procs.get(h.name))

        with ThreadPoolExecutor(max_workers=len(ids)) as ex:
            list(ex.map(make_and_start, ids))
        step(f"{spec.osd_count} BlueStore OSDs made and started"
             + (f" (each host's in a {spec.host_memory >> 20} MiB memory cgroup)" if spec.host_memory else ""), began)

    def create_pools() -> None:
        began = time.monotonic()
        pools = [(target.cluster.rbd_pool, "rbd", spec.pool_pgs), (target.cluster.rados_pool, "drills", spec.pool_pgs)]
        if spec.rgw:
            # The pools radosgw makes at its first start (8 PGs each: osd_pool_default_pg_num), made here
            # with the others so that radosgw does not create them one after the other, each waiting to peer.
            pools += [(p, "rgw", 8) for p in RGW_POOLS]
        with ThreadPoolExecutor(max_workers=len(pools)) as ex:  # one osdmap epoch for all, not one each
            list(ex.map(lambda p: cluster.mon_command("osd pool create", pool=p[0], pg_num=p[2], pgp_num=p[2],
                                                      pool_type="replicated"), pools))
            list(ex.map(lambda p: cluster.mon_command("osd pool application enable", pool=p[0], app=p[1],
                                                      yes_i_really_mean_it=True), pools))
        if spec.rgw:  # what radosgw sets on the mostly-omap pool it creates (rgw_rados_pool_autoscale_bias)
            cluster.mon_command("osd pool set", pool=RGW_META_POOL, var="pg_autoscale_bias", val="4")
        step(f"pools created: {', '.join(p[0] for p in pools)}", began)
        import rbd

        began = time.monotonic()
        with cluster.open_ioctx(target.cluster.rbd_pool) as io:
            rbd.RBD().pool_init(io, True)  # waits for the rbd pool's PGs to be active
        step("rbd pool initialised", began)

    def start_rgw() -> None:
        began = time.monotonic()
        (d / "keyring" / f"{RGW}.keyring").write_text(keyring_text(RGW, rgw_key, {}))
        hostctl.start_daemon(spec, svc, RGW, svc_procs)
        endpoint = f"http://{svc.address}:{RGW_PORT}"
        _wait_until(lambda: rgw_answers(endpoint), deadline, f"radosgw answering on {endpoint}", failed)
        step(f"radosgw serving on {svc.address}:{RGW_PORT}", began)
        began = time.monotonic()
        creds = _create_s3_user(spec)
        step(f"S3 user {creds['user']} created", began)

    try:
        with ThreadPoolExecutor(max_workers=4) as ex:
            try:
                rgw = ex.submit(_flag_failure, start_rgw, failed) if spec.rgw else None
                _first_cause([ex.submit(_flag_failure, part, failed) for part in (start_mgr, make_and_start_osds, create_pools)],
                             also=[rgw] if rgw is not None else [])
                # radosgw (serving, then its S3 user) goes on meanwhile: health does not wait for it
                began = time.monotonic()
                _wait_until(lambda: _cluster_ready(cluster, spec.osd_count), deadline,
                            f"{spec.osd_count} OSDs up, all PGs active+clean and HEALTH_OK", failed,
                            state=lambda: _cluster_state(cluster))
                step("HEALTH_OK", began)
                if rgw is not None:
                    rgw.result()
            except BaseException:
                failed.set()  # the parts still waiting stop, so the pool's exit does not wait out their timeouts
                raise
    finally:
        cluster.close()
    return target


# The mgr imports every module it finds in mgr_module_path at start (to read their options), enabled or
# not: ~20 s of Python imports on 2 busy cores for 28 modules, of which it runs 11. The sandbox's
# mgr_module_path holds links to only the always-on modules (the mon's list for this release) and these.


def mgr_module_dir(spec: SandboxSpec) -> Path:
    return spec.path / "mgr-modules"


def link_mgr_modules(spec: SandboxSpec, modules: list[str], source: Path = SYSTEM_MGR_MODULES) -> list[str]:
    """Link `modules` (and the shared top-level .py files) from `source` into the sandbox's mgr_module_path;
    returns the modules linked (one missing from `source` is left out: the mgr reports it as it would)."""
    target = mgr_module_dir(spec)
    target.mkdir(parents=True, exist_ok=True)
    linked = []
    for entry in sorted(source.iterdir()):
        if entry.suffix == ".py" or (entry.is_dir() and entry.name in modules):
            link = target / entry.name
            if not link.is_symlink():
                link.symlink_to(entry)
            if entry.is_dir():
                linked.append(entry.name)
    return linked


# radosgw's own pools in the default zone (Ceph 16.2), made at its first start.
RGW_META_POOL = "default.rgw.meta"
RGW_POOLS = (".rgw.root", "default.rgw.log", "default.rgw.control", RGW_META_POOL)


def _flag_failure(part: Callable[[], None], failed: threading.Event) -> None:
    try:
        part()
    except BaseException:
        failed.set()
        raise


# BlueStore's aio context: bdev_aio_max_queue_depth (1024) events per open of the block file, opened by BlueFS
# and by BlueStore: 2048 a running OSD (measured: 32 OSDs of four sandboxes used the whole 65536). Debian's
# default fs.aio-max-nr is 65536; Ceph's own developer clusters raise it to 1048576 as well.
AIO_PER_OSD = 2048
AIO_MAX_NR = Path("/proc/sys/fs/aio-max-nr")
AIO_NR = Path("/proc/sys/fs/aio-nr")
AIO_RAISED_TO = 1048576


def aio_limit_needed(max_nr: int, in_use: int, osds: int) -> int | None:
    """Pure: the fs.aio-max-nr to set so that `osds` more OSDs find their events (twice over: OSDs that
    restart in a drill open theirs again before the kernel frees the old), or None when it already fits."""
    need = in_use + 2 * osds * AIO_PER_OSD
    return None if need <= max_nr else max(need, AIO_RAISED_TO)


def ensure_aio_capacity(osds: int) -> tuple[int, int] | None:
    """Raise fs.aio-max-nr when the OSDs about to start would not fit; (before, after) when raised."""
    try:
        max_nr, in_use = int(AIO_MAX_NR.read_text()), int(AIO_NR.read_text())
    except (OSError, ValueError):
        return None  # not Linux as we know it: the OSDs' own error will say
    new = aio_limit_needed(max_nr, in_use, osds)
    if new is None:
        return None
    AIO_MAX_NR.write_text(str(new))
    return max_nr, new


class _Aborted(SandboxError):
    pass


def _first_cause(futures: list[Future], also: list[Future] = ()) -> None:
    """Wait for every part; raise the failure that stopped the others, not a part's "stopped waiting" (the
    parts are listed in no particular order of failing). `also`: parts that go on meanwhile (radosgw), waited
    for only when the failure that stopped these parts is theirs."""
    wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors and all(isinstance(e, _Aborted) for e in errors):
        wait(also)
        errors = [f.exception() for f in also if f.exception() is not None and not isinstance(f.exception(), _Aborted)] + errors
    for e in errors:
        if not isinstance(e, _Aborted):
            raise e
    if errors:
        raise errors[0]


def _wait_until(check: Callable[[], bool], deadline: float, what: str, failed: threading.Event,
                state: Callable[[], str] | None = None, interval: float = 0.2) -> None:
    """Poll `check` every `interval` s until it holds; raise at `deadline` (with the last state seen) or as
    soon as another part of the start-up has failed. A check that raises counts as not yet."""
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - the cluster is still coming up
            pass
        if failed.is_set():
            raise _Aborted(f"stopped waiting for {what}: another start-up step failed")
        if time.monotonic() > deadline:
            last = ""
            if state is not None:
                try:
                    last = f"; last seen: {state()}"
                except Exception as e:  # noqa: BLE001
                    last = f"; state unreadable: {e}"
            raise SandboxError(f"timed out waiting for {what}{last}; see the logs in the sandbox's log/ directory")
        time.sleep(interval)


def rgw_answers(endpoint: str) -> bool:
    """True once radosgw answers HTTP (any status: an S3 error page is an answer)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def cluster_ready(status: dict, osd_count: int) -> bool:
    """Pure: a `ceph status` reply says every OSD is up, every PG active+clean (none unknown or
    creating: health can read OK before fresh PGs are reported) and HEALTH_OK."""
    pgmap = status["pgmap"]
    osdmap = status["osdmap"]
    osdmap = osdmap.get("osdmap", osdmap)
    states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
    return (
        status["health"]["status"] == "HEALTH_OK"
        and osdmap.get("num_up_osds") == osd_count
        and pgmap.get("num_pgs", 0) > 0
        and states.get("active+clean", 0) == pgmap["num_pgs"]
    )


def _cluster_ready(cluster: CephCluster, osd_count: int) -> bool:
    return cluster_ready(cluster.status(), osd_count)


def _cluster_state(cluster: CephCluster) -> str:
    st = cluster.status()
    states = ", ".join(f"{s['count']} {s['state_name']}" for s in st["pgmap"].get("pgs_by_state", []))
    osdmap = st["osdmap"].get("osdmap", st["osdmap"])
    return f"{st['health']['status']}, {osdmap.get('num_up_osds')} OSDs up, PGs: {states or 'none'}"


def host_cgroup_procs(spec: SandboxSpec) -> dict[str, Path]:
    """Each OSD host's memory cgroup, made now (limited with --host-memory, else unlimited); host -> its
    cgroup.procs. Unlimited ones still matter: a host's memory use and OOM kills are its own to read, not
    the whole machine's (where other sandboxes and processes run too)."""
    from drills.sandbox.cgroups import CgroupError, HostCgroup

    try:
        return {h.name: HostCgroup.of(spec.prefix, h.name).create(spec.host_memory or None).procs for h in spec.osd_hosts}
    except CgroupError as e:
        raise SandboxError(str(e)) from None


def svc_cgroup_procs(spec: SandboxSpec) -> Path:
    """The service host's memory cgroup (never limited): its OOM kills are its own to count, like an OSD host's."""
    from drills.sandbox.cgroups import CgroupError, HostCgroup

    try:
        return HostCgroup.of(spec.prefix, spec.service_host.name).create(None).procs
    except CgroupError as e:
        raise SandboxError(str(e)) from None


def _create_s3_user(spec: SandboxSpec) -> dict[str, str]:
    access, secret = secrets.token_hex(10).upper(), secrets.token_urlsafe(30)
    # radosgw-admin is the interface for rgw users (no librados call does this).
    hostctl.sh(
        "radosgw-admin", "-c", str(spec.conf_path), "-n", "client.admin", "-k", str(spec.admin_keyring), "user", "create",
        f"--uid={S3_USER}", "--display-name=ceph-drills", f"--access-key={access}", f"--secret-key={secret}",
        timeout=120,
    )
    creds = {"user": S3_USER, "access_key": access, "secret_key": secret}
    p = spec.path / "s3-credentials.json"
    p.write_text(json.dumps(creds))
    os.chmod(p, 0o600)
    return creds


TARGET_HEADER = """# Written by `drill sandbox up`: the embedded sandbox described in the target schema.
# A staging cluster is described by hand in the same schema (examples/staging-target.toml)."""


# --- down ----------------------------------------------------------------------


@dataclass(frozen=True)
class DownResult:
    processes_killed: int
    removed: list[str]
    seconds: float
    step_seconds: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds it took)


def down(spec: SandboxSpec, log: Log = print, keep_dir: bool = False) -> DownResult:
    """Stop every daemon and remove namespaces, links, nft tables, cgroups and the directory."""
    t0 = time.monotonic()
    step_seconds: list[tuple[str, float]] = []
    last = t0

    def step(name: str) -> None:
        nonlocal last
        now = time.monotonic()
        step_seconds.append((name, now - last))
        last = now

    # a crashed run's clients first: a fio left writing to the sandbox's images would hang on its OSDs
    reaped = WorkloadProcesses(spec.path / "state").reap(grace_s=3.0)
    if reaped.stopped or reaped.failed:
        log(f"sandbox down: {reaped.summary()}")
    killed = hostctl.kill_all(spec) + len(reaped.stopped)
    step("processes killed")

    def remove_dir() -> list[str]:
        if keep_dir or not spec.path.exists():
            return []
        shutil.rmtree(spec.path, ignore_errors=True)  # freeing the OSD files' extents takes a while
        return [str(spec.path)]

    # With every process gone, the network, the cgroups and the directory do not depend on each other.
    with ThreadPoolExecutor(max_workers=2) as ex:
        dir_removed = ex.submit(remove_dir)
        removed = hostctl.delete_network(spec)
        removed += remove_cgroups(spec)
        removed += dir_removed.result()
    step("namespaces, links, cgroups and directory removed")
    log(f"sandbox down: {killed} processes stopped, removed {len(removed)} items")
    return DownResult(killed, removed, time.monotonic() - t0, step_seconds)


# memory: host budgets; blkio, cpu: gray faults' per-daemon cgroups (drills/faults/gray.py) a crash left behind
CGROUP_ROOTS = ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/blkio", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup")


def remove_cgroups(spec: SandboxSpec, wait_s: float = 5.0) -> list[str]:
    """Remove the sandbox's cgroups, deepest first. A cgroup whose last process is still exiting refuses
    rmdir (EBUSY) for a moment after the process was killed: retried for up to `wait_s`."""
    removed: list[str] = []
    deadline = time.monotonic() + wait_s
    while True:
        busy = False
        for root in CGROUP_ROOTS:
            base = Path(root) / f"ceph-drills-{spec.prefix}"
            if not base.is_dir():
                continue
            for dirpath, _dirs, _files in sorted(os.walk(base, topdown=False), key=lambda w: -len(w[0])):
                try:
                    Path(dirpath).rmdir()
                    removed.append(dirpath)
                except OSError:
                    busy = True
        if not busy or time.monotonic() > deadline:
            return removed
        time.sleep(0.2)


def leftovers(spec: SandboxSpec) -> list[str]:
    """What of this sandbox is still on the machine (empty after a clean `down`)."""
    found = [f"process {p.pid} {p.name()}" for p in hostctl.sandbox_processes(spec)]
    found += [f"netns {n}" for n in hostctl.list_netns() if n.startswith(f"{spec.prefix}-")]
    found += [f"link {n}" for n in os.listdir("/sys/class/net") if n.startswith(spec.prefix)]
    found += [f"cgroup {root}/ceph-drills-{spec.prefix}" for root in CGROUP_ROOTS if Path(root, f"ceph-drills-{spec.prefix}").is_dir()]
    if spec.path.exists():
        found.append(f"directory {spec.path}")
    return found


# --- status --------------------------------------------------------------------


def status(spec: SandboxSpec) -> dict:
    from drills.cluster import CephCluster, ClusterError

    daemons = {}
    for h in spec.hosts:
        names = [f"osd.{i}" for i in h.osd_ids] if h.index else [f"mon.{MON_ID}", f"mgr.{MGR_ID}"] + ([RGW] if spec.rgw else [])
        for n in names:
            pid = hostctl.daemon_pid(spec, n)
            rss = None
            if pid:
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            daemons[n] = {"host": h.name, "pid": pid, "rss": rss}
    out: dict = {"dir": spec.dir, "daemons": daemons, "health": None}
    if spec.target_path.exists():
        try:
            with CephCluster(load_target(spec.target_path), connect_timeout=5) as c:
                out["health"] = c.health_status()
                out["pgs"] = c.pg_summary().states
        except (ClusterError, Exception) as e:  # noqa: BLE001
            out["health"] = f"unreachable: {e}"
    return out


def with_overrides(spec: SandboxSpec, **kw: object) -> SandboxSpec:
    return replace(spec, **{k: v for k, v in kw.items() if v is not None})


__all__ = ["up", "down", "status", "leftovers", "UpResult", "DownResult", "GiB"]
