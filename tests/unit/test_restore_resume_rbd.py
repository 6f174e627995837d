"""--resume into RBD without a cluster: the journal's format and checks (pure), and the skip logic of
`RbdSink` and the engine against an in-memory stand-in for python-rbd (images with data and metadata).

The real thing (kill -9 of `drill restore` into a sandbox image, then --resume) is
tests/integration/test_restore_resume_rbd.py.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drills.restore.engine import EngineConfig, RestoreEngine, RestoreReport, rbd_job
from drills.restore.format import cinder_prefix, read_manifest, write_backup
from drills.restore.journal import (RBD_JOURNAL_KEY, RBD_PIECE_PREFIX, RBD_STATE_KEY, JournalHeader, RbdJournalState,
                                    header_mismatch, journal_key, journaled_pieces, piece_meta_key)
from drills.restore.sinks import RbdConnection
from drills.restore.store import PosixBackupStore

MiB = 1 << 20
CHUNK = 256 * 1024
SMALL = dict(window_bytes=128 * 1024, read_piece_bytes=64 * 1024, zero_skip_granularity_bytes=64 * 1024)


# --- the journal format and its checks (pure) ------------------------------------------------------

def test_header_round_trip_and_rejects_garbage() -> None:
    header = JournalHeader('[["b1", "p1"], 1048576]', 1 << 20, image_size=2 << 20, fresh=False)
    assert JournalHeader.decode(header.encode()) == header
    file_header = JournalHeader("k", 10)  # a file journal's header carries no image fields
    assert json.loads(file_header.encode()) == {"journal": 1, "key": "k", "size": 10}
    for text in ("", "[]", '{"journal": 2, "key": "k", "size": 1}', '{"journal": 1, "key": 3, "size": 1}',
                 '{"journal": 1, "key": "k", "size": 1, "fresh": "yes"}'):
        with pytest.raises(ValueError):
            JournalHeader.decode(text)


def test_header_mismatch_names_the_other_backup_and_sizes() -> None:
    key = json.dumps([["b1", "p1"], 100])
    header = JournalHeader(key, 100, image_size=100)
    assert header_mismatch(header, key, 100, 100) is None
    other = header_mismatch(header, json.dumps([["b2", "p2"], 100]), 100, 100)
    assert other is not None and "another restore" in other and "b1" in other
    assert "200" in (header_mismatch(header, key, 200, 100) or "")
    assert "100 bytes" in (header_mismatch(header, key, 100, 300) or "")  # the image was resized since


def test_journal_key_is_every_links_backup_id_and_prefix_and_the_size(tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    manifest = read_manifest(store, prefix)
    assert json.loads(journal_key([manifest])) == [[manifest.backup_id, prefix], len(volume)]


def test_journaled_pieces_ignore_foreign_and_mismatched_keys() -> None:
    pieces = ["p/o-00001/0/262144/abc", "p/o-00002/262144/262144/def"]
    metadata = [(piece_meta_key(p), p) for p in pieces]
    metadata += [(RBD_PIECE_PREFIX + "0" * 24, "p/o-00003/1/2/x"), ("conf_rbd_cache", "false"),
                 (RBD_STATE_KEY, "incomplete")]
    assert journaled_pieces(metadata) == frozenset(pieces)
    assert piece_meta_key(pieces[0]) == piece_meta_key(pieces[0]) != piece_meta_key(pieces[1])


@pytest.mark.parametrize("state, header, expect", [
    ("incomplete", "good", None),
    (None, "good", "nothing to resume"),
    ("incomplete", None, "no journal"),
    ("incomplete", "{torn", "unreadable"),
    ("incomplete", "other", "another restore"),
])
def test_refusal(state: str | None, header: str | None, expect: str | None) -> None:
    key = json.dumps([["b1", "p1"], 100])
    metadata = [] if state is None else [(RBD_STATE_KEY, state)]
    if header == "good":
        metadata.append((RBD_JOURNAL_KEY, JournalHeader(key, 100, image_size=100).encode()))
    elif header == "other":
        metadata.append((RBD_JOURNAL_KEY, JournalHeader(json.dumps([["b9", "p9"], 100]), 100, 100).encode()))
    elif header is not None:
        metadata.append((RBD_JOURNAL_KEY, header))
    refusal = RbdJournalState.from_metadata(100, metadata).refusal(key, 100)
    assert (refusal is None) if expect is None else (expect in (refusal or ""))


def test_a_dead_writer_on_this_host_is_fenced_a_live_or_remote_one_is_not() -> None:
    header = JournalHeader("k", 1, 1, writer_host="h1", writer_pid=424242, writer_addr="10.0.0.1:0/77")
    owners = [{"mode": 0, "owner": "10.0.0.1:0/77"}]
    dead, alive = (lambda pid: False), (lambda pid: True)
    assert header.dead_writer_lock(owners, "h1", dead) == owners[0]
    assert header.dead_writer_lock(owners, "h1", alive) is None  # still running: never break its lock
    assert header.dead_writer_lock(owners, "h2", dead) is None  # another host: librbd's own timeout
    assert header.dead_writer_lock([{"mode": 0, "owner": "10.0.0.2:0/9"}], "h1", dead) is None  # someone else
    assert JournalHeader.decode(header.encode()) == header
    metadata = [(RBD_STATE_KEY, "incomplete"), (RBD_JOURNAL_KEY, header.encode())]
    state = RbdJournalState.from_metadata(1, metadata)
    assert "still running" in (state.refusal("k", 1, "h1", alive) or "")
    assert state.refusal("k", 1, "h2", alive) is None and state.refusal("k", 1, "h1", dead) is None


# --- an in-memory python-rbd ------------------------------------------------------------------------

@dataclass
class FakeImageData:
    data: bytearray
    metadata: dict[str, str] = field(default_factory=dict)
    writes: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) of every write
    on_metadata_set: Callable[[str], None] | None = None


@dataclass
class FakeIoctx:
    name: str = "pool"
    images: dict[str, FakeImageData] = field(default_factory=dict)
    _pending: dict[int, tuple[str, ...]] = field(default_factory=dict)

    # The omap write op RbdSink removes journal keys with: image metadata is the header object's omap.
    def remove_omap_keys(self, op: object, keys: tuple[str, ...]) -> None:
        self._pending[id(op)] = keys

    def operate_write_op(self, op: object, oid: str) -> None:
        metadata = self.images[oid.removeprefix("rbd_header.")].metadata
        for key in self._pending.pop(id(op)):
            metadata.pop(key.removeprefix("metadata_"), None)


def fake_rbd_module() -> types.ModuleType:
    mod = types.ModuleType("rbd")

    class Error(Exception):
        pass

    class ImageExists(Error):
        pass

    class ImageNotFound(Error):
        pass

    class ObjectNotFound(Error):
        pass

    class RBD:
        def create(self, ioctx: FakeIoctx, name: str, size: int) -> None:
            if name in ioctx.images:
                raise ImageExists(name)
            ioctx.images[name] = FakeImageData(bytearray(size))

        def remove(self, ioctx: FakeIoctx, name: str) -> None:
            if ioctx.images.pop(name, None) is None:
                raise ImageNotFound(name)

    class Completion:
        def get_return_value(self) -> int:
            return 0

    class Image:
        def __init__(self, ioctx: FakeIoctx, name: str, read_only: bool = False) -> None:
            if name not in ioctx.images:
                raise ImageNotFound(name)
            self._img, self._read_only, self._ioctx = ioctx.images[name], read_only, ioctx

        def __enter__(self) -> "Image":
            return self

        def __exit__(self, *exc: object) -> None:
            self.close()

        def close(self) -> None:
            pass

        def id(self) -> str:
            return next(name for name, img in self._ioctx.images.items() if img is self._img)

        def size(self) -> int:
            return len(self._img.data)

        def resize(self, size: int) -> None:
            self._img.data.extend(bytes(size - len(self._img.data)))

        def _write(self, data: bytes, offset: int) -> None:
            assert not self._read_only
            self._img.data[offset:offset + len(data)] = data
            self._img.writes.append((offset, len(data)))

        def write(self, data: bytes, offset: int) -> int:
            self._write(data, offset)
            return len(data)

        def aio_write(self, data: bytes, offset: int, oncomplete: Callable[[Any], None]) -> None:
            self._write(data, offset)
            # completions arrive on librbd's threads
            threading.Thread(target=oncomplete, args=(Completion(),)).start()

        def read(self, offset: int, length: int) -> bytes:
            return bytes(self._img.data[offset:offset + length])

        def flush(self) -> None:
            pass

        def metadata_get(self, key: str) -> str:
            if key not in self._img.metadata:
                raise KeyError(key)
            return self._img.metadata[key]

        def metadata_set(self, key: str, value: str) -> None:
            assert not self._read_only
            self._img.metadata[key] = value
            if self._img.on_metadata_set:
                self._img.on_metadata_set(key)

        def metadata_remove(self, key: str) -> None:
            assert not self._read_only
            if key not in self._img.metadata:
                raise KeyError(key)
            del self._img.metadata[key]

        def metadata_list(self) -> Iterator[tuple[str, str]]:
            return iter(sorted(self._img.metadata.items()))

        def lock_get_owners(self) -> Iterator[dict[str, object]]:
            return iter([])  # as if the exclusive-lock feature were off

    for obj in (Error, ImageExists, ImageNotFound, ObjectNotFound, RBD, Image):
        setattr(mod, obj.__name__, obj)
    return mod


class FakeConnection:
    """What the engine and the CLI use of `RbdConnection`, over one FakeIoctx."""

    default_pool = "pool"
    open_sink = RbdConnection.open_sink
    resume_refusal = RbdConnection.resume_refusal

    def __init__(self, ioctx: FakeIoctx) -> None:
        self._ioctx = ioctx

    def ioctx(self, pool: str = "") -> FakeIoctx:
        return self._ioctx

    def slow_ops_probe(self) -> Callable[[], int | None]:
        return lambda: None

    def close(self) -> None:
        pass


@pytest.fixture
def ioctx(monkeypatch: pytest.MonkeyPatch) -> FakeIoctx:
    pytest.importorskip("rados")  # the sink's atomic journal removal builds a real (cluster-less) write op
    monkeypatch.setitem(sys.modules, "rbd", fake_rbd_module())
    return FakeIoctx()


def backup(tmp_path: Path, size: int = 4 * MiB, backup_id: str = "b1",
           volume: bytes | None = None) -> tuple[PosixBackupStore, str, bytes]:
    rng = random.Random(5)
    if volume is None:
        volume = b"".join(rng.randbytes(CHUNK // 2) + bytes(CHUNK // 2) for _ in range(size // CHUNK))
    store = PosixBackupStore(tmp_path / f"c-{backup_id}")
    prefix = cinder_prefix("vol", backup_id)
    write_backup(volume, store, prefix, CHUNK, "zlib", backup_id=backup_id)
    return store, prefix, volume


def run(jobs: list, engine: RestoreEngine | None = None) -> RestoreReport:
    return (engine or RestoreEngine(EngineConfig(memory_budget_bytes=32 * MiB, concurrency=2, **SMALL))).run(jobs)


def interrupt_after(ioctx: FakeIoctx, image: str, store: PosixBackupStore, prefix: str, pieces: int) -> RestoreReport:
    """Restore into `image` and cancel once `pieces` pieces are journaled (what Ctrl-C does)."""
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=32 * MiB, concurrency=2, **SMALL))
    original_create = sys.modules["rbd"].RBD.create

    def create(self: Any, io: FakeIoctx, name: str, size: int) -> None:
        original_create(self, io, name, size)

        def seen(key: str) -> None:
            if key.startswith(RBD_PIECE_PREFIX) and \
                    sum(k.startswith(RBD_PIECE_PREFIX) for k in io.images[name].metadata) >= pieces:
                engine.cancel()
        io.images[name].on_metadata_set = seen

    sys.modules["rbd"].RBD.create = create
    try:
        return run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", image)], engine)
    finally:
        sys.modules["rbd"].RBD.create = original_create


# --- the skip logic through RbdSink and the engine --------------------------------------------------

def test_a_fresh_restore_journals_in_image_metadata_and_commit_clears_it(ioctx: FakeIoctx, tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    report = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img")])
    assert report.ok, report.results[0].error
    img = ioctx.images["img"]
    assert bytes(img.data) == volume and img.metadata == {}, "a finished image keeps no flag and no journal"


def test_cancel_keeps_the_image_flagged_then_resume_skips_journaled_pieces(ioctx: FakeIoctx, tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    first = interrupt_after(ioctx, "img", store, prefix, pieces=5)
    assert first.interrupted is False and first.results[0].status == "cancelled"
    assert "kept image" in (first.results[0].cleanup or "")
    img = ioctx.images["img"]
    state = RbdJournalState.from_metadata(len(img.data), img.metadata.items())
    assert state.state == "incomplete" and state.header is not None and state.header.fresh
    journaled = len(state.pieces)
    assert journaled >= 5
    img.writes.clear()
    report = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img", resume=True)])
    result = report.results[0]
    assert result.status == "done", result.error
    assert result.pieces_resumed == journaled and result.pieces_total == len(volume) // CHUNK
    assert result.bytes_resumed == journaled * CHUNK
    assert bytes(img.data) == volume and img.metadata == {}
    # Only the pieces not journaled were written again.
    rewritten = {offset // CHUNK for offset, _n in img.writes}
    assert len(rewritten) == result.pieces_total - journaled


def test_resume_catches_damage_behind_the_journal_and_removes_the_image(ioctx: FakeIoctx, tmp_path: Path) -> None:
    store, prefix, _volume = backup(tmp_path)
    interrupt_after(ioctx, "img", store, prefix, pieces=4)
    ioctx.images["img"].data[CHUNK + 7] ^= 0xFF  # a journaled piece changed behind the journal's back
    result = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img", resume=True)]).results[0]
    assert result.status == "failed" and "resumed image differs" in (result.error or "")
    assert "img" not in ioctx.images, "an image the restore created and could not finish is removed"


def test_resume_without_an_image_is_a_fresh_restore(ioctx: FakeIoctx, tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    result = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img", resume=True)]).results[0]
    assert result.status == "done" and result.pieces_resumed == 0 and bytes(ioctx.images["img"].data) == volume


def test_without_resume_the_interrupted_image_is_refused_with_a_hint(ioctx: FakeIoctx, tmp_path: Path) -> None:
    store, prefix, volume = backup(tmp_path)
    interrupt_after(ioctx, "img", store, prefix, pieces=3)
    result = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img")]).results[0]
    assert result.status == "failed" and "interrupted restore" in (result.error or "") and "resume" in result.error
    # force starts over: the old journal is cleared first, so it can never vouch for new data
    forced = run([rbd_job(store, prefix, FakeConnection(ioctx), "pool", "img", force=True)]).results[0]
    assert forced.status == "done" and forced.pieces_resumed == 0
    assert bytes(ioctx.images["img"].data) == volume and ioctx.images["img"].metadata == {}


# --- the CLI: a resume into an image that changed is refused, exit 2, nothing touched ---------------

def _cli(monkeypatch: pytest.MonkeyPatch, ioctx: FakeIoctx, *argv: str) -> int:
    from drills.restore import cli

    monkeypatch.setattr(cli.RbdConnection, "from_target", classmethod(lambda cls, path: FakeConnection(ioctx)))
    return cli.main(["restore", *argv, "--target", "unused.toml", "--plain", "--window", "128KiB",
                     "--read-piece", "64KiB"])


def _snapshot(ioctx: FakeIoctx) -> dict[str, tuple[bytes, dict[str, str]]]:
    return {name: (bytes(i.data), dict(i.metadata)) for name, i in ioctx.images.items()}


def test_cli_resume_refusals_are_one_line_exit_2_and_touch_nothing(ioctx: FakeIoctx, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    store, prefix, volume = backup(tmp_path)
    interrupt_after(ioctx, "img", store, prefix, pieces=3)
    interrupt_after(ioctx, "img2", store, prefix, pieces=3)
    sys.modules["rbd"].Image(ioctx, "img2").resize(5 * MiB)  # the image changed since
    other_store, other_prefix, _ = backup(tmp_path, backup_id="b2", volume=volume)  # same data, another backup
    before = _snapshot(ioctx)
    capsys.readouterr()
    for source, image, expect in ((other_store.root / other_prefix, "img", "another restore (backup b1)"),
                                  (store.root / prefix, "img2", f"the image is {5 * MiB} bytes now")):
        assert _cli(monkeypatch, ioctx, str(source), f"rbd:pool/{image}", "--resume") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("drill restore:") and "\n" not in err and expect in err, err
        assert _snapshot(ioctx) == before
    # the right backup resumes and finishes; a second resume finds nothing to resume
    assert _cli(monkeypatch, ioctx, str(store.root / prefix), "rbd:pool/img", "--resume") == 0
    assert "pieces journaled by the interrupted run, skipped" in capsys.readouterr().out
    assert bytes(ioctx.images["img"].data) == volume and ioctx.images["img"].metadata == {}
    assert _cli(monkeypatch, ioctx, str(store.root / prefix), "rbd:pool/img", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
