"""Gray faults (drills/faults/gray.py): records, labels, manual steps and the guard against a fake backend;
and for real on this machine without Ceph, through the sandbox backend: a rate-limited veth in throwaway
namespaces, a CPU quota on a busy process, a blkio throttle on direct writes to a file.

Everything real is made by fixtures and removed even on failure: namespaces ``<prefix>-r1h1`` /
``<prefix>-peer``, cgroups ``/sys/fs/cgroup/{cpu,blkio}/ceph-drills-<prefix>``, the processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FSID, make_target  # noqa: E402

from drills.faults.backends.sandbox import SandboxBackend  # noqa: E402
from drills.faults.backends.ssh import SshBackend  # noqa: E402
from drills.faults.errors import FaultError, Unsupported
from drills.faults.interface import UnsupportedOps
from drills.faults.kinds import RackPowerCut
from drills.faults.session import FaultSession, fault_from_record, fault_kinds, fault_type, heal_pending
from drills.faults.gray import CpuStarvation, Flapping, SlowDisk, SlowLink, osd_daemons  # noqa: E402
from drills.faults.guard import FaultGuard, GuardRefused, PoolSpec  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.faults.throttle import MiB, CpuLimit, DiskLimit, LinkLimit, ifb_name  # noqa: E402
from drills.sandbox.bootstrap import save_spec, to_target  # noqa: E402
from drills.sandbox.cgroups import V1_ROOT, ProcessCgroup, block_device_of  # noqa: E402
from drills.sandbox.spec import SandboxSpec  # noqa: E402
from drills.target import Access, Network  # noqa: E402

POOLS = [PoolSpec("rbd", 3, 2, "rack")]
GRAY_KINDS = {"slow_disk", "cpu_starvation", "slow_link", "flapping"}


def gray_faults(target, resolve):
    return [
        SlowDisk(target, 3, DiskLimit(write_bps=MiB, read_iops=50), resolve=resolve),
        SlowDisk(target, "r1h0", DiskLimit(read_bps=2 * MiB), resolve=resolve),
        CpuStarvation(target, "osd.0", 0.05, resolve=resolve),
        CpuStarvation(target, "rack2", CpuLimit(0.2, 50_000), resolve=resolve),
        SlowLink(target, "r0h1", LinkLimit(10_000_000), resolve=resolve),
        SlowLink(target, "rack1", LinkLimit(1_000_000, ingress=False), resolve=resolve),
        Flapping(target, "r2h0", down_s=3, up_s=7, duration_s=60, resolve=resolve),
    ]


# --- aiming, limits, labels ----------------------------------------------------------


def test_aimed_by_crush_name(target):
    assert osd_daemons(target, 3) == ["osd.3"]
    assert osd_daemons(target, "osd.3") == ["osd.3"]
    assert osd_daemons(target, "r1h0") == ["osd.4", "osd.5"]
    assert osd_daemons(target, "rack0") == ["osd.0", "osd.1", "osd.2", "osd.3"]
    assert osd_daemons(target, ["osd.5", "osd.1"]) == ["osd.1", "osd.5"]
    with pytest.raises(Exception, match="unknown daemon"):
        SlowDisk(target, 99, DiskLimit(write_bps=1))
    with pytest.raises(Exception, match="neither a host nor a rack"):
        SlowLink(target, "nowhere", LinkLimit(10**6))
    with pytest.raises(FaultError, match="no OSDs"):
        CpuStarvation(target, "svc", 0.1)
    assert SlowLink(target, "rack1", LinkLimit(10**6)).host_names() == ["r1h0", "r1h1"]


def test_limits_are_checked_and_rendered():
    with pytest.raises(ValueError):
        DiskLimit()
    with pytest.raises(ValueError):
        DiskLimit(write_bps=-1)
    with pytest.raises(ValueError):
        CpuLimit(0)
    with pytest.raises(ValueError):
        LinkLimit(100)
    d = DiskLimit(write_bps=MiB, read_iops=50)
    assert d.blkio_files("254:0") == {"blkio.throttle.write_bps_device": "254:0 1048576",
                                      "blkio.throttle.read_iops_device": "254:0 50"}
    assert d.systemd_properties("/dev/sdb") == ['"IOWriteBandwidthMax=/dev/sdb 1048576"', '"IOReadIOPSMax=/dev/sdb 50"']
    assert CpuLimit(0.05).cgroup_files() == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "5000"}
    assert CpuLimit(0.001).quota_us == 1000  # the kernel's minimum
    assert CpuLimit(0.05).systemd_properties() == ["CPUQuota=5%", "CPUQuotaPeriodSec=100ms"]
    assert LinkLimit(8_000_000).tbf() == "tbf rate 8000000bit burst 20000 latency 50ms"
    assert len(ifb_name("slowlink-0123abcd", 3)) <= 15


def test_labels(target, fake):
    labels = [f.label for f in gray_faults(target, fake.resolve)]
    assert labels == [
        "slow disk osd.3 (r 50 IOPS, w 1 MiB/s)",
        "slow disk r1h0 (r 2 MiB/s)",
        "cpu 5% osd.0",
        "cpu 20% rack2",
        "slow link r0h1 (10 Mbit/s)",
        "slow link rack1 (1 Mbit/s out)",
        "flap r2h0 3s down/7s up",
    ]


def test_registered_lazily_under_their_kinds():
    assert GRAY_KINDS <= set(fault_kinds())
    assert {fault_type(k).__name__ for k in GRAY_KINDS} == {"SlowDisk", "CpuStarvation", "SlowLink", "Flapping"}


# --- inject, heal, ledger ------------------------------------------------------------------


def test_each_injects_and_heals_through_its_backend_op(target, fake):
    r = fake.resolve
    disk = SlowDisk(target, "r1h0", DiskLimit(write_bps=MiB), resolve=r)
    with disk:
        assert [c[:3] for c in fake.ops("throttle_disk")] == [("throttle_disk", "r1h0", "osd.4"), ("throttle_disk", "r1h0", "osd.5")]
    assert fake.ops("unthrottle_disk") == [("unthrottle_disk", "r1h0", "osd.4", disk.fault_id), ("unthrottle_disk", "r1h0", "osd.5", disk.fault_id)]
    cpu = CpuStarvation(target, 0, 0.1, resolve=r)
    with cpu:
        pass
    assert fake.ops("limit_cpu", "unlimit_cpu") == [("limit_cpu", "r0h0", "osd.0", CpuLimit(0.1), cpu.fault_id),
                                                    ("unlimit_cpu", "r0h0", "osd.0", cpu.fault_id)]
    link = SlowLink(target, "r0h1", LinkLimit(10**6), resolve=r)
    with link:
        pass
    assert fake.ops("limit_link", "unlimit_link") == [("limit_link", "r0h1", LinkLimit(10**6), link.fault_id),
                                                      ("unlimit_link", "r0h1", link.fault_id)]


def test_heal_tries_every_daemon_even_if_one_fails(target, fake):
    fake.fail["unthrottle_disk"] = RuntimeError("cgroup busy")
    disk = SlowDisk(target, "rack0", DiskLimit(write_bps=MiB), resolve=fake.resolve)
    disk.inject()
    with pytest.raises(FaultError, match="4 daemon"):
        disk.heal()
    assert len(fake.ops("unthrottle_disk")) == 4


def test_undo_records_are_json_and_rebuild_the_same_heal(target, fake):
    for f in gray_faults(target, fake.resolve):
        rec = json.loads(json.dumps(f.ledger_entry().to_record()))
        rebuilt = fault_from_record(rec, target, resolve=fake.resolve)
        assert type(rebuilt) is type(f) and rebuilt.fault_id == f.fault_id and rebuilt.label == f.label, f
        assert rebuilt.manual_heal() == f.manual_heal()
        fake.calls.clear()
        f.heal()
        expected = list(fake.calls)
        fake.calls.clear()
        rebuilt.heal()
        assert fake.calls == expected and expected, f


def test_armed_in_the_ledger_before_applied_and_healed_by_drill_heal(target, fake):
    ledger = FaultLedger(target.state_dir)
    seen_pending: list[list[str]] = []
    real = fake.throttle_disk

    def throttle_disk(host, daemon, limit, tag):
        seen_pending.append([e.fault_id for e in FaultLedger(target.state_dir).pending()])
        real(host, daemon, limit, tag)

    fake.throttle_disk = throttle_disk
    s = FaultSession(target, guard=FaultGuard(target, FSID, POOLS), resolve=fake.resolve, ledger=ledger)
    with s:
        disk = s.inject(SlowDisk(target, 2, DiskLimit(write_iops=10)))
        assert seen_pending == [[disk.fault_id]]
    assert ledger.pending() == []  # healed on exit
    assert fake.ops("unthrottle_disk")

    # A crash: armed, never healed -> `drill heal` rebuilds the heal from the record.
    for f in gray_faults(target, fake.resolve):
        ledger.arm(f.ledger_entry("run-1"))
    fake.calls.clear()
    report = heal_pending(target, resolve=fake.resolve, ledger=ledger)
    assert report.ok and ledger.pending() == []
    assert {c[0] for c in fake.calls} == {"unthrottle_disk", "unlimit_cpu", "unlimit_link", "unblock_network"}


def test_a_failed_inject_is_healed_at_once(target, fake):
    fake.fail["limit_link:r1h1"] = FaultError("tc: RTNETLINK answers: Operation not supported")
    s = FaultSession(target, guard=FaultGuard(target, FSID, POOLS), resolve=fake.resolve)
    with s, pytest.raises(FaultError, match="not supported"):
        s.inject(SlowLink(target, "rack1", LinkLimit(10**6)))
    assert [c[:2] for c in fake.ops("unlimit_link")] == [("unlimit_link", "r1h0"), ("unlimit_link", "r1h1")]
    assert FaultLedger(target.state_dir).pending() == []


# --- flapping ------------------------------------------------------------------------------


def test_flapping_schedule_alternates_and_ends_up(target, fake):
    flap = Flapping(target, "r2h0", down_s=0.15, up_s=0.15, duration_s=0.7, resolve=fake.resolve)
    flap.inject()
    assert fake.ops("block_network") == [("block_network", "r2h0", None, flap.fault_id)]  # down at once
    flap._thread.join(5)
    ops = [c[0] for c in fake.ops("block_network", "unblock_network")]
    assert ops[0] == "block_network" and ops[-1] == "unblock_network", ops
    assert all(a != b for a, b in zip(ops, ops[1:])), ops  # strictly alternating
    assert 4 <= len(ops) <= 6, ops  # ~0.7 s / 0.15 s
    assert [s for _, s in flap.transitions] == ["down" if o == "block_network" else "up" for o in ops]
    flap.heal()
    assert fake.calls[-1] == ("unblock_network", "r2h0", flap.fault_id)


def test_flapping_heal_stops_the_schedule_and_leaves_the_link_up(target, fake):
    flap = Flapping(target, "rack0", down_s=0.1, up_s=0.1, duration_s=60, resolve=fake.resolve)
    flap.inject()
    time.sleep(0.35)
    flap.heal()
    assert not flap._thread.is_alive()
    n = len(fake.calls)
    time.sleep(0.3)
    assert len(fake.calls) == n  # nothing after the heal
    assert [c[:2] for c in fake.calls[-2:]] == [("unblock_network", "r0h0"), ("unblock_network", "r0h1")]
    assert flap.transitions[-1][1] == "up"


def test_flapping_schedule_error_is_kept_and_the_heal_still_lifts(target, fake):
    flap = Flapping(target, "r2h0", down_s=0.05, up_s=0.05, duration_s=5, resolve=fake.resolve)
    fake.fail["unblock_network"] = FaultError("nft: no such namespace")
    flap.inject()
    flap._thread.join(5)
    assert "no such namespace" in flap.schedule_error
    del fake.fail["unblock_network"]
    flap.heal()
    assert fake.calls[-1][0] == "unblock_network"


# --- the guard --------------------------------------------------------------------------------


def test_guard_counts_gray_faults_as_nothing_down_but_flapping_as_down(target, fake):
    g = FaultGuard(target, FSID, POOLS)
    slow = [SlowDisk(target, "rack0", DiskLimit(write_bps=MiB)), CpuStarvation(target, "rack1", 0.05),
            SlowLink(target, "rack2", LinkLimit(10**6))]
    assert g.check_all(slow).describe() == "nothing"  # slow everywhere: every pool still writable
    impact = g.check_all([*slow, Flapping(target, "rack0")])
    assert impact.racks == {"rack0"}
    with pytest.raises(GuardRefused, match="pool rbd"):
        g.check_all([Flapping(target, "r0h0"), RackPowerCut(target, "rack1")])
    with pytest.raises(GuardRefused, match="destructive"):
        FaultGuard(make_target(target.state_dir, destructive=False), FSID, POOLS).check(slow[0])


def test_unsupported_ops_refuse_in_one_line(target):
    h = target.host("r0h0")
    ops = UnsupportedOps()
    for call in (lambda: ops.throttle_disk(h, "osd.0", DiskLimit(write_bps=1), "t"),
                 lambda: ops.limit_cpu(h, "osd.0", CpuLimit(0.1), "t"),
                 lambda: ops.limit_link(h, LinkLimit(10**6), "t"),
                 lambda: ops.unlimit_link(h, "t")):
        with pytest.raises(Unsupported) as e:
            call()
        assert "\n" not in str(e.value) and "r0h0" in str(e.value)


# --- manual steps ---------------------------------------------------------------------------


def ssh_target(target):
    racks = tuple(dataclasses.replace(r, hosts=tuple(
        dataclasses.replace(h, access=Access(kind="ssh", host=h.address), network=Network(kind="nft", interfaces=("eth1",)))
        for h in r.hosts)) for r in target.racks)
    return dataclasses.replace(target, racks=racks, cluster=dataclasses.replace(target.cluster, deployment="package"))


def test_manual_heal_on_staging_names_the_units_and_links(target):
    t = ssh_target(target)
    disk = SlowDisk(t, 3, DiskLimit(write_bps=MiB))
    assert disk.manual_heal() == ("on host r0h1: systemctl set-property --runtime ceph-osd@3 "
                                  "IOReadBandwidthMax= IOWriteBandwidthMax= IOReadIOPSMax= IOWriteIOPSMax=")
    assert CpuStarvation(t, 0, 0.1).manual_heal() == "on host r0h0: systemctl set-property --runtime ceph-osd@0 CPUQuota= CPUQuotaPeriodSec="
    link = SlowLink(t, "r0h0", LinkLimit(10**6))
    text = link.manual_heal()
    assert text.startswith("on host r0h0: dev=eth1; ") and "tc qdisc del dev \"$dev\" root" in text
    assert f"ip link del {ifb_name(link.fault_id, 0)}" in text
    flap = Flapping(t, "r0h0")
    assert flap.manual_heal() == f"on host r0h0: nft delete table inet drills_{flap.fault_id.replace('-', '_')}"


def test_ssh_backend_commands(target):
    t = ssh_target(target)
    b = SshBackend(t)
    ran: list[str] = []
    b.run = lambda host, cmd, check=True: ran.append(cmd)  # type: ignore[method-assign]
    h = t.host("r0h1")
    b.throttle_disk(h, "osd.3", DiskLimit(write_bps=MiB), "slowdisk-1")
    b.unthrottle_disk(h, "osd.3", "slowdisk-1")
    b.limit_cpu(h, "osd.3", CpuLimit(0.05), "cpu-1")
    b.unlimit_cpu(h, "osd.3", "cpu-1")
    b.limit_link(h, LinkLimit(10**6), "slowlink-1")
    assert ran[0] == ('systemctl set-property --runtime ceph-osd@3 '
                      '"IOWriteBandwidthMax=$(readlink -f /var/lib/ceph/osd/ceph-3/block) 1048576"')
    assert ran[1].endswith("ceph-osd@3 IOReadBandwidthMax= IOWriteBandwidthMax= IOReadIOPSMax= IOWriteIOPSMax=")
    assert ran[2] == "systemctl set-property --runtime ceph-osd@3 CPUQuota=5% CPUQuotaPeriodSec=100ms"
    assert ran[3] == "systemctl set-property --runtime ceph-osd@3 CPUQuota= CPUQuotaPeriodSec="
    b64 = re.fullmatch(r"echo (\S+) \| base64 -d \| sh", ran[4]).group(1)
    import base64

    assert "tc qdisc replace dev \"$dev\" root tbf rate 1000000bit" in base64.b64decode(b64).decode()
    with pytest.raises(Unsupported, match="only OSD"):
        b.throttle_disk(h, "mon.a", DiskLimit(write_bps=1), "x")


# --- for real: the sandbox backend on this machine, no Ceph -----------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tc") or not shutil.which("ip"),
    reason="needs root, tc and ip (iproute2)",
)


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check, input=input)


@pytest.fixture
def fake_sandbox(tmp_path):
    """A sandbox directory (spec, empty ceph.conf) and its target, with no Ceph behind it; cgroups of
    its prefix removed at the end whatever happened."""
    prefix = f"gu{os.getpid() % 10000}"
    spec = SandboxSpec(dir=str(tmp_path / "sb"), prefix=prefix, subnet="198.18.7.0/24", racks=1, hosts_per_rack=1)
    (spec.path / "run").mkdir(parents=True)
    spec.conf_path.write_text("")
    save_spec(spec)
    target = dataclasses.replace(to_target(spec, FSID), state_dir=str(tmp_path / "state"), destructive=True)
    yield spec, target
    for controller in ("cpu", "blkio"):
        base = V1_ROOT / controller / f"ceph-drills-{prefix}"
        for cg in sorted(base.glob("*")) if base.is_dir() else []:
            ProcessCgroup(controller, cg).release()
        if base.is_dir():
            base.rmdir()


def start_daemon_like(spec: SandboxSpec, daemon: str, script: str) -> subprocess.Popen:
    """A process the sandbox takes for `daemon`: its command line names the sandbox's ceph.conf."""
    p = subprocess.Popen(["sh", "-c", script, str(spec.conf_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    (spec.path / "run" / f"{daemon}.pid").write_text(str(p.pid))
    return p


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float = 1.0) -> float:
    t0, c0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def cgroup_of(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return ""


@needs_root
@pytest.mark.skipif(not (V1_ROOT / "cpu" / "cpu.cfs_quota_us").exists(), reason="no cgroup v1 cpu controller")
def test_cpu_starvation_for_real(fake_sandbox, capsys):
    spec, target = fake_sandbox
    busy = start_daemon_like(spec, "osd.0", "while :; do :; done")
    try:
        fault = CpuStarvation(target, 0, 0.05)
        free = cpu_share(busy.pid, 0.6)
        fault.inject()
        cg = SandboxBackend(target).fault_cgroup("cpu", "osd.0", fault.fault_id)
        assert cg.read("cpu.cfs_quota_us").strip() == "5000" and busy.pid in cg.pids()
        starved = cpu_share(busy.pid, 1.5)
        # The manual step, run as printed, heals as well as heal() does (and heal() after it is a no-op).
        sh("sh", "-c", fault.manual_heal())
        assert not cg.path.exists() and cgroup_of(busy.pid, "cpu") == "/"
        fault.heal()
        after = cpu_share(busy.pid, 0.6)
        with capsys.disabled():
            print(f"\n[cpu starvation] busy loop: {free:.2f} CPU free, {starved:.3f} at a 5% quota, {after:.2f} healed")
        assert starved <= 0.08, starved  # a hard cap (plus a period and a 10 ms clock tick each end of the reading)
        assert max(free, after) > 3 * starved  # (the 2 shared cores may be busy: the better of two readings)
    finally:
        busy.kill()
        busy.wait(5)


@needs_root
@pytest.mark.skipif(not (V1_ROOT / "blkio" / "blkio.throttle.write_bps_device").exists(), reason="no cgroup v1 blkio controller")
def test_slow_disk_for_real(fake_sandbox, capsys):
    spec, target = fake_sandbox
    block = spec.path / "osd" / "ceph-0" / "block"
    block.parent.mkdir(parents=True)
    sh("fallocate", "-l", "8M", str(block))
    try:
        block_device_of(block)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the test directory is not on a block device: {e}")
    # Waits for a line, then writes 3 MiB with O_DIRECT (page cache writeback is not the cgroup's).
    script = f"read go; exec dd if=/dev/zero of={block} bs=64k count=48 oflag=direct conv=notrunc"

    def timed_write(limit: DiskLimit | None) -> float:
        p = start_daemon_like(spec, "osd.0", script)
        fault = SlowDisk(target, "osd.0", limit) if limit else None
        try:
            if fault:
                fault.inject()
                cg = SandboxBackend(target).fault_cgroup("blkio", "osd.0", fault.fault_id)
                assert cg.read("blkio.throttle.write_bps_device").split() == [block_device_of(block), str(limit.write_bps)]
            t0 = time.monotonic()
            p.communicate("go\n", timeout=30)
            elapsed = time.monotonic() - t0
            assert p.returncode == 0
            return elapsed
        finally:
            if fault:
                fault.heal()
                assert not SandboxBackend(target).fault_cgroup("blkio", "osd.0", fault.fault_id).path.exists()
            p.kill()
            p.wait(5)

    free = timed_write(None)
    limited = timed_write(DiskLimit(write_bps=2 * MiB))
    with capsys.disabled():
        print(f"\n[slow disk] 3 MiB O_DIRECT: {free:.3f} s free ({3 / free:.0f} MiB/s), {limited:.2f} s at a 2 MiB/s "
              f"limit ({3 / limited:.2f} MiB/s)")
    assert 1.0 <= limited <= 3.0, limited  # ~1.5 s (the first slice may pass a little early)
    assert limited > 4 * free


# Receives (mode "recv") or sends ("send") as fast as it can for `seconds`; prints bytes/s as the receiver saw them.
PEER = textwrap.dedent("""
    import socket, sys, time
    role, mode, host, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if role == "server":
        srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, 7100)); srv.listen(1); print("ready", flush=True)
        c, _ = srv.accept()
    else:
        c = socket.create_connection((host, 7100), timeout=10)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    receiving = (role == "server") == (mode == "recv")
    end = time.monotonic() + seconds
    if receiving:
        c.settimeout(seconds + 5)
        n, t0 = 0, None
        while time.monotonic() < end:
            b = c.recv(65536)
            if not b:
                break
            t0 = t0 or time.monotonic()
            n += len(b)
        print(int(n / (time.monotonic() - t0)), flush=True)
        c.close()
    else:
        buf = b"x" * 65536
        try:
            while True:
                c.sendall(buf)
        except OSError:
            pass
""")


@pytest.fixture
def host_netns(fake_sandbox):
    """The sandbox host r1h1's namespace (198.18.7.11) and a peer namespace (198.18.7.2) on a veth pair."""
    spec, target = fake_sandbox
    h = spec.host("r1h1")
    peer = f"{spec.prefix}-peer"
    try:
        sh("ip", "netns", "add", h.netns)
        sh("ip", "netns", "add", peer)
        sh("ip", "-n", h.netns, "link", "add", h.veth_host, "type", "veth", "peer", "name", "peer0", "netns", peer)
        sh("ip", "-n", h.netns, "addr", "add", f"{h.address}/24", "dev", h.veth_host)
        sh("ip", "-n", peer, "addr", "add", "198.18.7.2/24", "dev", "peer0")
        for ns, dev in ((h.netns, h.veth_host), (peer, "peer0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield spec, target, h, peer
    finally:
        for ns in (h.netns, peer):
            sh("ip", "netns", "del", ns, check=False)


def throughput(host_ns: str, peer_ns: str, address: str, mode: str, seconds: float = 1.5) -> float:
    """Bytes/s into the host (mode "recv") or out of it ("send"), over TCP from/to the peer namespace."""
    srv = subprocess.Popen(["ip", "netns", "exec", host_ns, sys.executable, "-c", PEER, "server", mode, address, str(seconds)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        cli = subprocess.run(["ip", "netns", "exec", peer_ns, sys.executable, "-c", PEER, "client", mode, address, str(seconds)],
                             capture_output=True, text=True, timeout=seconds + 20)
        out = cli.stdout if mode == "send" else srv.communicate(timeout=seconds + 20)[0]
        return float(out.split()[-1])
    finally:
        srv.kill()
        srv.wait(5)


def qdiscs(ns: str) -> str:
    return sh("tc", "-n", ns, "qdisc", "show").stdout


@needs_root
def test_slow_link_for_real_both_directions(host_netns, capsys):
    spec, target, h, peer = host_netns
    rate = 8_000_000  # 1 MB/s
    free_in = throughput(h.netns, peer, h.address, "recv")
    fault = SlowLink(target, "r1h1", LinkLimit(rate))
    fault.inject()
    try:
        assert "qdisc tbf" in qdiscs(h.netns) and "qdisc ingress" in qdiscs(h.netns)
        limited_in = throughput(h.netns, peer, h.address, "recv")
        limited_out = throughput(h.netns, peer, h.address, "send")
    finally:
        fault.heal()
    left = qdiscs(h.netns)
    assert "tbf" not in left and "ingress" not in left, left
    assert ifb_name(fault.fault_id, 0) not in sh("ip", "-n", h.netns, "link").stdout
    fault.heal()  # twice is fine (drill heal after a runner that healed)
    free_out = throughput(h.netns, peer, h.address, "send")
    with capsys.disabled():
        print(f"\n[slow link] tbf {rate / 1e6:g} Mbit/s = {rate / 8e6:g} MB/s: in {limited_in / 1e6:.2f} MB/s, "
              f"out {limited_out / 1e6:.2f} MB/s; unlimited in {free_in / 1e6:.0f} MB/s, out {free_out / 1e6:.0f} MB/s")
    for limited in (limited_in, limited_out):
        assert 0.5 * rate / 8 <= limited <= 1.25 * rate / 8, limited
    assert free_in > 10 * rate / 8 and free_out > 10 * rate / 8


@needs_root
def test_slow_link_manual_step_heals_as_printed(host_netns):
    spec, target, h, peer = host_netns
    fault = SlowLink(target, "r1h1", LinkLimit(10**6))
    fault.inject()
    sh("sh", "-c", fault.manual_heal())
    assert "tbf" not in qdiscs(h.netns) and "ingress" not in qdiscs(h.netns)
    assert ifb_name(fault.fault_id, 0) not in sh("ip", "-n", h.netns, "link").stdout
    fault.heal()


@needs_root
@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_flapping_for_real_ends_with_the_link_up(host_netns):
    spec, target, h, peer = host_netns

    def reachable() -> bool:
        """A TCP connect answered (refused counts: nobody listens, but the host answers) within 0.3 s."""
        probe = (f"import socket\ntry:\n    socket.create_connection(('{h.address}', 9), timeout=0.3)\n"
                 "except ConnectionRefusedError:\n    pass\nexcept OSError:\n    raise SystemExit(1)")
        return sh("ip", "netns", "exec", peer, sys.executable, "-c", probe, check=False).returncode == 0

    assert reachable()
    flap = Flapping(target, "r1h1", down_s=2.0, up_s=4.0, duration_s=60)
    flap.inject()
    try:
        assert not reachable()  # within the first 2 s down
        deadline = time.monotonic() + 5  # back up in the first "up" (probes are slow on a busy machine)
        while not reachable():
            assert time.monotonic() < deadline, "the schedule never brought the link up"
        assert [s for _, s in flap.transitions] == ["down", "up"]
    finally:
        flap.heal()
    assert reachable() and "drills_" not in sh("ip", "netns", "exec", h.netns, "nft", "list", "tables").stdout
