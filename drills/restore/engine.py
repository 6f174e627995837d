"""Restore many chunked Cinder backups at once without letting memory grow with them.

Per restore and data object: ranged reads of the stored object in pieces, streaming
decompression into bounded output windows, md5 (per object) and sha256 (per block) checked
while the data streams, zero windows skipped on freshly created targets, and at most
`max_writes_in_flight` writes outstanding per sink.  Every buffer is reserved from a
`RestoreBudget` before it exists and released when it is gone (for RBD: when the AIO
completion fires, since librbd holds a copy until then).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from drills.restore.budget import Lease, Reservation, RestoreBudget
from drills.restore.compression import (ZSTD_FRAME_HEADER_MAX_BYTES, codec_needs, decode_windows,
                                        zstd_window_size)
from drills.restore.errors import (BackupFormatError, CorruptObjectError, RestoreCancelled, RestoreError,
                                   UnsupportedBackupError)
from drills.restore.format import BackupManifest, BackupObject, Sha256Index, read_manifest
from drills.restore.sinks import FileSink, RbdConnection, RbdSink, Sink
from drills.restore.store import BackupStore

MiB = 1024 * 1024
Status = Literal["pending", "preparing", "queued", "running", "done", "failed", "cancelled"]
SinkOpener = Callable[[int], Sink]  # volume size -> an opened sink


@dataclass(frozen=True)
class EngineConfig:
    memory_budget_bytes: int = 256 * MiB
    concurrency: int = 4
    read_piece_bytes: int = 1 * MiB  # one ranged read of a compressed object
    window_bytes: int = 4 * MiB  # one decompressed output window (and one write)
    zero_skip_granularity_bytes: int = 1 * MiB  # as Cinder's _write_nonzero
    max_writes_in_flight: int = 4  # per sink
    skip_zeros: bool = True  # only ever applied to sinks that report is_new
    zstd_max_window_bytes: int = 1 << 27  # refuse zstd frames that need more decoder memory

    def __post_init__(self) -> None:
        if min(self.memory_budget_bytes, self.concurrency, self.read_piece_bytes, self.window_bytes,
               self.zero_skip_granularity_bytes, self.max_writes_in_flight) <= 0:
            raise ValueError("engine sizes and counts must be positive")


@dataclass(frozen=True)
class RestoreJob:
    """One backup (a store and an object prefix) into one target."""

    store: BackupStore
    prefix: str
    open_sink: SinkOpener
    target: str  # for reports
    sink_copy_factor: int = 0  # copies the sink keeps of an in-flight buffer (RBD: 1)
    name: str = ""  # label in reports; the prefix if empty

    @property
    def label(self) -> str:
        return self.name or self.prefix


def file_job(store: BackupStore, prefix: str, path: str, *, force: bool = False, name: str = "") -> RestoreJob:
    label = name or prefix
    return RestoreJob(store, prefix, lambda size: FileSink(path, size, force=force, owner=label), str(path),
                      FileSink.copy_factor, name)


def rbd_job(store: BackupStore, prefix: str, connection: RbdConnection, pool: str, image: str, *,
            force: bool = False, name: str = "") -> RestoreJob:
    """A restore into RBD image POOL/IMAGE through a shared connection (created at admission)."""
    label = name or prefix
    pool = pool or connection.default_pool
    return RestoreJob(store, prefix, lambda size: connection.open_sink(pool, image, size, force=force, owner=label),
                      f"rbd:{pool}/{image}", RbdSink.copy_factor, name)


@dataclass(frozen=True)
class RestoreResult:
    name: str
    prefix: str
    target: str
    status: Status
    bytes_total: int
    bytes_restored: int  # decompressed bytes verified and written or skipped as zero
    bytes_skipped_zero: int
    seconds: float  # from admission to the end
    queued_seconds: float
    working_set_bytes: int
    error: str | None = None
    error_type: str | None = None
    object_name: str | None = None
    cleanup: str | None = None  # what was done to the target after a failure


@dataclass(frozen=True)
class RestoreReport:
    results: tuple[RestoreResult, ...]
    budget_bytes: int
    peak_reserved_bytes: int
    peak_in_use_bytes: int
    admission_order: tuple[str, ...]
    seconds: float
    interrupted: bool

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status == "done" for r in self.results)

    @property
    def unfinished(self) -> tuple[RestoreResult, ...]:
        return tuple(r for r in self.results if r.status != "done")

    @property
    def bytes_restored(self) -> int:
        return sum(r.bytes_restored for r in self.results)


@dataclass(frozen=True)
class RestoreProgress:
    name: str
    target: str
    status: Status
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class ProgressSnapshot:
    restores: tuple[RestoreProgress, ...]
    queue_length: int
    reserved_bytes: int
    budget_bytes: int
    elapsed: float


@dataclass
class _JobState:
    job: RestoreJob
    status: Status = "pending"
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_skipped_zero: int = 0
    working_set: int = 0
    enqueued_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0
    error: RestoreError | None = None
    error_text: str | None = None
    cleanup: str | None = None

    def result(self) -> RestoreResult:
        end = self.ended_at or time.monotonic()
        return RestoreResult(
            name=self.job.label, prefix=self.job.prefix, target=self.job.target, status=self.status,
            bytes_total=self.bytes_total, bytes_restored=self.bytes_done, bytes_skipped_zero=self.bytes_skipped_zero,
            seconds=(end - self.started_at) if self.started_at else 0.0,
            queued_seconds=((self.started_at or end) - self.enqueued_at) if self.enqueued_at else 0.0,
            working_set_bytes=self.working_set, error=self.error_text,
            error_type=type(self.error).__name__ if self.error else None,
            object_name=(self.error.object_name or None) if self.error else None, cleanup=self.cleanup)


@dataclass(frozen=True)
class _ObjectPlan:
    obj: BackupObject
    stored_bytes: int
    piece_bytes: int
    fixed_bytes: int  # digests + decoder state + input pieces, held for the whole object


@dataclass(frozen=True)
class _Plan:
    manifest: BackupManifest
    index: Sha256Index
    objects: tuple[_ObjectPlan, ...]
    window_reserve_bytes: int  # one output window plus the sink's copy of it
    working_set_bytes: int


@dataclass
class _InFlight:
    """Writes a restore has outstanding; completions may arrive on librbd's threads."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    count: int = 0


