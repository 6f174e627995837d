"""kill -9 of a real `drill restore` into an RBD image of the test sandbox, then `--resume`.

The interrupted image must stay flagged ``drills.restore.state=incomplete`` with its journal in the
image's metadata; a resume from another backup is refused (exit 2, one line, the image untouched);
`--resume` rewrites only the pieces not journaled, verifies the whole image and leaves it bit-exact,
unflagged and without journal keys.
"""

from __future__ import annotations

import hashlib
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from drills.restore.format import cinder_prefix, write_backup
from drills.restore.journal import RBD_JOURNAL_KEY, RBD_PIECE_PREFIX
from drills.restore.sinks import RbdConnection, read_rbd_journal, rbd_restore_state
from drills.restore.store import PosixBackupStore
from drills.restore.verify import rbd_image_digest
from drills.target import Target

pytestmark = pytest.mark.integration
rbd = pytest.importorskip("rbd")

MiB = 1 << 20
VOLUME_BYTES = 24 * MiB
CHUNK_BYTES = 1 * MiB  # 24 pieces
REPO = Path(__file__).resolve().parents[2]


def _volume() -> bytes:
    rng = random.Random(18)
    return b"".join(rng.randbytes(CHUNK_BYTES * 3 // 4) + bytes(CHUNK_BYTES // 4)
                    for _ in range(VOLUME_BYTES // CHUNK_BYTES))


def _drill(*args: str) -> list[str]:
    return [sys.executable, "-m", "drills.cli", "restore", *args, "--plain", "--window", "512KiB",
            "--read-piece", "128KiB"]


def _journaled(ioctx: object, image: str) -> int:
    try:
        state = read_rbd_journal(ioctx, image)
    except rbd.Error:  # being created
        return 0
    return 0 if state is None else len(state.pieces)


def test_kill_9_then_resume_into_rbd(sandbox_target: Target, tmp_path: Path) -> None:
    volume = _volume()
    store = PosixBackupStore(tmp_path / "c")
    backup = write_backup(volume, store, cinder_prefix("vol-resume", "bk-resume"), CHUNK_BYTES, "zlib",
                          backup_id="bk-resume")
    other = write_backup(volume[:CHUNK_BYTES], store, cinder_prefix("vol-resume", "bk-other"), CHUNK_BYTES,
                         "zlib", backup_id="bk-other")  # another backup (of a smaller volume)
    total = len(backup.object_names)
    pool = sandbox_target.cluster.rbd_pool
    image = f"resume-test-{uuid.uuid4().hex[:10]}"
    dest = f"rbd:{pool}/{image}"
    connection = RbdConnection.from_target(sandbox_target.path)
    ioctx = connection.ioctx(pool)
    try:
        # 1. A restore held to 4 MB/s (so that it is still running), killed once 4 pieces are journaled.
        started = time.monotonic()
        proc = subprocess.Popen(_drill(str(store.root / backup.prefix), dest, "--target", sandbox_target.path,
                                       "--max-rate", "4MiB"),
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None and _journaled(ioctx, image) < 4:
                time.sleep(0.05)
            if proc.poll() is not None:
                pytest.fail(f"the restore ended (rc {proc.returncode}) before it could be killed")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
        killed_after = time.monotonic() - started
        state = read_rbd_journal(ioctx, image)
        assert state is not None and state.header is not None
        assert rbd_restore_state(ioctx, image) == "incomplete", "a killed restore's image must stay flagged"
        journaled = len(state.pieces)
        assert 4 <= journaled < total

        # 2. A resume from another backup of the same volume: refused, one line, exit 2, nothing touched.
        before = (rbd_image_digest(ioctx, image).sha256, read_rbd_journal(ioctx, image))
        refused = subprocess.run(_drill(str(store.root / other.prefix), dest, "--target", sandbox_target.path,
                                        "--resume"), cwd=REPO, capture_output=True, text=True, timeout=120)
        err = refused.stderr.strip()
        assert refused.returncode == 2 and "\n" not in err and "another restore" in err, refused.stderr
        assert (rbd_image_digest(ioctx, image).sha256, read_rbd_journal(ioctx, image)) == before

        # 3. --resume: only the pieces not journaled are restored, the whole image verified.
        resume_started = time.monotonic()
        resumed = subprocess.run(_drill(str(store.root / backup.prefix), dest, "--target", sandbox_target.path,
                                        "--resume"), cwd=REPO, capture_output=True, text=True, timeout=120)
        resume_seconds = time.monotonic() - resume_started
        assert resumed.returncode == 0, resumed.stderr
        match = re.search(r"\((\d+)/(\d+) pieces journaled by the interrupted run, skipped\)", resumed.stdout)
        assert match, resumed.stdout
        skipped, planned = int(match[1]), int(match[2])
        assert planned == total and skipped == journaled and total - skipped < total
        print(f"killed after {killed_after:.1f}s with {journaled}/{total} pieces journaled; resume rewrote "
              f"{total - skipped} pieces in {resume_seconds:.1f}s")
        # The dead writer's exclusive lock was broken at once, not waited out (osd_client_watch_timeout, 30 s).
        assert resume_seconds < 25, f"the resume took {resume_seconds:.1f}s: did it wait for the dead writer's lock?"
        assert rbd_image_digest(ioctx, image).sha256 == hashlib.sha256(volume).hexdigest()
        assert rbd_restore_state(ioctx, image) is None, "a finished image is still flagged"
        with rbd.Image(ioctx, image, read_only=True) as img:
            left = [k for k, _v in img.metadata_list() if k == RBD_JOURNAL_KEY or k.startswith(RBD_PIECE_PREFIX)]
        assert left == [], "the journal outlived the restore"
    finally:
        for _ in range(3):  # a dead client's watch can keep the image busy for a while
            try:
                rbd.RBD().remove(ioctx, image)
                break
            except rbd.ImageNotFound:
                break
            except rbd.Error:
                time.sleep(1)
        connection.close()
