"""The fault ledger: a persistent journal of every fault that may still be in force.

Faults must always heal, even after the runner is SIGKILLed or the machine it
runs on reboots.  So before a fault is injected an "armed" record is appended
(and fsync'd, file and directory) holding everything needed to undo it; after a
successful heal a "healed" record follows.  An armed record without its healed
record is *pending*: ``drill heal`` replays pending entries, newest first.

File: ``<state_dir>/fault-ledger.jsonl``, one JSON object a line:

  {"v": 1, "op": "armed", "t": 1700000000.0, "fault_id": "powercut-1a2b3c4d",
   "kind": "power_cut", "label": "rack power cut r1", "target": "/path/target.toml",
   "run_id": "...", "pid": 1234, "undo": {...}, "manual": "ipmitool ... power on"}
  {"v": 1, "op": "healed", "t": ..., "fault_id": "powercut-1a2b3c4d"}
  {"v": 1, "op": "heal_failed", "t": ..., "fault_id": "...", "error": "..."}

Credentials never go in: ``undo`` holds names (hosts, daemons, table names) and
backends read secrets again from the target's password_env/password_file.
A torn last line (crash mid-write) is skipped.  ``<state_dir>/fault-ledger.lock``
is flock'ed by whoever injects or heals, so two runners on one target cannot
interleave their faults.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from drills.fsutil import fsync_dir

LEDGER_VERSION = 1
LEDGER_FILE = "fault-ledger.jsonl"
LOCK_FILE = "fault-ledger.lock"


class LedgerError(Exception):
    """The ledger cannot be used (busy, unwritable); the message says why."""


class LedgerBusy(LedgerError):
    """Another process holds the ledger lock of this target."""


@dataclass(frozen=True)
class LedgerEntry:
    """One armed fault, as read back from the journal."""

    fault_id: str
    kind: str  # key of the fault registry (drills.faults.session.FAULT_TYPES)
    label: str
    undo: dict[str, Any]  # Fault.undo_record(): enough to rebuild the heal
    target: str = ""  # path of the target file the fault was injected into
    run_id: str = ""
    pid: int = 0
    t: float = 0.0
    manual: str = ""  # the exact manual step if an automatic heal fails
    errors: tuple[str, ...] = ()  # heal attempts that failed so far

    def to_record(self) -> dict[str, Any]:
        return {
            "v": LEDGER_VERSION,
            "op": "armed",
            "t": self.t,
            "fault_id": self.fault_id,
            "kind": self.kind,
            "label": self.label,
            "target": self.target,
            "run_id": self.run_id,
            "pid": self.pid,
            "undo": self.undo,
            "manual": self.manual,
        }


@dataclass(frozen=True)
class UndoFailure:
    entry: LedgerEntry
    error: str

    @property
    def manual_step(self) -> str:
        return self.entry.manual or f"undo fault {self.entry.fault_id} ({self.entry.label}) by hand"

    def __str__(self) -> str:
        return f"{self.entry.label} [{self.entry.fault_id}]: {self.error}\n    manual step: {self.manual_step}"


@dataclass
class ReplayReport:
    healed: list[LedgerEntry] = field(default_factory=list)
    failed: list[UndoFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        lines = [f"healed {len(self.healed)} fault(s), {len(self.failed)} could not be undone"]
        lines += [f"  healed: {e.label} [{e.fault_id}]" for e in self.healed]
        lines += [f"  FAILED: {f}" for f in self.failed]
        return "\n".join(lines)


class FaultLedger:
    """Append-only, fsync'd JSONL journal of armed and healed faults, one per state dir."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir)
        self.path = self.dir / LEDGER_FILE
        self.lock_path = self.dir / LOCK_FILE
        self._lock_fd: int | None = None
        self._lock_depth = 0

    # --- locking -----------------------------------------------------------
    def acquire(self) -> None:
        """Take the target's ledger lock (re-entrant within this object); never waits."""
        if self._lock_depth:
            self._lock_depth += 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 64, 0).decode().strip()
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LedgerBusy(
                    f"fault ledger {self.path} is locked by another runner"
                    + (f" (pid {holder})" if holder else "")
                    + ": two runners must not inject faults into one target at once"
                ) from None
            raise
        # Say who holds it, for the error above; the lock, not the text, is what counts.
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        self._lock_depth = 1

    def release(self) -> None:
        if not self._lock_depth:
            return
        self._lock_depth -= 1
        if self._lock_depth == 0 and self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator["FaultLedger"]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

    @property
    def held(self) -> bool:
        return self._lock_depth > 0

    # --- writing -----------------------------------------------------------
    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self.locked():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                # A torn earlier line (crash mid-write) must not swallow this record.
                size = os.fstat(fd).st_size
                if size:
                    with open(self.path, "rb") as f:
                        f.seek(size - 1)
                        if f.read(1) != b"\n":
                            line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.dir)  # the new file's directory entry must survive a crash too

    def arm(self, entry: LedgerEntry) -> LedgerEntry:
        """Record a fault as about to be injected; call before touching anything."""
        if not entry.t:
            entry = dataclasses.replace(entry, t=time.time(), pid=entry.pid or os.getpid())
        self._append(entry.to_record())
        return entry

    def mark_healed(self, fault_id: str) -> None:
        self._append({"v": LEDGER_VERSION, "op": "healed", "t": time.time(), "fault_id": fault_id})

    def mark_released(self, fault_id: str, reason: str) -> None:
        """Not undone on purpose, and the operator was told why (e.g. OSDs left held by a restart that
        stopped): no longer pending, so `drill heal` will not undo it behind the operator's back."""
        self._append({"v": LEDGER_VERSION, "op": "released", "t": time.time(), "fault_id": fault_id, "reason": reason})

    def mark_heal_failed(self, fault_id: str, error: str) -> None:
        """History only: the entry stays pending."""
        self._append({"v": LEDGER_VERSION, "op": "heal_failed", "t": time.time(), "fault_id": fault_id, "error": error})

    # --- reading -----------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out: list[dict[str, Any]] = []
        with open(self.path, "rb") as f:
            for raw in f:
                raw = raw.strip()
                if not raw:
                    continue
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a torn line after a crash: the armed record before it is what counts
                if isinstance(rec, dict) and "op" in rec and "fault_id" in rec:
                    out.append(rec)
        return out

    def pending(self) -> list[LedgerEntry]:
        """Armed-but-not-healed entries, oldest first."""
        armed: dict[str, LedgerEntry] = {}
        errors: dict[str, list[str]] = {}
        for rec in self.records():
            fid = rec["fault_id"]
            if rec["op"] == "armed":
                armed[fid] = LedgerEntry(
                    fault_id=fid,
                    kind=rec.get("kind", ""),
                    label=rec.get("label", fid),
                    undo=rec.get("undo", {}),
                    target=rec.get("target", ""),
                    run_id=rec.get("run_id", ""),
                    pid=int(rec.get("pid", 0)),
                    t=float(rec.get("t", 0.0)),
                    manual=rec.get("manual", ""),
                )
            elif rec["op"] in ("healed", "released"):
                armed.pop(fid, None)
                errors.pop(fid, None)
            elif rec["op"] == "heal_failed":
                errors.setdefault(fid, []).append(str(rec.get("error", "")))
        return [
            dataclasses.replace(e, errors=tuple(errors.get(fid, ()))) for fid, e in armed.items()
        ]

    # --- healing -----------------------------------------------------------
    def replay(self, undo_fn: Callable[[LedgerEntry], None]) -> ReplayReport:
        """Undo every pending entry, newest first; one failure never stops the rest."""
        report = ReplayReport()
        with self.locked():
            for entry in reversed(self.pending()):
                try:
                    undo_fn(entry)
                except Exception as e:  # noqa: BLE001 - every undo gets its chance
                    msg = f"{type(e).__name__}: {e}"
                    self.mark_heal_failed(entry.fault_id, msg)
                    report.failed.append(UndoFailure(entry, msg))
                else:
                    self.mark_healed(entry.fault_id)
                    report.healed.append(entry)
        return report
