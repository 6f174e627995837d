"""Where restored data goes: files/block devices (os.pwrite) and RBD images (aio_write).

A sink is written through `write(offset, data, on_done)`; `on_done()` runs once the sink
holds no copy of `data` any more (at once for pwrite, on the AIO completion for RBD), which
is when the engine releases the budget for that buffer.  A sink ends in `commit()` (the
target now looks complete) or `abort()` (it is removed, or flagged as incomplete).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from drills.fsutil import fsync_dir, pread_into
from drills.restore.errors import TargetError
from drills.restore.journal import (RBD_JOURNAL_KEY, RBD_PIECE_PREFIX, RBD_STATE_INCOMPLETE, RBD_STATE_KEY,
                                    JournalHeader, RbdJournalState, piece_meta_key, restore_process_running)

# What an aborted restore wipes at the start of a pre-existing device: partition tables,
# LVM and file-system signatures all live there, so the half-restored volume is not
# mistaken for a good one.
HEADER_WIPE_BYTES = 1024 * 1024
# Where librbd keeps image metadata: omap keys of the format-2 image's header object.
RBD_HEADER_PREFIX = "rbd_header."
RBD_HEADER_META_PREFIX = "metadata_"


class Sink(Protocol):
    description: str
    size: int
    is_new: bool  # freshly created, reads as zeros: zero windows may be skipped
    copy_factor: int  # copies of a buffer the sink keeps while a write is in flight

    def write(self, offset: int, data: bytes, on_done: Callable[[], None]) -> None: ...

    def flush(self) -> None: ...

    def commit(self) -> None: ...

    def abort(self, keep_for_resume: bool = False) -> str: ...


JOURNAL_VERSION = 1


class FileSink:
    """A regular file (written to a partial name, renamed on success) or a block device.

    A regular file is restored into ``.NAME.restore-partial`` next to it, with a journal
    ``.NAME.restore-journal``: one fsync'd JSON line per piece (a backup object) written,
    verified and made durable.  A cancelled restore keeps both, so that ``--resume`` skips
    the journaled pieces after Ctrl-C, kill -9 or a crash; until the rename nothing at the
    target's name looks like a finished restore.
    """

    copy_factor = 0  # pwrite hands the buffer to the kernel; no user-space copy
    overhead_bytes = 0

    def __init__(self, path: str | os.PathLike[str], size: int, *, force: bool = False, owner: str = "",
                 resume: bool = False, journal_key: str = "") -> None:
        self.path = Path(path)
        self.size = size
        self.description = str(self.path)
        self._owner = owner
        self._fd = -1
        self._temp: Path | None = None
        self._journal: Path | None = None
        self._journal_fd = -1
        self._done = False
        self.resumed = False
        self.resumed_pieces: frozenset[str] = frozenset()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISBLK(st.st_mode):
            if not force:
                raise TargetError(f"target {self.path} is an existing block device; use force to overwrite it",
                                  backup=owner)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            device_size = os.lseek(self._fd, 0, os.SEEK_END)
            if device_size < size:
                os.close(self._fd)
                raise TargetError(f"block device {self.path} holds {device_size} bytes, the volume {size}",
                                  backup=owner)
            self.is_new = False
            return
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise TargetError(f"target {self.path} exists and is neither a file nor a block device", backup=owner)
        if st is not None and st.st_size > 0 and not force:
            raise TargetError(f"target {self.path} exists and is not empty ({st.st_size} bytes); use force",
                              backup=owner)
        self._temp = self.path.with_name(f".{self.path.name}.restore-partial")
        self._journal = self.path.with_name(f".{self.path.name}.restore-journal")
        leftover = self._temp.exists() or self._journal.exists()
        if leftover and resume:
            self._open_resumed(journal_key)
        else:
            if leftover and not force:
                raise TargetError(f"an interrupted restore of {self.path} left {self._temp.name} and "
                                  f"{self._journal.name}: use resume to continue it or force to start over",
                                  backup=owner)
            self._open_fresh(journal_key)
        self.is_new = True  # never-written ranges of the partial file are holes: they read as zeros

    def _open_fresh(self, journal_key: str) -> None:
        assert self._temp is not None and self._journal is not None
        self._journal.unlink(missing_ok=True)
        self._temp.unlink(missing_ok=True)
        try:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.ftruncate(self._fd, self.size)  # sparse: reads as zeros, so zero windows are skipped
            self._journal_fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                                       0o600)
            self._append_journal({"journal": JOURNAL_VERSION, "key": journal_key, "size": self.size})
            fsync_dir(self.path.parent)
        except OSError as e:
            self._close_fds()
            self._temp.unlink(missing_ok=True)
            self._journal.unlink(missing_ok=True)
            raise TargetError(f"cannot create {self._temp}: {e.strerror}", backup=self._owner) from None

    def _open_resumed(self, journal_key: str) -> None:
        assert self._temp is not None and self._journal is not None
        try:
            lines = self._journal.read_bytes().split(b"\n")
            header = json.loads(lines[0])
        except (OSError, ValueError, IndexError) as e:
            raise TargetError(f"journal {self._journal} is unreadable ({e}); use force to start over",
                              backup=self._owner) from None
        if header.get("journal") != JOURNAL_VERSION or header.get("key") != journal_key \
                or header.get("size") != self.size:
            raise TargetError(f"journal {self._journal} belongs to another restore (backup or size differ); "
                              "use force to start over", backup=self._owner)
        pieces = set()
        for line in lines[1:]:
            try:
                pieces.add(json.loads(line)["piece"])
            except (ValueError, KeyError, TypeError):
                break  # a torn last line (crash mid-append): that piece is restored again
        try:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CLOEXEC)
            if os.fstat(self._fd).st_size != self.size:
                raise TargetError(f"{self._temp.name} is not {self.size} bytes; use force to start over",
                                  backup=self._owner)
            self._journal_fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            self._close_fds()
            raise TargetError(f"cannot resume into {self._temp}: {e.strerror}", backup=self._owner) from None
        self.resumed_pieces = frozenset(pieces)
        self.resumed = True

    def _append_journal(self, record: dict[str, object]) -> None:
        os.write(self._journal_fd, json.dumps(record, sort_keys=True).encode() + b"\n")
        os.fsync(self._journal_fd)

    @property
    def journaled(self) -> bool:
        return self._journal_fd >= 0

    def record_piece(self, piece: str) -> None:
        """`piece` is written and verified: make the data durable, then the journal line."""
        os.fsync(self._fd)
        self._append_journal({"piece": piece})

    def read_into(self, offset: int, view: memoryview) -> int:
        """Read back what was restored (the final whole-image check after a resume)."""
        fd = os.open(self._temp if self._temp is not None else self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return pread_into(fd, view, offset)
        finally:
            os.close(fd)

    def _close_fds(self) -> None:
        for fd in (self._fd, self._journal_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._journal_fd = -1

    def write(self, offset: int, data: bytes, on_done: Callable[[], None]) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as e:
            raise TargetError(f"write to {self.description} at {offset} failed: {e.strerror}",
                              backup=self._owner) from None
        finally:
            on_done()

    def flush(self) -> None:
        os.fsync(self._fd)

    def commit(self) -> None:
        self.flush()
        self._close_fds()
        if self._temp is not None:
            os.replace(self._temp, self.path)
            if self._journal is not None:
                self._journal.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
        self._done = True

    def abort(self, keep_for_resume: bool = False) -> str:
        if self._done:
            return "nothing to undo"
        self._done = True
        if self._temp is not None:
            if keep_for_resume and self.journaled:
                os.fsync(self._fd)
                self._close_fds()
                return f"kept {self._temp.name} and {self._journal.name if self._journal else ''} for --resume"
            self._close_fds()
            self._temp.unlink(missing_ok=True)
            if self._journal is not None:
                self._journal.unlink(missing_ok=True)
            return f"removed partial file {self._temp.name}"
        try:
            os.pwrite(self._fd, bytes(min(HEADER_WIPE_BYTES, self.size)), 0)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
        return f"block device {self.path} flagged: first {HEADER_WIPE_BYTES} bytes zeroed, contents incomplete"


class RbdSink:
    """An RBD image written with Image.aio_write; the completion releases the budget.

    librbd copies the buffer of every write (rbd_disable_zero_copy_writes defaults to true;
    the bug's rbd_write2 path copies too) and, with rbd_cache on, keeps yet another copy in
    its writeback cache: `RbdConnection` turns the cache off for its own client.  The
    Python buffer stays referenced until the completion fires.

    From creation (or, with force, from opening an existing image) until `commit()` the
    image carries the metadata ``drills.restore.state=incomplete``: an image a killed
    restore leaves behind never looks complete.  Its resume journal is image metadata too
    (`drills.restore.journal`: a header, then one key per piece written, verified and
    flushed; see that module for why there).  `abort()` removes a new image and, on a
    pre-existing one, zeroes the first MiB and leaves the flag; a cancelled restore keeps
    the image, flagged, with its journal, for ``--resume``.
    """

    # librbd's copy, plus our bytes() copy of the pooled window (python-rbd's aio_write
    # takes bytes only).
    copy_factor = 2
    # An open image besides the buffers: librbd's ImageCtx, its object dispatchers and the
    # image's header watch (rbd_cache is off).  An allowance, not yet measured per image.
    overhead_bytes = 1024 * 1024

    def __init__(self, ioctx: Any, image_name: str, size: int, *, force: bool = False, owner: str = "",
                 on_close: Callable[[], None] | None = None, resume: bool = False, journal_key: str = "") -> None:
        import rbd  # Debian's python3-rbd, imported late so the module loads without it

        self._rbd = rbd
        self._ioctx = ioctx
        self.image_name = image_name
        self.size = size
        self._owner = owner
        self._on_close = on_close
        self.description = f"rbd:{_pool_name(ioctx)}/{image_name}"
        self._lock = threading.Condition()
        self._in_flight: dict[int, tuple[bytes, Callable[[], None]]] = {}
        self._next_id = 0
        self._error: str | None = None
        self._done = False
        self._journaled = False
        self.resumed = False
        self.resumed_pieces: frozenset[str] = frozenset()
        if resume and self._open_resumed(journal_key):
            return
        try:
            rbd.RBD().create(ioctx, image_name, size)
            self.is_new = True
        except rbd.ImageExists:
            if not force:
                raise TargetError(self._exists_message(), backup=owner) from None
            self.is_new = False
        except rbd.Error as e:
            raise TargetError(f"cannot create image {self.description}: {e}", backup=owner) from None
        try:
            self._image = rbd.Image(ioctx, image_name)
            # Flag before the first write; removed only by commit().
            self._image.metadata_set(RBD_STATE_KEY, RBD_STATE_INCOMPLETE)
            if not self.is_new and self._image.size() < size:
                self._image.resize(size)
            # A journal an older restore left on this image would vouch for pieces we overwrite.
            self._remove_journal()
            header = JournalHeader(journal_key, size, image_size=self._image.size(), fresh=self.is_new)
            self._image.metadata_set(RBD_JOURNAL_KEY, self._with_writer(header).encode())
            self._journaled = True
        except rbd.Error as e:
            image = getattr(self, "_image", None)
            if image is not None:
                image.close()
            if self.is_new:
                try:
                    rbd.RBD().remove(ioctx, image_name)
                except rbd.Error:
                    pass
            raise TargetError(f"cannot prepare image {self.description}: {e}", backup=owner) from None

    def _exists_message(self) -> str:
        """Say so when the image is what an interrupted restore left (read-only: nothing is touched)."""
        try:
            state = read_rbd_journal(self._ioctx, self.image_name)
        except Exception:  # the plain refusal is enough
            state = None
        if state is not None and state.state == RBD_STATE_INCOMPLETE and state.header is not None:
            return (f"image {self.description} exists, left by an interrupted restore "
                    f"({len(state.pieces)} pieces journaled): use resume to continue it or force to start over")
        return f"image {self.description} exists; use force to overwrite it"

    def _open_resumed(self, journal_key: str) -> bool:
        """Reopen an interrupted restore's image; False if there is none (a fresh restore then).

        Writes nothing before the journal is accepted: a refused resume leaves the image as it was.
        """
        rbd = self._rbd
        try:
            self._image = rbd.Image(self._ioctx, self.image_name)
        except rbd.ImageNotFound:
            return False
        except rbd.Error as e:
            raise TargetError(f"cannot open image {self.description}: {e}", backup=self._owner) from None
        try:
            state = RbdJournalState.from_metadata(self._image.size(), self._image.metadata_list())
            refusal = state.refusal(journal_key, self.size, socket.gethostname())
        except rbd.Error as e:
            self._image.close()
            raise TargetError(f"cannot read the journal of {self.description}: {e}", backup=self._owner) from None
        if refusal is not None:
            self._image.close()
            raise TargetError(f"cannot resume into image {self.description}: {refusal}; use force to start over",
                              backup=self._owner)
        assert state.header is not None
        try:
            self._fence_dead_writer(state.header)
            # Our own identity in the header; also the resume's first write, which takes the lock.
            self._image.metadata_set(RBD_JOURNAL_KEY, self._with_writer(state.header).encode())
        except rbd.Error as e:
            self._image.close()
            raise TargetError(f"cannot resume into image {self.description}: {e}", backup=self._owner) from None
        self.is_new = state.header.fresh  # never-written ranges of an image we created read as zeros
        self.resumed_pieces = state.pieces
        self.resumed = self._journaled = True
        return True

    def _with_writer(self, header: JournalHeader) -> JournalHeader:
        """`header` naming this process as the writer; called once we hold the image's exclusive lock."""
        owners = [str(o.get("owner", "")) for o in self._image.lock_get_owners()]
        return dataclasses.replace(header, writer_host=socket.gethostname(), writer_pid=os.getpid(),
                                   writer_addr=owners[0] if len(owners) == 1 else "")

    def _fence_dead_writer(self, header: JournalHeader) -> None:
        """Break the exclusive lock a dead restore on this host still holds (librbd blocklists it)."""
        owner = header.dead_writer_lock(self._image.lock_get_owners(), socket.gethostname(), restore_process_running)
        if owner is not None:
            self._image.lock_break(owner["mode"], owner["owner"])

    @property
    def journaled(self) -> bool:
        return self._journaled

    def record_piece(self, piece: str) -> None:
        """`piece` is written and verified: make the data durable, then journal it (one atomic key)."""
        self.flush()
        self._image.metadata_set(piece_meta_key(piece), piece)

    def read_into(self, offset: int, view: memoryview) -> int:
        """Read back what was restored (the final whole-image check after a resume)."""
        data = self._image.read(offset, len(view))
        view[:len(data)] = data
        return len(data)

    def _remove_journal(self, *also: str) -> None:
        """The journal's keys (and `also`) in one atomic omap operation: all of them go, or none.

        Image metadata is the omap of the image's header object (``rbd_header.<id>``, keys
        ``metadata_<key>``), the layout `rbd image-meta` has used since format 2.  One write op
        instead of a metadata_remove (and a header notify) per key: a restore of 20,000 pieces
        commits in one round trip, and a crash cannot leave half a journal behind.
        """
        import rados

        keys = [key for key, _value in self._image.metadata_list()
                if key == RBD_JOURNAL_KEY or key.startswith(RBD_PIECE_PREFIX) or key in also]
        if not keys:
            return
        with rados.WriteOpCtx() as op:
            self._ioctx.remove_omap_keys(op, tuple(RBD_HEADER_META_PREFIX + key for key in keys))
            self._ioctx.operate_write_op(op, f"{RBD_HEADER_PREFIX}{self._image.id()}")

    def write(self, offset: int, data: bytes, on_done: Callable[[], None]) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        with self._lock:
            if self._error:
                on_done()
                raise TargetError(self._error, backup=self._owner)
            write_id = self._next_id
            self._next_id += 1
            self._in_flight[write_id] = (data, on_done)

        def completed(completion: Any, write_id: int = write_id, offset: int = offset) -> None:
            result = completion.get_return_value()
            with self._lock:
                _data, done = self._in_flight.pop(write_id)
                if result < 0 and self._error is None:
                    self._error = f"aio_write to {self.description} at {offset} failed: {os.strerror(-result)}"
                self._lock.notify_all()
            done()

        try:
            self._image.aio_write(data, offset, completed)
        except Exception as e:
            with self._lock:
                self._in_flight.pop(write_id, None)
            on_done()
            raise TargetError(f"aio_write to {self.description} failed: {e}", backup=self._owner) from None

    def _wait_idle(self) -> None:
        with self._lock:
            while self._in_flight:
                self._lock.wait(0.1)

    def flush(self) -> None:
        self._wait_idle()
        self._image.flush()
        if self._error:
            raise TargetError(self._error, backup=self._owner)

    def commit(self) -> None:
        self.flush()
        # The commit point: flag and journal go in one atomic operation.
        self._remove_journal(RBD_STATE_KEY)
        self._close()

    def _close(self) -> None:
        self._done = True
        self._image.close()
        if self._on_close:
            self._on_close()

    def abort(self, keep_for_resume: bool = False) -> str:
        if self._done:
            return "nothing to undo"
        self._wait_idle()  # librbd still holds our buffers until the completions fire
        if keep_for_resume and self._journaled:
            try:
                self._image.flush()
            finally:
                self._close()
            return (f"kept image {self.description} ({RBD_STATE_KEY}={RBD_STATE_INCOMPLETE}) and its journal "
                    "for --resume")
        if self.is_new:  # created by this restore (or the interrupted one it resumes)
            self._image.close()
            self._done = True
            try:
                self._rbd.RBD().remove(self._ioctx, self.image_name)
            finally:
                if self._on_close:
                    self._on_close()
            return f"removed image {self.description}"
        try:
            self._image.write(bytes(min(HEADER_WIPE_BYTES, self.size)), 0)
            self._image.flush()
            self._remove_journal()  # the wiped header breaks journaled pieces: no resume from here
        finally:
            self._close()
        return (f"image {self.description} flagged: metadata {RBD_STATE_KEY}={RBD_STATE_INCOMPLETE}, "
                f"first {HEADER_WIPE_BYTES} bytes zeroed")


def _pool_name(ioctx: Any) -> str:
    name = getattr(ioctx, "name", None)
    if isinstance(name, bytes):
        name = name.decode()
    return str(name) if name else "?"


def read_rbd_journal(ioctx: Any, image_name: str) -> RbdJournalState | None:
    """An image's restore flag and resume journal, read-only; None if there is no such image."""
    import rbd

    try:
        with rbd.Image(ioctx, image_name, read_only=True) as image:
            return RbdJournalState.from_metadata(image.size(), image.metadata_list())
    except rbd.ImageNotFound:
        return None


def rbd_restore_state(ioctx: Any, image_name: str) -> str | None:
    """The image's ``drills.restore.state`` metadata ("incomplete"), or None when it has none."""
    import rbd

    with rbd.Image(ioctx, image_name, read_only=True) as image:
        try:
            return str(image.metadata_get(RBD_STATE_KEY))
        except rbd.ObjectNotFound:
            return None
        except KeyError:
            return None


# Client options every restore connection sets, whatever the cluster's ceph.conf says: the
# budget counts exactly one librbd copy of each in-flight write, so no writeback cache.
RBD_CLIENT_OPTIONS = {"rbd_cache": "false"}


class RbdConnection:
    """One librados client shared by every RBD target of a run (one per restore would mean
    41 messengers with their threads and buffers).  Thread-safe: ioctxs are cached per pool."""

    def __init__(self, conf: str, keyring: str, client: str = "client.admin", op_timeout: float = 30.0,
                 default_pool: str = "rbd") -> None:
        import rados

        timeout = str(int(op_timeout))
        self.default_pool = default_pool
        self._cluster = rados.Rados(conffile=conf, name=client,
                                    conf={"keyring": keyring, "rados_osd_op_timeout": timeout,
                                          "rados_mon_op_timeout": timeout, **RBD_CLIENT_OPTIONS})
        self._cluster.connect(timeout=int(op_timeout))
        self._ioctxs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_target(cls, target_path: str | os.PathLike[str]) -> "RbdConnection":
        from drills.target import load_target

        c = load_target(target_path).cluster
        return cls(c.conf, c.keyring, c.client, c.op_timeout, c.rbd_pool)

    def ioctx(self, pool: str = "") -> Any:
        pool = pool or self.default_pool
        with self._lock:
            if pool not in self._ioctxs:
                try:
                    self._ioctxs[pool] = self._cluster.open_ioctx(pool)
                except Exception as e:
                    raise TargetError(f"cannot open pool {pool!r}: {e}") from None
            return self._ioctxs[pool]

    def slow_ops_probe(self) -> Callable[[], int | None]:
        """Slow ops the cluster reports (health check SLOW_OPS), for the adaptive rate limit."""
        from drills.restore.throttle import rados_slow_ops_probe

        return rados_slow_ops_probe(self._cluster)

    def open_sink(self, pool: str, image: str, size: int, *, force: bool = False, owner: str = "",
                  resume: bool = False, journal_key: str = "") -> RbdSink:
        return RbdSink(self.ioctx(pool), image, size, force=force, owner=owner, resume=resume,
                       journal_key=journal_key)

    def resume_refusal(self, pool: str, image: str, key: str, size: int) -> str | None:
        """Why `--resume` of the restore (key, size) into POOL/IMAGE must not start, or None (read-only).

        No image at all is no refusal: the resume is then a fresh restore, as for files.
        """
        state = read_rbd_journal(self.ioctx(pool), image)
        return None if state is None else state.refusal(key, size, socket.gethostname())

    def close(self) -> None:
        with self._lock:
            for ioctx in self._ioctxs.values():
                ioctx.close()
            self._ioctxs.clear()
        self._cluster.shutdown()

    def __enter__(self) -> "RbdConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_rbd_sink(target_path: str | os.PathLike[str], pool: str, image: str, size: int, *,
                  force: bool = False, owner: str = "") -> RbdSink:
    """An RbdSink with a connection of its own (closed with the sink); for one-off restores."""
    connection = RbdConnection.from_target(target_path)
    try:
        return RbdSink(connection.ioctx(pool), image, size, force=force, owner=owner, on_close=connection.close)
    except Exception:
        connection.close()
        raise
