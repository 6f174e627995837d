"""The backup format of OpenStack Cinder's chunked backup drivers (posix, nfs, swift, s3, gcs).

A backup with object prefix P in a container holds:

* ``P_metadata``: JSON (``sort_keys=True, indent=2``) with version "1.0.0", backup_id,
  volume_id, backup_name, backup_description, created_at, parent_id, volume_meta,
  optional extra_metadata, and ``objects``: a list of one-key dicts
  ``{"P-00001": {"offset", "length", "compression", "md5"}}`` (offset/length/md5 of the
  *uncompressed* data).  Cinder itself keeps the object number only in the name.
* ``P_sha256file``: JSON with version, backup_id, volume_id, backup_name,
  backup_description, created_at, ``chunk_size`` (the SHA block size, 32 KiB by default)
  and ``sha256s``: one hex digest per block of the volume.
* ``P-00001``, ``P-00002``, ...: the data objects, each one chunk of the volume, compressed
  with zlib/bz2/zstd or stored as is ("none") when compression did not shrink it.

The sha256 file of a 1 TiB volume holds 33 M digests (~2.4 GB of JSON); the restore must not
load it whole, so `Sha256Index` reads the digests of one object at a time with ranged reads.

Incremental backups (Cinder's ChunkedBackupDriver.backup with a parent): the metadata's
``parent_id`` names the parent backup, ``objects`` hold only the extents whose sha256
blocks differ from the parent's sha256 file (so objects leave gaps, each extent starts on a
sha-block boundary), and the sha256 file lists every block of the whole volume as it was
at this backup.  Cinder restores the full backup, then writes each incremental's objects
over it, oldest first; the parent's container is in Cinder's database, not in the metadata.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO, Protocol

import zstandard

from drills.restore.compression import canonical_codec
from drills.restore.errors import BackupFormatError, UnsupportedBackupError
from drills.restore.store import CINDER_SHA_BLOCK_BYTES, BackupStore

DRIVER_VERSION = "1.0.0"
METADATA_SUFFIX = "_metadata"
SHA256FILE_SUFFIX = "_sha256file"


def metadata_name(prefix: str) -> str:
    return f"{prefix}{METADATA_SUFFIX}"


def sha256file_name(prefix: str) -> str:
    return f"{prefix}{SHA256FILE_SUFFIX}"


def data_object_name(prefix: str, object_id: int) -> str:
    return "%s-%05d" % (prefix, object_id)


@dataclass(frozen=True)
class BackupObject:
    """One data object as the metadata describes it."""

    name: str
    object_id: int  # the number in the name; Cinder starts at 1
    offset: int  # volume offset of its first uncompressed byte
    length: int  # uncompressed length
    codec: str  # canonical: zlib | bz2 | zstd | none
    md5: str | None  # hex md5 of the uncompressed data (Cinder always writes it)


@dataclass(frozen=True)
class BackupManifest:
    """A backup's metadata, checked for consistency."""

    prefix: str
    version: str
    backup_id: str
    volume_id: str
    backup_name: str | None
    created_at: str
    parent_id: str | None
    objects: tuple[BackupObject, ...]
    volume_size: int  # full backups: the volume's size; incrementals: the end of the last extent
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def is_incremental(self) -> bool:
        return bool(self.parent_id)


