"""Run one batch of restores (or its naive baseline, or raw RBD writes) in a process of its own.

The drill and the benchmark measure a restore process's memory: only a child process that
does nothing else gives an honest peak (VmHWM from /proc/self/status), and only a child can
be given allocator settings such as MALLOC_ARENA_MAX before its first malloc.

    spec = IsolatedRunSpec(mode="engine", target_path=..., pool="rbd", jobs=(...), budget_bytes=256 << 20)
    result = run_isolated(spec, on_rss=lambda t, rss: timeline.sample("restore.rss.bytes", rss, t=t))

Modes:
* ``engine``: the bounded-memory RestoreEngine, every job into a new RBD image.
* ``baseline``: Cinder's restore loop before the bug 1865011 fix (whole object read, whole
  chunk decompressed, synchronous Image.write: librbd copies it), one thread per job.
* ``raw``: no backup at all: each image written sequentially with aio_write of `raw_write_bytes`
  (at most `writes_in_flight` per image), the cluster's raw RBD write rate through the same
  client library, process and image count as a restore run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from drills.restore.compression import decompress_whole
from drills.units import MiB

Mode = Literal["engine", "baseline", "raw"]
StoreKind = Literal["posix", "rados"]


@dataclass(frozen=True)
class BackupRef:
    """Where one backup is: a posix container directory or a RADOS pool, and its object prefix."""

    kind: StoreKind
    location: str  # directory (posix) or pool (rados)
    prefix: str


@dataclass(frozen=True)
class IsolatedJob:
    backup: BackupRef | None  # None in raw mode
    image: str


@dataclass(frozen=True)
class IsolatedRunSpec:
    mode: Mode
    target_path: str
    pool: str  # RBD pool of the images
    jobs: tuple[IsolatedJob, ...]
    budget_bytes: int = 256 * MiB
    concurrency: int = 4
    window_bytes: int = 4 * MiB
    read_piece_bytes: int = 1 * MiB
    writes_in_flight: int = 4
    raw_bytes_per_image: int = 64 * MiB
    raw_write_bytes: int = 4 * MiB
    malloc_env: dict[str, str] = field(default_factory=dict)  # e.g. {"MALLOC_ARENA_MAX": "2"}
    max_rate_bytes_per_s: float = 0.0  # engine: written bytes/s for all restores (0 = unlimited)
    adaptive_rate: bool = False  # engine: back off on slow ops / rising write p99

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "IsolatedRunSpec":
        raw = json.loads(text)
        jobs = tuple(IsolatedJob(BackupRef(**j["backup"]) if j["backup"] else None, j["image"]) for j in raw.pop("jobs"))
        return cls(jobs=jobs, **raw)


@dataclass(frozen=True)
class JobOutcome:
    name: str
    image: str
    status: str  # done | failed | cancelled
    error: str | None = None
    cleanup: str | None = None


@dataclass(frozen=True)
class IsolatedRunResult:
    mode: str
    seconds: float  # the restores (or raw writes) alone, from the first start to the last end
    bytes_logical: int  # volume bytes restored (zero stretches skipped on new images included)
    bytes_written: int  # bytes actually sent to RBD
    vm_hwm_bytes: int  # the child's peak RSS (VmHWM)
    idle_rss_bytes: int  # RSS after imports and connecting, before the first restore: the fixed overhead
    sampled_rss_max_bytes: int  # highest RSS the parent saw (psutil), a cross-check of VmHWM
    peak_reserved_bytes: int  # engine only: the budget's peak reservation
    budget_bytes: int
    threads_max: int
    outcomes: tuple[JobOutcome, ...]
    exit_status: int  # the child's; negative = killed by that signal (-9: likely the OOM killer)
    stderr_tail: str = ""

    @property
    def failed(self) -> tuple[JobOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status != "done")

    @property
    def mb_per_s_logical(self) -> float:
        return self.bytes_logical / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def mb_per_s_written(self) -> float:
        return self.bytes_written / self.seconds / 1e6 if self.seconds else 0.0


def run_isolated(spec: IsolatedRunSpec, on_rss: Callable[[float, int], None] | None = None,
                 sample_interval: float = 0.2, timeout: float | None = None) -> IsolatedRunResult:
    """Run `spec` in a child process; sample its RSS meanwhile; return what it reported."""
    import psutil

    env = dict(os.environ)
    env.update(spec.malloc_env)
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "drills.restore.isolated"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampled_max = [0]
    stop = threading.Event()

    def sample() -> None:
        try:
            child = psutil.Process(proc.pid)
            while not stop.is_set():
                rss = child.memory_info().rss
                sampled_max[0] = max(sampled_max[0], rss)
                if on_rss:
                    on_rss(time.time(), rss)
                stop.wait(sample_interval)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return

    sampler = threading.Thread(target=sample, name="restore-rss", daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(spec.to_json(), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    finally:
        stop.set()
        sampler.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return IsolatedRunResult(spec.mode, 0.0, 0, 0, 0, 0, sampled_max[0], 0, spec.budget_bytes, 0,
                                 tuple(JobOutcome(j.backup.prefix if j.backup else j.image, j.image, "failed",
                                                  f"restore process exited with status {proc.returncode}")
                                       for j in spec.jobs), proc.returncode, err[-2000:])
    data = json.loads(lines[-1])
    outcomes = tuple(JobOutcome(**o) for o in data.pop("outcomes"))
    return IsolatedRunResult(outcomes=outcomes, sampled_rss_max_bytes=sampled_max[0], exit_status=proc.returncode,
                             stderr_tail=err[-2000:], **data)


# --- the child ---------------------------------------------------------------------------

def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


class _ThreadCounter:
    def __init__(self) -> None:
        self.max = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.max = max(self.max, len(os.listdir("/proc/self/task")))

    def __enter__(self) -> "_ThreadCounter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _open_store(ref: BackupRef, connection: Any) -> Any:
    if ref.kind == "posix":
        from drills.restore.store import PosixBackupStore

        return PosixBackupStore(ref.location)
    from drills.restore.rados_store import RadosBackupStore

    return RadosBackupStore(connection.ioctx(ref.location))


def _child_engine(spec: IsolatedRunSpec, connection: Any) -> dict[str, Any]:
    from drills.restore.engine import EngineConfig, RestoreEngine, rbd_job

    jobs = [rbd_job(_open_store(j.backup, connection), j.backup.prefix, connection, spec.pool, j.image,
                    name=f"{j.image}:{j.backup.prefix}") for j in spec.jobs if j.backup]
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=spec.budget_bytes, concurrency=spec.concurrency,
                                        window_bytes=spec.window_bytes, read_piece_bytes=spec.read_piece_bytes,
                                        max_writes_in_flight=spec.writes_in_flight,
                                        max_rate_bytes_per_s=spec.max_rate_bytes_per_s,
                                        adaptive_rate=spec.adaptive_rate),
                           slow_ops_probe=connection.slow_ops_probe() if spec.adaptive_rate else None)
    report = engine.run(jobs)
    outcomes = [JobOutcome(r.name, r.target.rsplit("/", 1)[-1], r.status, r.error, r.cleanup) for r in report.results]
    return dict(seconds=report.seconds, bytes_logical=report.bytes_restored,
                bytes_written=sum(r.bytes_restored - r.bytes_skipped_zero for r in report.results),
                peak_reserved_bytes=report.peak_reserved_bytes, outcomes=[asdict(o) for o in outcomes])


def _baseline_one(job: IsolatedJob, connection: Any, pool: str) -> tuple[int, JobOutcome]:
    """Cinder's ChunkedBackupDriver._restore_v1 before the fix, writing through librbd."""
    import rbd

    assert job.backup is not None
    store = _open_store(job.backup, connection)
    ioctx = connection.ioctx(pool)
    try:
        meta = json.loads(store.get_small(f"{job.backup.prefix}_metadata"))
        size = sum(list(o.values())[0]["length"] for o in meta["objects"])
        rbd.RBD().create(ioctx, job.image, size)
        written = 0
        with rbd.Image(ioctx, job.image) as image:
            for metadata_object in meta["objects"]:
                object_name, obj = list(metadata_object.items())[0]
                body = store.read_range(object_name, 0, store.open_object(object_name))
                decompressed = decompress_whole(body, obj["compression"])
                image.write(decompressed, obj["offset"])  # rbd_write2: librbd copies the buffer
                written += len(decompressed)
            image.flush()
        return written, JobOutcome(job.backup.prefix, job.image, "done")
    except Exception as e:
        return 0, JobOutcome(job.backup.prefix, job.image, "failed", f"{type(e).__name__}: {e}")


