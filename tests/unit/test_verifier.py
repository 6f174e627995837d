"""The verifying writer's record format, ledger, journal and classification.

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
from drills.workloads.verifier import (MemoryBackend, RadosObjectBackend, RbdImageBackend,
                                       ReadFailed, RecordError, VerifierConfig, VerifierError,
                                       VerifyingWriter, WriteTimeout, _SecondBuckets, check_backend,
                                       decode_record, encode_record, load_journal, remove_behind_verifier)


def make_writer(tmp_path: Path, num_keys: int = 8, **cfg: Any) -> tuple[VerifyingWriter, MemoryBackend]:
    backend = MemoryBackend()
    config = VerifierConfig(num_keys=num_keys, record_size=256, writer_id="w-test", **cfg)
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


def test_all_ok_after_rewriting_every_key(tmp_path: Path) -> None:
    writer, _ = make_writer(tmp_path)
    write_rounds(writer, 3)
    report = writer.check()
    assert report.passed and report.counts["ok"] == 8 and len(report.checks) == 8
    assert [c.expected_seq for c in report.checks] == list(range(17, 25))  # third round's seqs


def test_lost_key_removed_behind_the_verifiers_back(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 2)
    remove_behind_verifier(backend, 3)
    report = writer.check()
    assert not report.passed
    [lost] = report.with_status("lost")
    assert (lost.index, lost.location, lost.expected_seq, lost.found_seq) == (3, "mem:3", 12, None)
    assert "lost: mem:3 (key 3) expected seq 12" in report.summary()


def test_stale_older_acknowledged_version(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 3)
    backend.roll_back(5, versions=2)  # first round's version of key 5
    [stale] = writer.check().with_status("stale")
    assert (stale.index, stale.expected_seq, stale.found_seq) == (5, 22, 6)


def test_corrupt_checksum_and_misplaced_record(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 1)
    backend.flip_byte(1, offset=120)
    backend.objects[2] = backend.objects[4]  # a write that landed on the wrong key
    backend.objects[6] = backend.objects[6][:40]  # truncated
    report = writer.check()
    corrupt = {c.index: c.detail for c in report.with_status("corrupt")}
    assert corrupt.keys() == {1, 2, 6}
    assert corrupt[1] == "checksum mismatch"
    assert "misplaced" in corrupt[2]
    assert "short record" in corrupt[6] or "truncated" in corrupt[6]


def test_sequence_never_written_to_the_key_is_corrupt(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path)
    write_rounds(writer, 1)
    # a well-formed record for key 0 with a seq this writer never issued for it
    backend.objects[0] = encode_record("w-test", 0, 999, 0.0, 256)
    [bad] = writer.check().with_status("corrupt")
    assert bad.index == 0 and "never written" in bad.detail


def test_unacknowledged_either_value_is_fine(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 1)  # seqs 1..4 acknowledged
    timing_out = {1, 2}
    backend.fail_writes = lambda i: WriteTimeout("no ack in 10s") if i in timing_out else None
    outcomes = [writer.write_one() for _ in range(4)]  # seqs 5..8; keys 1 and 2 time out
    assert [type(o).__name__ for o in outcomes] == ["AckedWrite", "UnackedWrite", "UnackedWrite", "AckedWrite"]
    # key 2's timed-out write landed anyway; key 1's did not
    backend.write_lands_unacknowledged(2, encode_record("w-test", 2, 7, 0.0, 256))
    report = writer.check()
    assert report.passed
    status = {c.index: c for c in report.checks}
    assert status[1].status == "unacknowledged" and status[1].found_seq == 2 and "did not land" in status[1].detail
    assert status[2].status == "unacknowledged" and status[2].found_seq == 7 and "landed" in status[2].detail
    assert status[0].status == status[3].status == "ok"


def test_unacknowledged_does_not_excuse_losing_an_acknowledged_write(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=2)
    write_rounds(writer, 1)
    backend.fail_writes = lambda i: OSError(5, "EIO")
    writer.write_one()  # key 0, seq 3: error reply
    backend.fail_writes = None
    remove_behind_verifier(backend, 0)
    [lost] = writer.check().with_status("lost")
    assert lost.index == 0 and lost.expected_seq == 1


def test_never_acknowledged_key_may_be_absent(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=3)
    backend.fail_writes = lambda i: WriteTimeout("t/o") if i == 2 else None
    write_rounds(writer, 1)
    [c] = [c for c in writer.check().checks if c.index == 2]
    assert c.status == "unacknowledged" and c.found_seq is None and c.expected_seq is None


def test_unreadable_key_is_a_problem(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=2)
    write_rounds(writer, 1)

    def failing_read(index: int, length: int, timeout_s: float) -> bytes | None:
        raise ReadFailed("aio_read mem:1: no reply within 30s")

    backend.read = failing_read  # type: ignore[method-assign]
    report = writer.check()
    assert not report.passed and report.counts["unreadable"] == 2


def test_journal_rebuilds_the_same_ledger(tmp_path: Path) -> None:
    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 2)
    backend.fail_writes = lambda i: WriteTimeout("t/o") if i == 1 else None
    write_rounds(writer, 1)
    writer.close()
    with open(writer.journal_path, "a") as f:
        f.write('{"type": "ack", "seq": 9')  # torn line from a crash
    ledger = load_journal(writer.journal_path)
    assert ledger.acked == writer.ledger.acked and ledger.unacked == writer.ledger.unacked
    assert ledger.acked_count == 11 and ledger.unacked_count == 1
    remove_behind_verifier(backend, 3)
    report = check_backend(backend, ledger)
    assert [(c.index, c.status) for c in report.checks] == [(0, "ok"), (1, "unacknowledged"), (2, "ok"),
                                                           (3, "lost")]
    first = json.loads(writer.journal_path.read_text().splitlines()[1])
    assert first["type"] == "ack" and {"seq", "index", "crc32", "latency_ms", "acked_at"} <= first.keys()


def test_journal_crc32_is_the_records_own_checksum(tmp_path: Path) -> None:
    # A CRC32 over the whole record (its CRC trailer included) is one constant for every record; the
    # journal must carry the record's checksum, which differs per write and matches the stored trailer.
    import zlib

    writer, backend = make_writer(tmp_path, num_keys=4)
    write_rounds(writer, 2)
    writer.close()
    acks = [json.loads(line) for line in writer.journal_path.read_text().splitlines()[1:]]
    assert len({a["crc32"] for a in acks}) == len(acks) == 8
    stored = backend.objects[0]
    assert acks[4]["index"] == 0 and acks[4]["crc32"] == zlib.crc32(stored[:-4])


def test_journal_rejects_two_writers(tmp_path: Path) -> None:
    a = VerifyingWriter(MemoryBackend(), tmp_path / "j", config=VerifierConfig(writer_id="a"))
    b = VerifyingWriter(MemoryBackend(), tmp_path / "j", config=VerifierConfig(writer_id="b"))
    a.close()
    b.close()
    with pytest.raises(VerifierError, match="more than one writer"):
        load_journal(tmp_path / "j")


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
    assert report.passed
    series = read_series(tmp_path / "run")
    ops = [s for s in series if s.metric == "verifier.write.ops"]
    assert ops and sum(s.value or 0 for s in ops) == writer.ledger.acked_count
    assert any(s.metric == "verifier.write.lat_p99_ms" and s.value is not None for s in series)
    events = read_events(tmp_path / "run")
    errors = [e for e in events if e.kind == "workload.error"]
    assert len(errors) == writer.ledger.unacked_count and errors[0].data["error"].startswith("timeout")
    assert {"workload.start", "workload.stop", "verifier.check"} <= {e.kind for e in events}


def test_writer_thread_failure_surfaces_on_stop(tmp_path: Path) -> None:
    backend = MemoryBackend()
    def broken_describe(index: int) -> str:
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
    """Follows python-rados 16.2: aio_write_full(name, data, oncomplete=cb) -> Completion, cb(completion);
    aio_read(name, length, offset, oncomplete=cb), cb(completion, data or None)."""

    def __init__(self, write_rc: int = 0, hang: bool = False):
        self.objects: dict[str, bytes] = {}
        self.write_rc = write_rc
        self.hang = hang

    def _later(self, fn: Callable[[], None]) -> None:
        if not self.hang:
            threading.Timer(0.01, fn).start()  # librados calls back from its own thread

    def aio_write_full(self, name: str, data: bytes, oncomplete: Callable[[Any], None]) -> _Completion:
        comp = _Completion(self.write_rc)
        if self.write_rc == 0:
            self.objects[name] = data
        self._later(lambda: oncomplete(comp))
        return comp

    def aio_read(self, name: str, length: int, offset: int, oncomplete: Callable[[Any, Any], None]) -> _Completion:
        data = self.objects.get(name)
        comp = _Completion(-2 if data is None else len(data[offset:offset + length]))
        self._later(lambda: oncomplete(comp, None if data is None else data[offset:offset + length]))
        return comp


def test_rados_backend_plumbing(tmp_path: Path) -> None:
    ioctx = _StandInIoctx()
    backend = RadosObjectBackend(ioctx, "drill.v")
    writer = VerifyingWriter(backend, tmp_path / "j", config=VerifierConfig(num_keys=3, record_size=128))
    write_rounds(writer, 2)
    assert sorted(ioctx.objects) == ["drill.v.000000", "drill.v.000001", "drill.v.000002"]
    del ioctx.objects["drill.v.000001"]  # ENOENT on read -> lost
    report = writer.check()
    assert [c.status for c in report.checks] == ["ok", "lost", "ok"]

    failing = RadosObjectBackend(_StandInIoctx(write_rc=-28), "x")
    with pytest.raises(OSError, match="errno 28"):
        failing.write(0, b"data", 1.0)
    hung = RadosObjectBackend(_StandInIoctx(hang=True), "x")
    with pytest.raises(WriteTimeout):
        hung.write(0, b"data", 0.05)
    with pytest.raises(ReadFailed, match="no reply"):
        hung.read(0, 10, 0.05)


class _StandInImage:
    """Follows python-rbd 16.2: aio_write(data, offset, oncomplete), cb(completion);
    aio_read(offset, length, oncomplete), cb(completion, data); write(data, offset); flush();
    discard(offset, length); size()."""

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

    def discard(self, offset: int, length: int) -> None:
        # librbd with rbd_skip_partial_discard (the default) skips a discard smaller than its 4 MiB
        # object: the data stays. Measured on the sandbox: a 4 KiB discard left the record readable.
        return None


def test_rbd_backend_plumbing(tmp_path: Path) -> None:
    image = _StandInImage(8 * 512)
    backend = RbdImageBackend(image, slot_size=512)
    backend.check_capacity(8)
    with pytest.raises(VerifierError, match="too small"):
        backend.check_capacity(9)
    writer = VerifyingWriter(backend, tmp_path / "j", config=VerifierConfig(num_keys=4, record_size=300))
    write_rounds(writer, 2)
    remove_behind_verifier(backend, 2)  # discard: the slot reads back as zeros = missing
    image.buf[512 + 40] ^= 0xFF  # key 1
    report = writer.check()
    assert [c.status for c in report.checks] == ["ok", "corrupt", "lost", "ok"]
    assert report.checks[2].location == "rbd@1024"