def read_manifest(store: BackupStore, prefix: str, *, allow_incremental: bool = False) -> BackupManifest:
    """Read and check ``<prefix>_metadata``; BackupFormatError says what is wrong.

    An incremental backup is refused unless `allow_incremental` (it is one link of a chain).
    """
    name = metadata_name(prefix)
    try:
        meta = json.loads(store.get_small(name).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackupFormatError(f"metadata is not JSON: {e}", backup=prefix, object_name=name) from None
    except BackupFormatError as e:
        raise e.located(backup=prefix, object_name=name)
    if not isinstance(meta, dict):
        raise BackupFormatError("metadata is not a JSON object", backup=prefix, object_name=name)
    version = meta.get("version")
    if version != DRIVER_VERSION:
        raise UnsupportedBackupError(f"metadata version {version!r}, only {DRIVER_VERSION} is known",
                                     backup=prefix, object_name=name)
    incremental = bool(meta.get("parent_id"))
    if incremental and not allow_incremental:
        raise UnsupportedBackupError(
            f"incremental backup (parent_id {meta['parent_id']}): restore it as a chain "
            "(--chain FULL INC... DEST, or --backup-tree DIR to find its parents)",
            backup=prefix, object_name=name)
    entries = meta.get("objects")
    if not isinstance(entries, list) or (not entries and not incremental):
        raise BackupFormatError("metadata lists no objects", backup=prefix, object_name=name)
    objects = [_parse_object(entry, prefix, name) for entry in entries]
    objects.sort(key=lambda o: o.offset)
    expected_offset = 0
    for obj in objects:
        # A full backup covers the volume without gaps; an incremental's extents may leave gaps.
        if obj.offset < expected_offset or (obj.offset > expected_offset and not incremental):
            kind = "gap" if obj.offset > expected_offset else "overlap"
            raise BackupFormatError(f"{kind} in the volume at offset {expected_offset} (object starts at {obj.offset})",
                                    backup=prefix, object_name=obj.name)
        expected_offset = obj.offset + obj.length
    return BackupManifest(
        prefix=prefix,
        version=version,
        backup_id=str(meta.get("backup_id", "")),
        volume_id=str(meta.get("volume_id", "")),
        backup_name=meta.get("backup_name"),
        created_at=str(meta.get("created_at", "")),
        parent_id=meta.get("parent_id"),
        objects=tuple(objects),
        volume_size=expected_offset,
        raw=meta,
    )


def _parse_object(entry: Any, prefix: str, metadata_object: str) -> BackupObject:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise BackupFormatError(f"object entry is not a one-key object: {entry!r:.80}",
                                backup=prefix, object_name=metadata_object)
    (name, info), = entry.items()
    match = re.fullmatch(re.escape(prefix) + r"-(\d{5,})", name)
    if not match or not isinstance(info, dict):
        raise BackupFormatError("object name does not follow <prefix>-NNNNN", backup=prefix, object_name=name)
    try:
        offset, length = info["offset"], info["length"]
    except KeyError as e:
        raise BackupFormatError(f"object entry lacks {e.args[0]!r}", backup=prefix, object_name=name) from None
    if not (isinstance(offset, int) and isinstance(length, int)) or offset < 0 or length <= 0:
        raise BackupFormatError(f"bad offset/length {offset!r}/{length!r}", backup=prefix, object_name=name)
    md5 = info.get("md5")
    if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-f]{32}", md5)):
        raise BackupFormatError(f"bad md5 {md5!r}", backup=prefix, object_name=name)
    codec = canonical_codec(info.get("compression"), object_name=name)
    return BackupObject(name, int(match.group(1)), offset, length, codec, md5)


# --- the sha256 file -------------------------------------------------------------------

# json.dumps(indent=2) puts each digest on its own line; Python 2 left a space after the comma.
_DIGEST_LINE = re.compile(rb'\s*"([0-9a-f]{64})",? ?\n?')
_HEAD_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sha256FileInfo:
    block_size: int
    digest_count: int


