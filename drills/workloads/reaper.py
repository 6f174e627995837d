"""Workload processes a crashed runner left behind, found and stopped.

A drill's fio job runs for up to 24 h and its locust master until told to stop; the runner stops
them at the end. A runner killed with SIGKILL (or an OOM kill, or a lost terminal) cannot, and
its clients keep loading the cluster: on staging that is load nobody asked for, and on the
sandbox it biases the next run's figures. So every workload process is recorded before it runs
and forgotten once it has ended:

  <state_dir>/workloads/<pid>.json
    {"pid": 4242, "started": 1700000000.12, "label": "fio:drill-x-randwrite", "argv": [...],
     "tag": "3f2a...", "owner_pid": 4200, "owner_started": 1699999990.5}

Each process is started with a tag in its environment (CEPH_DRILLS_WORKLOAD=<random id>), which
every process it forks or runs inherits. That is how the whole workload is found again: fio's
jobs are forked children that call setsid(), and when a killed runner's pipe breaks, fio's main
process dies of SIGPIPE at its next status report; a job that outlives it (seen with the null
engine; with the rbd engine fio ended by itself) is found by neither the pid nor the process
group, but by the tag. locust writes to a file, so it runs on until stopped.

A record is a *leftover* when its owner (the runner) is gone and a process with its tag still
runs. `drill heal`, the start of every drill session and `drill sandbox down` stop leftovers
(SIGINT, so fio ends its jobs and locust its users; SIGKILL after a grace) and say so. A process
is only signalled when it carries the tag and started no earlier than the recorded process, so a
reused pid is never signalled.

Remote processes are outside this: a fio server keeps running its job after the client was
killed (seen here: still running 25 s later), and locust workers started over SSH are not reaped.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psutil

from drills.fsutil import fsync_dir

WORKLOADS_DIR = "workloads"
START_TOLERANCE_S = 0.05  # create_time() is rounded from clock ticks (10 ms)
TAG_ENV = "CEPH_DRILLS_WORKLOAD"


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def _alive(pid: int, started: float) -> bool:
    """True when `pid` runs and is the process that started at `started` (not a reused pid)."""
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - started) <= START_TOLERANCE_S and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def new_tag() -> str:
    """A fresh tag for one workload process: put it in the environment as TAG_ENV before starting it."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class WorkloadRecord:
    pid: int
    started: float
    label: str
    argv: tuple[str, ...]
    tag: str
    owner_pid: int
    owner_started: float

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started, "label": self.label, "argv": list(self.argv),
                "tag": self.tag, "owner_pid": self.owner_pid, "owner_started": self.owner_started}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "WorkloadRecord":
        return cls(pid=int(d["pid"]), started=float(d["started"]), label=str(d.get("label", "")),
                   argv=tuple(str(a) for a in d.get("argv", ())), tag=str(d["tag"]), owner_pid=int(d["owner_pid"]),
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
            parts.append(f"could not stop {r.describe()}: {err}; stop it by hand (its processes carry "
                         f"{TAG_ENV}={r.tag} in their environment)")
        if not parts:
            parts.append("no workload processes left by a crashed run")
        return "; ".join(parts)


class WorkloadProcesses:
    """The records of this state directory's workload processes (one file per process)."""

    def __init__(self, state_dir: str | Path):
        self.dir = Path(state_dir) / WORKLOADS_DIR

    def register(self, pid: int, label: str, argv: Sequence[str], tag: str) -> WorkloadRecord:
        """Record a just-started process, started with `tag` as TAG_ENV in its environment; the file is
        fsync'd so it survives a host crash too."""
        me = os.getpid()
        record = WorkloadRecord(pid=pid, started=_started(pid) or time.time(), label=label,
                                argv=tuple(argv), tag=tag, owner_pid=me, owner_started=_started(me) or 0.0)
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
        return [r for r in self.records() if not _alive(r.owner_pid, r.owner_started) and _running(r)]

    def reap(self, grace_s: float = 10.0) -> ReapReport:
        """Stop every leftover (SIGINT to each of its processes: fio and locust end their jobs and exit;
        SIGKILL after `grace_s`), and drop records of processes that are gone. Records of a live
        runner's processes are left alone."""
        report = ReapReport()
        for r in self.records():
            owner_alive = _alive(r.owner_pid, r.owner_started)
            running = bool(_running(r))
            if owner_alive and running:
                continue
            if not running:
                self.forget(r.pid)
                report.forgotten += 1
                continue
            err = _stop_all(r, grace_s)
            if err is None:
                self.forget(r.pid)
                report.stopped.append(r)
            else:
                report.failed.append((r, err))
        return report


def _running(r: WorkloadRecord) -> list[psutil.Process]:
    """The record's processes that still run: the recorded one and whatever it forked or ran (they carry
    its tag), started no earlier than it."""
    out = []
    for p in psutil.process_iter(["status", "create_time"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or p.info["create_time"] < r.started - START_TOLERANCE_S:
                continue
            if p.environ().get(TAG_ENV) == r.tag:
                out.append(p)
        except psutil.Error:
            continue
    return out


def _stop_all(r: WorkloadRecord, grace_s: float) -> str | None:
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        procs = _running(r)
        for p in procs:
            try:
                p.send_signal(sig)  # psutil checks the pid still names the process it found
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied as e:
                return f"not allowed: {e}"
        # polled, not psutil.wait_procs: that reaps a process that is the caller's own child, and its
        # exit status with it
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _running(r):
                return None
            time.sleep(0.1)
    return "still running after SIGKILL: " + ", ".join(f"pid {p.pid}" for p in _running(r))
