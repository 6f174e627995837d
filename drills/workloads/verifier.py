"""A verifying writer: writes self-describing records, remembers every acknowledged one, checks them later.

Every record carries a header (magic, format version, writer id, key index, sequence number, issue time,
payload length), a payload derived from (writer, seq), and a CRC32 over header and payload. Writes go
round-robin over a fixed set of keys, so every key is rewritten again and again: reading back an older
acknowledged version than the last one acknowledged is detectable ("stale").

Every acknowledged write is kept in memory and appended to a JSON-lines journal (so a check can also be
run from the journal in another process). After recovery, `check()` reads every key back and classifies:

  ok              the last acknowledged version is there
  lost            an acknowledged write exists but the key is missing (object gone / slot zeroed)
  stale           an older version than the last acknowledged one is there
  corrupt         checksum, magic, length, writer or key mismatch, or a sequence never written to this key
  unacknowledged  the newest write to the key was not acknowledged (timed out / failed) and either the
                  last acknowledged value or one of the unacknowledged ones is there: both are fine
  unreadable      the read itself failed or timed out (the check could not tell)

Backends (small interface, `VerifierBackend`): librados objects (one object per key, `aio_write_full`
with a timeout) and an RBD image (fixed-size slots at offsets). `MemoryBackend` implements the same
interface for unit tests of the checking logic.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from drills.timeline import Timeline

MAGIC = b"CDRV"
FORMAT_VERSION = 1
# magic, version, 3 pad, writer id (16 ascii bytes, NUL padded), key index, seq, issued at, payload length
HEADER = struct.Struct("<4sB3x16sIQdI")
TRAILER = struct.Struct("<I")  # crc32 of header + payload
MIN_RECORD_SIZE = HEADER.size + TRAILER.size + 16

STATUSES = ("ok", "lost", "stale", "corrupt", "unacknowledged", "unreadable")
PROBLEM_STATUSES = ("lost", "stale", "corrupt", "unreadable")


class VerifierError(RuntimeError):
    """The verifier was misused or misconfigured."""


class WriteTimeout(Exception):
    """A backend write was not acknowledged within its timeout (it may still land later)."""


class ReadFailed(Exception):
    """A backend read failed or timed out: the key's state is unknown."""


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedRecord:
    writer_id: str
    index: int
    seq: int
    issued_at: float


class RecordError(ValueError):
    """The bytes read back are not a valid record (the reason says why)."""


