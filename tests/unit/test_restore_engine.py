"""The restore engine end to end on the POSIX store: exact data, failures, budget, cancel."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import pytest

from drills.restore.engine import EngineConfig, RestoreEngine, RestoreReport, file_job
from drills.restore.format import Sha256Index, cinder_prefix, write_backup
from drills.restore.store import PosixBackupStore

MiB = 1 << 20
CHUNK = 1 * MiB
SMALL = dict(window_bytes=256 * 1024, read_piece_bytes=64 * 1024, zero_skip_granularity_bytes=64 * 1024)


def make_volume(size: int, seed: int = 1) -> bytes:
    """Random, zero and repetitive stretches, so every codec has something to do."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.choice(("random", "zero", "text"))
        n = rng.choice((64 * 1024, 256 * 1024, 300_000))
        if kind == "random":
            out += rng.randbytes(n)
        elif kind == "zero":
            out += bytes(n)
        else:
            out += (b"ceph drills %d " % rng.randrange(1000)) * (n // 16)
    return bytes(out[:size])


def make_backup(root: Path, volume: bytes, codec, index: int = 0) -> tuple[PosixBackupStore, str]:
    store = PosixBackupStore(root / "backups" / f"c{index}")
    prefix = cinder_prefix(f"vol-{index}", f"backup-{index}")
    write_backup(volume, store, prefix, CHUNK, codec)
    return store, prefix


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "restore-partial" in p.name]


def run(jobs, budget=64 * MiB, concurrency=4, **kw) -> RestoreReport:
    cfg = dict(SMALL)
    cfg.update(kw)
    return RestoreEngine(EngineConfig(memory_budget_bytes=budget, concurrency=concurrency, **cfg)).run(jobs)


@pytest.mark.parametrize("codec", ["zlib", "bz2", "zstd", "none", None, "gzip", ["zstd", "none", "bz2", "zlib"]])
def test_round_trip_is_bit_exact(tmp_path: Path, codec) -> None:
    volume = make_volume(3 * CHUNK + 12_345)  # a short last chunk and a short last sha block
    store, prefix = make_backup(tmp_path, volume, codec)
    out = tmp_path / "out.img"
    report = run([file_job(store, prefix, str(out))])
    result = report.results[0]
    assert result.status == "done", result.error
    assert out.read_bytes() == volume
    assert result.bytes_restored == len(volume) == result.bytes_total
    assert leftovers(tmp_path) == []


def test_metadata_matches_cinder_layout(tmp_path: Path) -> None:
    store, prefix = make_backup(tmp_path, make_volume(2 * CHUNK), "zlib")
    meta = json.loads((store.root / f"{prefix}_metadata").read_text())
    assert sorted(meta) == ["backup_description", "backup_id", "backup_name", "created_at", "objects",
                            "parent_id", "version", "volume_id", "volume_meta"]
    assert list(meta["objects"][1]) == [f"{prefix}-00002"]
    assert sorted(meta["objects"][1][f"{prefix}-00002"]) == ["compression", "length", "md5", "offset"]
    sha = json.loads((store.root / f"{prefix}_sha256file").read_text())
    assert sha["chunk_size"] == 32768 and len(sha["sha256s"]) == 2 * CHUNK // 32768
    assert (store.root / f"{prefix}-00001").is_file() and not (store.root / f"{prefix}-00003").exists()


def test_zero_windows_are_skipped_on_a_new_target(tmp_path: Path) -> None:
    volume = os.urandom(100_000) + bytes(2 * CHUNK) + os.urandom(100_000)
    store, prefix = make_backup(tmp_path, volume, "zlib")
    out = tmp_path / "out.img"
    result = run([file_job(store, prefix, str(out))]).results[0]
    assert result.status == "done", result.error
    assert out.read_bytes() == volume
    # Zero granules of 64 KiB lying wholly inside the zero stretch are never written.
    granule = SMALL["zero_skip_granularity_bytes"]
    first = -(-100_000 // granule) * granule
    last = (100_000 + 2 * CHUNK) // granule * granule
    assert result.bytes_skipped_zero == last - first
    assert out.stat().st_blocks * 512 < len(volume) - MiB  # the file is sparse there


def test_sha256_index_reads_cinder_layouts(tmp_path: Path) -> None:
    store = PosixBackupStore(tmp_path)
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1000)]
    doc = {"backup_description": None, "chunk_size": 4096, "sha256s": digests, "version": "1.0.0",
           "volume_id": "v"}
    for name, text in (("py3", json.dumps(doc, sort_keys=True, indent=2)),
                       ("py2", json.dumps(doc, sort_keys=True, indent=2, separators=(", ", ": "))),
                       ("compact", json.dumps(doc))):
        store.put_object(f"{name}_sha256file", text.encode())
        index = Sha256Index(store, name)
        assert index.info.digest_count == 1000 and index.info.block_size == 4096
        assert index.digests(997, 3) == b"".join(bytes.fromhex(d) for d in digests[997:])
        assert index.digests(0, 1) == bytes.fromhex(digests[0])


