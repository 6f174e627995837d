"""Incremental chains: a full backup plus incrementals (Cinder's chunked-driver layout) into one file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from drills.restore.chain import ChainLink, discover_chain
from drills.restore.cli import main
from drills.restore.engine import EngineConfig, RestoreEngine, chain_file_job, file_job
from drills.restore.format import ParentBackup, cinder_prefix, read_manifest, write_backup
from drills.restore.store import PosixBackupStore, cinder_posix_container

MiB = 1 << 20
BLOCK = 32 * 1024
SMALL = dict(window_bytes=256 * 1024, read_piece_bytes=64 * 1024, zero_skip_granularity_bytes=64 * 1024)


def base_volume(size: int = 2 * MiB) -> bytearray:
    rng = random.Random(7)
    return bytearray(rng.randbytes(size // 2) + b"ceph drills chain " * (size // 2 // 18) + bytes(size // 2 % 18))


def changed(volume: bytearray, seed: int) -> bytearray:
    """Overwrite a few extents: random data, a zeroed stretch (must not be skipped), a 1-byte change."""
    rng = random.Random(seed)
    out = bytearray(volume)
    start = rng.randrange(0, len(out) - 200_000)
    out[start:start + 100_000] = rng.randbytes(100_000)
    zero = rng.randrange(0, len(out) // 2) // BLOCK * BLOCK
    out[zero:zero + 3 * BLOCK] = bytes(3 * BLOCK)
    out[-5] ^= 0xFF
    return out


def cinder_tree_backup(root: Path, volume: bytes, backup_id: str, codec, parent: ParentBackup | None = None
                       ) -> tuple[ChainLink, ParentBackup]:
    """A backup in Cinder's posix layout under `root` (<id[0:2]>/<id[2:4]>/<id>)."""
    store = PosixBackupStore(root / cinder_posix_container(backup_id))
    prefix = cinder_prefix("vol-chain", backup_id)
    write_backup(bytes(volume), store, prefix, 1 * MiB, codec, backup_id=backup_id,
                 volume_id="vol-chain", parent=parent)
    return ChainLink(store, prefix), ParentBackup(store, prefix, backup_id)


@pytest.fixture
def chain(tmp_path: Path) -> tuple[list[ChainLink], list[bytes], Path]:
    """full (zlib) -> inc1 (zstd) -> inc2 (bz2/none): links and the volume after each."""
    root = tmp_path / "backups"
    v0 = base_volume()
    v1 = changed(v0, 1)
    v2 = changed(v1, 2)
    full, p0 = cinder_tree_backup(root, v0, "aa000000-full", "zlib")
    inc1, p1 = cinder_tree_backup(root, v1, "bb000000-inc1", "zstd", p0)
    inc2, _p2 = cinder_tree_backup(root, v2, "cc000000-inc2", ["bz2", "none"], p1)
    return [full, inc1, inc2], [bytes(v0), bytes(v1), bytes(v2)], root


def run(jobs, budget=64 * MiB):
    return RestoreEngine(EngineConfig(memory_budget_bytes=budget, concurrency=2, **SMALL)).run(jobs)


def test_incremental_writer_stores_only_changed_extents(chain) -> None:
    links, volumes, _root = chain
    inc1 = read_manifest(links[1].store, links[1].prefix, allow_incremental=True)
    assert inc1.parent_id == "aa000000-full" and inc1.is_incremental
    stored = sum(o.length for o in inc1.objects)
    assert 0 < stored < len(volumes[1]) // 4  # extents, not the volume
    assert all(o.offset % BLOCK == 0 for o in inc1.objects)


def test_chain_restores_bit_exact_to_the_last_increment(chain, tmp_path: Path) -> None:
    links, volumes, _root = chain
    out = tmp_path / "out.img"
    report = run([chain_file_job(links, str(out))])
    assert report.ok, [r.error for r in report.results]
    assert out.read_bytes() == volumes[2]
    assert out.read_bytes() != volumes[1]  # the last increment was applied


