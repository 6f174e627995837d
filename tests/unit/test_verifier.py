"""The verifying writer's record format, slot layout, ledger, journal and classification.

These are unit tests of pure logic: they run against MemoryBackend, an in-memory implementation of the
same VerifierBackend interface as the librados and RBD backends, with hooks to lose, roll back and corrupt
data behind the verifier's back. The real rados/rbd backends are exercised by the integration tests
against the sandbox cluster; the last tests here only check their completion/timeout plumbing against
stand-ins that follow python-rados / python-rbd 16.2 callback conventions.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from drills.timeline import Timeline, read_events, read_series
from drills.workloads.verifier import (DropAckedWrite, MemoryBackend, RadosObjectBackend, RbdImageBackend,
                                       ReadFailed, RecordError, VerifierConfig, VerifierError,
                                       VerifyingWriter, WriteTimeout, _SecondBuckets, check_backend,
                                       decode_record, encode_record, load_journal, remove_behind_verifier,
                                       seq_of, slot_of)

RECORD = 256


def make_writer(tmp_path: Path, num_keys: int = 8, backend: Any = None, **cfg: Any) -> tuple[VerifyingWriter, Any]:
    backend = backend if backend is not None else MemoryBackend()
    config = VerifierConfig(num_keys=num_keys, record_size=RECORD, writer_id="w-test", **cfg)
    return VerifyingWriter(backend, tmp_path / "journal.jsonl", config=config), backend


def write_rounds(writer: VerifyingWriter, rounds: int) -> None:
    for _ in range(rounds * writer.config.num_keys):
        writer.write_one()


def test_record_round_trip_and_damage() -> None:
    data = encode_record("w1", 7, 12345, 1700000000.5, 512)
    assert len(data) == 512
    rec = decode_record(data)
    assert (rec.writer_id, rec.index, rec.seq, rec.issued_at) == ("w1", 7, 12345, 1700000000.5)
    flipped = bytearray(data)
    flipped[300] ^= 1
    with pytest.raises(RecordError, match="checksum mismatch"):
        decode_record(bytes(flipped))
    with pytest.raises(RecordError, match="truncated"):
        decode_record(data[:200])
    with pytest.raises(RecordError, match="bad magic"):
        decode_record(b"\0" * 512)


def test_layout_every_write_has_its_own_slot() -> None:
    assert [slot_of(s, 4) for s in (1, 4, 5, 9)] == [(0, 0), (3, 0), (0, 1), (0, 2)]
    assert all(seq_of(*slot_of(s, 7), 7) == s for s in range(1, 100))


def test_every_acknowledged_write_reads_back(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 3)
    report = writer.check()
    assert report.passed and (report.written, report.acknowledged, report.verified) == (24, 24, 24)
    assert report.counts["ok"] == 24 and report.lost == 0 and report.keys == 8
    assert all(len(obj) == 3 * RECORD for obj in backend.objects.values())  # nothing overwritten
    assert report.bytes_read == 24 * RECORD
    assert "24 of 24 acknowledged writes read back intact" in report.summary()
    assert "own 256-byte slot" in report.method and "CRC32" in report.method


def test_a_dropped_earlier_write_is_caught(tmp_path: Path) -> None:
    # key 3's first write (seq 4) vanishes; seqs 12 and 20 to the same key are still there. The old
    # layout (one record per key, rewritten) could never see this: only seq 20 was checkable.
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 3)
    backend.zero_slot(3, 0)
    report = writer.check()
    assert not report.passed
    assert (report.acknowledged, report.verified, report.lost) == (24, 23, 1)
    [lost] = report.problems
    assert (lost.seq, lost.index, lost.status, lost.acknowledged, lost.detail) == (4, 3, "lost", True, "zeros")
    assert lost.location == "mem:3@0"
    assert "lost: mem:3@0 (key 3) seq 4" in report.summary()


def test_a_backend_that_acknowledges_without_storing_is_caught(tmp_path: Path) -> None:
    dropping = DropAckedWrite(MemoryBackend(), nth=10)
    writer, _ = make_writer(tmp_path, num_keys=4, backend=dropping)
    write_rounds(writer, 5)  # seq 10 = key 1 slot 2; key 1 gets seqs 14 and 18 afterwards
    assert writer.ledger.acked_count == 20
    report = writer.check()
    assert [(c.seq, c.status) for c in report.problems] == [(10, "lost")]
    assert report.problems[0].location == dropping.dropped == "mem:1@512"


def test_object_rolled_back_loses_its_later_writes(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=2)
    write_rounds(writer, 4)  # key 0: seqs 1, 3, 5, 7
    backend.truncate(0, 2)
    report = writer.check()
    assert [(c.seq, c.status, c.detail) for c in report.problems] == [(5, "lost", "missing"), (7, "lost", "missing")]


def test_removed_key_loses_every_write_to_it(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 2)
    remove_behind_verifier(backend, 3)
    report = writer.check()
    assert [(c.seq, c.status) for c in report.problems] == [(4, "lost"), (12, "lost")]
    assert report.problems[0].detail == "object does not exist" and report.verified == 14


def test_older_data_of_another_writer_is_stale(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 2)
    # what an image reused from an earlier drill shows when this write vanishes: the old record underneath
    backend.put_record(2, 1, encode_record("earlier", 2, 7, writer.ledger.started_at - 3600, RECORD))
    [stale] = writer.check().problems
    assert (stale.seq, stale.status, stale.found_seq) == (7, "stale", 7) and "earlier" in stale.detail


def test_corrupt_checksum_misplaced_and_never_issued(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 2)
    backend.flip_byte(1, slot=0, offset=120)  # seq 2
    backend.put_record(2, 1, backend.slot_bytes(4, 0))  # seq 11's slot holds seq 5's record (misplaced)
    backend.put_record(6, 0, encode_record("w-test", 6, 999, 0.0, RECORD))  # seq 7's slot: a seq never issued
    backend.put_record(5, 1, b"\xff" * 40)  # seq 14's slot: garbage over the header
    report = writer.check()
    corrupt = {c.seq: c.detail for c in report.with_status("corrupt")}
    assert corrupt.keys() == {2, 7, 11, 14} and report.verified == 12
    assert corrupt[2] == "checksum mismatch" and "misplaced" in corrupt[11] and "misplaced" in corrupt[7]
    assert "bad magic" in corrupt[14]


def test_unacknowledged_either_value_is_fine(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 1)  # seqs 1..4 acknowledged
    timing_out = {1, 2}
    backend.fail_writes = lambda i: WriteTimeout("no ack in 10s") if i in timing_out else None
    outcomes = [writer.write_one() for _ in range(4)]  # seqs 5..8; keys 1 and 2 (seqs 6, 7) time out
    assert [type(o).__name__ for o in outcomes] == ["AckedWrite", "UnackedWrite", "UnackedWrite", "AckedWrite"]
    backend.write_lands_unacknowledged(2, RECORD, encode_record("w-test", 2, 7, 0.0, RECORD))  # seq 7 landed anyway
    report = writer.check()
    assert report.passed and (report.written, report.acknowledged, report.verified) == (8, 6, 6)
    assert report.counts["unacknowledged"] == 2 and report.counts["ok"] == 6


def test_unacknowledged_does_not_excuse_garbage_or_a_lost_acknowledged_write(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=2)
    write_rounds(writer, 1)
    backend.fail_writes = lambda i: OSError(5, "EIO")
    writer.write_one()  # key 0, seq 3: error reply
    backend.fail_writes = None
    writer.write_one()  # key 1, seq 4
    backend.write_lands_unacknowledged(0, RECORD, b"\x01" * RECORD)  # seq 3's slot: data no write put there
    backend.zero_slot(1, 0)  # seq 2 vanished
    report = writer.check()
    assert [(c.seq, c.status, c.acknowledged) for c in report.problems] == [(2, "lost", True), (3, "corrupt", False)]
    assert report.lost == 2 and report.verified == 2 and report.acknowledged == 3


def test_unreadable_key_is_a_problem(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=2)
    write_rounds(writer, 2)
    backend.fail_reads = lambda i: ReadFailed("aio_read mem:1: no reply within 30s") if i == 1 else None
    report = writer.check()
    assert not report.passed and report.counts["unreadable"] == 2 and report.verified == 2


def test_chunked_concurrent_read_back_gives_the_same_verdict(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=3)
    write_rounds(writer, 10)
    backend.zero_slot(2, 7)  # seq 24
    whole = check_backend(backend, writer.ledger)
    chunked = check_backend(backend, writer.ledger, chunk_bytes=3 * RECORD, concurrency=2)
    for r in (whole, chunked):
        assert [(c.seq, c.status) for c in r.problems] == [(24, "lost")] and r.verified == 29
    assert chunked.counts == whole.counts and chunked.bytes_read == whole.bytes_read == 30 * RECORD


def test_ledger_memory_is_a_byte_per_write(tmp_path: Path) -> None:
    writer, _ = make_writer(tmp_path, num_keys=64)
    for _ in range(2_000):
        writer.write_one()
    ledger = writer.ledger
    # what the writer keeps per acknowledged write: one state byte (the rest is in the journal on disk)
    assert len(ledger.states) == ledger.acked_count == 2_000 and not ledger.unacked
    assert writer.check().verified == 2_000


def test_full_key_refuses_to_overwrite(tmp_path: Path) -> None:
    writer, _ = make_writer(tmp_path, num_keys=4, backend=MemoryBackend(slots_per_key=2))
    assert writer.capacity == 8
    write_rounds(writer, 2)
    with pytest.raises(VerifierError, match="full after 8 writes"):
        writer.write_one()
    assert writer.check().passed


def test_journal_rebuilds_the_same_ledger(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 2)
    backend.fail_writes = lambda i: WriteTimeout("t/o") if i == 1 else None
    write_rounds(writer, 1)
    writer.close()
    with open(writer.journal_path, "a") as f:
        f.write('{"type": "ack", "seq": 13')  # torn line from a crash
    ledger = load_journal(writer.journal_path)
    assert ledger.states == writer.ledger.states and ledger.unacked == writer.ledger.unacked
    assert ledger.acked_count == 11 and ledger.unacked_count == 1 and ledger.started_at == writer.ledger.started_at
    backend.zero_slot(3, 1)  # seq 8
    report = check_backend(backend, ledger)
    assert [(c.seq, c.status) for c in report.problems] == [(8, "lost")]
    assert report.counts["unacknowledged"] == 1 and report.verified == 10
    first = json.loads(writer.journal_path.read_text().splitlines()[1])
    assert first["type"] == "ack" and {"seq", "index", "offset", "crc32", "latency_ms", "acked_at"} <= first.keys()


def test_journal_crc32_is_the_records_own_checksum(tmp_path: Path) -> None:
    import zlib

    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 2)
    writer.close()
    acks = [json.loads(line) for line in writer.journal_path.read_text().splitlines()[1:]]
    assert len({a["crc32"] for a in acks}) == len(acks) == 8
    assert acks[4]["index"] == 0 and acks[4]["offset"] == RECORD
    assert acks[4]["crc32"] == zlib.crc32(backend.slot_bytes(0, 1)[:-4])


def test_journal_rejects_two_writers_and_old_formats(tmp_path: Path) -> None:
    a = VerifyingWriter(MemoryBackend(), tmp_path / "j", config=VerifierConfig(writer_id="a"))
    b = VerifyingWriter(MemoryBackend(), tmp_path / "j", config=VerifierConfig(writer_id="b"))
    a.close()
    b.close()
    with pytest.raises(VerifierError, match="more than one writer"):
        load_journal(tmp_path / "j")
    (tmp_path / "old").write_text('{"type": "start", "writer_id": "x", "record_size": 4096, "t": 0}\n')
    with pytest.raises(VerifierError, match="record format None"):
        load_journal(tmp_path / "old")


def test_background_thread_rate_limit_timeline_and_errors(tmp_path: Path) -> None:
    backend = MemoryBackend()
    calls = {"n": 0}

    def every_tenth_times_out(index: int) -> Exception | None:
        calls["n"] += 1
        return WriteTimeout("no ack") if calls["n"] % 10 == 0 else None

    backend.fail_writes = every_tenth_times_out
    with Timeline(tmp_path / "run") as tl:
        writer = VerifyingWriter(backend, tmp_path / "j", tl, VerifierConfig(num_keys=16, rate_per_s=100,
                                                                              record_size=128))
        started = time.monotonic()
        writer.start()
        time.sleep(1.2)
        writer.stop()
        elapsed = time.monotonic() - started
        report = writer.check()
    issued = writer.ledger.acked_count + writer.ledger.unacked_count
    assert 0.5 * 100 * elapsed <= issued <= 100 * elapsed + 5  # rate-limited
    assert writer.ledger.unacked_count == issued // 10
    assert report.passed and report.verified == writer.ledger.acked_count
    series = read_series(tmp_path / "run")
    ops = [s for s in series if s.metric == "verifier.write.ops"]
    assert ops and sum(s.value or 0 for s in ops) == writer.ledger.acked_count
    assert any(s.metric == "verifier.write.lat_p99_ms" and s.value is not None for s in series)
    events = read_events(tmp_path / "run")
    errors = [e for e in events if e.kind == "workload.error"]
    assert len(errors) == writer.ledger.unacked_count and errors[0].data["error"].startswith("timeout")
    assert {"workload.start", "workload.stop", "verifier.check"} <= {e.kind for e in events}
    [check] = [e for e in events if e.kind == "verifier.check"]
    assert check.data["verified"] == report.verified and check.data["method"] == report.method


def test_writer_thread_failure_surfaces_on_stop(tmp_path: Path) -> None:
    backend = MemoryBackend()

    def broken_describe(index: int, offset: int = 0) -> str:
        raise RuntimeError("bad backend")

    backend.describe = broken_describe  # type: ignore[method-assign]
    writer = VerifyingWriter(backend, tmp_path / "j", config=VerifierConfig(rate_per_s=50))
    writer.start()
    time.sleep(0.1)
    with pytest.raises(VerifierError, match="writer thread failed"):
        writer.stop()


def test_per_second_buckets_emit_empty_seconds_as_gaps(tmp_path: Path) -> None:
    with Timeline(tmp_path) as tl:
        buckets = _SecondBuckets(tl, {"writer": "w"})
        for t, lat in ((100.1, 2.0), (100.5, 4.0), (100.9, 3.0)):
            buckets.add(t, lat)
        buckets.roll(103.2)  # a 2-second stall: nothing acknowledged in 101 and 102
        buckets.add(103.4, 9.0)
        buckets.flush()
    got = [(s.t, s.metric, s.value) for s in read_series(tmp_path)]
    assert got == [(101.0, "verifier.write.ops", 3.0), (101.0, "verifier.write.lat_p99_ms", 4.0),
                   (102.0, "verifier.write.ops", 0.0), (102.0, "verifier.write.lat_p99_ms", None),
                   (103.0, "verifier.write.ops", 0.0), (103.0, "verifier.write.lat_p99_ms", None),
                   (104.0, "verifier.write.ops", 1.0), (104.0, "verifier.write.lat_p99_ms", 9.0)]


def test_config_errors() -> None:
    with pytest.raises(VerifierError):
        VerifierConfig(record_size=10)
    with pytest.raises(VerifierError):
        VerifierConfig(writer_id="x" * 17)


# ---- backend plumbing against stand-ins (not librados/librbd: see module docstring) ----


class _Completion:
    def __init__(self, rc: int):
        self.rc = rc

    def get_return_value(self) -> int:
        return self.rc


class _StandInIoctx:
    """Follows python-rados 16.2: aio_write(name, data, offset, oncomplete=cb) -> Completion, cb(completion);
    aio_read(name, length, offset, oncomplete=cb), cb(completion, data or None)."""

    def __init__(self, write_rc: int = 0, hang: bool = False):
        self.objects: dict[str, bytearray] = {}
        self.write_rc = write_rc
        self.hang = hang

    def _later(self, fn: Callable[[], None]) -> None:
        if not self.hang:
            threading.Timer(0.01, fn).start()  # librados calls back from its own thread

    def aio_write(self, name: str, data: bytes, offset: int, oncomplete: Callable[[Any], None]) -> _Completion:
        comp = _Completion(self.write_rc)
        if self.write_rc == 0:
            obj = self.objects.setdefault(name, bytearray())
            obj.extend(bytes(max(0, offset + len(data) - len(obj))))
            obj[offset:offset + len(data)] = data
        self._later(lambda: oncomplete(comp))
        return comp

    def aio_read(self, name: str, length: int, offset: int, oncomplete: Callable[[Any, Any], None]) -> _Completion:
        data = self.objects.get(name)
        piece = None if data is None else bytes(data[offset:offset + length])
        comp = _Completion(-2 if piece is None else len(piece))
        self._later(lambda: oncomplete(comp, piece))
        return comp


def test_rados_backend_plumbing(tmp_path: Path) -> None:
    ioctx = _StandInIoctx()
    backend = RadosObjectBackend(ioctx, "drill.v")
    writer = VerifyingWriter(backend, tmp_path / "j", config=VerifierConfig(num_keys=3, record_size=128))
    assert writer.capacity == 3 * (128 << 20) // 128  # osd_max_object_size bounds each key
    write_rounds(writer, 2)
    assert sorted(ioctx.objects) == ["drill.v.000000", "drill.v.000001", "drill.v.000002"]
    assert all(len(o) == 256 for o in ioctx.objects.values())
    del ioctx.objects["drill.v.000001"]  # ENOENT on read -> both of its writes lost
    report = writer.check()
    assert [(c.seq, c.status, c.location) for c in report.problems] == [(2, "lost", "drill.v.000001@0"),
                                                                        (5, "lost", "drill.v.000001@128")]

    failing = RadosObjectBackend(_StandInIoctx(write_rc=-28), "x")
    with pytest.raises(OSError, match="errno 28"):
        failing.write(0, 0, b"data", 1.0)
    hung = RadosObjectBackend(_StandInIoctx(hang=True), "x")
    with pytest.raises(WriteTimeout):
        hung.write(0, 0, b"data", 0.05)
    with pytest.raises(ReadFailed, match="no reply"):
        hung.read(0, 0, 10, 0.05)


class _StandInImage:
    """Follows python-rbd 16.2: aio_write(data, offset, oncomplete), cb(completion);
    aio_read(offset, length, oncomplete), cb(completion, data); write(data, offset); flush(); size()."""

    def __init__(self, size: int):
        self.buf = bytearray(size)

    def size(self) -> int:
        return len(self.buf)

    def aio_write(self, data: bytes, offset: int, oncomplete: Callable[[Any], None]) -> _Completion:
        self.buf[offset:offset + len(data)] = data
        comp = _Completion(len(data))
        threading.Timer(0.01, lambda: oncomplete(comp)).start()
        return comp

    def aio_read(self, offset: int, length: int, oncomplete: Callable[[Any, Any], None]) -> _Completion:
        comp = _Completion(length)
        data = bytes(self.buf[offset:offset + length])
        threading.Timer(0.01, lambda: oncomplete(comp, data)).start()
        return comp

    def write(self, data: bytes, offset: int) -> int:
        self.buf[offset:offset + len(data)] = data
        return len(data)

    def flush(self) -> None:
        pass


def test_rbd_backend_regions_capacity_and_damage(tmp_path: Path) -> None:
    image = _StandInImage(1024 + 4 * 3 * 512)
    with pytest.raises(VerifierError, match="too small"):
        RbdImageBackend(image, first_offset=1024).check_capacity(8, record_size=1024)
    with pytest.raises(VerifierError, match="power of two"):
        RbdImageBackend(image).check_capacity(4, record_size=300)
    backend = RbdImageBackend(image, first_offset=1024)
    assert backend.check_capacity(4, record_size=512) == 3
    writer = VerifyingWriter(backend, tmp_path / "j", config=VerifierConfig(num_keys=4, record_size=512))
    assert writer.capacity == 12
    write_rounds(writer, 2)
    assert backend.describe(1, 512) == f"rbd@{1024 + 3 * 512 + 512}"
    backend.zero_slot(2, 0)  # seq 3, an earlier write to key 2
    image.buf[1024 + 3 * 512 + 512 + 40] ^= 0xFF  # key 1 slot 1: seq 6
    report = writer.check()
    assert [(c.seq, c.status) for c in report.problems] == [(3, "lost"), (6, "corrupt")]
    assert report.bytes_read == 8 * 512  # only the slots written to
    remove_behind_verifier(backend, 0)
    assert [(c.seq, c.status) for c in writer.check().problems] == [(1, "lost"), (3, "lost"), (5, "lost"), (6, "corrupt")]
    write_rounds(writer, 1)
    with pytest.raises(VerifierError, match="full after 12 writes"):
        writer.write_one()
