"""A BackupStore over a RADOS pool: chunked-format objects stored as RADOS objects.

Object names are the Cinder object names, optionally under a RADOS namespace.  Cinder's own
Ceph backup driver is not a chunked driver; this store is for chunked-format backups copied
into (or written by a tool to) a pool.  A RADOS object holds at most `osd_max_object_size`
(128 MiB by default), so chunks above that cannot be stored here; one write carries at most
`osd_max_write_size` (90 MiB), so `put_object` writes in pieces.
"""

from __future__ import annotations

from typing import Any

from drills.restore.errors import MissingObjectError
from drills.restore.store import SMALL_OBJECT_LIMIT_BYTES, read_small

PUT_PIECE_BYTES = 16 * 1024 * 1024  # below osd_max_write_size (90 MiB)
RADOS_MAX_OBJECT_BYTES = 128 * 1024 * 1024  # osd_max_object_size default


class RadosBackupStore:
    """Ranged reads from objects in one pool (and namespace) of an open rados.Ioctx.

    The ioctx is the caller's (it may be shared by many stores: python-rados ioctxs are
    thread-safe); a namespace is given per call, so stores with different namespaces can
    share one ioctx only if they share the namespace — give each namespace its own ioctx.
    """

    def __init__(self, ioctx: Any, namespace: str = "") -> None:
        self._ioctx = ioctx
        if namespace:
            ioctx.set_namespace(namespace)
        pool = getattr(ioctx, "name", "?")
        pool = pool.decode() if isinstance(pool, bytes) else pool
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
        return read_small(self, name, limit)

    # Writing is for making test backups only; the restore path never calls it.
    def put_object(self, name: str, data: bytes) -> None:
        if len(data) > RADOS_MAX_OBJECT_BYTES:
            raise ValueError(f"{name}: {len(data)} bytes exceed the {RADOS_MAX_OBJECT_BYTES}-byte RADOS object limit "
                             "(use smaller chunks)")
        view = memoryview(data)
        self._ioctx.write_full(name, bytes(view[:PUT_PIECE_BYTES]))
        for start in range(PUT_PIECE_BYTES, len(view), PUT_PIECE_BYTES):
            self._ioctx.write(name, bytes(view[start:start + PUT_PIECE_BYTES]), start)

    def delete_object(self, name: str) -> None:
        import rados

        try:
            self._ioctx.remove_object(name)
        except rados.ObjectNotFound:
            pass

    def list_objects(self, prefix: str) -> list[str]:
        return sorted(o.key for o in self._ioctx.list_objects() if o.key.startswith(prefix))
