"""Gray faults on the real sandbox: each injected through a FaultSession for a few seconds, its effect
measured on Ceph (an OSD's own write bench, a replicated write, the host's reachability), healed, and
the ledger, cgroups, qdiscs and nft tables checked empty.  Kept short: ~1 min with the sandbox's start."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from drills.cluster import CephCluster
from drills.faults.session import FaultSession
from drills.faults.gray import CpuStarvation, Flapping, SlowDisk, SlowLink
from drills.faults.guard import guard_from_cluster
from drills.faults.ledger import FaultLedger
from drills.faults.throttle import MiB, DiskLimit, LinkLimit
from drills.sandbox.cgroups import V1_ROOT
from drills.target import Target

pytestmark = pytest.mark.integration

HOST = "r2h1"  # one host, one OSD, out of the way of the other integration modules' favourite rack1


def bench_s(c: CephCluster, osd: int, count: int) -> float:
    """`ceph tell osd.N bench <count> 4096`: the OSD writes to its own store, no replication; seconds taken."""
    return float(c.osd_command(osd, "bench", count=count, size=4096)["elapsed_sec"])


def clean_afterwards(target: Target, spec) -> None:
    assert FaultLedger(target.state_dir).pending() == []
    for controller in ("blkio", "cpu"):
        assert not list((V1_ROOT / controller / f"ceph-drills-{spec.prefix}").glob("*")), controller
    ns = target.host(HOST).access.netns
    assert "tbf" not in subprocess.run(["tc", "-n", ns, "qdisc", "show"], capture_output=True, text=True).stdout
    assert "drills_" not in subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], capture_output=True, text=True).stdout


@pytest.fixture
def osd_of_host(sandbox_target: Target) -> int:
    return sandbox_target.host(HOST).osd_ids[0]


def test_slow_disk_and_cpu_starvation_slow_the_osds_own_writes(sandbox_cluster, sandbox_target, sandbox_spec, osd_of_host, capsys):
    c, t, osd = sandbox_cluster, sandbox_target, osd_of_host
    c.wait_for_clean(timeout=120)
    guard = guard_from_cluster(t, c)
    small, big = 512 * 1024, 4 * MiB  # 128 and 1024 writes of 4 KiB
    disk_free, cpu_free = bench_s(c, osd, small), bench_s(c, osd, big)
    with FaultSession(t, guard=guard) as s:
        with s.injected(SlowDisk(t, osd, DiskLimit(write_bps=MiB))):
            disk_slow = bench_s(c, osd, small)  # BlueStore's WAL doubles the bytes: ~1 s at 1 MiB/s
        disk_after = bench_s(c, osd, small)
        with s.injected(CpuStarvation(t, HOST, 0.05)):
            cpu_slow = bench_s(c, osd, big)
        cpu_after = bench_s(c, osd, big)
    with capsys.disabled():
        print(f"\n[slow disk] osd.{osd} bench 128 x 4 KiB: {disk_free:.3f} s free, {disk_slow:.2f} s at 1 MiB/s written, "
              f"{disk_after:.3f} s healed"
              f"\n[cpu starvation] osd.{osd} bench 1024 x 4 KiB: {cpu_free:.3f} s free, {cpu_slow:.2f} s at 5% of a CPU, "
              f"{cpu_after:.3f} s healed")
    assert disk_slow >= 0.5 and disk_slow > 10 * disk_free
    assert disk_after < disk_slow / 5
    assert cpu_slow >= 0.5 and cpu_slow > 3 * cpu_free  # (the 2 shared cores may be busy: a loose ratio)
    assert cpu_after < cpu_slow / 3
    assert osd in c.osds_up()  # slow, not down: nothing marks a slow OSD down
    clean_afterwards(t, sandbox_spec)


def object_on(c: CephCluster, pool: str, osd: int) -> str:
    """An object name whose PG's acting set holds `osd` (so its write crosses that OSD's host link)."""
    for i in range(200):
        name = f"gray-link-{i}"
        if osd in c.mon_command("osd map", pool=pool, object=name)["acting"]:
            return name
    raise AssertionError(f"no object of the first 200 maps to osd.{osd}")


def test_slow_link_slows_replicated_writes_through_the_host(sandbox_cluster, sandbox_target, sandbox_spec, osd_of_host, capsys):
    c, t, osd = sandbox_cluster, sandbox_target, osd_of_host
    pool = t.cluster.rados_pool
    name = object_on(c, pool, osd)
    data = b"g" * (2 * MiB)
    rate = 16_000_000  # 2 MB/s: 2 MiB take ~1 s to reach the host
    with c.open_ioctx(pool) as io:
        def write_s() -> float:
            t0 = time.monotonic()
            io.write_full(name, data)
            return time.monotonic() - t0

        free = min(write_s(), write_s())
        with FaultSession(t, guard=guard_from_cluster(t, c)) as s:
            with s.injected(SlowLink(t, HOST, LinkLimit(rate))):
                slow = write_s()
        after = min(write_s(), write_s())
        io.remove_object(name)
    with capsys.disabled():
        print(f"\n[slow link] 2 MiB write whose PG holds osd.{osd}: {free:.3f} s free, {slow:.2f} s with {HOST} at "
              f"{rate / 1e6:g} Mbit/s ({len(data) * 8 / rate:.2f} s at line rate), {after:.3f} s healed")
    assert slow >= 0.8 * len(data) * 8 / rate
    assert slow > 4 * free and after < slow / 3
    clean_afterwards(t, sandbox_spec)


def reachable(address: str) -> bool:
    """The host answers a TCP connect (refused counts as an answer) within 0.2 s."""
    try:
        socket.create_connection((address, 9), timeout=0.2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return True


def test_flapping_host_comes_and_goes_and_is_not_marked_down(sandbox_cluster, sandbox_target, sandbox_spec, osd_of_host, capsys):
    c, t, osd = sandbox_cluster, sandbox_target, osd_of_host
    address = t.host(HOST).address
    assert reachable(address)
    samples: list[bool] = []
    with FaultSession(t, guard=guard_from_cluster(t, c)) as s:
        flap = s.inject(Flapping(t, HOST, down_s=1.0, up_s=1.0, duration_s=30))
        end = time.monotonic() + 6
        while time.monotonic() < end:
            samples.append(reachable(address))
            time.sleep(0.05)
        s.heal(flap)
    changes = sum(1 for a, b in zip(samples, samples[1:]) if a != b)
    with capsys.disabled():
        print(f"\n[flapping] {HOST} 1 s down / 1 s up: {changes} reachability changes in 6 s, "
              f"{samples.count(False)}/{len(samples)} samples unreachable; transitions {[x for _, x in flap.transitions]}")
    assert samples[0] is False and changes >= 4  # ~5 in 6 s
    assert reachable(address)
    assert osd in c.osds_up()  # 1 s of silence at a time is well inside osd_heartbeat_grace
    clean_afterwards(t, sandbox_spec)