# --- failures ----------------------------------------------------------------------------

def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, sort_keys=True, indent=2))


def _set_obj(doc, index: int, key: str, value) -> None:
    (info,) = doc["objects"][index].values()
    info[key] = value


def _bad_digest(doc) -> None:
    doc["sha256s"][40] = "0" * 64


BREAKAGES = {
    "corrupt object": (lambda s, p: _flip_middle(s.root / f"{p}-00002"), "CorruptObjectError", "-00002"),
    "truncated object": (lambda s, p: os.truncate(s.root / f"{p}-00002", 5000), "CorruptObjectError", "-00002"),
    "missing object": (lambda s, p: (s.root / f"{p}-00003").unlink(), "MissingObjectError", "-00003"),
    "bad metadata": (lambda s, p: (s.root / f"{p}_metadata").write_text("{not json"), "BackupFormatError",
                     "_metadata"),
    "wrong md5": (lambda s, p: _edit_json(s.root / f"{p}_metadata", lambda d: _set_obj(d, 1, "md5", "0" * 32)),
                  "CorruptObjectError", "-00002"),
    "wrong sha256": (lambda s, p: _edit_json(s.root / f"{p}_sha256file", _bad_digest), "CorruptObjectError",
                     "-00002"),
    "missing sha256 file": (lambda s, p: (s.root / f"{p}_sha256file").unlink(), "MissingObjectError",
                            "_sha256file"),
    "unknown compression": (lambda s, p: _edit_json(s.root / f"{p}_metadata",
                                                    lambda d: _set_obj(d, 2, "compression", "lz4")),
                            "UnknownCompressionError", "-00003"),
    "gap in metadata": (lambda s, p: _edit_json(s.root / f"{p}_metadata", lambda d: d["objects"].pop(1)),
                        "BackupFormatError", "-00003"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_bad_backup_fails_alone_and_leaves_no_complete_target(tmp_path: Path, breakage: str) -> None:
    break_it, error_type, object_suffix = BREAKAGES[breakage]
    volume = make_volume(4 * CHUNK, seed=7)
    good_store, good_prefix = make_backup(tmp_path, volume, "zlib", index=0)
    bad_store, bad_prefix = make_backup(tmp_path, volume, ["zlib", "zstd", "bz2", "none"], index=1)
    break_it(bad_store, bad_prefix)
    before = tree_digest(tmp_path / "backups")
    good_out, bad_out = tmp_path / "good.img", tmp_path / "bad.img"
    report = run([file_job(bad_store, bad_prefix, str(bad_out)), file_job(good_store, good_prefix, str(good_out))])
    bad, good = report.results
    assert bad.status == "failed"
    assert bad.error_type == error_type, bad.error
    assert bad_prefix in bad.error and object_suffix in (bad.object_name or "")
    assert not bad_out.exists() and leftovers(tmp_path) == []
    assert good.status == "done" and good_out.read_bytes() == volume
    assert tree_digest(tmp_path / "backups") == before  # the source is never modified


def test_existing_target_needs_force(tmp_path: Path) -> None:
    volume = make_volume(2 * CHUNK)
    store, prefix = make_backup(tmp_path, volume, "zstd")
    out = tmp_path / "out.img"
    out.write_bytes(b"precious")
    result = run([file_job(store, prefix, str(out))]).results[0]
    assert result.status == "failed" and result.error_type == "TargetError" and "use force" in result.error
    assert out.read_bytes() == b"precious"
    result = run([file_job(store, prefix, str(out), force=True)]).results[0]
    assert result.status == "done" and out.read_bytes() == volume


def test_failed_forced_restore_does_not_leave_a_complete_looking_target(tmp_path: Path) -> None:
    volume = make_volume(3 * CHUNK)
    store, prefix = make_backup(tmp_path, volume, "zlib")
    _flip_middle(store.root / f"{prefix}-00003")
    out = tmp_path / "out.img"
    out.write_bytes(b"old contents")
    result = run([file_job(store, prefix, str(out), force=True)]).results[0]
    assert result.status == "failed" and "removed partial file" in (result.cleanup or "")
    assert out.read_bytes() == b"old contents" and leftovers(tmp_path) == []


def test_budget_smaller_than_one_restore_fails_at_admission(tmp_path: Path) -> None:
    store, prefix = make_backup(tmp_path, make_volume(CHUNK), "bz2")
    out = tmp_path / "out.img"
    result = run([file_job(store, prefix, str(out))], budget=2 * MiB).results[0]
    assert result.status == "failed" and result.error_type == "BudgetTooSmallError"
    assert prefix in result.error and "working set" in result.error
    assert not out.exists() and leftovers(tmp_path) == []


def test_budget_is_never_exceeded_and_admission_is_fifo(tmp_path: Path) -> None:
    volume = make_volume(3 * CHUNK, seed=3)
    store, prefix = make_backup(tmp_path, volume, ["zlib", "zstd", "none"])
    jobs = [file_job(store, prefix, str(tmp_path / f"out{i}.img"), name=f"r{i:02d}") for i in range(12)]
    probe = RestoreEngine(EngineConfig(memory_budget_bytes=64 * MiB, **SMALL))._plan(jobs[0])
    budget = int(probe.working_set_bytes * 2.5)  # room for two restores at a time
    report = run(jobs, budget=budget, concurrency=8)
    assert all(r.status == "done" for r in report.results), [r.error for r in report.results]
    assert all((tmp_path / f"out{i}.img").read_bytes() == volume for i in range(12))
    assert report.budget_bytes == budget
    assert probe.working_set_bytes <= report.peak_reserved_bytes <= budget
    assert 0 < report.peak_in_use_bytes <= report.peak_reserved_bytes
    assert list(report.admission_order) == [f"r{i:02d}" for i in range(12)]
    assert sum(r.queued_seconds > 0.0 for r in report.results) >= 6  # most had to wait their turn


class SlowStore(PosixBackupStore):
    """Reads take a while, so a restore is still running when the interrupt comes."""

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        time.sleep(0.01)
        return super().read_range(name, offset, length)

    def read_into(self, name: str, offset: int, view: memoryview) -> int:
        time.sleep(0.01)
        return super().read_into(name, offset, view)


def test_keyboard_interrupt_stops_cleanly_and_reports_unfinished(tmp_path: Path) -> None:
    volume = make_volume(4 * CHUNK, seed=5)
    _store, prefix = make_backup(tmp_path, volume, "zlib")
    slow = SlowStore(tmp_path / "backups" / "c0")
    jobs = [file_job(slow, prefix, str(tmp_path / f"out{i}.img")) for i in range(6)]
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=64 * MiB, concurrency=2, **SMALL))

    def interrupt_once_data_flows(snap) -> None:
        if any(r.bytes_done for r in snap.restores) and not engine._cancel.is_set():
            raise KeyboardInterrupt

    report = engine.run(jobs, on_progress=interrupt_once_data_flows, progress_interval=0.02)
    assert report.interrupted and not report.ok
    assert len(report.unfinished) == 6
    assert {r.status for r in report.results} == {"cancelled"}
    assert any(r.bytes_restored > 0 for r in report.results)
    # Nothing looks complete; restores that had started keep their partial file and journal
    # for --resume, and a resume finishes every one of them bit-exact.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out"))
    assert kept and all(name.endswith((".restore-partial", ".restore-journal")) for name in kept)
    store = PosixBackupStore(tmp_path / "backups" / "c0")
    resumed = run([file_job(store, prefix, str(tmp_path / f"out{i}.img"), resume=True) for i in range(6)])
    assert resumed.ok, [r.error for r in resumed.results]
    assert all((tmp_path / f"out{i}.img").read_bytes() == volume for i in range(6))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
