"""The restore engine against a real cluster: RBD sinks, RADOS and S3 backup stores, bad input.

Small volumes (8 MiB, 2 MiB chunks) keep the whole module well under a minute once the test
sandbox is up.  Every failure case checks the three things an operator relies on: the error
names the backup and the object, and no image is left that looks like a finished restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drills.restore.engine import EngineConfig, RestoreEngine, RestoreReport, RestoreResult, rbd_job
from drills.restore.format import (WrittenBackup, cinder_prefix, metadata_name, sha256file_name,
                                   write_backup)
from drills.restore.rados_store import RadosBackupStore
from drills.restore.sinks import HEADER_WIPE_BYTES, RbdConnection, rbd_restore_state
from drills.restore.store import PosixBackupStore
from drills.restore.verify import rbd_image_digest
from drills.target import Target

rbd = pytest.importorskip("rbd")

MiB = 1 << 20
VOLUME_BYTES = 8 * MiB
CHUNK_BYTES = 2 * MiB
SMALL_ENGINE = dict(window_bytes=512 * 1024, read_piece_bytes=128 * 1024, zero_skip_granularity_bytes=256 * 1024)
REPO = Path(__file__).resolve().parents[2]


def make_volume(size: int, seed: int) -> bytes:
    """Random, zero and repetitive stretches: every codec and the zero skip have work."""
    import random

    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind, n = rng.choice(("random", "zero", "text")), rng.choice((128 * 1024, 512 * 1024, 700_000))
        out += rng.randbytes(n) if kind == "random" else bytes(n) if kind == "zero" else (b"osd.%d " % rng.randrange(99)) * (n // 6)
    return bytes(out[:size])


@dataclass
class Fixture:
    connection: RbdConnection
    pool: str
    rados_store: RadosBackupStore
    images: list[str]

    def image_name(self) -> str:
        name = f"restore-test-{uuid.uuid4().hex[:10]}"
        self.images.append(name)
        return name

    def image_exists(self, name: str) -> bool:
        return name in rbd.RBD().list(self.connection.ioctx(self.pool))

    def run(self, jobs: list, budget: int = 16 * MiB, concurrency: int = 4) -> RestoreReport:
        engine = RestoreEngine(EngineConfig(memory_budget_bytes=budget, concurrency=concurrency, **SMALL_ENGINE))
        report = engine.run(jobs)
        assert report.peak_in_use_bytes <= report.peak_reserved_bytes <= budget, "budget exceeded"
        return report


@pytest.fixture
def restore_env(sandbox_target: Target) -> Iterator[Fixture]:
    connection = RbdConnection.from_target(sandbox_target.path)
    env = Fixture(connection, sandbox_target.cluster.rbd_pool,
                  RadosBackupStore(connection.ioctx(sandbox_target.cluster.rados_pool)), [])
    try:
        yield env
    finally:
        ioctx = connection.ioctx(env.pool)
        for name in env.images:
            try:
                rbd.RBD().remove(ioctx, name)
            except rbd.ImageNotFound:
                pass
        connection.close()


def rados_backup(env: Fixture, volume: bytes, codec: str = "zlib") -> WrittenBackup:
    prefix = cinder_prefix(f"vol-{uuid.uuid4().hex[:8]}", f"bk-{uuid.uuid4().hex[:8]}")
    return write_backup(volume, env.rados_store, prefix, CHUNK_BYTES, codec)


def assert_bit_exact(env: Fixture, image: str, volume: bytes) -> None:
    got = rbd_image_digest(env.connection.ioctx(env.pool), image)
    assert got.sha256 == hashlib.sha256(volume).hexdigest(), f"image {image} differs from the source volume"
    assert rbd_restore_state(env.connection.ioctx(env.pool), image) is None, "a finished image is still flagged"


@pytest.mark.parametrize("codec", ["zlib", "zstd", "bz2"])
def test_rados_backups_restore_bit_exact_into_rbd(restore_env: Fixture, codec: str) -> None:
    volumes = [make_volume(VOLUME_BYTES, seed) for seed in range(3)]
    backups = [rados_backup(restore_env, v, codec) for v in volumes]
    images = [restore_env.image_name() for _ in volumes]
    jobs = [rbd_job(restore_env.rados_store, b.prefix, restore_env.connection, restore_env.pool, img)
            for b, img in zip(backups, images)]
    # 3 restores in a budget of 1.5 working sets (thread, decoder, pieces, windows and librbd's
    # copies: ~6-10 MiB here): they must queue, not overrun.
    planner = RestoreEngine(EngineConfig(memory_budget_bytes=1 << 30, **SMALL_ENGINE))
    working_set = planner._plan(jobs[0]).working_set_bytes
    report = restore_env.run(jobs, budget=working_set * 3 // 2)
    assert report.ok, [r.error for r in report.results]
    for image, volume in zip(images, volumes):
        assert_bit_exact(restore_env, image, volume)


def test_incremental_chain_restores_bit_exact_into_one_rbd_image(restore_env: Fixture) -> None:
    """full (zlib) -> inc1 (zstd) -> inc2 (bz2): Cinder-style increments in RADOS, one image, bit-exact."""
    from drills.restore.chain import ChainLink
    from drills.restore.format import ParentBackup

    volumes = [bytearray(make_volume(VOLUME_BYTES, 21))]
    for seed in (1, 2):
        nxt = bytearray(volumes[-1])
        start = seed * 3 * MiB + 12345
        nxt[start:start + 300_000] = os.urandom(300_000)
        nxt[seed * MiB:seed * MiB + 96 * 1024] = bytes(96 * 1024)  # zeros over data: must be written
        volumes.append(nxt)
    tag = uuid.uuid4().hex[:8]
    links: list[ChainLink] = []
    parent: ParentBackup | None = None
    for i, (volume, codec) in enumerate(zip(volumes, ("zlib", "zstd", "bz2"))):
        backup_id = f"{tag}-{i}"
        prefix = cinder_prefix(f"vol-{tag}", backup_id)
        write_backup(bytes(volume), restore_env.rados_store, prefix, CHUNK_BYTES, codec, backup_id=backup_id,
                     volume_id=f"vol-{tag}", parent=parent)
        links.append(ChainLink(restore_env.rados_store, prefix))
        parent = ParentBackup(restore_env.rados_store, prefix, backup_id)
    image = restore_env.image_name()
    *older, last = links
    report = restore_env.run([rbd_job(last.store, last.prefix, restore_env.connection, restore_env.pool, image,
                                      parents=older)])
    assert report.ok, report.results[0].error
    assert_bit_exact(restore_env, image, bytes(volumes[-1]))
    # A missing middle link fails the whole chain and leaves no image behind.
    broken = restore_env.image_name()
    report = restore_env.run([rbd_job(last.store, last.prefix, restore_env.connection, restore_env.pool, broken,
                                      parents=[links[0]])])
    assert report.results[0].status == "failed" and "parent_id" in (report.results[0].error or "")
    assert not restore_env.image_exists(broken)


def test_posix_backup_restores_bit_exact_into_rbd(restore_env: Fixture, tmp_path: Path) -> None:
    volume = make_volume(VOLUME_BYTES, 7)
    store = PosixBackupStore(tmp_path / "container")
    backup = write_backup(volume, store, cinder_prefix("vol-posix", "bk-posix"), CHUNK_BYTES, "zlib")
    image = restore_env.image_name()
    report = restore_env.run([rbd_job(store, backup.prefix, restore_env.connection, restore_env.pool, image)])
    assert report.ok, report.results[0].error
    assert_bit_exact(restore_env, image, volume)


def test_s3_backup_restores_bit_exact_into_rbd(restore_env: Fixture, sandbox_target: Target) -> None:
    from drills.restore.s3_store import S3BackupStore, s3_client

    if not sandbox_target.s3.endpoint:
        pytest.skip("the target has no [s3] endpoint")
    client = s3_client(sandbox_target.s3.endpoint, sandbox_target.s3.credentials_file)
    store = S3BackupStore(client, f"restore-test-{uuid.uuid4().hex[:8]}")
    store.ensure_bucket()
    volume = make_volume(VOLUME_BYTES, 11)
    backup = write_backup(volume, store, cinder_prefix("vol-s3", "bk-s3"), CHUNK_BYTES, "zstd")
    try:
        image = restore_env.image_name()
        report = restore_env.run([rbd_job(store, backup.prefix, restore_env.connection, restore_env.pool, image)])
        assert report.ok, report.results[0].error
        assert_bit_exact(restore_env, image, volume)
        del_store_missing = S3BackupStore(client, store.bucket)
        del_store_missing.delete_object(backup.object_names[-1])
        image2 = restore_env.image_name()
        failed = restore_env.run([rbd_job(store, backup.prefix, restore_env.connection, restore_env.pool, image2)])
        assert failed.results[0].status == "failed" and backup.object_names[-1] in failed.results[0].error
        assert not restore_env.image_exists(image2)
    finally:
        for name in (*backup.object_names, metadata_name(backup.prefix), sha256file_name(backup.prefix)):
            store.delete_object(name)
        client.delete_bucket(Bucket=store.bucket)


# --- bad input: error names backup and object; nothing left that looks complete ----------------

def _corrupt(env: Fixture, b: WrittenBackup) -> str:
    name = b.object_names[-1]
    data = bytearray(env.rados_store.read_range(name, 0, env.rados_store.open_object(name)))
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    env.rados_store.put_object(name, bytes(data))
    return name


def _truncate(env: Fixture, b: WrittenBackup) -> str:
    name = b.object_names[-1]
    size = env.rados_store.open_object(name)
    env.rados_store.put_object(name, env.rados_store.read_range(name, 0, size // 2))
    return name


def _remove(env: Fixture, b: WrittenBackup) -> str:
    name = b.object_names[-1]
    env.rados_store.delete_object(name)
    return name


def _bad_metadata(env: Fixture, b: WrittenBackup) -> str:
    name = metadata_name(b.prefix)
    env.rados_store.put_object(name, b'{"version": "1.0.0", "objects": [')
    return name


def _bad_sha256file(env: Fixture, b: WrittenBackup) -> str:
    name = sha256file_name(b.prefix)
    doc = json.loads(env.rados_store.get_small(name))
    doc["sha256s"][-1] = hashlib.sha256(b"not this block").hexdigest()
    env.rados_store.put_object(name, json.dumps(doc, sort_keys=True, indent=2).encode())
    return b.object_names[-1]  # the object whose block fails its digest


def _unknown_compression(env: Fixture, b: WrittenBackup) -> str:
    name = metadata_name(b.prefix)
    doc = json.loads(env.rados_store.get_small(name))
    (obj_name, info), = doc["objects"][-1].items()
    info["compression"] = "lzma"
    env.rados_store.put_object(name, json.dumps(doc, sort_keys=True, indent=2).encode())
    return obj_name


BAD_INPUTS = {
    "corrupt object": (_corrupt, "CorruptObjectError"),
    "truncated object": (_truncate, "CorruptObjectError"),
    "missing object": (_remove, "MissingObjectError"),
    "bad metadata": (_bad_metadata, "BackupFormatError"),
    "bad sha256file": (_bad_sha256file, "CorruptObjectError"),
    "unknown compression": (_unknown_compression, "UnknownCompressionError"),
}


def _assert_located_failure(result: RestoreResult, backup: WrittenBackup, object_name: str, error_type: str) -> None:
    assert result.status == "failed", result
    assert result.error_type == error_type, result.error
    assert f"backup {backup.prefix}" in result.error and f"object {object_name}" in result.error, result.error


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_alone_with_located_error_and_no_image(restore_env: Fixture, case: str) -> None:
    spoil, error_type = BAD_INPUTS[case]
    good_volume, bad_volume = make_volume(VOLUME_BYTES, 21), make_volume(VOLUME_BYTES, 22)
    good, bad = rados_backup(restore_env, good_volume), rados_backup(restore_env, bad_volume)
    object_name = spoil(restore_env, bad)
    good_image, bad_image = restore_env.image_name(), restore_env.image_name()
    report = restore_env.run([
        rbd_job(restore_env.rados_store, bad.prefix, restore_env.connection, restore_env.pool, bad_image),
        rbd_job(restore_env.rados_store, good.prefix, restore_env.connection, restore_env.pool, good_image),
    ])
    bad_result, good_result = report.results
    _assert_located_failure(bad_result, bad, object_name, error_type)
    assert not restore_env.image_exists(bad_image), f"{case}: the failed restore left image {bad_image}"
    assert good_result.status == "done", good_result.error
    assert_bit_exact(restore_env, good_image, good_volume)


def test_existing_image_without_force_is_refused_and_untouched(restore_env: Fixture) -> None:
    volume = make_volume(VOLUME_BYTES, 31)
    backup = rados_backup(restore_env, volume)
    image = restore_env.image_name()
    ioctx = restore_env.connection.ioctx(restore_env.pool)
    rbd.RBD().create(ioctx, image, VOLUME_BYTES)
    old = os.urandom(VOLUME_BYTES)
    with rbd.Image(ioctx, image) as img:
        img.write(old, 0)
    report = restore_env.run([rbd_job(restore_env.rados_store, backup.prefix, restore_env.connection,
                                      restore_env.pool, image)])
    result = report.results[0]
    assert result.status == "failed" and result.error_type == "TargetError"
    assert f"backup {backup.prefix}" in result.error and "exists" in result.error and "force" in result.error
    assert rbd_image_digest(ioctx, image).sha256 == hashlib.sha256(old).hexdigest(), "refused restore wrote anyway"
    assert rbd_restore_state(ioctx, image) is None


def test_failed_forced_restore_into_existing_image_is_flagged(restore_env: Fixture) -> None:
    volume = make_volume(VOLUME_BYTES, 41)
    backup = rados_backup(restore_env, volume)
    object_name = _corrupt(restore_env, backup)
    image = restore_env.image_name()
    ioctx = restore_env.connection.ioctx(restore_env.pool)
    rbd.RBD().create(ioctx, image, VOLUME_BYTES)
    with rbd.Image(ioctx, image) as img:
        img.write(b"\xff" * HEADER_WIPE_BYTES, 0)
    report = restore_env.run([rbd_job(restore_env.rados_store, backup.prefix, restore_env.connection,
                                      restore_env.pool, image, force=True)])
    _assert_located_failure(report.results[0], backup, object_name, "CorruptObjectError")
    assert "flagged" in (report.results[0].cleanup or "")
    assert rbd_restore_state(ioctx, image) == "incomplete"
    with rbd.Image(ioctx, image, read_only=True) as img:
        assert img.read(0, HEADER_WIPE_BYTES) == bytes(HEADER_WIPE_BYTES), "header of a failed restore not wiped"
    # ... and a successful forced restore clears the flag.
    good = rados_backup(restore_env, volume)
    assert restore_env.run([rbd_job(restore_env.rados_store, good.prefix, restore_env.connection,
                                    restore_env.pool, image, force=True)]).ok
    assert_bit_exact(restore_env, image, volume)


def test_budget_below_one_restores_minimum_is_refused_before_any_image(restore_env: Fixture) -> None:
    backup = rados_backup(restore_env, make_volume(VOLUME_BYTES, 51))
    image = restore_env.image_name()
    report = restore_env.run([rbd_job(restore_env.rados_store, backup.prefix, restore_env.connection,
                                      restore_env.pool, image)], budget=1 * MiB)
    result = report.results[0]
    assert result.status == "failed" and result.error_type == "BudgetTooSmallError"
    assert f"backup {backup.prefix}" in result.error and "working set" in result.error
    assert not restore_env.image_exists(image)


# --- the CLI -------------------------------------------------------------------------------

def _drill(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "drills.cli", "restore", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_drill_restore_cli_into_rbd(restore_env: Fixture, sandbox_target: Target, tmp_path: Path) -> None:
    volume = make_volume(VOLUME_BYTES, 61)
    store = PosixBackupStore(tmp_path / "container")
    backup = write_backup(volume, store, cinder_prefix("vol-cli", "bk-cli"), CHUNK_BYTES, "zlib")
    image = restore_env.image_name()
    source = str(store.root / backup.prefix)
    done = _drill(source, f"rbd:{restore_env.pool}/{image}", "--target", sandbox_target.path, "--plain",
                  "--memory-budget", "32MiB")
    assert done.returncode == 0, done.stderr
    assert_bit_exact(restore_env, image, volume)
    again = _drill(source, f"rbd:{restore_env.pool}/{image}", "--target", sandbox_target.path, "--plain")
    assert again.returncode == 1 and "exists" in again.stderr and backup.prefix in again.stderr
    no_target = _drill(source, f"rbd:{image}")
    assert no_target.returncode == 2 and "--target" in no_target.stderr