def test_chain_is_discovered_from_the_backup_tree_via_cli(chain, tmp_path: Path) -> None:
    links, volumes, root = chain
    assert [link.prefix for link in discover_chain(root, links[2])] == [link.prefix for link in links]
    out = tmp_path / "cli.img"
    rc = main(["restore", "--backup-tree", str(root), str(links[2].store.root / links[2].prefix), str(out), "--plain"])
    assert rc == 0 and out.read_bytes() == volumes[2]
    explicit = tmp_path / "explicit.img"
    rc = main(["restore", "--chain", *(str(link.store.root / link.prefix) for link in links[:2]), str(explicit),
               "--plain"])
    assert rc == 0 and explicit.read_bytes() == volumes[1]


def test_incremental_alone_is_refused_with_a_hint(chain, tmp_path: Path) -> None:
    links, _volumes, _root = chain
    out = tmp_path / "alone.img"
    result = run([file_job(links[2].store, links[2].prefix, str(out))]).results[0]
    assert result.status == "failed" and "--chain" in (result.error or "")
    assert not out.exists()


def _no_partial(directory: Path) -> bool:
    return not any("restore-partial" in p.name for p in directory.iterdir())


@pytest.mark.parametrize("breakage", ["missing link", "out of order", "corrupt object", "foreign base",
                                      "missing parent in tree"])
def test_broken_link_fails_the_whole_chain_and_leaves_nothing(chain, tmp_path: Path, breakage: str) -> None:
    links, volumes, root = chain
    out = tmp_path / "out.img"
    given = list(links)
    if breakage == "missing link":
        given = [links[0], links[2]]
    elif breakage == "out of order":
        given = [links[0], links[2], links[1]]
    elif breakage == "corrupt object":
        meta = json.loads((links[2].store.root / f"{links[2].prefix}_metadata").read_text())
        name = next(iter(meta["objects"][-1]))
        path = links[2].store.root / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif breakage == "foreign base":
        # inc1 claims the full backup as parent but was made from other data: its unchanged
        # blocks' sha256s do not match the full backup's.
        other_base = changed(base_volume(), 9)
        _other, p_other = cinder_tree_backup(tmp_path / "other", other_base, "aa000000-full", "zlib")
        forged, _ = cinder_tree_backup(tmp_path / "other", changed(other_base, 1), "bb000000-forged", "zlib", p_other)
        given = [links[0], forged]
    elif breakage == "missing parent in tree":
        for p in links[1].store.root.iterdir():
            p.unlink()
        rc = main(["restore", "--backup-tree", str(root), str(links[2].store.root / links[2].prefix), str(out),
                   "--plain"])
        assert rc == 2 and not out.exists()
        return
    report = run([chain_file_job(given, str(out))])
    result = report.results[0]
    assert result.status == "failed", breakage
    assert not out.exists() and _no_partial(tmp_path)
    if breakage in ("missing link", "out of order"):
        assert result.error_type == "ChainError" and "parent_id" in (result.error or "")
    if breakage == "foreign base":
        assert result.error_type == "ChainError" and "chain is broken" in (result.error or "")
    if breakage == "corrupt object":
        assert result.error_type == "CorruptObjectError" and links[2].prefix in (result.error or "")


def test_unchanged_increment_has_no_objects_and_restores(tmp_path: Path) -> None:
    root = tmp_path / "backups"
    volume = base_volume(1 * MiB)
    full, p0 = cinder_tree_backup(root, volume, "dd000000-full", "zlib")
    same, _ = cinder_tree_backup(root, volume, "ee000000-same", "zlib", p0)
    assert read_manifest(same.store, same.prefix, allow_incremental=True).objects == ()
    out = tmp_path / "same.img"
    assert run([chain_file_job([full, same], str(out))]).ok
    assert out.read_bytes() == bytes(volume)