def _child_baseline(spec: IsolatedRunSpec, connection: Any) -> dict[str, Any]:
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        done = list(pool.map(lambda j: _baseline_one(j, connection, spec.pool), spec.jobs))
    seconds = time.monotonic() - start
    total = sum(n for n, _ in done)
    return dict(seconds=seconds, bytes_logical=total, bytes_written=total, peak_reserved_bytes=0,
                outcomes=[asdict(o) for _, o in done])


def _raw_one(job: IsolatedJob, connection: Any, spec: IsolatedRunSpec, payload: bytes) -> JobOutcome:
    import rbd

    ioctx = connection.ioctx(spec.pool)
    cond = threading.Condition()
    state = {"in_flight": 0, "error": None}

    def done(completion: Any) -> None:
        with cond:
            state["in_flight"] -= 1
            if completion.get_return_value() < 0:
                state["error"] = os.strerror(-completion.get_return_value())
            cond.notify_all()

    try:
        rbd.RBD().create(ioctx, job.image, spec.raw_bytes_per_image)
        with rbd.Image(ioctx, job.image) as image:
            for offset in range(0, spec.raw_bytes_per_image, spec.raw_write_bytes):
                with cond:
                    while state["in_flight"] >= spec.writes_in_flight:
                        cond.wait()
                    state["in_flight"] += 1
                n = min(spec.raw_write_bytes, spec.raw_bytes_per_image - offset)
                image.aio_write(payload if n == len(payload) else payload[:n], offset, done)
            with cond:
                while state["in_flight"]:
                    cond.wait()
            image.flush()
        if state["error"]:
            return JobOutcome(job.image, job.image, "failed", str(state["error"]))
        return JobOutcome(job.image, job.image, "done")
    except Exception as e:
        return JobOutcome(job.image, job.image, "failed", f"{type(e).__name__}: {e}")


