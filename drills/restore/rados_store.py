"""A BackupStore over a RADOS pool: chunked-format objects stored as RADOS objects.

UNTESTED: written against python-rados (Ioctx.stat / Ioctx.read(key, length, offset)) while
no cluster was available.  Object names are the Cinder object names, optionally under a
RADOS namespace.  Note Cinder's own Ceph backup driver is not a chunked driver; this store
is for chunked-format backups copied into (or written by a tool to) a pool.
"""

from __future__ import annotations

from typing import Any

from drills.restore.errors import BackupFormatError, MissingObjectError
from drills.restore.store import SMALL_OBJECT_LIMIT_BYTES


class RadosBackupStore:
    """Ranged reads from objects in one pool (and namespace) of an open rados.Ioctx."""

    def __init__(self, ioctx: Any, namespace: str = "") -> None:
        self._ioctx = ioctx
        if namespace:
            ioctx.set_namespace(namespace)
        pool = getattr(ioctx, "name", "?")
        self.description = f"rados:{pool}/{namespace}" if namespace else f"rados:{pool}"

    def open_object(self, name: str) -> int:
        import rados  # Debian's python3-rados; imported late so the module loads without it

        try:
            size, _mtime = self._ioctx.stat(name)
        except rados.ObjectNotFound:
            raise MissingObjectError(f"object missing from {self.description}", object_name=name) from None
        return int(size)

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        import rados

        try:
            return bytes(self._ioctx.read(name, length, offset))
        except rados.ObjectNotFound:
            raise MissingObjectError(f"object vanished from {self.description}", object_name=name) from None

    def get_small(self, name: str, limit: int = SMALL_OBJECT_LIMIT_BYTES) -> bytes:
        size = self.open_object(name)
        if size > limit:
            raise BackupFormatError(f"{size} bytes, larger than the {limit}-byte limit", object_name=name)
        return self.read_range(name, 0, size)
