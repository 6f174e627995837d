"""Where backups live: a small ranged-read interface and its POSIX/NFS implementation.

The interface is deliberately three calls wide so that a RADOS pool (rados_store.py) or an
S3 bucket can be added as one module each: the engine never asks for a whole data object.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Protocol, runtime_checkable

from drills.fsutil import pread_into
from drills.restore.errors import BackupFormatError, CorruptObjectError, MissingObjectError

# Cinder's posix driver: SHA block 32 KiB, file size 61035 * 32 KiB (~1.86 GiB).
CINDER_SHA_BLOCK_BYTES = 32 * 1024
CINDER_POSIX_FILE_BYTES = 61035 * CINDER_SHA_BLOCK_BYTES

# Metadata objects are read whole; anything larger is not a sane Cinder _metadata file.
SMALL_OBJECT_LIMIT_BYTES = 64 * 1024 * 1024


@runtime_checkable
class BackupStore(Protocol):
    """Read access to the objects of one backup container."""

    description: str

    def open_object(self, name: str) -> int:
        """Size of object `name` in bytes; MissingObjectError if it is not there."""
        ...

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; shorter only at the end of the object."""
        ...

    def get_small(self, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
        """A whole small object (metadata); BackupFormatError if it exceeds `limit`."""
        ...


def read_small(store: BackupStore, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
    """A whole small object (a manifest, an index), refused above `limit`: what every store's get_small does."""
    size = store.open_object(name)
    if size > limit:
        raise BackupFormatError(f"{size} bytes, larger than the {limit}-byte limit", object_name=name)
    return store.read_range(name, 0, size)


def store_reads_into(store: BackupStore) -> bool:
    """True if the store fills a caller's buffer (read_into) instead of returning a bytes copy."""
    return callable(getattr(store, "read_into", None))


class ObjectReader:
    """One stored object read front to back into a reused buffer (`PieceSource` of the decoders).

    Stores with `read_into(name, offset, view) -> int` fill the buffer directly; others return
    bytes that are copied in (the engine reserves that transient copy too).
    """

    def __init__(self, store: BackupStore, name: str, size: int, piece_bytes: int,
                 buffer: bytearray | None) -> None:
        self._store = store
        self._name = name
        self._size = size
        self._piece_bytes = piece_bytes
        self._buffer = memoryview(buffer) if buffer is not None else None
        self._read_into = getattr(store, "read_into", None)
        self.position = 0

    def read_into(self, view: memoryview) -> int:
        want = min(len(view), self._size - self.position)
        if want <= 0:
            return 0
        if self._read_into is not None:
            got = self._read_into(self._name, self.position, view[:want])
        else:
            data = self._store.read_range(self._name, self.position, want)
            got = len(data)
            view[:got] = data
            del data
        if got != want:
            raise CorruptObjectError(f"object is truncated: read {got} of {want} bytes at {self.position}, "
                                     f"expected {self._size} in all", object_name=self._name)
        self.position += got
        return got

    def next_piece(self) -> memoryview:
        if self._buffer is None:
            raise RuntimeError("this reader has no piece buffer")
        got = self.read_into(self._buffer[:self._piece_bytes])
        return self._buffer[:got]


def cinder_posix_container(backup_id: str) -> str:
    """The container Cinder's posix/NFS driver picks when the backup names none."""
    return os.path.join(backup_id[0:2], backup_id[2:4], backup_id)


class PosixBackupStore:
    """A backup container on a POSIX or NFS file system: one directory, one file per object.

    Cinder's layout is ``<backup_posix_path>/<container>/<prefix>-00001`` etc., where the
    container defaults to ``<id[0:2]>/<id[2:4]>/<id>``; pass the container directory here.
    Reads never modify the source (files are opened O_RDONLY).
    """

    def __init__(self, container_dir: str | os.PathLike[str]) -> None:
        self.root = Path(container_dir)
        self.description = f"posix:{self.root}"

    @classmethod
    def for_cinder_backup(
        cls, backup_posix_path: str | os.PathLike[str], backup_id: str, container: str | None = None
    ) -> "PosixBackupStore":
        return cls(Path(backup_posix_path) / (container or cinder_posix_container(backup_id)))

    def _path(self, name: str) -> Path:
        if "/" in name or name in ("", ".", ".."):
            raise MissingObjectError(f"not an object name: {name!r}", object_name=name)
        return self.root / name

    def open_object(self, name: str) -> int:
        try:
            st = os.stat(self._path(name))
        except FileNotFoundError:
            raise MissingObjectError(f"object missing from {self.root}", object_name=name) from None
        if not stat.S_ISREG(st.st_mode):
            raise MissingObjectError(f"not a regular file in {self.root}", object_name=name)
        return st.st_size

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingObjectError(f"object vanished from {self.root}", object_name=name) from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def read_into(self, name: str, offset: int, view: memoryview) -> int:
        """Fill `view` from `offset` (fewer bytes only at the end of the object); no copy."""
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MissingObjectError(f"object vanished from {self.root}", object_name=name) from None
        try:
            return pread_into(fd, view, offset)
        finally:
            os.close(fd)

    def get_small(self, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
        return read_small(self, name, limit)

    # Writing is for making test backups only; the restore path never calls it.
    def put_object(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(name)
        with open(path, "wb") as f:
            f.write(data)

    def delete_object(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
