"""Resume journals: which pieces of an interrupted restore are written, verified and durable.

A piece is one backup object of one link (`engine._piece_key`: prefix, object, offset, length,
md5).  A journal has a header (the restore it belongs to) and one entry per piece, added only
after the piece's data is durable in the target.  Two places hold one:

* file targets: ``.NAME.restore-journal`` beside the partial file, one fsync'd JSON line each
  (`sinks.FileSink`);
* RBD targets: the image's own metadata (``rbd image-meta``, omap keys of the image's header
  object), written by `sinks.RbdSink`: ``drills.restore.journal`` = the header, one
  ``drills.restore.piece.<hash>`` key per piece.  It lives in the cluster beside the data it
  describes, so it survives the restoring host (crash, lost disk, resume from another
  machine), a metadata_set returns only once every replica has it (the cluster's fsync), one
  key is set atomically (no torn entries), and removing the image removes its journal.

This module is the pure part (formats, checks), tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drills.restore.format import BackupManifest

JOURNAL_VERSION = 1
RBD_STATE_KEY = "drills.restore.state"  # "incomplete" from creation until the restore commits
RBD_STATE_INCOMPLETE = "incomplete"
RBD_JOURNAL_KEY = "drills.restore.journal"  # the header
RBD_PIECE_PREFIX = "drills.restore.piece."


def journal_key(manifests: Sequence["BackupManifest"]) -> str:
    """What a journal must belong to: every link's backup_id and prefix (oldest first), the volume size."""
    return json.dumps([[m.backup_id, m.prefix] for m in manifests] + [manifests[0].volume_size])


@dataclass(frozen=True)
class JournalHeader:
    """The first record of a journal: which restore it belongs to."""

    key: str  # journal_key() of the restore
    size: int  # the volume's size
    image_size: int = 0  # RBD: the image's size once prepared (a resize since means the image changed)
    fresh: bool = True  # RBD: created by this restore, so never-written ranges read as zeros
    # RBD: the process writing the image (its host, pid and librados address, which is how librbd
    # names the exclusive lock's owner): a resume on the same host may fence it once it is dead.
    writer_host: str = ""
    writer_pid: int = 0
    writer_addr: str = ""

    def encode(self) -> str:
        record: dict[str, object] = {"journal": JOURNAL_VERSION, "key": self.key, "size": self.size}
        if self.image_size:
            record.update(image_size=self.image_size, fresh=self.fresh)
        if self.writer_pid:
            record.update(writer_host=self.writer_host, writer_pid=self.writer_pid, writer_addr=self.writer_addr)
        return json.dumps(record, sort_keys=True)

    @classmethod
    def decode(cls, text: str | bytes) -> "JournalHeader":
        """Raises ValueError for anything that is not a header of this version."""
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("journal") != JOURNAL_VERSION:
            raise ValueError(f"not a version {JOURNAL_VERSION} journal header")
        key, size = record.get("key"), record.get("size")
        image_size, fresh = record.get("image_size", 0), record.get("fresh", True)
        writer = (record.get("writer_host", ""), record.get("writer_pid", 0), record.get("writer_addr", ""))
        if not isinstance(key, str) or not isinstance(size, int) or not isinstance(image_size, int) \
                or not isinstance(fresh, bool) or not isinstance(writer[1], int) \
                or not all(isinstance(w, str) for w in (writer[0], writer[2])):
            raise ValueError("journal header fields have the wrong types")
        return cls(key, size, image_size, fresh, *writer)

    def writer_running(self, host: str, is_running: Callable[[int], bool]) -> bool:
        """The restore that wrote this journal is still running here (not this process)."""
        return bool(self.writer_pid) and self.writer_host == host and self.writer_pid != os.getpid() \
            and is_running(self.writer_pid)

    def dead_writer_lock(self, owners: Iterable[dict[str, object]], host: str,
                         is_running: Callable[[int], bool]) -> dict[str, object] | None:
        """The exclusive-lock owner entry to break: held by this journal's writer, known dead.

        After kill -9 librbd keeps seeing the dead client's lock until the OSDs expire its watch
        (osd_client_watch_timeout, 30 s) and only then breaks it (blocklisting the client).  When
        the writer ran on this host and its pid is gone, the resume does that at once; a writer
        on another host is left to librbd's own timeout (we cannot see whether it is alive).
        """
        if not self.writer_addr or self.writer_host != host or self.writer_pid == os.getpid() \
                or is_running(self.writer_pid):
            return None
        return next((o for o in owners if o.get("owner") == self.writer_addr), None)


def restore_process_running(pid: int) -> bool:
    """A process `pid` exists here and looks like a restore (a reused pid of something else does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"restore" in f.read()
    except OSError:
        return False


def header_mismatch(header: JournalHeader, key: str, size: int, image_size: int | None = None) -> str | None:
    """Why a journal cannot be resumed by the restore (key, size) into a target of `image_size`, or None."""
    if header.key != key:
        try:
            theirs = ", ".join(str(link[0]) for link in json.loads(header.key)[:-1])
        except (ValueError, TypeError, IndexError, KeyError):
            theirs = "?"
        return f"the journal belongs to another restore (backup {theirs})"
    if header.size != size:
        return f"the journal is for a volume of {header.size} bytes, this backup's is {size}"
    if image_size is not None and header.image_size and image_size != header.image_size:
        return f"the image is {image_size} bytes now, {header.image_size} bytes when the restore began"
    return None


def piece_meta_key(piece: str) -> str:
    """The image-meta key of a journaled piece: short and fixed-length, the piece itself is the value."""
    return RBD_PIECE_PREFIX + hashlib.sha256(piece.encode()).hexdigest()[:24]


def journaled_pieces(metadata: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The pieces an image's metadata journals; entries whose key does not match their value are ignored."""
    return frozenset(value for key, value in metadata
                     if key.startswith(RBD_PIECE_PREFIX) and piece_meta_key(value) == key)


@dataclass(frozen=True)
class RbdJournalState:
    """What an RBD image says about an interrupted restore (read without writing anything)."""

    image_size: int
    state: str | None  # the RBD_STATE_KEY value (None: the image looks complete)
    header: JournalHeader | None
    header_error: str | None  # the header key exists but does not parse
    pieces: frozenset[str]

    @classmethod
    def from_metadata(cls, image_size: int, metadata: Iterable[tuple[str, str]]) -> "RbdJournalState":
        items = list(metadata)
        values = dict(items)
        header, error = None, None
        if RBD_JOURNAL_KEY in values:
            try:
                header = JournalHeader.decode(values[RBD_JOURNAL_KEY])
            except ValueError as e:
                error = str(e)
        return cls(image_size, values.get(RBD_STATE_KEY), header, error, journaled_pieces(items))

    def refusal(self, key: str, size: int, host: str = "",
                is_running: Callable[[int], bool] = restore_process_running) -> str | None:
        """Why `--resume` of the restore (key, size) must not touch this image, or None."""
        if self.state != RBD_STATE_INCOMPLETE:
            return (f"it is not marked {RBD_STATE_KEY}={RBD_STATE_INCOMPLETE} (a finished restore or another "
                    "image): nothing to resume")
        if self.header_error is not None:
            return f"its journal {RBD_JOURNAL_KEY} is unreadable ({self.header_error})"
        if self.header is None:
            return f"it carries no journal ({RBD_JOURNAL_KEY}): the restore that left it cannot be resumed"
        mismatch = header_mismatch(self.header, key, size, self.image_size)
        if mismatch is None and host and self.header.writer_running(host, is_running):
            return f"the restore writing it (pid {self.header.writer_pid}) is still running"
        return mismatch
