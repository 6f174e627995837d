"""A verifying writer: every acknowledged write lands in a slot of its own, so every one can be read back.

Every record carries a header (magic, format version, writer id, key index, sequence number, issue time,
payload length), a payload derived from (writer, seq), and a CRC32 over header and payload.

Layout: write number ``seq`` (1, 2, 3, ...) goes to key ``(seq - 1) % num_keys`` at byte offset
``((seq - 1) // num_keys) * record_size`` of that key's object (or image region). Writes still spread
round-robin over the keys (so a fault that takes some PGs away hits some keys and not others), but no
write ever overwrites another: each key's object grows by one record per round. At the end, `check()`
reads every key back whole (1 MiB aio reads, several in flight) and classifies every slot:

  ok              the record acknowledged for this slot is there, intact
  lost            an acknowledged write's slot is missing: object gone, object shorter, or zeros
  stale           an intact record issued before this one is there (another writer's older data: the
                  write vanished and what was underneath came back); a kind of loss
  corrupt         checksum, magic or length mismatch, a record of this writer in the wrong slot, a seq
                  never issued, or garbage in a slot whose write was never acknowledged
  unacknowledged  the slot's write was not acknowledged (timed out / failed): its record or nothing is fine
  unreadable      the read of the key failed or timed out (the check could not tell)

Memory stays bounded over long drills: the ledger keeps one byte of state per write (acknowledged or
not) plus the few unacknowledged writes in full; every write also goes to a JSON-lines journal on disk
(so a check can be run from the journal in another process). The report keeps exact counts and the
first `MAX_PROBLEM_DETAILS` problems in detail.

Backends (small interface, `VerifierBackend`): librados objects (one object per key, `aio_write` at
the slot's offset, with a timeout), an RBD image (one fixed-size region per key) and S3 objects through
radosgw (one object per slot: S3 has no offset writes). `MemoryBackend`
implements the same interface for unit tests of the checking logic, with hooks to damage data.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import struct
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from drills.timeline import Timeline

MAGIC = b"CDRV"
FORMAT_VERSION = 2  # 2: one slot per write (version 1 rewrote one record per key)
# magic, version, 3 pad, writer id (16 ascii bytes, NUL padded), key index, seq, issued at, payload length
HEADER = struct.Struct("<4sB3x16sIQdI")
TRAILER = struct.Struct("<I")  # crc32 of header + payload
MIN_RECORD_SIZE = HEADER.size + TRAILER.size + 16

STATUSES = ("ok", "lost", "stale", "corrupt", "unacknowledged", "unreadable")
PROBLEM_STATUSES = ("lost", "stale", "corrupt", "unreadable")
MAX_PROBLEM_DETAILS = 1000  # problems kept in detail; counts are always exact
READ_CHUNK_BYTES = 1 << 20  # one aio read at the check covers at most this much of a key
RADOS_MAX_OBJECT_BYTES = 128 << 20  # osd_max_object_size's default: a key's object may not grow past it

# ledger states, one byte per issued write
_NOT_ISSUED, _ACKED, _UNACKED = 0, 1, 2


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
# Layout: where write `seq` lives
# --------------------------------------------------------------------------------------------------


def slot_of(seq: int, num_keys: int) -> tuple[int, int]:
    """(key index, slot number within the key) of write `seq` (1-based)."""
    return (seq - 1) % num_keys, (seq - 1) // num_keys


def seq_of(index: int, slot: int, num_keys: int) -> int:
    return slot * num_keys + index + 1


# --------------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------------


class VerifierBackend(Protocol):
    """Where records live. Keys are small integers (0..num_keys-1), each an object or a region that
    grows by one record per round; offsets are bytes within the key."""

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        """Check the layout fits; returns how many slots (records) each key can hold (None: no limit).
        Raises VerifierError when it cannot hold even one round."""
        ...

    def describe(self, index: int, offset: int = 0) -> str:
        """Where byte `offset` of key `index` lives, for humans: an object name and offset, an image offset."""
        ...

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        """Write data at offset of the key. Raises WriteTimeout if not acknowledged in time, another
        exception on an error reply; returning means acknowledged."""
        ...

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        """Up to `length` stored bytes from offset (fewer if the key is shorter), or None if the key
        does not exist. Raises ReadFailed on error/timeout."""
        ...

    def remove(self, index: int) -> None:
        """Remove the whole key (test-side: to simulate a loss behind the verifier's back)."""
        ...


class MemoryBackend:
    """In-memory backend with the same interface, plus hooks for tests to damage the data."""

    def __init__(self, slots_per_key: int | None = None) -> None:
        self.objects: dict[int, bytearray] = {}
        self.slots_per_key = slots_per_key
        self.record_size = 0
        self.fail_writes: Callable[[int], Exception | None] | None = None  # index -> exception to raise
        self.fail_reads: Callable[[int], Exception | None] | None = None

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        self.record_size = record_size
        return self.slots_per_key

    def describe(self, index: int, offset: int = 0) -> str:
        return f"mem:{index}@{offset}"

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        if self.fail_writes is not None:
            exc = self.fail_writes(index)
            if exc is not None:
                raise exc
        self._store(index, offset, data)

    def _store(self, index: int, offset: int, data: bytes) -> None:
        obj = self.objects.setdefault(index, bytearray())
        if len(obj) < offset + len(data):
            obj.extend(bytes(offset + len(data) - len(obj)))
        obj[offset:offset + len(data)] = data

    def write_lands_unacknowledged(self, index: int, offset: int, data: bytes) -> None:
        """Store data without acknowledging: what a timed-out write that still landed looks like."""
        self._store(index, offset, data)

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        if self.fail_reads is not None:
            exc = self.fail_reads(index)
            if exc is not None:
                raise exc
        obj = self.objects.get(index)
        return None if obj is None else bytes(obj[offset:offset + length])

    def remove(self, index: int) -> None:
        self.objects.pop(index, None)

    # -- damage, behind the verifier's back --

    def zero_slot(self, index: int, slot: int) -> None:
        """One earlier write vanishes: its slot reads back as zeros."""
        off = slot * self.record_size
        self.objects[index][off:off + self.record_size] = bytes(self.record_size)

    def truncate(self, index: int, slots: int) -> None:
        """The key's object rolls back to its first `slots` records (later writes gone)."""
        del self.objects[index][slots * self.record_size:]

    def put_record(self, index: int, slot: int, record: bytes) -> None:
        off = slot * self.record_size
        self.objects[index][off:off + len(record)] = record

    def slot_bytes(self, index: int, slot: int) -> bytes:
        off = slot * self.record_size
        return bytes(self.objects[index][off:off + self.record_size])

    def flip_byte(self, index: int, slot: int, offset: int = 100) -> None:
        self.objects[index][slot * self.record_size + offset] ^= 0xFF


class DropAckedWrite:
    """Wraps a backend and acknowledges the `nth` write (1-based) without storing it: a backend that
    loses one acknowledged write, for canaries that prove the drill's verdict catches a lost write."""

    def __init__(self, inner: VerifierBackend, nth: int):
        if nth < 1:
            raise VerifierError("DropAckedWrite: nth must be >= 1")
        self.inner = inner
        self.nth = nth
        self.writes = 0
        self.dropped: str | None = None  # where the dropped write should have gone

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        return self.inner.prepare(num_keys, record_size)

    def describe(self, index: int, offset: int = 0) -> str:
        return self.inner.describe(index, offset)

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        self.writes += 1
        if self.writes == self.nth:
            self.dropped = self.inner.describe(index, offset)
            return  # acknowledged, never stored
        self.inner.write(index, offset, data, timeout_s)

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        return self.inner.read(index, offset, length, timeout_s)

    def remove(self, index: int) -> None:
        self.inner.remove(index)


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
    """One RADOS object per key; each write is an aio_write at its slot's offset (python-rados 16.2 API).

    The caller owns the Ioctx (opens and closes it). Object names: <prefix>.<index:06d>. An object may
    not grow past osd_max_object_size (128 MiB by default): that bounds the slots per key.
    """

    def __init__(self, ioctx: Any, prefix: str, max_object_bytes: int = RADOS_MAX_OBJECT_BYTES):
        self.ioctx = ioctx
        self.prefix = prefix
        self.max_object_bytes = max_object_bytes

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        return self.max_object_bytes // record_size

    def name(self, index: int) -> str:
        return f"{self.prefix}.{index:06d}"

    def describe(self, index: int, offset: int = 0) -> str:
        return f"{self.name(index)}@{offset}"

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        name = self.name(index)
        _aio_write(lambda cb: self.ioctx.aio_write(name, data, offset, oncomplete=cb),
                   f"aio_write {name}@{offset}", timeout_s)

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        name = self.name(index)
        rc, data = _aio_read(lambda cb: self.ioctx.aio_read(name, length, offset, oncomplete=cb),
                             f"aio_read {name}@{offset}", timeout_s)
        if rc == -2:  # -ENOENT: the object does not exist
            return None
        if rc < 0:
            raise ReadFailed(f"aio_read {name}@{offset}: errno {-rc}")
        return data[:rc]

    def remove(self, index: int) -> None:
        import rados  # the python3-rados module; only needed when this backend is used

        try:
            self.ioctx.remove_object(self.name(index))
        except rados.ObjectNotFound:
            pass


class RbdImageBackend:
    """Regions of an RBD image, one per key: key i's slot s is at first_offset + (i * slots_per_key + s) * record_size.

    The caller owns the Image. `slots_per_key` defaults to what the image holds after first_offset. An
    all-zero slot reads as missing (never written, or its write vanished). Records must be a power of two
    of at least 512 bytes, so that no record straddles an RBD object (each write is then atomic).
    """

    def __init__(self, image: Any, first_offset: int = 0, slots_per_key: int | None = None):
        self.image = image
        self.first_offset = first_offset
        self.slots_per_key = slots_per_key
        self.record_size = 0

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        if record_size < 512 or record_size & (record_size - 1) or self.first_offset % record_size:
            raise VerifierError(f"RBD verifier: record_size {record_size} must be a power of two >= 512 and "
                                f"divide first_offset {self.first_offset}")
        self.record_size = record_size
        size = self.image.size()
        fits = (size - self.first_offset) // (num_keys * record_size)
        slots = fits if self.slots_per_key is None else self.slots_per_key
        if slots < 1 or slots > fits:
            raise VerifierError(f"RBD image too small: {num_keys} keys x {slots or 1} slots x {record_size} bytes "
                                f"from offset {self.first_offset} need "
                                f"{self.first_offset + num_keys * max(slots, 1) * record_size} bytes, image has {size}")
        self.slots_per_key = slots
        return slots

    def check_capacity(self, num_keys: int, record_size: int = 4096) -> int:
        """Raise VerifierError unless the image holds at least one round; returns slots per key."""
        slots = self.prepare(num_keys, record_size)
        assert slots is not None
        return slots

    def image_offset(self, index: int, offset: int = 0) -> int:
        if not self.record_size or self.slots_per_key is None:
            raise VerifierError("RbdImageBackend used before prepare()")
        return self.first_offset + index * self.slots_per_key * self.record_size + offset

    def describe(self, index: int, offset: int = 0) -> str:
        return f"rbd@{self.image_offset(index, offset)}"

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        at = self.image_offset(index, offset)
        _aio_write(lambda cb: self.image.aio_write(data, at, cb), f"aio_write rbd@{at}", timeout_s)

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        assert self.slots_per_key is not None
        length = min(length, self.slots_per_key * self.record_size - offset)  # stay inside the key's region
        at = self.image_offset(index, offset)
        rc, data = _aio_read(lambda cb: self.image.aio_read(at, length, cb), f"aio_read rbd@{at}", timeout_s)
        if rc < 0:
            raise ReadFailed(f"aio_read rbd@{at}: errno {-rc}")
        return data

    def remove(self, index: int) -> None:
        # Zeroes are written, not discarded: librbd skips a discard smaller than its object/alignment
        # (rbd_skip_partial_discard, on by default), so a small discard leaves the data in place.
        assert self.slots_per_key is not None
        self.image.write(bytes(self.slots_per_key * self.record_size), self.image_offset(index))
        self.image.flush()

    def zero_slot(self, index: int, slot: int) -> None:
        """Test helper: one earlier write vanishes (its slot reads back as zeros)."""
        self.image.write(bytes(self.record_size), self.image_offset(index, slot * self.record_size))
        self.image.flush()


class S3ObjectBackend:
    """S3 objects (radosgw), one per slot: an S3 object cannot be written at an offset, so write n is a PUT of
    its own object <prefix>/<key:06d>/<slot:08d>, and the check GETs every slot any write went to. Returning
    from `write` means the PUT was acknowledged (HTTP 200), so the check reads back every acknowledged PUT.

    `client` is a boto3 S3 client (`S3Endpoint.client`); its read timeout bounds a write. A slot whose object
    does not exist reads as zeros (lost if its PUT was acknowledged); a key with no object at all as None.
    """

    def __init__(self, client: Any, bucket: str, prefix: str):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.record_size = 0

    def prepare(self, num_keys: int, record_size: int) -> int | None:
        from botocore.exceptions import ClientError

        self.record_size = record_size
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise VerifierError(f"S3 verifier: bucket {self.bucket}: {e}") from None
            self.client.create_bucket(Bucket=self.bucket)
        return None

    def key(self, index: int, slot: int) -> str:
        return f"{self.prefix}/{index:06d}/{slot:08d}"

    def describe(self, index: int, offset: int = 0) -> str:
        return f"s3://{self.bucket}/{self.key(index, offset // max(1, self.record_size))}"

    def write(self, index: int, offset: int, data: bytes, timeout_s: float) -> None:
        from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

        key = self.key(index, offset // self.record_size)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (ReadTimeoutError, ConnectTimeoutError) as e:
            raise WriteTimeout(f"PUT {key}: {e}") from None

    def read(self, index: int, offset: int, length: int, timeout_s: float) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        first, count = offset // self.record_size, max(1, length // self.record_size)
        parts: list[bytes] = []
        found = False
        for slot in range(first, first + count):
            key = self.key(index, slot)
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    parts.append(bytes(self.record_size))
                    continue
                raise ReadFailed(f"GET {key}: {e}") from None
            except BotoCoreError as e:
                raise ReadFailed(f"GET {key}: {e}") from None
            found = True
            parts.append(body[:self.record_size].ljust(self.record_size, b"\0"))
        return b"".join(parts) if found else None

    def remove(self, index: int) -> None:
        for key in self._keys(f"{self.prefix}/{index:06d}/"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def _keys(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def cleanup(self) -> int:
        """Delete every object the verifier wrote (after the check); returns how many."""
        keys = list(self._keys(f"{self.prefix}/"))
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                                   "Quiet": True})
        return len(keys)


def remove_behind_verifier(backend: VerifierBackend, index: int) -> None:
    """Test helper: delete a key without telling the verifier, so check() must report its writes lost."""
    backend.remove(index)


# --------------------------------------------------------------------------------------------------
# The ledger of writes and the pure classification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckedWrite:
    seq: int
    index: int
    offset: int
    location: str
    crc32: int
    issued_at: float
    acked_at: float
    latency_ms: float


@dataclass(frozen=True)
class UnackedWrite:
    seq: int
    index: int
    offset: int
    location: str
    issued_at: float
    error: str  # "timeout: ..." or the error text


@dataclass
class WriteLedger:
    """What was written: one byte of state per write (acknowledged or not, by seq) and the
    unacknowledged writes in full (few: they come from faults). Bounded: ~1 byte per write."""

    writer_id: str
    record_size: int
    num_keys: int
    started_at: float = 0.0  # records issued before this are older than every write of this writer
    states: bytearray = field(default_factory=bytearray)  # states[seq - 1]
    unacked: dict[int, list[UnackedWrite]] = field(default_factory=dict)  # by key index
    acked_count: int = 0

    def _set(self, seq: int, state: int) -> None:
        if seq < 1:
            raise VerifierError(f"seq must be >= 1, got {seq}")
        if len(self.states) == seq - 1:
            self.states.append(_NOT_ISSUED)  # the usual case: the next write in order
        elif len(self.states) < seq:
            self.states.extend(bytes(seq - len(self.states)))
        if self.states[seq - 1] == _ACKED:
            self.acked_count -= 1
        self.states[seq - 1] = state
        if state == _ACKED:
            self.acked_count += 1

    def add_ack(self, seq: int) -> None:
        self._set(seq, _ACKED)

    def add_unacked(self, w: UnackedWrite) -> None:
        self._set(w.seq, _UNACKED)
        self.unacked.setdefault(w.index, []).append(w)

    def state(self, seq: int) -> int:
        return self.states[seq - 1] if 1 <= seq <= len(self.states) else _NOT_ISSUED

    @property
    def issued(self) -> int:
        """The highest seq issued (writes are issued in seq order)."""
        return len(self.states)

    @property
    def unacked_count(self) -> int:
        return sum(len(v) for v in self.unacked.values())

    def slots(self, index: int) -> int:
        """How many slots of key `index` writes were issued to."""
        return max(0, (self.issued - index + self.num_keys - 1) // self.num_keys)

    def keys(self) -> list[int]:
        return [i for i in range(min(self.num_keys, self.issued))]

    def acked_seqs(self) -> Iterator[int]:
        return (i + 1 for i, s in enumerate(self.states) if s == _ACKED)


@dataclass(frozen=True)
class WriteCheck:
    """One slot's outcome (kept in detail for problems only)."""

    seq: int
    index: int
    location: str
    status: str  # one of STATUSES
    acknowledged: bool
    found_seq: int | None
    detail: str = ""


@dataclass
class CheckReport:
    """The read-back of every write. Counts are per write (slot); `problems` holds the first
    MAX_PROBLEM_DETAILS problems found (keys in order), sorted by seq."""

    writer_id: str
    written: int  # writes issued
    acknowledged: int  # writes the cluster acknowledged
    verified: int  # acknowledged writes read back intact
    counts: dict[str, int]  # status -> number of writes (slots)
    problems: list[WriteCheck]
    problem_count: int  # every slot with a problem status (the list may be capped)
    keys: int  # keys (objects / regions) read
    bytes_read: int
    seconds: float  # how long the read-back took
    method: str  # one line: what was verified and how

    def with_status(self, status: str) -> list[WriteCheck]:
        return [c for c in self.problems if c.status == status]

    @property
    def lost(self) -> int:
        """Acknowledged writes not read back intact, plus slots holding data no write put there: the
        number for the report's lost-write check (0 exactly when `passed`)."""
        return self.problem_count

    @property
    def passed(self) -> bool:
        return self.problem_count == 0 and self.verified == self.acknowledged

    def summary(self) -> str:
        counts = ", ".join(f"{s}={n}" for s, n in self.counts.items())
        lines = [f"verifier {self.writer_id}: {self.verified} of {self.acknowledged} acknowledged writes read back "
                 f"intact ({self.written} issued, {self.keys} keys, {self.bytes_read / 1e6:.1f} MB in "
                 f"{self.seconds:.1f} s): {counts}"]
        lines += [f"  {c.status}: {c.location} (key {c.index}) seq {c.seq}"
                  f"{'' if c.acknowledged else ' (unacknowledged)'}, found {c.found_seq}: {c.detail}"
                  for c in self.problems]
        if self.problem_count > len(self.problems):
            lines.append(f"  ... and {self.problem_count - len(self.problems)} more problems")
        return "\n".join(lines)


def classify_slot(index: int, slot: int, data: bytes | None, ledger: WriteLedger, zero: bytes
                  ) -> tuple[str, int | None, str]:
    """Classify one slot's read-back bytes against the write that went there (pure logic):
    (status, found seq, detail). data None: the slot is past the object's end or the object is missing."""
    seq = seq_of(index, slot, ledger.num_keys)
    acked = ledger.state(seq) == _ACKED
    if data is None or len(data) == 0 or data == zero[:len(data)]:
        if acked:
            return "lost", None, "missing" if data is None or len(data) == 0 else "zeros"
        return "unacknowledged", None, "absent; its write was not acknowledged"
    try:
        rec = decode_record(data)
    except RecordError as e:
        return "corrupt", None, str(e)
    mine = rec.writer_id == ledger.writer_id[:16]
    if mine and rec.index == index and rec.seq == seq:
        return ("ok", rec.seq, "") if acked else ("unacknowledged", rec.seq, "unacknowledged write landed")
    if not mine and rec.issued_at < ledger.started_at:
        if not acked:
            return "unacknowledged", rec.seq, "older data underneath an unacknowledged write that did not land"
        return "stale", rec.seq, f"older record of writer {rec.writer_id!r} (seq {rec.seq}) instead of seq {seq}"
    if mine:
        return "corrupt", rec.seq, f"record of key {rec.index} seq {rec.seq} in seq {seq}'s slot (misplaced write)"
    return "corrupt", rec.seq, f"record of writer {rec.writer_id!r} written after this writer started"


def _key_chunks(ledger: WriteLedger, chunk_bytes: int) -> Iterator[tuple[int, int, int]]:
    """(key, first slot, slot count) for every chunk of every key, in key order."""
    per_chunk = max(1, chunk_bytes // ledger.record_size)
    for index in ledger.keys():
        slots = ledger.slots(index)
        for first in range(0, slots, per_chunk):
            yield index, first, min(per_chunk, slots - first)


def check_backend(backend: VerifierBackend, ledger: WriteLedger, read_timeout_s: float = 30.0,
                  concurrency: int = 8, chunk_bytes: int = READ_CHUNK_BYTES,
                  backend_name: str | None = None) -> CheckReport:
    """Read every slot any write went to back from the backend (whole keys, in chunks, `concurrency` reads
    in flight, results handled in order so memory stays near concurrency x chunk_bytes) and classify each."""
    started = time.monotonic()
    size = ledger.record_size
    zero = bytes(size)
    counts = dict.fromkeys(STATUSES, 0)
    problems: list[WriteCheck] = []
    problem_count = verified = bytes_read = 0

    def read_chunk(index: int, first: int, n: int) -> bytes | None | ReadFailed:
        try:
            return backend.read(index, first * size, n * size, read_timeout_s)
        except ReadFailed as e:
            return e

    def handle(index: int, first: int, n: int, data: bytes | None | ReadFailed) -> None:
        nonlocal problem_count, verified, bytes_read
        if isinstance(data, bytes):
            bytes_read += len(data)
        for slot in range(first, first + n):
            seq = seq_of(index, slot, ledger.num_keys)
            if seq > ledger.issued:
                break
            acked = ledger.state(seq) == _ACKED
            if isinstance(data, ReadFailed):
                status, found, detail = "unreadable", None, str(data)
            else:
                piece = None if data is None else data[(slot - first) * size:(slot - first + 1) * size]
                status, found, detail = classify_slot(index, slot, piece, ledger, zero)
                if data is None and status == "lost":
                    detail = "object does not exist"
            counts[status] += 1
            if status == "ok":
                verified += 1
            elif status in PROBLEM_STATUSES:
                problem_count += 1
                if len(problems) < MAX_PROBLEM_DETAILS:
                    problems.append(WriteCheck(seq, index, backend.describe(index, slot * size), status, acked,
                                               found, detail))

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="verifier-read") as pool:
        window: collections.deque[tuple[int, int, int, concurrent.futures.Future[Any]]] = collections.deque()
        for index, first, n in _key_chunks(ledger, chunk_bytes):
            window.append((index, first, n, pool.submit(read_chunk, index, first, n)))
            if len(window) >= max(1, concurrency):  # memory: at most `concurrency` chunks held
                i, f, k, fut = window.popleft()
                handle(i, f, k, fut.result())
        while window:
            i, f, k, fut = window.popleft()
            handle(i, f, k, fut.result())
    problems.sort(key=lambda c: c.seq)
    name = backend_name or type(backend).__name__
    method = (f"every write of verifier {ledger.writer_id} in its own {size}-byte slot (write n -> key n mod "
              f"{ledger.num_keys}, slot n div {ledger.num_keys}) of {name}; all {len(ledger.keys())} keys read back "
              f"whole ({concurrency} aio reads in flight); each slot checked for magic, writer, key, seq, "
              f"payload and CRC32")
    return CheckReport(ledger.writer_id, ledger.issued, ledger.acked_count, verified, counts, problems, problem_count,
                       len(ledger.keys()), bytes_read, time.monotonic() - started, method)


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
                    if rec.get("format") != FORMAT_VERSION:
                        raise VerifierError(f"{path}: journal of record format {rec.get('format')}, "
                                            f"this verifier reads format {FORMAT_VERSION}")
                    ledger = WriteLedger(rec["writer_id"], rec["record_size"], rec["num_keys"], rec["t"])
                elif rec["writer_id"] != ledger.writer_id:
                    raise VerifierError(f"{path}: journal holds more than one writer")
            elif ledger is None:
                raise VerifierError(f"{path}: journal does not start with a 'start' line")
            elif kind == "ack":
                ledger.add_ack(rec["seq"])
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
    read_concurrency: int = 8  # aio reads in flight at the check
    writer_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        if self.num_keys < 1:
            raise VerifierError("num_keys must be >= 1")
        if self.record_size < MIN_RECORD_SIZE:
            raise VerifierError(f"record_size must be >= {MIN_RECORD_SIZE}")
        if self.rate_per_s < 0 or self.write_timeout_s <= 0:
            raise VerifierError("rate_per_s must be >= 0 and write_timeout_s > 0")
        if self.read_concurrency < 1:
            raise VerifierError("read_concurrency must be >= 1")
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
    alongside fio. check() reads every write back and classifies it.
    """

    def __init__(self, backend: VerifierBackend, journal_path: str | Path, timeline: Timeline | None = None,
                 config: VerifierConfig | None = None, name: str = "verifier",
                 clock: Callable[[], float] = time.time):
        self.backend = backend
        self.config = config or VerifierConfig()
        self.timeline = timeline
        self.name = name
        self.clock = clock
        # before the journal exists: a layout that does not fit is refused with nothing half-done
        self.slots_per_key = backend.prepare(self.config.num_keys, self.config.record_size)
        started_at = self.clock()
        self.ledger = WriteLedger(self.config.writer_id, self.config.record_size, self.config.num_keys, started_at)
        self.journal_path = Path(journal_path)
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self._journal = open(self.journal_path, "a", buffering=1)
        self._journal_line({"type": "start", "writer_id": self.config.writer_id, "format": FORMAT_VERSION,
                            "record_size": self.config.record_size, "num_keys": self.config.num_keys,
                            "backend": type(backend).__name__, "t": started_at})
        self._lock = threading.Lock()  # serialises write_one between the thread and direct callers
        self._next_seq = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._buckets = _SecondBuckets(timeline, {"writer": self.config.writer_id, "name": name})

    @property
    def capacity(self) -> int | None:
        """How many writes fit before a key is full (None: no limit)."""
        return None if self.slots_per_key is None else self.slots_per_key * self.config.num_keys

    # -- writing --

    def write_one(self) -> AckedWrite | UnackedWrite:
        """Issue the next write (next seq, to its own slot) and record its outcome."""
        with self._lock:
            seq = self._next_seq
            index, slot = slot_of(seq, self.config.num_keys)
            if self.slots_per_key is not None and slot >= self.slots_per_key:
                raise VerifierError(f"verifier {self.name} is full after {seq - 1} writes ({self.slots_per_key} "
                                    f"slots x {self.config.num_keys} keys): give it a bigger image or fewer writes")
            self._next_seq += 1
            offset = slot * self.config.record_size
            location = self.backend.describe(index, offset)
            issued_at = self.clock()
            data = encode_record(self.config.writer_id, index, seq, issued_at, self.config.record_size)
            start = time.monotonic()
            try:
                self.backend.write(index, offset, data, self.config.write_timeout_s)
            except WriteTimeout as e:
                return self._unacked(seq, index, offset, location, issued_at, f"timeout: {e}")
            except Exception as e:  # an error reply: the write may or may not have landed
                return self._unacked(seq, index, offset, location, issued_at, f"error: {type(e).__name__}: {e}")
            latency_ms = (time.monotonic() - start) * 1000.0
            # the record's own checksum (its trailer); a CRC32 over the whole record, trailer included,
            # would be the same constant for every record
            (record_crc,) = TRAILER.unpack_from(data, len(data) - TRAILER.size)
            acked = AckedWrite(seq, index, offset, location, record_crc, issued_at, self.clock(), latency_ms)
            self.ledger.add_ack(seq)
            self._journal_line({"type": "ack", **acked.__dict__})
            self._buckets.add(acked.acked_at, latency_ms)
            return acked

    def _unacked(self, seq: int, index: int, offset: int, location: str, issued_at: float, error: str) -> UnackedWrite:
        w = UnackedWrite(seq, index, offset, location, issued_at, error)
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
        """Read back every write and classify it (call after recovery, with the writer stopped)."""
        if self._thread is not None:
            raise VerifierError("stop() the verifier before check()")
        report = check_backend(self.backend, self.ledger, self.config.read_timeout_s, self.config.read_concurrency)
        if self.timeline is not None:
            self.timeline.event("verifier.check", self.name, passed=report.passed, written=report.written,
                                acknowledged=report.acknowledged, verified=report.verified,
                                seconds=round(report.seconds, 2), method=report.method, **report.counts,
                                problems=[f"{c.status} {c.location} seq {c.seq}: {c.detail}" for c in report.problems[:50]])
        return report

    def close(self) -> None:
        if self._thread is not None:
            self.stop()
        self._journal.close()

    def __enter__(self) -> "VerifyingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