def _child_raw(spec: IsolatedRunSpec, connection: Any) -> dict[str, Any]:
    payload = os.urandom(spec.raw_write_bytes)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        outcomes = list(pool.map(lambda j: _raw_one(j, connection, spec, payload), spec.jobs))
    seconds = time.monotonic() - start
    total = spec.raw_bytes_per_image * sum(o.status == "done" for o in outcomes)
    return dict(seconds=seconds, bytes_logical=total, bytes_written=total, peak_reserved_bytes=0,
                outcomes=[asdict(o) for o in outcomes])


def child_main() -> int:
    spec = IsolatedRunSpec.from_json(sys.stdin.read())
    if spec.mode == "engine":
        from drills.restore.memory import prepare_process_allocator

        prepare_process_allocator()  # as `drill restore` does; MALLOC_* in malloc_env win
    from drills.restore.sinks import RbdConnection

    connection = RbdConnection.from_target(spec.target_path)
    try:
        connection.ioctx(spec.pool)
        idle_rss = _status_bytes("VmRSS")
        with _ThreadCounter() as threads:
            runner = {"engine": _child_engine, "baseline": _child_baseline, "raw": _child_raw}[spec.mode]
            data = runner(spec, connection)
        data.update(mode=spec.mode, vm_hwm_bytes=_status_bytes("VmHWM"), idle_rss_bytes=idle_rss,
                    budget_bytes=spec.budget_bytes if spec.mode == "engine" else 0, threads_max=threads.max)
    finally:
        connection.close()
    print(json.dumps(data), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
