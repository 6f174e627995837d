"""Restore many chunked Cinder backups at once without letting memory grow with them.

Per restore and data object: ranged reads of the stored object in pieces, streaming
decompression into bounded output windows, md5 (per object) and sha256 (per block) checked
while the data streams, zero windows skipped on freshly created targets, and at most
`max_writes_in_flight` writes outstanding per sink.  Every buffer is reserved from a
`RestoreBudget` before it exists and released when it is gone (for RBD: when the AIO
completion fires, since librbd holds a copy until then).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from drills.restore.budget import Lease, Reservation, RestoreBudget
from drills.restore.chain import ChainError, ChainLink, check_chain
from drills.restore.compression import (ZSTD_FRAME_HEADER_MAX_BYTES, codec_needs, open_decoder,
                                        zstd_window_size)
from drills.restore.errors import (BackupFormatError, CorruptObjectError, RestoreCancelled, RestoreError,
                                   UnsupportedBackupError)
from drills.restore.format import BackupManifest, BackupObject, Sha256Index, read_manifest
from drills.restore.journal import journal_key as make_journal_key
from drills.restore.sinks import FileSink, RbdConnection, RbdSink, Sink
from drills.restore.memory import RESTORE_THREAD_STACK_BYTES
from drills.restore.store import BackupStore, ObjectReader, store_reads_into
from drills.restore.throttle import AdaptiveThrottle, LatencyWindow, SlowOpsProbe, ThrottleStep, TokenBucket
from drills.units import MiB

# Per running restore besides its buffers, decoder and stack: its Python objects (job state,
# plan, hash objects, sink), the thread's malloc tcache.  Measured well below this with
# benchmarks/restore_rss_matrix.py (docs/restore.md); reserved so that it is inside the budget.
RESTORE_OVERHEAD_BYTES = 256 * 1024
CHAIN_CHECK_BATCH_BLOCKS = 4096  # digests compared per step when checking a chain's unchanged blocks
Status = Literal["pending", "preparing", "queued", "running", "done", "failed", "cancelled"]
SinkOpener = Callable[[int, str], Sink]  # (volume size, journal key) -> an opened sink


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
    max_rate_bytes_per_s: float = 0.0  # written bytes per second, all restores together (0 = unlimited)
    adaptive_rate: bool = False  # AIMD below max_rate (or the first interval's rate): slow ops, write p99
    adaptive_interval_seconds: float = 2.0

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
    sink_copy_factor: int = 0  # copies the sink keeps of an in-flight buffer (RBD: 2)
    name: str = ""  # label in reports; the prefix if empty
    sink_overhead_bytes: int = 0  # what an open target costs besides buffers (RBD: librbd's image state)
    parents: tuple[ChainLink, ...] = ()  # an incremental chain: the older links, full backup first

    @property
    def label(self) -> str:
        return self.name or self.prefix

    @property
    def links(self) -> tuple[ChainLink, ...]:
        """Every backup this restore writes, oldest first (this job's backup last)."""
        return (*self.parents, ChainLink(self.store, self.prefix))


def file_job(store: BackupStore, prefix: str, path: str, *, force: bool = False, name: str = "",
             parents: Sequence[ChainLink] = (), resume: bool = False) -> RestoreJob:
    """A restore into a file; with `resume`, an interrupted restore's journaled pieces are skipped."""
    label = name or prefix
    return RestoreJob(store, prefix,
                      lambda size, key: FileSink(path, size, force=force, owner=label, resume=resume, journal_key=key),
                      str(path), FileSink.copy_factor, name, FileSink.overhead_bytes, tuple(parents))


def chain_file_job(chain: Sequence[ChainLink], path: str, *, force: bool = False, name: str = "",
                   resume: bool = False) -> RestoreJob:
    """Restore a full backup and its incrementals (oldest first) into one file."""
    if not chain:
        raise ValueError("an empty chain")
    *parents, last = chain
    return file_job(last.store, last.prefix, path, force=force, name=name, parents=parents, resume=resume)


def rbd_job(store: BackupStore, prefix: str, connection: RbdConnection, pool: str, image: str, *,
            force: bool = False, name: str = "", parents: Sequence[ChainLink] = (),
            resume: bool = False) -> RestoreJob:
    """A restore into RBD image POOL/IMAGE through a shared connection (created at admission); with
    `resume`, the pieces an interrupted restore journaled in the image's metadata are skipped."""
    label = name or prefix
    pool = pool or connection.default_pool
    return RestoreJob(store, prefix,
                      lambda size, key: connection.open_sink(pool, image, size, force=force, owner=label,
                                                             resume=resume, journal_key=key),
                      f"rbd:{pool}/{image}", RbdSink.copy_factor, name, RbdSink.overhead_bytes, tuple(parents))


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
    bytes_resumed: int = 0  # skipped: journaled as written and verified by an interrupted run
    pieces_total: int = 0  # backup objects of every link
    pieces_resumed: int = 0  # of which skipped (journaled by an interrupted run)


@dataclass(frozen=True)
class RestoreReport:
    results: tuple[RestoreResult, ...]
    budget_bytes: int
    peak_reserved_bytes: int
    peak_in_use_bytes: int
    admission_order: tuple[str, ...]
    seconds: float
    interrupted: bool
    peak_held_bytes: int = 0  # in-use plus idle pooled buffers at their peak (<= budget)
    pool_allocations: int = 0  # pooled buffers created
    pool_reuses: int = 0  # reservations served by an idle pooled buffer
    final_rate_bytes_per_s: float = 0.0  # the rate limit at the end (0 = unlimited)
    throttle_steps: tuple[ThrottleStep, ...] = ()  # the adaptive mode's decisions

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
    bytes_resumed: int = 0
    pieces_total: int = 0
    pieces_resumed: int = 0
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
            bytes_resumed=self.bytes_resumed, pieces_total=self.pieces_total, pieces_resumed=self.pieces_resumed,
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
    input_buffer_bytes: int  # the pooled input piece (0: read straight into the window)
    fixed_bytes: int  # digests + decoder state + input piece + scratch, held for the whole object


@dataclass(frozen=True)
class _LinkPlan:
    """One backup of a restore: the only one, or one link of a chain (full first)."""

    link: ChainLink
    manifest: BackupManifest
    index: Sha256Index
    objects: tuple[_ObjectPlan, ...]
    may_skip_zeros: bool  # nothing older lies underneath (the full backup)


@dataclass(frozen=True)
class _Plan:
    manifest: BackupManifest  # the full backup's
    links: tuple[_LinkPlan, ...]
    window_reserve_bytes: int  # one output window plus the sink's copies of it
    working_set_bytes: int  # stack + overhead + the largest object's fixed bytes + one window
    thread_bytes: int  # the restore thread's stack and per-restore overhead
    volume_size: int
    bytes_to_restore: int  # every link's objects
    chain_check_bytes: int  # digests of two links, one batch, while checking unchanged blocks
    verify_bytes: int  # the read-back check after a resume: one window and its digests
    journal_key: str  # what a resume journal must belong to: every link's backup_id and prefix, the size


def _piece_key(link_plan: "_LinkPlan", object_plan: _ObjectPlan) -> str:
    """A journal entry: one object of one link, with its md5 (a changed object is not skipped)."""
    obj = object_plan.obj
    return f"{link_plan.link.prefix}/{obj.name}/{obj.offset}/{obj.length}/{obj.md5}"


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


def nonzero_runs(data: bytes | bytearray, granularity: int, volume_offset: int = 0,
                 length: int | None = None) -> list[tuple[int, int]]:
    """[start, end) ranges of `data[:length]` to write, skipping all-zero granules.

    Granules are aligned to the volume (not to the window), so where a zero stretch is
    skipped does not depend on how the decompressor happened to cut its output.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    length = len(data) if length is None else length
    while start < length:
        end = min(start + granularity - (volume_offset + start) % granularity, length)
        if not is_all_zero(data, start, end):
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
        start = end
    return runs


class RestoreEngine:
    """Run restores concurrently under one memory budget.  One engine, one run."""

    def __init__(self, config: EngineConfig, *, slow_ops_probe: SlowOpsProbe | None = None) -> None:
        self.config = config
        self.budget = RestoreBudget(config.memory_budget_bytes)
        self.bucket = TokenBucket(config.max_rate_bytes_per_s,
                                  max(config.window_bytes, int(config.max_rate_bytes_per_s * 0.25)))
        self.latencies = LatencyWindow()
        self.throttle: AdaptiveThrottle | None = None
        if config.adaptive_rate:
            self.throttle = AdaptiveThrottle(self.bucket, self.latencies, ceiling_bytes_per_s=config.max_rate_bytes_per_s,
                                             slow_ops_probe=slow_ops_probe, interval=config.adaptive_interval_seconds)
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
        self._threads: list[threading.Thread] = []
        interrupted = False
        # One dispatcher plans every restore, then admits them in job order (FIFO) and starts
        # one thread per admitted restore: a thread's stack exists only once the budget has it.
        dispatcher = threading.Thread(target=self._dispatch, name="restore-dispatch", daemon=True)
        if self.throttle is not None:
            self.throttle.start()
        dispatcher.start()
        try:
            while dispatcher.is_alive() or any(t.is_alive() for t in list(self._threads)):
                dispatcher.join(progress_interval)
                if not dispatcher.is_alive():
                    for thread in list(self._threads):
                        thread.join(progress_interval)
                        if thread.is_alive():
                            break
                if on_progress:
                    on_progress(self.snapshot())
        except KeyboardInterrupt:
            interrupted = True
            self._cancel.set()
        finally:
            dispatcher.join()
            for thread in list(self._threads):
                thread.join()
            if self.throttle is not None:
                self.throttle.stop()
            self.budget.drain_pool()
        for state in self._states:
            if state.status in ("pending", "preparing", "queued", "running"):
                state.status = "cancelled"
                state.error_text = state.error_text or "not finished: the run was interrupted"
        if on_progress:
            on_progress(self.snapshot())
        stats = self.budget.stats()
        return RestoreReport(tuple(s.result() for s in self._states), stats.limit_bytes,
                             stats.peak_reserved_bytes, stats.peak_in_use_bytes,
                             tuple(self.budget.admission_order), time.monotonic() - self._started, interrupted,
                             stats.peak_held_bytes, stats.pool_allocations, stats.pool_reuses,
                             self.bucket.rate, tuple(self.throttle.steps) if self.throttle else ())

    # -- one restore ------------------------------------------------------------------
    @staticmethod
    def _fail(state: _JobState, error: Exception) -> None:
        job = state.job
        if isinstance(error, RestoreCancelled):
            state.status, state.error, state.error_text = "cancelled", error.located(backup=job.label), str(error)
        elif isinstance(error, RestoreError):
            state.status, state.error, state.error_text = "failed", error.located(backup=job.label), str(error)
        else:  # an unexpected bug still fails only this restore
            wrapped = RestoreError(f"{type(error).__name__}: {error}", backup=job.label)
            state.status, state.error, state.error_text = "failed", wrapped, str(wrapped)
        state.ended_at = time.monotonic()

    def _dispatch(self) -> None:
        planned: list[tuple[_JobState, _Plan]] = []
        # Plan every restore first: a backup that is bad, or needs more than the whole budget,
        # is refused before any restore starts.
        for state in self._states:
            state.status = "preparing"
            try:
                self._check_cancel(state.job)
                plan = self._plan(state.job)
                state.bytes_total = plan.bytes_to_restore
                state.pieces_total = sum(len(link.objects) for link in plan.links)
                state.working_set = plan.working_set_bytes
                self.budget.check_fits(state.job.label, plan.working_set_bytes)
            except Exception as e:
                self._fail(state, e)
                continue
            state.status = "queued"
            state.enqueued_at = time.monotonic()
            planned.append((state, plan))
        slots = threading.BoundedSemaphore(self.config.concurrency)
        for state, plan in planned:
            lease: Lease | None = None
            try:
                while not slots.acquire(timeout=0.05):
                    self._check_cancel(state.job)
                try:
                    self._check_cancel(state.job)
                    lease = self.budget.admit(state.job.label, plan.working_set_bytes, self._cancel)
                    thread_reservation = lease.reserve(plan.thread_bytes, "restore thread stack and state")
                    thread = threading.Thread(target=self._restore_admitted, name=f"restore-{len(self._threads)}",
                                              args=(state, plan, lease, thread_reservation, slots), daemon=True)
                    previous = threading.stack_size(RESTORE_THREAD_STACK_BYTES)
                    try:
                        thread.start()
                    finally:
                        threading.stack_size(previous)
                    self._threads.append(thread)
                except BaseException:
                    slots.release()
                    raise
            except Exception as e:
                if lease is not None and not lease.closed:
                    lease.close()
                self._fail(state, e)

    def _restore_admitted(self, state: _JobState, plan: _Plan, lease: Lease, thread_reservation: Reservation,
                          slots: threading.BoundedSemaphore) -> None:
        job = state.job
        try:
            state.status = "running"
            state.started_at = time.monotonic()
            sink = job.open_sink(plan.volume_size, plan.journal_key)
            try:
                self._copy(job, plan, sink, lease, state)
                sink.commit()
            except BaseException as e:
                try:
                    # A cancelled restore keeps what a resume can use; a failed one leaves nothing.
                    state.cleanup = sink.abort(keep_for_resume=isinstance(e, RestoreCancelled))
                except Exception as cleanup_error:  # report both; the restore failed anyway
                    state.cleanup = f"cleanup failed: {cleanup_error}"
                raise
            state.status = "done"
            state.ended_at = time.monotonic()
        except Exception as e:
            self._fail(state, e)
        finally:
            thread_reservation.release()
            lease.close()
            slots.release()

    def _check_cancel(self, job: RestoreJob, object_name: str = "") -> None:
        if self._cancel.is_set():
            raise RestoreCancelled("cancelled", backup=job.label, object_name=object_name)

    def _plan(self, job: RestoreJob) -> _Plan:
        """Read and check every link's metadata; find every object; size the working set."""
        cfg = self.config
        links = job.links
        chained = len(links) > 1
        manifests = []
        for link in links:
            try:
                manifests.append(read_manifest(link.store, link.prefix, allow_incremental=chained))
            except RestoreError as e:
                raise e.located(backup=link.prefix)
        if chained:
            check_chain(manifests)
        volume_size = manifests[0].volume_size
        window_reserve = cfg.window_bytes * (1 + job.sink_copy_factor)
        link_plans = []
        for number, (link, manifest) in enumerate(zip(links, manifests)):
            index = Sha256Index(link.store, link.prefix)
            block = index.info.block_size
            expected_digests = -(-volume_size // block)
            if index.info.digest_count != expected_digests:
                raise BackupFormatError(
                    f"sha256 file has {index.info.digest_count} digests, the volume of {volume_size} bytes "
                    f"needs {expected_digests} of {block}-byte blocks", backup=link.prefix, object_name=index.name)
            if link_plans and block != link_plans[0].index.info.block_size:
                raise ChainError(f"sha block of {block} bytes differs from the full backup's "
                                 f"{link_plans[0].index.info.block_size}", backup=link.prefix)
            copies_pieces = not store_reads_into(link.store)
            plans = []
            for obj in manifest.objects:
                try:
                    stored = link.store.open_object(obj.name)
                except RestoreError as e:
                    raise e.located(backup=link.prefix, object_name=obj.name)
                if stored == 0:
                    raise CorruptObjectError("object is empty", backup=link.prefix, object_name=obj.name)
                if obj.offset % block:
                    raise UnsupportedBackupError(f"object offset {obj.offset} is not a multiple of the {block}-byte "
                                                 "sha block", backup=link.prefix, object_name=obj.name)
                zstd_window = 0
                if obj.codec == "zstd":
                    head = link.store.read_range(obj.name, 0, min(stored, ZSTD_FRAME_HEADER_MAX_BYTES))
                    zstd_window = zstd_window_size(head, object_name=obj.name)
                    if zstd_window > cfg.zstd_max_window_bytes:
                        raise UnsupportedBackupError(f"zstd window of {zstd_window} bytes exceeds the "
                                                     f"{cfg.zstd_max_window_bytes}-byte limit",
                                                     backup=link.prefix, object_name=obj.name)
                piece = cfg.window_bytes if obj.codec == "none" else min(cfg.read_piece_bytes, stored)
                needs = codec_needs(obj.codec, piece, zstd_window, store_copies_pieces=copies_pieces)
                blocks = -(-obj.length // block)
                fixed = (index.memory_bytes(blocks) + needs.state_bytes + needs.input_buffer_bytes
                         + needs.scratch_bytes)
                plans.append(_ObjectPlan(obj, stored, piece, needs.input_buffer_bytes, fixed))
            # Zero windows may be skipped only where nothing older lies underneath: the full backup.
            link_plans.append(_LinkPlan(link, manifest, index, tuple(plans), may_skip_zeros=number == 0))
        thread_bytes = RESTORE_THREAD_STACK_BYTES + RESTORE_OVERHEAD_BYTES + job.sink_overhead_bytes
        check_bytes = 2 * link_plans[0].index.memory_bytes(CHAIN_CHECK_BATCH_BLOCKS) if chained else 0
        verify_bytes = window_reserve + link_plans[-1].index.memory_bytes(
            max(1, cfg.window_bytes // link_plans[-1].index.info.block_size))
        largest = max((p.fixed_bytes for lp in link_plans for p in lp.objects), default=0)
        working_set = thread_bytes + max(largest + window_reserve, check_bytes, verify_bytes)
        journal_key = make_journal_key(manifests)
        return _Plan(manifests[0], tuple(link_plans), window_reserve, working_set, thread_bytes, volume_size,
                     sum(o.length for m in manifests for o in m.objects), check_bytes, verify_bytes, journal_key)

    def _check_unchanged_blocks(self, job: RestoreJob, plan: _Plan, lease: Lease) -> None:
        """Blocks an increment did not store must have the parent's sha256: else the parent is not its base.

        With each link's objects checked against its own sha256 file, this makes the final
        image match the last link's sha256 file block for block (by induction over the chain).
        """
        with lease.reserve(plan.chain_check_bytes, "chain check digests", cancel=self._cancel):
            for parent, child in zip(plan.links, plan.links[1:]):
                block = child.index.info.block_size
                covered = [(o.obj.offset // block, -(-(o.obj.offset + o.obj.length) // block)) for o in child.objects]
                start = 0
                for begin, end in covered + [(child.index.info.digest_count, child.index.info.digest_count)]:
                    for first in range(start, begin, CHAIN_CHECK_BATCH_BLOCKS):
                        self._check_cancel(job)
                        count = min(CHAIN_CHECK_BATCH_BLOCKS, begin - first)
                        ours, theirs = child.index.digests(first, count), parent.index.digests(first, count)
                        if ours != theirs:
                            bad = next(i for i in range(count) if ours[i * 32:i * 32 + 32] != theirs[i * 32:i * 32 + 32])
                            raise ChainError(
                                f"block {first + bad} (volume offset {(first + bad) * block}) is in none of the "
                                f"increment's objects, yet its sha256 differs from that of the parent "
                                f"{parent.link.prefix}: the chain is broken", backup=child.link.prefix,
                                object_name=child.index.name)
                    start = max(start, end)

    def _copy(self, job: RestoreJob, plan: _Plan, sink: Sink, lease: Lease, state: _JobState) -> None:
        in_flight = _InFlight()
        try:
            if len(plan.links) > 1:
                self._check_unchanged_blocks(job, plan, lease)
            resumed: frozenset[str] = getattr(sink, "resumed_pieces", frozenset())
            journaled = bool(getattr(sink, "journaled", False))
            skipped = 0
            for link_plan in plan.links:
                for object_plan in link_plan.objects:
                    self._check_cancel(job, object_plan.obj.name)
                    piece = _piece_key(link_plan, object_plan)
                    if piece in resumed:
                        # Written and verified by the interrupted run; the whole image is checked at the end.
                        skipped += 1
                        state.pieces_resumed += 1
                        state.bytes_done += object_plan.obj.length
                        state.bytes_resumed += object_plan.obj.length
                        continue
                    try:
                        self._restore_object(job, link_plan, plan, object_plan, sink, lease, state, in_flight)
                        if journaled:
                            self._wait_writes(in_flight)
                            sink.record_piece(piece)  # type: ignore[attr-defined]
                    except RestoreError as e:
                        raise e.located(backup=link_plan.link.prefix, object_name=object_plan.obj.name)
            sink.flush()
            if skipped or getattr(sink, "resumed", False):
                # Skipped pieces were verified by another process, before a crash: read the image back.
                self._verify_whole(job, plan, sink, lease)
        finally:
            with in_flight.cond:  # no buffer may outlive the restore's lease
                while in_flight.count:
                    in_flight.cond.wait(0.1)

    @staticmethod
    def _wait_writes(in_flight: _InFlight) -> None:
        with in_flight.cond:
            while in_flight.count:
                in_flight.cond.wait(0.1)

    def _verify_whole(self, job: RestoreJob, plan: _Plan, sink: Sink, lease: Lease) -> None:
        """Read the whole image back and check every block against the last link's sha256 file."""
        cfg = self.config
        index = plan.links[-1].index
        block = index.info.block_size
        step = cfg.window_bytes // block * block
        if step == 0:
            raise UnsupportedBackupError(f"the window of {cfg.window_bytes} bytes is smaller than one "
                                         f"{block}-byte sha block: cannot verify the resumed image")
        with lease.reserve(plan.verify_bytes, "read-back window and digests", buffer_bytes=cfg.window_bytes,
                           cancel=self._cancel) as reservation:
            assert reservation.buffer is not None
            view = memoryview(reservation.buffer)
            for offset in range(0, plan.volume_size, step):
                self._check_cancel(job)
                n = min(step, plan.volume_size - offset)
                got = sink.read_into(offset, view[:n])  # type: ignore[attr-defined]
                first = offset // block
                digests = index.digests(first, -(-n // block))
                for i, start in enumerate(range(0, n, block)):
                    if got < min(start + block, n) or \
                            hashlib.sha256(view[start:min(start + block, n)]).digest() != digests[i * 32:i * 32 + 32]:
                        raise CorruptObjectError(
                            f"resumed image differs from the sha256 file at block {first + i} (volume offset "
                            f"{offset + start}): the target was changed since it was journaled; restore with force",
                            object_name=index.name)

    def _restore_object(self, job: RestoreJob, link_plan: "_LinkPlan", plan: _Plan, op: _ObjectPlan, sink: Sink,
                        lease: Lease, state: _JobState, in_flight: _InFlight) -> None:
        cfg, obj, store = self.config, op.obj, link_plan.link.store
        block = link_plan.index.info.block_size
        blocks = -(-obj.length // block)
        skip_zeros = cfg.skip_zeros and sink.is_new and link_plan.may_skip_zeros
        with lease.reserve(op.fixed_bytes, "digests, decoder state and input piece",
                           buffer_bytes=op.input_buffer_bytes, cancel=self._cancel) as fixed:
            digests = link_plan.index.digests(obj.offset // block, blocks)
            reader = ObjectReader(store, obj.name, op.stored_bytes, op.piece_bytes, fixed.buffer)
            decoder = open_decoder(obj.codec, reader, zstd_max_window_bytes=cfg.zstd_max_window_bytes,
                                   object_name=obj.name)
            md5 = hashlib.md5(usedforsecurity=False)
            block_hash = hashlib.sha256()
            block_fill = 0
            block_number = 0
            produced = 0
            while produced < obj.length:
                self._check_cancel(job, obj.name)
                # The window's reservation exists before the window does.
                reservation = lease.reserve(plan.window_reserve_bytes, "output window",
                                            buffer_bytes=cfg.window_bytes,
                                            may_borrow=in_flight.count > 0, cancel=self._cancel)
                try:
                    assert reservation.buffer is not None
                    want = min(cfg.window_bytes, obj.length - produced)
                    window = memoryview(reservation.buffer)[:want]
                    got = decoder.readinto(window)
                    if got < want:
                        raise CorruptObjectError(f"decompressed to {produced + got} bytes, the metadata records "
                                                 f"{obj.length} (truncated object?)", object_name=obj.name)
                    md5.update(window)
                    taken = 0
                    while taken < want:
                        step = min(block - block_fill, want - taken)
                        block_hash.update(window[taken:taken + step])
                        block_fill += step
                        taken += step
                        if block_fill == block:
                            self._check_block(block_hash, digests, block_number, obj)
                            block_hash, block_fill, block_number = hashlib.sha256(), 0, block_number + 1
                    runs = nonzero_runs(reservation.buffer, cfg.zero_skip_granularity_bytes, obj.offset + produced,
                                        want) if skip_zeros else [(0, want)]
                    skipped = want - sum(end - start for start, end in runs)
                    self._write_runs(sink, obj.offset + produced, window, runs, reservation, in_flight, job)
                except BaseException:
                    reservation.release()
                    raise
                produced += want
                state.bytes_done += want
                state.bytes_skipped_zero += skipped
            if decoder.readinto(memoryview(bytearray(1))):
                raise CorruptObjectError(f"decompresses to more than the {obj.length} bytes the metadata records",
                                         object_name=obj.name)
            decoder.check_end()
            if block_fill:
                self._check_block(block_hash, digests, block_number, obj)
                block_number += 1
            if block_number != blocks:
                raise CorruptObjectError(f"covered {block_number} sha blocks, expected {blocks}", object_name=obj.name)
            if obj.md5 is not None and md5.hexdigest() != obj.md5:
                raise CorruptObjectError(f"md5 {md5.hexdigest()} does not match the metadata's {obj.md5}",
                                         object_name=obj.name)
            del decoder, reader

    @staticmethod
    def _check_block(block_hash: "hashlib._Hash", digests: bytes, block_number: int, obj: BackupObject) -> None:
        if block_hash.digest() != digests[block_number * 32:(block_number + 1) * 32]:
            raise CorruptObjectError(f"sha256 of the object's block {block_number} does not match the sha256 file",
                                     object_name=obj.name)

    def _write_runs(self, sink: Sink, volume_offset: int, window: memoryview, runs: list[tuple[int, int]],
                    reservation: "Reservation", in_flight: _InFlight, job: RestoreJob) -> None:
        """Hand the window's non-zero runs to the sink; release the window when all are done."""
        if not runs:
            reservation.release()
            return
        remaining = [len(runs)]
        guard = threading.Lock()

        latencies = self.latencies

        def one_done() -> None:
            with guard:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                reservation.release()
            with in_flight.cond:
                in_flight.count -= 1
                in_flight.cond.notify_all()

        for index, (start, end) in enumerate(runs):
            try:
                self.bucket.take(end - start, self._cancel)
            except BaseException:
                for _ in runs[index:]:  # never issued: release them here
                    with guard:
                        remaining[0] -= 1
                        last = remaining[0] == 0
                    if last:
                        reservation.release()
                raise
            with in_flight.cond:
                while in_flight.count >= self.config.max_writes_in_flight:
                    if self._cancel.is_set():
                        break
                    in_flight.cond.wait(0.05)
                in_flight.count += 1
            data = window if (start, end) == (0, len(window)) else window[start:end]
            try:
                issued = time.monotonic()

                def timed_done(issued: float = issued, nbytes: int = end - start) -> None:
                    latencies.add(time.monotonic() - issued, nbytes)
                    one_done()

                sink.write(volume_offset + start, data, timed_done)
            except BaseException:
                # Writes not yet issued will never call one_done: account for them here.
                for _ in runs[index + 1:]:
                    one_done()
                raise

