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

from drills.restore.errors import BackupFormatError, MissingObjectError

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

    def get_small(self, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
        size = self.open_object(name)
        if size > limit:
            raise BackupFormatError(f"{size} bytes, larger than the {limit}-byte limit", object_name=name)
        return self.read_range(name, 0, size)

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
