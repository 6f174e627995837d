"""Concurrent-restore drill: N chunked zlib backups restored at once into RBD, memory bounded.

Cinder bug 1865011: 41 concurrent restores of chunked, compressed backups into RBD volumes
held ~4.65 GB each and the backup service was OOM-killed.  Runbook:
 1. backups: DISTINCT volumes (mixed random / zero / text data) are written by the format
    writer, as Cinder's chunked driver lays them out, into the target's RADOS pool (or a
    posix directory); the N restores cycle over them;
 2. baseline: fio (rbd engine, sequential 4 MiB writes into a fresh image) measures the
    cluster's raw RBD write rate in this run;
 3. recovery: the N restores run at once in a child process of their own (the engine, memory
    budget BUDGET, MALLOC_ARENA_MAX=2 as `drill restore` uses), its RSS sampled into the
    timeline as restore.rss.bytes; an optional fault (DRILL_RESTORE_FAULT) is injected while
    they run;
 4. after: every restored image is read back and compared with its source volume.
Measured (thresholds: the `concurrent_restore` section): the engine's peak RSS (VmHWM), its
RSS above the budget (restore_rss_overhead), restores failed, the aggregate restore rate
over the raw RBD write rate, restored 4 MiB pieces that differ from the source (lost_writes).

Sizes (environment): DRILL_RESTORE_COUNT (41), DRILL_RESTORE_VOLUME_MIB (128),
DRILL_RESTORE_CHUNK_MIB (64), DRILL_RESTORE_BUDGET (256MiB), DRILL_RESTORE_DISTINCT (4),
DRILL_RESTORE_STORE (rados | posix), DRILL_RESTORE_RAW_SECONDS (15),
DRILL_RESTORE_MALLOC_ARENA_MAX (2; empty = glibc's default).  Smoke size for CI:
DRILL_RESTORE_COUNT=4 DRILL_RESTORE_VOLUME_MIB=16 DRILL_RESTORE_CHUNK_MIB=4 (~1 min).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from drills.restore.budget import format_size, parse_size
from drills.restore.format import WrittenBackup, cinder_prefix, metadata_name, sha256file_name, write_backup
from drills.restore.isolated import BackupRef, IsolatedJob, IsolatedRunResult, IsolatedRunSpec, run_isolated
from drills.restore.verify import ImageDigest, bytes_digest, rbd_image_digest
from drills.faults.base import Fault, FaultSession, RackPowerCut
from drills.scenario import oom_kills_now
from drills.target import Target
from drills.workloads.fio import FioJob, run_job

DRILL = "concurrent_restore"
MiB = 1 << 20


@dataclass(frozen=True)
class RestoreDrillSettings:
    count: int
    volume_bytes: int
    chunk_bytes: int
    budget_bytes: int
    distinct_volumes: int
    store: str  # rados | posix
    raw_seconds: int
    malloc_arena_max: str
    fault: str

    @classmethod
    def from_environment(cls) -> "RestoreDrillSettings":
        env = os.environ.get
        settings = cls(
            count=int(env("DRILL_RESTORE_COUNT", "41")),
            volume_bytes=int(env("DRILL_RESTORE_VOLUME_MIB", "128")) * MiB,
            chunk_bytes=int(env("DRILL_RESTORE_CHUNK_MIB", "64")) * MiB,
            budget_bytes=parse_size(env("DRILL_RESTORE_BUDGET", "256MiB")),
            distinct_volumes=int(env("DRILL_RESTORE_DISTINCT", "4")),
            store=env("DRILL_RESTORE_STORE", "rados"),
            raw_seconds=int(env("DRILL_RESTORE_RAW_SECONDS", "15")),
            malloc_arena_max=env("DRILL_RESTORE_MALLOC_ARENA_MAX", "2"),
            fault=env("DRILL_RESTORE_FAULT", ""),
        )
        if settings.store not in ("rados", "posix"):
            raise pytest.UsageError(f"DRILL_RESTORE_STORE={settings.store!r}: use rados or posix")
        if min(settings.count, settings.volume_bytes, settings.chunk_bytes, settings.distinct_volumes) <= 0:
            raise pytest.UsageError("DRILL_RESTORE_* sizes and counts must be positive")
        return settings


# --- the fault hook ----------------------------------------------------------------------

def fault_from_setting(setting: str, target: Target) -> Fault | None:
    """DRILL_RESTORE_FAULT ("" = none, "rack_power_cut:RACK" = cut RACK's power during the restores)."""
    if not setting:
        return None
    kind, _, subject = setting.partition(":")
    if kind != "rack_power_cut" or not subject:
        raise pytest.UsageError(f"DRILL_RESTORE_FAULT={setting!r}: expected rack_power_cut:RACK")
    return RackPowerCut(target, subject)


@contextmanager
def fault_during(faults: FaultSession, fault: Fault | None) -> Iterator[None]:
    """The fault is in force while the restores run; the session records, guards and heals it."""
    if fault is None:
        yield
        return
    with faults.injected(fault):
        yield


# --- backups -----------------------------------------------------------------------------

def make_volume(size: int, seed: int) -> bytes:
    """Random 30 %, zeros 30 %, repetitive text 40 % in 256 KiB..3 MiB stretches (zlib ~0.5)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        n = rng.choice((256 * 1024, MiB, 3 * MiB))
        kind = rng.random()
        if kind < 0.3:
            out += rng.randbytes(n)
        elif kind < 0.6:
            out += bytes(n)
        else:
            line = b"rack-%d osd.%d pg %x degraded write 45ms\n" % (rng.randrange(9), rng.randrange(99), rng.randrange(1 << 30))
            out += (line * (n // len(line) + 1))[:n]
    return bytes(out[:size])


@dataclass(frozen=True)
class SourceBackup:
    ref: BackupRef
    written: WrittenBackup
    digest: ImageDigest


@pytest.fixture
def settings() -> RestoreDrillSettings:
    return RestoreDrillSettings.from_environment()


@pytest.fixture
def source_backups(settings: RestoreDrillSettings, cluster, drill_target: Target) -> Iterator[list[SourceBackup]]:
    from drills.restore.rados_store import RadosBackupStore
    from drills.restore.store import PosixBackupStore

    pool = drill_target.cluster.rados_pool
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="drill-restore-") as tmp, cluster.open_ioctx(pool) as ioctx:
        stores = []
        backups: list[SourceBackup] = []
        try:
            for i in range(min(settings.distinct_volumes, settings.count)):
                volume = make_volume(settings.volume_bytes, seed=i)
                if settings.store == "rados":
                    store, location = RadosBackupStore(ioctx), pool
                else:
                    store = PosixBackupStore(Path(tmp) / f"container{i}")
                    location = str(store.root)
                stores.append(store)
                prefix = cinder_prefix(f"drill-{tag}-{i}", f"restore-{tag}-{i}")
                written = write_backup(volume, store, prefix, settings.chunk_bytes, "zlib")
                backups.append(SourceBackup(BackupRef(settings.store, location, prefix), written, bytes_digest(volume)))
                del volume
            yield backups
        finally:
            for store, b in zip(stores, backups):
                for name in (*b.written.object_names, metadata_name(b.ref.prefix), sha256file_name(b.ref.prefix)):
                    store.delete_object(name)


@pytest.fixture
def image_names(cluster, drill_target: Target) -> Iterator[list[str]]:
    import rbd

    names: list[str] = []
    yield names
    with cluster.open_ioctx(drill_target.cluster.rbd_pool) as ioctx:
        present = set(rbd.RBD().list(ioctx))
        for name in names:
            if name in present:
                rbd.RBD().remove(ioctx, name)


def measure_raw_rbd_write(drill, drill_target: Target, cluster, seconds: int, image_names: list[str]) -> float:
    """fio, rbd engine, sequential 4 MiB writes at queue depth 16 into a fresh image: bytes/s."""
    import rbd

    name = f"drill-restore-raw-{uuid.uuid4().hex[:8]}"
    size = 2048 * MiB
    with cluster.open_ioctx(drill_target.cluster.rbd_pool) as ioctx:
        rbd.RBD().create(ioctx, name, size)
    image_names.append(name)
    job = FioJob(name="restore-raw-write", rw="write", bs="4M", iodepth=16, runtime=seconds, size=f"{size // MiB}M",
                 ioengine="rbd", pool=drill_target.cluster.rbd_pool, rbdname=name,
                 clientname=drill_target.cluster.client.removeprefix("client."), conf=drill_target.cluster.conf)
    result = run_job(job, drill.timeline)
    if result.returncode != 0 or "write" not in result.totals:
        pytest.fail(f"fio raw RBD write failed (exit {result.returncode}): {' '.join(result.notes)[:500]}", pytrace=False)
    return result.totals["write"].bw_bytes


def verify_images(cluster, pool: str, jobs: list[IsolatedJob], expected: dict[str, ImageDigest],
                  result: IsolatedRunResult) -> tuple[int, int, list[str]]:
    """(images bit-exact, 4 MiB pieces that differ, problems) over the restores that reported done."""
    done = {o.image for o in result.outcomes if o.status == "done"}

    def check(job: IsolatedJob) -> tuple[bool, int, str]:
        want = expected[job.image]
        with cluster.open_ioctx(pool) as ioctx:
            got = rbd_image_digest(ioctx, job.image, want.size)
        differing = want.pieces_differing(got)
        return got.sha256 == want.sha256, differing, "" if differing == 0 else f"{job.image}: {differing} pieces differ"

    with ThreadPoolExecutor(max_workers=4) as pool_:
        checked = list(pool_.map(check, [j for j in jobs if j.image in done]))
    exact = sum(ok for ok, _, _ in checked)
    return exact, sum(d for _, d, _ in checked), [p for _, _, p in checked if p]




def test_concurrent_restores_into_rbd(drill, cluster, faults, drill_target: Target, timeline, settings: RestoreDrillSettings,
                                      source_backups: list[SourceBackup], image_names: list[str]) -> None:
    fault = fault_from_setting(settings.fault, drill_target)
    cluster.wait_for_health_ok(timeout=300)
    pool = drill_target.cluster.rbd_pool

    drill.phase("baseline")
    raw_rate = measure_raw_rbd_write(drill, drill_target, cluster, settings.raw_seconds, image_names)
    drill.note(f"raw RBD write (fio, seq 4 MiB, qd 16): {raw_rate / 1e6:.0f} MB/s")

    tag = uuid.uuid4().hex[:6]
    jobs: list[IsolatedJob] = []
    expected: dict[str, ImageDigest] = {}
    for i in range(settings.count):
        source = source_backups[i % len(source_backups)]
        image = f"drill-restore-{tag}-{i:03d}"
        image_names.append(image)
        jobs.append(IsolatedJob(source.ref, image))
        expected[image] = source.digest
    malloc_env = {"MALLOC_ARENA_MAX": settings.malloc_arena_max} if settings.malloc_arena_max else {}
    spec = IsolatedRunSpec("engine", drill_target.path, pool, tuple(jobs), budget_bytes=settings.budget_bytes,
                           concurrency=settings.count, malloc_env=malloc_env)

    drill.phase("recovery", restores=settings.count, budget=settings.budget_bytes)
    recovery_started = time.time()
    oom_before = oom_kills_now()
    with fault_during(faults, fault):
        result = run_isolated(spec, on_rss=lambda t, rss: timeline.sample("restore.rss.bytes", rss, t=t, process="restore"),
                              timeout=3600)
    oom_kills = (oom_kills_now() or 0) - (oom_before or 0) + (1 if result.exit_status == -9 else 0)
    failed = len(result.failed)
    restore_rate = result.bytes_logical / result.seconds if result.seconds else 0.0
    peak_rss = result.vm_hwm_bytes or result.sampled_rss_max_bytes or None
    drill.measure("recovery", "restore_rss_peak", peak_rss)
    drill.measure("recovery", "restore_rss_overhead", None if peak_rss is None else max(0, peak_rss - settings.budget_bytes))
    drill.measure("recovery", "restores_failed", failed)
    drill.measure("recovery", "restore_throughput_ratio", restore_rate / raw_rate if raw_rate and result.seconds else None)
    drill.measure("recovery", "oom_kills", oom_kills)
    drill.note(f"{settings.count} restores of {format_size(settings.volume_bytes)} ({settings.distinct_volumes} distinct "
               f"backups, {format_size(settings.chunk_bytes)} zlib chunks, store {settings.store}) in "
               f"{result.seconds:.1f} s: {restore_rate / 1e6:.0f} MB/s of volume data "
               f"({result.mb_per_s_written:.0f} MB/s written after zero skipping) vs raw {raw_rate / 1e6:.0f} MB/s")
    drill.note(f"restore process: peak RSS {format_size(result.vm_hwm_bytes)} (VmHWM), budget "
               f"{format_size(settings.budget_bytes)}, peak reserved {format_size(result.peak_reserved_bytes)}, "
               f"idle {format_size(result.idle_rss_bytes)}, {result.threads_max} threads, "
               f"MALLOC_ARENA_MAX={settings.malloc_arena_max or 'unset'}")
    for outcome in result.failed[:10]:
        drill.note(f"failed: {outcome.image}: {outcome.error}")
    if result.exit_status != 0:
        drill.note(f"restore process exited {result.exit_status}: {result.stderr_tail[-300:]}")

    # Small restores can finish within a second: the 1 Hz daemon samplers must see the phase.
    time.sleep(max(0.0, 2.5 - (time.time() - recovery_started)))
    drill.phase("after")
    exact, differing, problems = verify_images(cluster, pool, jobs, expected, result)
    drill.measure("after", "restores_failed", failed + (settings.count - failed - exact))
    drill.measure("after", "lost_writes", differing)
    drill.note(f"read back: {exact}/{settings.count} images bit-exact (sha256 of image == sha256 of source volume)")
    for p in problems[:10]:
        drill.note(p)
    outcome = drill.finish()
    drill.assert_passed(outcome)