def is_all_zero(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """True if data[start:end] holds only zero bytes; scans in place, no copy."""
    end = len(data) if end is None else end
    # Check the ends first: most non-zero data is rejected without a full scan.
    return end > start and not data[start] and not data[end - 1] and data.count(0, start, end) == end - start


def nonzero_runs(data: bytes, granularity: int, volume_offset: int = 0) -> list[tuple[int, int]]:
    """[start, end) ranges of `data` to write, skipping all-zero granules.

    Granules are aligned to the volume (not to the window), so where a zero stretch is
    skipped does not depend on how the decompressor happened to cut its output.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    while start < len(data):
        end = min(start + granularity - (volume_offset + start) % granularity, len(data))
        if not is_all_zero(data, start, end):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        start = end
    return runs


class RestoreEngine:
    """Run restores concurrently under one memory budget.  One engine, one run."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.budget = RestoreBudget(config.memory_budget_bytes)
        self._cancel = threading.Event()
        self._states: list[_JobState] = []
        self._started = 0.0

    def cancel(self) -> None:
        """Stop every restore at its next window; targets are removed or flagged."""
        self._cancel.set()

    def snapshot(self) -> ProgressSnapshot:
        stats = self.budget.stats()
        return ProgressSnapshot(
            tuple(RestoreProgress(s.job.label, s.job.target, s.status, s.bytes_done, s.bytes_total)
                  for s in self._states),
            stats.queue_length, stats.reserved_bytes, stats.limit_bytes,
            time.monotonic() - self._started if self._started else 0.0)

    def run(self, jobs: Sequence[RestoreJob], on_progress: Callable[[ProgressSnapshot], None] | None = None,
            progress_interval: float = 0.25) -> RestoreReport:
        self._started = time.monotonic()
        self._states = [_JobState(job) for job in jobs]
        # Restores join the admission queue in job order: each waits for the previous
        # one's turn, so FIFO admission does not depend on thread scheduling.
        turns = [threading.Event() for _ in range(len(jobs) + 1)]
        if jobs:
            turns[0].set()
        interrupted = False
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.config.concurrency,
                                                     thread_name_prefix="restore")
        futures = [pool.submit(self._restore_one, state, turns[i], turns[i + 1])
                   for i, state in enumerate(self._states)]
        try:
            pending = set(futures)
            while pending:
                _done, pending = concurrent.futures.wait(pending, timeout=progress_interval)
                if on_progress:
                    on_progress(self.snapshot())
        except KeyboardInterrupt:
            interrupted = True
            self._cancel.set()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for state, future in zip(self._states, futures):
            if future.cancelled() or state.status in ("pending", "preparing", "queued", "running"):
                state.status = "cancelled"
                state.error_text = state.error_text or "not finished: the run was interrupted"
        if on_progress:
            on_progress(self.snapshot())
        stats = self.budget.stats()
        return RestoreReport(tuple(s.result() for s in self._states), stats.limit_bytes,
                             stats.peak_reserved_bytes, stats.peak_in_use_bytes,
                             tuple(self.budget.admission_order), time.monotonic() - self._started, interrupted)

    # -- one restore ------------------------------------------------------------------
    def _restore_one(self, state: _JobState, my_turn: threading.Event, next_turn: threading.Event) -> None:
        job = state.job
        lease: Lease | None = None
        try:
            state.status = "preparing"
            try:
                plan = self._plan(job)
                state.bytes_total = plan.manifest.volume_size
                state.working_set = plan.working_set_bytes
                while not my_turn.wait(0.05):
                    self._check_cancel(job)
                self._check_cancel(job)
                state.enqueued_at = time.monotonic()
                ticket = self.budget.enqueue(job.label, plan.working_set_bytes)
            finally:
                next_turn.set()
            state.status = "queued"
            lease = ticket.wait(self._cancel)
            state.status = "running"
            state.started_at = time.monotonic()
            sink = job.open_sink(plan.manifest.volume_size)
            try:
                self._copy(job, plan, sink, lease, state)
                sink.commit()
            except BaseException:
                try:
                    state.cleanup = sink.abort()
                except Exception as cleanup_error:  # report both; the restore failed anyway
                    state.cleanup = f"cleanup failed: {cleanup_error}"
                raise
            state.status = "done"
        except RestoreCancelled as e:
            state.status, state.error, state.error_text = "cancelled", e.located(backup=job.label), str(e)
        except RestoreError as e:
            state.status, state.error, state.error_text = "failed", e.located(backup=job.label), str(e)
        except Exception as e:  # an unexpected bug still fails only this restore
            error = RestoreError(f"{type(e).__name__}: {e}", backup=job.label)
            state.status, state.error, state.error_text = "failed", error, str(error)
        finally:
            if lease is not None:
                lease.close()
            state.ended_at = time.monotonic()

    def _check_cancel(self, job: RestoreJob, object_name: str = "") -> None:
        if self._cancel.is_set():
            raise RestoreCancelled("cancelled", backup=job.label, object_name=object_name)

    def _plan(self, job: RestoreJob) -> _Plan:
        """Read and check metadata; find every object; size the working set."""
        cfg = self.config
        manifest = read_manifest(job.store, job.prefix)
        index = Sha256Index(job.store, job.prefix)
        block = index.info.block_size
        expected_digests = -(-manifest.volume_size // block)
        if index.info.digest_count != expected_digests:
            raise BackupFormatError(
                f"sha256 file has {index.info.digest_count} digests, the volume of {manifest.volume_size} bytes "
                f"needs {expected_digests} of {block}-byte blocks", backup=job.label, object_name=index.name)
        window_reserve = cfg.window_bytes * (1 + job.sink_copy_factor)
        plans = []
        for obj in manifest.objects:
            try:
                stored = job.store.open_object(obj.name)
            except RestoreError as e:
                raise e.located(backup=job.label, object_name=obj.name)
            if stored == 0:
                raise CorruptObjectError("object is empty", backup=job.label, object_name=obj.name)
            if obj.offset % block:
                raise UnsupportedBackupError(f"object offset {obj.offset} is not a multiple of the {block}-byte "
                                             "sha block", backup=job.label, object_name=obj.name)
            zstd_window = 0
            if obj.codec == "zstd":
                head = job.store.read_range(obj.name, 0, min(stored, ZSTD_FRAME_HEADER_MAX_BYTES))
                zstd_window = zstd_window_size(head, object_name=obj.name)
                if zstd_window > cfg.zstd_max_window_bytes:
                    raise UnsupportedBackupError(f"zstd window of {zstd_window} bytes exceeds the "
                                                 f"{cfg.zstd_max_window_bytes}-byte limit",
                                                 backup=job.label, object_name=obj.name)
            piece = cfg.window_bytes if obj.codec == "none" else min(cfg.read_piece_bytes, stored)
            needs = codec_needs(obj.codec, piece, zstd_window)
            blocks = -(-obj.length // block)
            fixed = index.memory_bytes(blocks) + needs.state_bytes + needs.input_bytes
            plans.append(_ObjectPlan(obj, stored, piece, fixed))
        working_set = max(p.fixed_bytes for p in plans) + window_reserve
        return _Plan(manifest, index, tuple(plans), window_reserve, working_set)

    def _copy(self, job: RestoreJob, plan: _Plan, sink: Sink, lease: Lease, state: _JobState) -> None:
        in_flight = _InFlight()
        try:
            for object_plan in plan.objects:
                self._check_cancel(job, object_plan.obj.name)
                try:
                    self._restore_object(job, plan, object_plan, sink, lease, state, in_flight)
                except RestoreError as e:
                    raise e.located(backup=job.label, object_name=object_plan.obj.name)
            sink.flush()
        finally:
            with in_flight.cond:  # no buffer may outlive the restore's lease
                while in_flight.count:
                    in_flight.cond.wait(0.1)

    def _restore_object(self, job: RestoreJob, plan: _Plan, op: _ObjectPlan, sink: Sink, lease: Lease,
                        state: _JobState, in_flight: _InFlight) -> None:
        cfg, obj, store = self.config, op.obj, job.store
        block = plan.index.info.block_size
        blocks = -(-obj.length // block)
        skip_zeros = cfg.skip_zeros and sink.is_new
        with lease.reserve(op.fixed_bytes, "digests, decoder state and input pieces", cancel=self._cancel):
            digests = plan.index.digests(obj.offset // block, blocks)
            position = 0

            def read_piece() -> bytes:
                nonlocal position
                want = min(op.piece_bytes, op.stored_bytes - position)
                if want <= 0:
                    return b""
                data = store.read_range(obj.name, position, want)
                if len(data) != want:
                    raise CorruptObjectError(f"object is truncated: read {len(data)} of {want} bytes at "
                                             f"{position}, expected {op.stored_bytes} in all", object_name=obj.name)
                position += want
                return data

            md5 = hashlib.md5(usedforsecurity=False)
            block_hash = hashlib.sha256()
            block_fill = 0
            block_number = 0
            produced = 0
            windows = decode_windows(obj.codec, read_piece, cfg.window_bytes, piece_bytes=op.piece_bytes,
                                     zstd_max_window_bytes=cfg.zstd_max_window_bytes, object_name=obj.name)
            try:
                while True:
                    self._check_cancel(job, obj.name)
                    # The window's reservation exists before the window does.
                    reservation = lease.reserve(plan.window_reserve_bytes, "output window",
                                                may_borrow=in_flight.count > 0, cancel=self._cancel)
                    try:
                        window = next(windows, None)
                        if window is None:
                            reservation.release()
                            break
                        if produced + len(window) > obj.length:
                            raise CorruptObjectError(f"decompresses to more than the {obj.length} bytes the "
                                                     "metadata records", object_name=obj.name)
                        md5.update(window)
                        view = memoryview(window)
                        taken = 0
                        while taken < len(view):
                            step = min(block - block_fill, len(view) - taken)
                            block_hash.update(view[taken:taken + step])
                            block_fill += step
                            taken += step
                            if block_fill == block:
                                self._check_block(block_hash, digests, block_number, obj)
                                block_hash, block_fill, block_number = hashlib.sha256(), 0, block_number + 1
                        runs = nonzero_runs(window, cfg.zero_skip_granularity_bytes, obj.offset + produced) if skip_zeros \
                            else [(0, len(window))]
                        skipped = len(window) - sum(end - start for start, end in runs)
                        self._write_runs(sink, obj.offset + produced, window, runs, reservation, in_flight, job)
                    except BaseException:
                        reservation.release()
                        raise
                    produced += len(window)
                    state.bytes_done += len(window)
                    state.bytes_skipped_zero += skipped
            finally:
                windows.close()
            if produced != obj.length:
                raise CorruptObjectError(f"decompressed to {produced} bytes, the metadata records {obj.length} "
                                         "(truncated object?)", object_name=obj.name)
            if block_fill:
                self._check_block(block_hash, digests, block_number, obj)
                block_number += 1
            if block_number != blocks:
                raise CorruptObjectError(f"covered {block_number} sha blocks, expected {blocks}", object_name=obj.name)
            if obj.md5 is not None and md5.hexdigest() != obj.md5:
                raise CorruptObjectError(f"md5 {md5.hexdigest()} does not match the metadata's {obj.md5}",
                                         object_name=obj.name)

    @staticmethod
    def _check_block(block_hash: "hashlib._Hash", digests: bytes, block_number: int, obj: BackupObject) -> None:
        if block_hash.digest() != digests[block_number * 32:(block_number + 1) * 32]:
            raise CorruptObjectError(f"sha256 of the object's block {block_number} does not match the sha256 file",
                                     object_name=obj.name)

    def _write_runs(self, sink: Sink, volume_offset: int, window: bytes, runs: list[tuple[int, int]],
                    reservation: "Reservation", in_flight: _InFlight, job: RestoreJob) -> None:
        """Hand the window's non-zero runs to the sink; release the window when all are done."""
        if not runs:
            reservation.release()
            return
        remaining = [len(runs)]
        guard = threading.Lock()

        def one_done() -> None:
            with guard:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                reservation.release()
            with in_flight.cond:
                in_flight.count -= 1
                in_flight.cond.notify_all()

        view = memoryview(window)
        for index, (start, end) in enumerate(runs):
            with in_flight.cond:
                while in_flight.count >= self.config.max_writes_in_flight:
                    if self._cancel.is_set():
                        break
                    in_flight.cond.wait(0.05)
                in_flight.count += 1
            data = window if (start, end) == (0, len(window)) else view[start:end]
            try:
                sink.write(volume_offset + start, data, one_done)
            except BaseException:
                # Writes not yet issued will never call one_done: account for them here.
                for _ in runs[index + 1:]:
                    one_done()
                raise