class Sha256Index:
    """Digests of ``<prefix>_sha256file`` served by block range without loading the file.

    Cinder writes the file with ``indent=2``, so digest i sits at a fixed stride from the
    first; the index reads just the lines it needs.  A file written differently (one line,
    other indent) is parsed whole if small enough, else refused.
    """

    def __init__(self, store: BackupStore, prefix: str, *, whole_parse_limit: int = 16 * 1024 * 1024) -> None:
        self._store = store
        self.prefix = prefix
        self.name = sha256file_name(prefix)
        self._parsed: list[bytes] | None = None
        try:
            self._size = store.open_object(self.name)
            head = store.read_range(self.name, 0, min(self._size, _HEAD_PROBE_BYTES))
        except BackupFormatError as e:
            raise e.located(backup=prefix, object_name=self.name)
        self._list_start, self._stride, block_size, count = self._probe(head)
        if self._stride == 0:
            if self._size > whole_parse_limit:
                raise self._error(f"sha256 file is {self._size} bytes and not in Cinder's layout; refusing to load it")
            self._parsed, block_size = self._parse_whole()
            count = len(self._parsed)
        if not isinstance(block_size, int) or block_size <= 0:
            raise self._error(f"bad chunk_size {block_size!r}")
        self.info = Sha256FileInfo(block_size, count)

    def _error(self, message: str) -> BackupFormatError:
        return BackupFormatError(message, backup=self.prefix, object_name=self.name)

    def _probe(self, head: bytes) -> tuple[int, int, int, int]:
        """(offset of first digest, stride, block size, count); stride 0 = not fixed-stride."""
        chunk = re.search(rb'"chunk_size":\s*(\d+)', head)
        start = re.search(rb'"sha256s":\s*\[\n', head)
        if not chunk or not start:
            return 0, 0, 0, 0
        first = _DIGEST_LINE.match(head, start.end())
        if not first:
            return 0, 0, 0, 0
        second = _DIGEST_LINE.match(head, first.end())
        stride = (second.start(1) - first.start(1)) if second else 0
        tail_len = min(self._size, 4096)
        tail = self._store.read_range(self.name, self._size - tail_len, tail_len)
        # The list is followed by "version" and "volume_id"; find the digest before "]".
        closing = list(re.finditer(rb'([0-9a-f]{64})"\s*\]', tail))
        if not closing or stride == 0:
            return 0, 0, 0, 0
        last_digest_start = self._size - tail_len + closing[-1].start(1)
        span = last_digest_start - first.start(1)
        if span % stride:
            return 0, 0, 0, 0
        return first.start(1), stride, int(chunk.group(1)), span // stride + 1

    def _parse_whole(self) -> tuple[list[bytes], Any]:
        try:
            doc = json.loads(self._store.get_small(self.name, self._size))
            hexes = doc["sha256s"]
            return [bytes.fromhex(h) for h in hexes], doc["chunk_size"]
        except (ValueError, KeyError, TypeError) as e:
            raise self._error(f"sha256 file does not parse: {e}") from None

    def memory_bytes(self, block_count: int) -> int:
        """Memory `digests(.., block_count)` needs: the raw lines plus the packed digests."""
        return block_count * (max(self._stride, 72) + 32) + 4096

    def digests(self, first_block: int, block_count: int) -> bytes:
        """Packed 32-byte digests of blocks [first_block, first_block + block_count)."""
        if first_block < 0 or first_block + block_count > self.info.digest_count:
            raise self._error(
                f"asked for digests {first_block}..{first_block + block_count - 1}, file has {self.info.digest_count}")
        if self._parsed is not None:
            return b"".join(self._parsed[first_block:first_block + block_count])
        start = self._list_start + first_block * self._stride
        raw = self._store.read_range(self.name, start, block_count * self._stride)
        packed = bytearray()
        for i in range(block_count):
            line = raw[i * self._stride:i * self._stride + 64]
            try:
                packed += bytes.fromhex(line.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise self._error(f"digest {first_block + i} is not 64 hex digits") from None
            if len(line) != 64:
                raise self._error(f"sha256 file ends inside digest {first_block + i}")
        return bytes(packed)


# --- writing test backups ----------------------------------------------------------------

class BackupWriteStore(Protocol):
    def put_object(self, name: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class ParentBackup:
    """The backup an incremental one is based on (test writer)."""

    store: BackupStore
    prefix: str
    backup_id: str


def _compress(codec: str, data: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    if codec == "zstd":
        # Cinder uses the `zstd` package (zstd.compress): one standard frame with content size.
        return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)
    raise ValueError(f"cannot compress with {codec!r}")


@dataclass(frozen=True)
class WrittenBackup:
    prefix: str
    backup_id: str
    volume_id: str
    volume_size: int
    object_names: tuple[str, ...]


def cinder_prefix(volume_id: str, backup_id: str, when: datetime | None = None) -> str:
    """The object prefix Cinder's posix driver generates."""
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    return f"volume_{volume_id}_{stamp}_backup_{backup_id}"


def write_backup(
    volume: bytes | BinaryIO | str | os.PathLike[str],
    store: BackupWriteStore,
    prefix: str,
    chunk_size: int,
    compression: str | Sequence[str | None] | None = "zlib",
    *,
    sha_block_size: int = CINDER_SHA_BLOCK_BYTES,
    backup_id: str = "00000000-0000-0000-0000-000000000001",
    volume_id: str = "00000000-0000-0000-0000-0000000000aa",
    backup_name: str | None = "drill",
    backup_description: str | None = None,
    created_at: str = "2020-02-27 14:04:13+00:00",
    fall_back_to_none: bool = True,
    parent: "ParentBackup | None" = None,
) -> WrittenBackup:
    """Write a backup the way Cinder's chunked driver does; for tests and benchmarks.

    `compression` is one codec for every object or a sequence cycled per object (None or
    "none" = stored as is).  As in Cinder, a chunk that does not shrink is stored as "none"
    unless `fall_back_to_none` is False.  Chunks are held whole in memory, like Cinder.
    With `parent` the backup is incremental, as Cinder makes it: per chunk, each run of sha
    blocks whose sha256 differs from the parent's sha256 file becomes one object; the sha256
    file still lists every block of the volume.
    """
    if chunk_size % sha_block_size:
        raise ValueError("chunk size is not a multiple of the sha block size")
    parent_shas: list[str] | None = None
    if parent is not None:
        parent_doc = json.loads(parent.store.get_small(sha256file_name(parent.prefix), 1 << 40))
        if parent_doc["chunk_size"] != sha_block_size:
            raise ValueError("the parent's sha block size differs: Cinder would demand a full backup")
        parent_shas = parent_doc["sha256s"]
    codecs = [compression] if compression is None or isinstance(compression, str) else list(compression)
    objects: list[dict[str, Any]] = []
    sha256s: list[str] = []
    names: list[str] = []
    offset = 0

    def put(data: bytes, volume_offset: int) -> None:
        codec_name = codecs[len(names) % len(codecs)]
        name = data_object_name(prefix, len(names) + 1)
        codec = canonical_codec(codec_name)
        stored = data if codec == "none" else _compress(codec, data)
        if codec != "none" and fall_back_to_none and len(stored) >= len(data):
            codec, stored = "none", data
        store.put_object(name, stored)
        label = codec_name.lower() if isinstance(codec_name, str) and codec != "none" else "none"
        objects.append({name: {"offset": volume_offset, "length": len(data), "compression": label,
                               "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}})
        names.append(name)

    for chunk in _chunks(volume, chunk_size):
        first_block = len(sha256s)
        shas = [hashlib.sha256(chunk[start:start + sha_block_size]).hexdigest()
                for start in range(0, len(chunk), sha_block_size)]
        sha256s.extend(shas)
        if parent_shas is None:
            put(chunk, offset)
        else:
            if first_block + len(shas) > len(parent_shas):
                raise ValueError("the volume grew since the parent backup: Cinder would demand a full backup")
            extent_start = -1
            for i, sha in enumerate(shas + [None]):
                changed = sha is not None and sha != parent_shas[first_block + i]
                if changed and extent_start < 0:
                    extent_start = i
                elif not changed and extent_start >= 0:
                    put(chunk[extent_start * sha_block_size:i * sha_block_size], offset + extent_start * sha_block_size)
                    extent_start = -1
        offset += len(chunk)
    common = {"version": DRIVER_VERSION, "backup_id": backup_id, "volume_id": volume_id,
              "backup_name": backup_name, "backup_description": backup_description, "created_at": created_at}
    sha_doc = dict(common, chunk_size=sha_block_size, sha256s=sha256s)
    store.put_object(sha256file_name(prefix), json.dumps(sha_doc, sort_keys=True, indent=2).encode("utf-8"))
    meta_doc = dict(common, objects=objects, parent_id=parent.backup_id if parent else None, volume_meta=None)
    store.put_object(metadata_name(prefix), json.dumps(meta_doc, sort_keys=True, indent=2).encode("utf-8"))
    return WrittenBackup(prefix, backup_id, volume_id, offset, tuple(names))


def _chunks(volume: bytes | BinaryIO | str | os.PathLike[str], chunk_size: int) -> Iterator[bytes]:
    if isinstance(volume, (bytes, bytearray, memoryview)):
        view = memoryview(volume)
        for start in range(0, len(view), chunk_size):
            yield bytes(view[start:start + chunk_size])
        return
    if isinstance(volume, (str, os.PathLike)):
        with open(volume, "rb") as f:
            yield from _chunks(f, chunk_size)
        return
    while chunk := volume.read(chunk_size):
        yield chunk
