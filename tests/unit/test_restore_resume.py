"""--resume: a journal beside the target; journaled pieces skipped; the image verified whole."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drills.restore.cli import main
from drills.restore.engine import EngineConfig, RestoreEngine, file_job
from drills.restore.format import cinder_prefix, write_backup
from drills.restore.store import PosixBackupStore

MiB = 1 << 20
CHUNK = 256 * 1024
SMALL = dict(window_bytes=128 * 1024, read_piece_bytes=64 * 1024, zero_skip_granularity_bytes=64 * 1024)
REPO = Path(__file__).resolve().parents[2]


def backup(tmp_path: Path, size: int = 4 * MiB, codec: str = "zlib") -> tuple[PosixBackupStore, str, bytes]:
    rng = random.Random(3)
    volume = b"".join(rng.randbytes(CHUNK // 2) + bytes(CHUNK // 2) for _ in range(size // CHUNK))
    store = PosixBackupStore(tmp_path / "c")
    prefix = cinder_prefix("vol", "b1")
    write_backup(volume, store, prefix, CHUNK, codec)
    return store, prefix, volume


def run(jobs):
    return RestoreEngine(EngineConfig(memory_budget_bytes=32 * MiB, concurrency=2, **SMALL)).run(jobs)


def interrupted_partial(tmp_path: Path, store: PosixBackupStore, prefix: str, pieces: int) -> Path:
    """The state an interrupted restore leaves: the partial file and a journal of `pieces` pieces."""
    out = tmp_path / "out.img"
    first = run([file_job(store, prefix, str(out))])
    assert first.ok
    journal = tmp_path / ".out.img.restore-journal"
    partial = tmp_path / ".out.img.restore-partial"
    os.replace(out, partial)  # rebuild what a kill would leave: data of every piece, a shorter journal
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=32 * MiB, **SMALL))
    plan = engine._plan(file_job(store, prefix, str(out)))
    key = plan.journal_key
    lines = [json.dumps({"journal": 1, "key": key, "size": len(partial.read_bytes())}, sort_keys=True)]
    from drills.restore.engine import _piece_key
    for op in plan.links[0].objects[:pieces]:
        lines.append(json.dumps({"piece": _piece_key(plan.links[0], op)}))
    journal.write_text("\n".join(lines) + "\n" + '{"piece": "torn')  # a torn last line is ignored
    return out


def test_resume_skips_journaled_pieces_and_verifies_the_whole_image(tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    out = interrupted_partial(tmp_path, store, prefix, pieces=10)
    report = run([file_job(store, prefix, str(out), resume=True)])
    result = report.results[0]
    assert result.status == "done", result.error
    assert result.bytes_resumed == 10 * CHUNK and out.read_bytes() == volume
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_resume_detects_damage_in_skipped_pieces(tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    out = interrupted_partial(tmp_path, store, prefix, pieces=10)
    partial = tmp_path / ".out.img.restore-partial"
    with open(partial, "r+b") as f:  # a journaled piece changed behind the journal's back
        f.seek(3 * CHUNK + 5)
        f.write(b"X")
    result = run([file_job(store, prefix, str(out), resume=True)]).results[0]
    assert result.status == "failed" and "resumed image differs" in (result.error or "")
    assert not out.exists()


def test_leftover_needs_resume_or_force_and_foreign_journal_is_refused(tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    out = interrupted_partial(tmp_path, store, prefix, pieces=2)
    result = run([file_job(store, prefix, str(out))]).results[0]
    assert result.status == "failed" and "resume" in (result.error or "")
    other = PosixBackupStore(tmp_path / "other")
    other_prefix = cinder_prefix("vol", "b2")
    write_backup(volume, other, other_prefix, CHUNK, "zlib")
    result = run([file_job(other, other_prefix, str(out), resume=True)]).results[0]
    assert result.status == "failed" and "another restore" in (result.error or "")
    assert run([file_job(store, prefix, str(out), force=True)]).ok and out.read_bytes() == volume


def test_kill_9_then_resume_via_cli(tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path, size=24 * MiB, codec="bz2")
    out = tmp_path / "out.img"
    journal = tmp_path / ".out.img.restore-journal"
    argv = [sys.executable, "-m", "drills.restore.cli", "restore", str(store.root / prefix), str(out), "--plain",
            "--window", "128KiB", "--read-piece", "64KiB"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count('"piece"') >= 3:
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.skip("the restore finished before it could be killed (machine too fast for this volume)")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not out.exists() and (tmp_path / ".out.img.restore-partial").exists()
    done_before = journal.read_text().count('"piece"')
    assert main(["restore", str(store.root / prefix), str(out), "--plain", "--resume",
                 "--window", "128KiB", "--read-piece", "64KiB"]) == 0
    assert out.read_bytes() == volume and done_before >= 3
    assert not journal.exists()
