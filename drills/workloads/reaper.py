"""Workload processes a crashed runner left behind, found and stopped.

A drill's fio job runs for up to 24 h and its locust master until told to stop; the runner stops
them at the end. A runner killed with SIGKILL (or an OOM kill, or a lost terminal) cannot, and
its clients keep loading the cluster: on staging that is load nobody asked for, and on the
sandbox it biases the next run's figures. So every workload process is recorded before it runs
and forgotten once it has ended:

  <state_dir>/workloads/<pid>.json
    {"pid": 4242, "started": 1700000000.12, "label": "fio:drill-x-randwrite", "argv": [...],
     "owner_pid": 4200, "owner_started": 1699999990.5}

A record is a *leftover* when its owner (the runner) is gone but the process it names still
runs (same pid and same start time: a reused pid is never killed). `drill heal` and the start
of every drill session stop leftovers (SIGINT to the process group, then SIGKILL) and say so.
Remote processes (fio servers' jobs, locust workers started over SSH) are outside this: a fio
server ends its job when its client's connection drops; remote locust workers are not reaped.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil

from drills.fsutil import fsync_dir

WORKLOADS_DIR = "workloads"
START_TOLERANCE_S = 0.05  # create_time() is rounded from clock ticks (10 ms)


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _alive(pid: int, started: float) -> bool:
    """True when `pid` runs and is the process that started at `started` (not a reused pid)."""
    now = _started(pid)
    if now is None or abs(now - started) > START_TOLERANCE_S:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass(frozen=True)
class WorkloadRecord:
    pid: int
    started: float
    label: str
    argv: tuple[str, ...]
    owner_pid: int
    owner_started: float

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "label": self.label, "argv": list(self.argv),
                "owner_pid": self.owner_pid, "owner_started": self.owner_started}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "WorkloadRecord":
        return cls(pid=int(d["pid"]), started=float(d["started"]), label=str(d.get("label", "")),
                   argv=tuple(str(a) for a in d.get("argv", ())), owner_pid=int(d["owner_pid"]),
                   owner_started=float(d["owner_started"]))

    def describe(self) -> str:
        return f"{self.label} (pid {self.pid})"


@dataclass
class ReapReport:
    stopped: list[WorkloadRecord] = field(default_factory=list)  # leftovers that were running, now ended
    failed: list[tuple[WorkloadRecord, str]] = field(default_factory=list)
    forgotten: int = 0  # stale records (process already gone) removed

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = []
        if self.stopped:
            parts.append(f"stopped {len(self.stopped)} workload process(es) left by a crashed run: "
                         + ", ".join(r.describe() for r in self.stopped))
        for r, err in self.failed:
            parts.append(f"could not stop {r.describe()}: {err}; stop it by hand: kill -KILL -- -{r.pid}")
        if not parts:
            parts.append("no workload processes left by a crashed run")
        return "; ".join(parts)


class WorkloadProcesses:
    """The records of this state directory's workload processes (one file per process)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir) / WORKLOADS_DIR

    def register(self, pid: int, label: str, argv: Sequence[str]) -> WorkloadRecord:
        """Record a just-started process; the file is fsync'd so it survives a host crash too."""
        me = os.getpid()
        record = WorkloadRecord(pid=pid, started=_started(pid) or time.time(), label=label,
                                argv=tuple(argv), owner_pid=me, owner_started=_started(me) or 0.0)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{pid}.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(record.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.dir)
        return record

    def forget(self, pid: int) -> None:
        """The process has ended (or been stopped): its record goes."""
        try:
            (self.dir / f"{pid}.json").unlink()
        except FileNotFoundError:
            pass

    def records(self) -> list[WorkloadRecord]:
        out = []
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(WorkloadRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)  # torn by a crash mid-write: nothing can be told from it
        return out

    def leftovers(self) -> list[WorkloadRecord]:
        """Records whose runner is gone and whose process still runs."""
        return [r for r in self.records() if not _alive(r.owner_pid, r.owner_started) and _alive(r.pid, r.started)]

    def reap(self, grace_s: float = 10.0) -> ReapReport:
        """Stop every leftover (SIGINT to its process group: fio and locust end their jobs and exit;
        SIGKILL after `grace_s`), and drop records of processes that are gone. Records of a live
        runner's processes are left alone."""
        report = ReapReport()
        for r in self.records():
            owner_alive = _alive(r.owner_pid, r.owner_started)
            running = _alive(r.pid, r.started)
            if owner_alive and running:
                continue
            if not running:
                self.forget(r.pid)
                report.forgotten += 1
                continue
            err = _stop_group(r, grace_s)
            if err is None:
                self.forget(r.pid)
                report.stopped.append(r)
            else:
                report.failed.append((r, err))
        return report


def _signal_group(r: WorkloadRecord, sig: int) -> None:
    """Signal the process's group when it leads one (started with a session of its own), else the process."""
    try:
        if os.getpgid(r.pid) == r.pid:
            os.killpg(r.pid, sig)
            return
    except ProcessLookupError:
        return
    os.kill(r.pid, sig)


def _stop_group(r: WorkloadRecord, grace_s: float) -> str | None:
    try:
        _signal_group(r, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not _alive(r.pid, r.started):
                return None
            time.sleep(0.1)
        _signal_group(r, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not _alive(r.pid, r.started):
                return None
            time.sleep(0.1)
        return "still running after SIGKILL"
    except ProcessLookupError:
        return None
    except PermissionError as e:
        return f"not allowed: {e}"