def _payload(writer_id: str, seq: int, length: int) -> bytes:
    block = hashlib.sha256(f"{writer_id}:{seq}".encode()).digest()
    return (block * (length // len(block) + 1))[:length]


def encode_record(writer_id: str, index: int, seq: int, issued_at: float, record_size: int) -> bytes:
    if record_size < MIN_RECORD_SIZE:
        raise VerifierError(f"record_size must be at least {MIN_RECORD_SIZE} bytes")
    payload_len = record_size - HEADER.size - TRAILER.size
    head = HEADER.pack(MAGIC, FORMAT_VERSION, writer_id.encode()[:16].ljust(16, b"\0"), index, seq, issued_at,
                       payload_len)
    body = head + _payload(writer_id, seq, payload_len)
    return body + TRAILER.pack(zlib.crc32(body))


def decode_record(data: bytes) -> DecodedRecord:
    if len(data) < HEADER.size + TRAILER.size:
        raise RecordError(f"short record: {len(data)} bytes")
    magic, version, writer, index, seq, issued_at, payload_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RecordError(f"bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise RecordError(f"unknown record version {version}")
    end = HEADER.size + payload_len
    if len(data) < end + TRAILER.size:
        raise RecordError(f"truncated record: {len(data)} bytes, header says {end + TRAILER.size}")
    (crc,) = TRAILER.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise RecordError("checksum mismatch")
    writer_id = writer.rstrip(b"\0").decode(errors="replace")
    if data[HEADER.size:end] != _payload(writer_id, seq, payload_len):
        raise RecordError("payload does not match its sequence number")  # a CRC collision, practically
    return DecodedRecord(writer_id, index, seq, issued_at)


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


class VerifierBackend(Protocol):
    """Where records live. Keys are small integers (0..num_keys-1); the backend maps them to objects/slots."""

    def describe(self, index: int) -> str:
        """Where key `index` lives, for humans: an object name, an image offset."""
        ...

    def write(self, index: int, data: bytes, timeout_s: float) -> None:
        """Write the whole record. Raises WriteTimeout if not acknowledged in time, another exception on
        an error reply; returning means acknowledged."""
        ...

    def read(self, index: int, length: int, timeout_s: float) -> bytes | None:
        """The stored bytes, or None if the key does not exist. Raises ReadFailed on error/timeout."""
        ...

    def remove(self, index: int) -> None:
        """Remove the key (test-side: to simulate a loss behind the verifier's back)."""
        ...


class MemoryBackend:
    """In-memory backend with the same interface, plus hooks for tests to damage the data."""

    def __init__(self) -> None:
        self.objects: dict[int, bytes] = {}
        self.history: dict[int, list[bytes]] = {}  # every version ever stored, oldest first
        self.fail_writes: Callable[[int], Exception | None] | None = None  # index -> exception to raise

    def describe(self, index: int) -> str:
        return f"mem:{index}"

    def write(self, index: int, data: bytes, timeout_s: float) -> None:
        if self.fail_writes is not None:
            exc = self.fail_writes(index)
            if exc is not None:
                raise exc
        self.objects[index] = bytes(data)
        self.history.setdefault(index, []).append(bytes(data))

    def write_lands_unacknowledged(self, index: int, data: bytes) -> None:
        """Store data without acknowledging: what a timed-out write that still landed looks like."""
        self.objects[index] = bytes(data)

    def read(self, index: int, length: int, timeout_s: float) -> bytes | None:
        data = self.objects.get(index)
        return None if data is None else data[:length]

    def remove(self, index: int) -> None:
        self.objects.pop(index, None)

    def roll_back(self, index: int, versions: int = 1) -> None:
        """Put back an older stored version (simulates a replica serving stale data)."""
        self.objects[index] = self.history[index][-1 - versions]

    def flip_byte(self, index: int, offset: int = 100) -> None:
        data = bytearray(self.objects[index])
        data[offset] ^= 0xFF
        self.objects[index] = bytes(data)


def _wait_completion(done: threading.Event, timeout_s: float, what: str) -> None:
    if not done.wait(timeout_s):
        raise WriteTimeout(f"{what}: no acknowledgement within {timeout_s:g}s")


def _aio_write(start: Callable[[Callable[[Any], None]], Any], what: str, timeout_s: float) -> None:
    """Queue a write through `start(oncomplete)` and wait for its acknowledgement.

    oncomplete runs on a librados/librbd finisher thread; a late one after our timeout is harmless.
    """
    done = threading.Event()
    completion = start(lambda _c: done.set())
    _wait_completion(done, timeout_s, what)
    rc = completion.get_return_value()
    if rc < 0:
        raise OSError(-rc, f"{what} failed: errno {-rc}")


def _aio_read(start: Callable[[Callable[[Any, bytes | None], None]], Any], what: str, timeout_s: float) -> tuple[int, bytes]:
    """Queue a read through `start(oncomplete)` and wait for it: (return value, data)."""
    done = threading.Event()
    got: dict[str, Any] = {}

    def on_read(completion: Any, data: bytes | None) -> None:
        got["rc"], got["data"] = completion.get_return_value(), data
        done.set()

    try:
        start(on_read)
    except Exception as e:  # rados.Error / rbd.Error and friends: an error queueing the read
        raise ReadFailed(f"{what}: {e}") from e
    if not done.wait(timeout_s):
        raise ReadFailed(f"{what}: no reply within {timeout_s:g}s")
    return got["rc"], bytes(got["data"] or b"")


class RadosObjectBackend:
    """One RADOS object per key, replaced whole with aio_write_full (python-rados 16.2 API).

    The caller owns the Ioctx (opens and closes it). Object names: <prefix>.<index:06d>.
    """

    def __init__(self, ioctx: Any, prefix: str):
        self.ioctx = ioctx
        self.prefix = prefix

    def describe(self, index: int) -> str:
        return f"{self.prefix}.{index:06d}"

    def write(self, index: int, data: bytes, timeout_s: float) -> None:
        name = self.describe(index)
        _aio_write(lambda cb: self.ioctx.aio_write_full(name, data, oncomplete=cb), f"aio_write_full {name}", timeout_s)

    def read(self, index: int, length: int, timeout_s: float) -> bytes | None:
        name = self.describe(index)
        rc, data = _aio_read(lambda cb: self.ioctx.aio_read(name, length, 0, oncomplete=cb), f"aio_read {name}", timeout_s)
        if rc == -2:  # -ENOENT: the object does not exist
            return None
        if rc < 0:
            raise ReadFailed(f"aio_read {name}: errno {-rc}")
        return data[:rc]

    def remove(self, index: int) -> None:
        import rados  # the python3-rados module; only needed when this backend is used

        try:
            self.ioctx.remove_object(self.describe(index))
        except rados.ObjectNotFound:
            pass


class RbdImageBackend:
    """Fixed-size slots in an RBD image: key i lives at offset first_offset + i * slot_size.

    The caller owns the Image. An all-zero slot reads as missing (never written, or discarded); one
    writer per image region, since slots carry no per-writer namespace beyond the record's writer id.
    """

    def __init__(self, image: Any, slot_size: int = 4096, first_offset: int = 0):
        self.image = image
        self.slot_size = slot_size
        self.first_offset = first_offset

    def offset(self, index: int) -> int:
        return self.first_offset + index * self.slot_size

    def describe(self, index: int) -> str:
        return f"rbd@{self.offset(index)}"

    def check_capacity(self, num_keys: int) -> None:
        needed = self.offset(num_keys)
        if needed > self.image.size():
            raise VerifierError(f"RBD image too small: {num_keys} slots need {needed} bytes, "
                                f"image has {self.image.size()}")

    def write(self, index: int, data: bytes, timeout_s: float) -> None:
        if len(data) > self.slot_size:
            raise VerifierError(f"record of {len(data)} bytes does not fit a {self.slot_size}-byte slot")
        slot = data.ljust(self.slot_size, b"\0")
        _aio_write(lambda cb: self.image.aio_write(slot, self.offset(index), cb), f"aio_write {self.describe(index)}", timeout_s)

    def read(self, index: int, length: int, timeout_s: float) -> bytes | None:
        rc, data = _aio_read(lambda cb: self.image.aio_read(self.offset(index), self.slot_size, cb),
                             f"aio_read {self.describe(index)}", timeout_s)
        if rc < 0:
            raise ReadFailed(f"aio_read {self.describe(index)}: errno {-rc}")
        return None if not data.strip(b"\0") else data[:length]

    def remove(self, index: int) -> None:
        # Zeroes are written, not discarded: librbd skips a discard smaller than its object/alignment
        # (rbd_skip_partial_discard, on by default), so a 4 KiB discard leaves the data in place.
        self.image.write(b"\0" * self.slot_size, self.offset(index))
        self.image.flush()


def remove_behind_verifier(backend: VerifierBackend, index: int) -> None:
    """Test helper: delete a key without telling the verifier, so check() must report it lost."""
    backend.remove(index)


# --------------------------------------------------------------------------------------------------
# The ledger of writes and the pure classification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckedWrite:
    seq: int
    index: int
    location: str
    crc32: int
    issued_at: float
    acked_at: float
    latency_ms: float


@dataclass(frozen=True)
class UnackedWrite:
    seq: int
    index: int
    location: str
    issued_at: float
    error: str  # "timeout: ..." or the error text


@dataclass
class WriteLedger:
    """What was written, per key: acknowledged and unacknowledged writes, in issue order."""

    writer_id: str
    record_size: int
    acked: dict[int, list[AckedWrite]] = field(default_factory=dict)
    unacked: dict[int, list[UnackedWrite]] = field(default_factory=dict)

    def add_ack(self, w: AckedWrite) -> None:
        self.acked.setdefault(w.index, []).append(w)

    def add_unacked(self, w: UnackedWrite) -> None:
        self.unacked.setdefault(w.index, []).append(w)

    def keys(self) -> list[int]:
        return sorted(set(self.acked) | set(self.unacked))

    @property
    def acked_count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    @property
    def unacked_count(self) -> int:
        return sum(len(v) for v in self.unacked.values())


@dataclass(frozen=True)
class KeyCheck:
    index: int
    location: str
    status: str  # one of STATUSES
    expected_seq: int | None  # the last acknowledged seq (None: nothing acknowledged)
    found_seq: int | None
    detail: str = ""


@dataclass
class CheckReport:
    writer_id: str
    checks: list[KeyCheck]

    def with_status(self, status: str) -> list[KeyCheck]:
        return [c for c in self.checks if c.status == status]

    @property
    def counts(self) -> dict[str, int]:
        return {s: len(self.with_status(s)) for s in STATUSES}

    @property
    def problems(self) -> list[KeyCheck]:
        return [c for c in self.checks if c.status in PROBLEM_STATUSES]

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = ", ".join(f"{s}={n}" for s, n in self.counts.items())
        lines = [f"verifier {self.writer_id}: {len(self.checks)} keys checked: {counts}"]
        lines += [f"  {c.status}: {c.location} (key {c.index}) expected seq {c.expected_seq}, "
                  f"found {c.found_seq}: {c.detail}" for c in self.problems]
        return "\n".join(lines)


def classify(index: int, location: str, data: bytes | None | ReadFailed, ledger: WriteLedger) -> KeyCheck:
    """Classify one key's read-back bytes against what was written to it (pure logic)."""
    acked = ledger.acked.get(index, [])
    unacked = ledger.unacked.get(index, [])
    last_acked = acked[-1].seq if acked else None
    # writes after the last acknowledged one that were never acknowledged: either they or it may be there
    pending = {u.seq for u in unacked if last_acked is None or u.seq > last_acked}

    def result(status: str, found: int | None, detail: str) -> KeyCheck:
        return KeyCheck(index, location, status, last_acked, found, detail)

    if isinstance(data, ReadFailed):
        return result("unreadable", None, str(data))
    if data is None:
        if last_acked is None:
            return result("unacknowledged", None, "absent; no write to it was acknowledged")
        return result("lost", None, f"missing; seq {last_acked} was acknowledged")
    try:
        rec = decode_record(data)
    except RecordError as e:
        return result("corrupt", None, str(e))
    if rec.writer_id != ledger.writer_id[:16] or rec.index != index:
        return result("corrupt", rec.seq, f"record of writer {rec.writer_id!r} key {rec.index} (misplaced write)")
    if rec.seq == last_acked:
        if pending:
            return result("unacknowledged", rec.seq,
                          f"last acknowledged value present; unacknowledged seq(s) {sorted(pending)} did not land")
        return result("ok", rec.seq, "")
    if rec.seq in pending:
        return result("unacknowledged", rec.seq, f"unacknowledged write seq {rec.seq} landed")
    older = {a.seq for a in acked} | {u.seq for u in unacked}
    if last_acked is not None and rec.seq in older and rec.seq < last_acked:
        return result("stale", rec.seq, f"older version seq {rec.seq} instead of acknowledged seq {last_acked}")
    return result("corrupt", rec.seq, f"seq {rec.seq} was never written to this key")


def check_backend(backend: VerifierBackend, ledger: WriteLedger, read_timeout_s: float = 30.0) -> CheckReport:
    """Read every key the ledger knows back from the backend and classify it."""
    checks = []
    for index in ledger.keys():
        location = backend.describe(index)
        data: bytes | None | ReadFailed
        try:
            data = backend.read(index, ledger.record_size, read_timeout_s)
        except ReadFailed as e:
            data = e
        checks.append(classify(index, location, data, ledger))
    return CheckReport(ledger.writer_id, checks)


def load_journal(path: str | Path) -> WriteLedger:
    """Rebuild the ledger from a journal file (e.g. to check from another process after a crash)."""
    ledger: WriteLedger | None = None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            kind = rec.pop("type", None)
            if kind == "start":
                if ledger is None:
                    ledger = WriteLedger(rec["writer_id"], rec["record_size"])
                elif rec["writer_id"] != ledger.writer_id:
                    raise VerifierError(f"{path}: journal holds more than one writer")
            elif ledger is None:
                raise VerifierError(f"{path}: journal does not start with a 'start' line")
            elif kind == "ack":
                ledger.add_ack(AckedWrite(**rec))
            elif kind == "unacked":
                ledger.add_unacked(UnackedWrite(**rec))
    if ledger is None:
        raise VerifierError(f"{path}: empty journal")
    return ledger


# --------------------------------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierConfig:
    num_keys: int = 64
    record_size: int = 4096
    rate_per_s: float = 50.0  # 0 = as fast as one outstanding write allows
    write_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    writer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.num_keys < 1:
            raise VerifierError("num_keys must be >= 1")
        if self.record_size < MIN_RECORD_SIZE:
            raise VerifierError(f"record_size must be >= {MIN_RECORD_SIZE}")
        if self.rate_per_s < 0 or self.write_timeout_s <= 0:
            raise VerifierError("rate_per_s must be >= 0 and write_timeout_s > 0")
        if not self.writer_id or len(self.writer_id.encode()) > 16:
            raise VerifierError("writer_id must be 1..16 bytes")


class _SecondBuckets:
    """Per-second acknowledged-write latencies, flushed to the timeline as whole seconds pass."""

    def __init__(self, timeline: Timeline | None, labels: dict[str, str]):
        self.timeline = timeline
        self.labels = labels
        self.current_second: int | None = None
        self.latencies: list[float] = []

    def add(self, acked_at: float, latency_ms: float) -> None:
        self.roll(acked_at)
        self.latencies.append(latency_ms)

    def roll(self, now: float) -> None:
        second = int(now)
        if self.current_second is None:
            self.current_second = second
        while self.current_second < second:  # also emits empty seconds: ops 0, latency gap
            self._emit()
            self.current_second += 1

    def flush(self) -> None:
        if self.current_second is not None:
            self._emit()
            self.current_second = None

    def _emit(self) -> None:
        lats = sorted(self.latencies)
        self.latencies = []
        if self.timeline is None or self.current_second is None:
            return
        t = self.current_second + 1.0  # samples stamp the end of their second
        p99 = lats[min(len(lats) - 1, int(0.99 * len(lats)))] if lats else None
        self.timeline.sample("verifier.write.ops", float(len(lats)), t=t, **self.labels)
        self.timeline.sample("verifier.write.lat_p99_ms", p99, t=t, **self.labels)


class VerifyingWriter:
    """Writes verifiable records to a backend, one outstanding write at a time, at a rate limit.

    Use write_one() directly (tests, small drills) or start()/stop() to run it in a background thread
    alongside fio. check() reads everything back and classifies each key.
    """

    def __init__(self, backend: VerifierBackend, journal_path: str | Path, timeline: Timeline | None = None,
                 config: VerifierConfig | None = None, name: str = "verifier",
                 clock: Callable[[], float] = time.time):
        self.backend = backend
        self.config = config or VerifierConfig()
        self.timeline = timeline
        self.name = name
        self.clock = clock
        self.ledger = WriteLedger(self.config.writer_id, self.config.record_size)
        self.journal_path = Path(journal_path)
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.journal_path, "a", buffering=1)
        self._journal_line({"type": "start", "writer_id": self.config.writer_id,
                            "record_size": self.config.record_size, "num_keys": self.config.num_keys,
                            "backend": type(backend).__name__, "t": self.clock()})
        self._lock = threading.Lock()  # serialises write_one between the thread and direct callers
        self._next_seq = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._buckets = _SecondBuckets(timeline, {"writer": self.config.writer_id, "name": name})

    # -- writing --

    def write_one(self) -> AckedWrite | UnackedWrite:
        """Issue the next write (next seq, next key round-robin) and record its outcome."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            index = (seq - 1) % self.config.num_keys
            location = self.backend.describe(index)
            issued_at = self.clock()
            data = encode_record(self.config.writer_id, index, seq, issued_at, self.config.record_size)
            start = time.monotonic()
            try:
                self.backend.write(index, data, self.config.write_timeout_s)
            except WriteTimeout as e:
                return self._unacked(seq, index, location, issued_at, f"timeout: {e}")
            except Exception as e:  # an error reply: the write may or may not have landed
                return self._unacked(seq, index, location, issued_at, f"error: {type(e).__name__}: {e}")
            latency_ms = (time.monotonic() - start) * 1000.0
            # the record's own checksum (its trailer); a CRC32 over the whole record, trailer included,
            # would be the same constant for every record
            (record_crc,) = TRAILER.unpack_from(data, len(data) - TRAILER.size)
            acked = AckedWrite(seq, index, location, record_crc, issued_at, self.clock(), latency_ms)
            self.ledger.add_ack(acked)
            self._journal_line({"type": "ack", **acked.__dict__})
            self._buckets.add(acked.acked_at, latency_ms)
            return acked

    def _unacked(self, seq: int, index: int, location: str, issued_at: float, error: str) -> UnackedWrite:
        w = UnackedWrite(seq, index, location, issued_at, error)
        self.ledger.add_unacked(w)
        self._journal_line({"type": "unacked", **w.__dict__})
        self._buckets.roll(self.clock())
        if self.timeline is not None:
            self.timeline.event("workload.error", self.name, seq=seq, key=location, error=error)
        return w

    def _journal_line(self, rec: dict[str, Any]) -> None:
        self._journal.write(json.dumps(rec) + "\n")

    # -- background thread --

    def start(self) -> "VerifyingWriter":
        if self._thread is not None:
            raise VerifierError("verifier already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"verifier-{self.config.writer_id}", daemon=True)
        self._thread.start()
        if self.timeline is not None:
            self.timeline.event("workload.start", self.name, writer=self.config.writer_id,
                                backend=type(self.backend).__name__, rate_per_s=self.config.rate_per_s,
                                num_keys=self.config.num_keys)
        return self

    def _run(self) -> None:
        interval = 1.0 / self.config.rate_per_s if self.config.rate_per_s > 0 else 0.0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                self.write_one()
                next_at += interval
                delay = next_at - time.monotonic()
                if delay < -1.0:
                    next_at = time.monotonic()  # fell behind (a stall): don't burst to catch up
                elif delay > 0:
                    self._stop.wait(delay)
        except BaseException as e:  # surfaced by stop(); a dead writer must not look like a quiet one
            self._thread_error = e
            if self.timeline is not None:
                self.timeline.event("workload.error", self.name, error=f"writer thread died: {e!r}")

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (waits for the write in flight: up to write_timeout_s) and flush samples."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout if timeout is not None else self.config.write_timeout_s + 5.0)
        if self._thread.is_alive():
            raise VerifierError(f"verifier {self.name} did not stop")
        self._thread = None
        with self._lock:
            self._buckets.flush()
        if self.timeline is not None:
            self.timeline.event("workload.stop", self.name, acked=self.ledger.acked_count,
                                unacked=self.ledger.unacked_count)
        if self._thread_error is not None:
            err, self._thread_error = self._thread_error, None
            raise VerifierError(f"verifier {self.name} writer thread failed: {err!r}") from err

    # -- checking --

    def check(self) -> CheckReport:
        """Read back every key written and classify it (call after recovery, with the writer stopped)."""
        if self._thread is not None:
            raise VerifierError("stop() the verifier before check()")
        report = check_backend(self.backend, self.ledger, self.config.read_timeout_s)
        if self.timeline is not None:
            self.timeline.event("verifier.check", self.name, passed=report.passed, **report.counts,
                                problems=[f"{c.status} {c.location}: {c.detail}" for c in report.problems[:50]])
        return report

    def close(self) -> None:
        if self._thread is not None:
            self.stop()
        self._journal.close()

    def __enter__(self) -> "VerifyingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
