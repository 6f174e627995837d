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
DRILL_RESTORE_MALLOC_ARENA_MAX (2; empty = glibc's default), DRILL_RESTORE_MAX_RATE (auto = half
the raw rate, a size per second such as 100MiB, or 0 = no rate-limited run), DRILL_RESTORE_ADAPTIVE
(1 = the rate-limited run also backs off on slow ops / rising write p99).  Client impact: a fio
client (4 KiB random writes, queue depth 4, its own image) runs alone in the baseline and during
each restore run; its p99 is measured without and with the rate limit.  Smoke size for CI:
DRILL_RESTORE_COUNT=4 DRILL_RESTORE_VOLUME_MIB=16 DRILL_RESTORE_CHUNK_MIB=4 (~1 min).
"""

from __future__ import annotations

import dataclasses
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
from drills.faults.fault import Fault
from drills.faults.kinds import RackPowerCut
from drills.faults.session import FaultSession
from drills.report.results import LostWrites
from drills.target import Target
from drills.workloads.fio import FioJob, run_job
from drills.units import MiB

DRILL = "concurrent_restore"


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
    max_rate: str = "auto"  # auto | bytes per second ("100MB") | 0 = no rate-limited run
    adaptive: bool = False

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
            max_rate=env("DRILL_RESTORE_MAX_RATE", "auto"),
            adaptive=env("DRILL_RESTORE_ADAPTIVE", "") == "1",
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
def source_backups(settings: RestoreDrillSettings, drill_cluster, drill_target: Target) -> Iterator[list[SourceBackup]]:
    from drills.restore.rados_store import RadosBackupStore
    from drills.restore.store import PosixBackupStore

    pool = drill_target.cluster.rados_pool
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="drill-restore-") as tmp, drill_cluster.open_ioctx(pool) as ioctx:
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
def image_names(drill_cluster, drill_target: Target) -> Iterator[list[str]]:
    import rbd

    names: list[str] = []
    yield names
    with drill_cluster.open_ioctx(drill_target.cluster.rbd_pool) as ioctx:
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


def max_rate_from_setting(setting: str, raw_rate: float) -> float:
    """DRILL_RESTORE_MAX_RATE: "auto" = half the raw RBD write rate, "0" = none, else a size per second."""
    if setting == "auto":
        return raw_rate / 2
    try:
        return float(parse_size(setting)) if setting not in ("0", "") else 0.0
    except ValueError:
        raise pytest.UsageError(f"DRILL_RESTORE_MAX_RATE={setting!r}: use auto, 0 or a size per second (100MiB)")


@dataclass
class ClientLatency:
    """What the fio client saw while it ran (None = not measured, with why in `note`)."""

    p99_ms: float | None = None
    iops: float | None = None
    note: str = ""


@contextmanager
def client_latency(drill_target: Target, cluster, image_names: list[str], label: str) -> Iterator[ClientLatency]:
    """A fio client (4 KiB random writes, queue depth 4, an image of its own) runs while the block runs."""
    import rbd

    from drills.workloads.fio import start_job
    from drills.workloads.reaper import WorkloadProcesses

    name = f"drill-restore-client-{uuid.uuid4().hex[:8]}"
    with cluster.open_ioctx(drill_target.cluster.rbd_pool) as ioctx:
        rbd.RBD().create(ioctx, name, 1024 * MiB)
    image_names.append(name)
    job = FioJob(name=f"restore-client-{label}", rw="randwrite", bs="4k", iodepth=4, runtime=3600, size="1024M",
                 ioengine="rbd", pool=drill_target.cluster.rbd_pool, rbdname=name,
                 clientname=drill_target.cluster.client.removeprefix("client."), conf=drill_target.cluster.conf)
    runner = start_job(job, processes=WorkloadProcesses(drill_target.state_dir))  # not on the timeline: the drill's own iops/p99 series stay the restores' cluster view
    latency = ClientLatency()
    try:
        yield latency
    finally:
        result = runner.stop()
        totals = result.totals.get("write")
        if totals is None or totals.lat_p99_ms is None:
            latency.note = f"fio client {label}: no write latency (exit {result.returncode}): {' '.join(result.notes)[:200]}"
        else:
            latency.p99_ms, latency.iops = totals.lat_p99_ms, totals.iops


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


def test_concurrent_restores_into_rbd(drill, drill_cluster, drill_faults, drill_target: Target, drill_timeline, settings: RestoreDrillSettings,
                                      source_backups: list[SourceBackup], image_names: list[str]) -> None:
    fault = fault_from_setting(settings.fault, drill_target)
    drill_cluster.wait_for_health_ok(timeout=300)
    pool = drill_target.cluster.rbd_pool

    drill.phase("baseline")
    raw_rate = measure_raw_rbd_write(drill, drill_target, drill_cluster, settings.raw_seconds, image_names)
    drill.note(f"raw RBD write (fio, seq 4 MiB, qd 16): {raw_rate / 1e6:.0f} MB/s")
    with client_latency(drill_target, drill_cluster, image_names, "alone") as client_alone:
        time.sleep(settings.raw_seconds)
    drill.measure("baseline", "restore_client_p99_ms", client_alone.p99_ms)

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
    with fault_during(drill_faults, fault), client_latency(drill_target, drill_cluster, image_names, "unlimited") as client_free:
        result = run_isolated(spec, on_rss=lambda t, rss: drill_timeline.sample("restore.rss.bytes", rss, t=t, process="restore"),
                              timeout=3600)
    # The same restores again under --max-rate (and --adaptive-rate): the client's p99 with the limit.
    max_rate = max_rate_from_setting(settings.max_rate, raw_rate)
    limited_jobs = [IsolatedJob(j.backup, f"{j.image}-limited") for j in jobs] if max_rate else []
    image_names.extend(j.image for j in limited_jobs)
    expected.update({lj.image: expected[j.image] for j, lj in zip(jobs, limited_jobs)})
    limited: IsolatedRunResult | None = None
    client_limited = ClientLatency(note="no rate-limited run (DRILL_RESTORE_MAX_RATE=0)")
    if limited_jobs:
        limited_spec = dataclasses.replace(spec, jobs=tuple(limited_jobs), max_rate_bytes_per_s=max_rate,
                                           adaptive_rate=settings.adaptive)
        with client_latency(drill_target, drill_cluster, image_names, "limited") as client_limited:
            limited = run_isolated(limited_spec, timeout=3600)
    drill.measure("recovery", "restore_client_p99_unlimited_ms", client_free.p99_ms)
    drill.measure("recovery", "restore_client_p99_ms", client_limited.p99_ms if limited_jobs else client_free.p99_ms)
    p99_ms = client_limited.p99_ms if limited_jobs else client_free.p99_ms
    drill.measure("recovery", "restore_client_p99_latency", None if p99_ms is None else p99_ms / 1000.0)  # the limit's unit
    drill.note(f"client 4 KiB randwrite p99: alone {client_alone.p99_ms} ms, during the restores {client_free.p99_ms} ms, "
               f"with --max-rate {max_rate / 1e6:.0f} MB/s{' (adaptive)' if settings.adaptive else ''} "
               f"{client_limited.p99_ms} ms"
               + (f" (restores {limited.mb_per_s_logical:.0f} MB/s)" if limited else ""))
    for latency in (client_alone, client_free, client_limited):
        if latency.note and latency.p99_ms is None and limited_jobs:
            drill.note(latency.note)
    # per host that runs Ceph daemons, and the restore process itself (killed with -9: the OOM killer's signal)
    oom_kills: dict[str, int | None] = dict(drill.evidence.oom_kills()) if drill.evidence is not None else {}
    oom_kills["restore process"] = 1 if result.exit_status == -9 or (limited is not None and limited.exit_status == -9) else 0
    failed = len(result.failed) + (len(limited.failed) if limited else 0)
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
    exact, differing, problems = verify_images(drill_cluster, pool, jobs, expected, result)
    if limited is not None:
        exact_l, differing_l, problems_l = verify_images(drill_cluster, pool, limited_jobs, expected, limited)
        exact, differing, problems = exact + exact_l, differing + differing_l, problems + problems_l
    restores_run = settings.count * (2 if limited is not None else 1)
    drill.measure("after", "restores_failed", failed + (restores_run - failed - exact))
    drill.measure("after", "lost_writes", differing)
    drill.note(f"read back: {exact}/{restores_run} images bit-exact (sha256 of image == sha256 of source volume)")
    for p in problems[:10]:
        drill.note(p)
    if drill.evidence is not None:  # the deep scrub at the end covers the restored images' PGs
        for j in [*jobs, *limited_jobs]:
            drill.evidence.track_image(pool, j.image)
    done = restores_run - failed
    lost = LostWrites(written=restores_run, acknowledged=done, verified=exact, lost=max(0, done - exact),
                      examples=tuple(problems[:10]),
                      method="every restore that reported done: sha256 of the whole image (and of each 4 MiB piece) "
                             "read back from RBD against its source volume")
    outcome = drill.finish(lost_writes=lost)
    drill.assert_passed(outcome)


def planned_faults(t: Target) -> tuple[Fault, ...]:
    """What the drill will inject, for the check before the run (drills/admission.py): DRILL_RESTORE_FAULT."""
    fault = fault_from_setting(os.environ.get("DRILL_RESTORE_FAULT", ""), t)
    return (fault,) if fault is not None else ()
