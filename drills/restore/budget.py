"""One memory budget shared by every restore in a process.

Two levels, so that nothing can deadlock and nobody starves:

* Admission: a restore asks for its minimum working set (one input piece, decoder state,
  one output window and the sink's copy of it in flight).  Requests are granted strictly in
  arrival order (FIFO): a later, smaller restore never overtakes a waiting larger one.
  A request larger than the whole budget is refused at once (BudgetTooSmallError).
* Buffers: a running restore reserves every buffer before it exists, from its own granted
  share; it waits only for its own buffers to come back, which its own writes release.
  It may borrow beyond its share (more writes in flight) only while nobody is queued for
  admission, so borrowing cannot delay a waiting restore for longer than one write.

`reserved_bytes` (shares plus borrowed bytes) never exceeds `limit_bytes`; `in_use_bytes`
(live buffers) never exceeds `reserved_bytes`.  Both peaks are recorded for the report.

Buffer pool: a reservation may carry a pooled `bytearray` (windows, input pieces).  A
released buffer goes back to the pool and is handed to the next reservation of that size
instead of a new allocation.  Idle pooled buffers are memory too: the budget keeps
`in_use + idle <= limit` by dropping idle buffers (largest first) whenever a reservation
would cross it, so the pool never holds memory the budget has given to someone else.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from drills.units import parse_bytes
from drills.restore.errors import BudgetTooSmallError, RestoreCancelled

_WAIT_SLICE_SECONDS = 0.05  # how often a blocked wait looks at its cancel event


def parse_size(text: str) -> int:
    """'256MiB' -> 268435456; plain digits are bytes; at least one byte."""
    value = parse_bytes(text)
    if value < 1:
        raise ValueError(f"size must be at least one byte: {text!r}")
    return value


def format_size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


@dataclass(frozen=True)
class BudgetStats:
    limit_bytes: int
    reserved_bytes: int
    peak_reserved_bytes: int
    in_use_bytes: int
    peak_in_use_bytes: int
    queue_length: int
    admitted: int
    pool_idle_bytes: int = 0
    peak_held_bytes: int = 0  # in use plus idle pooled buffers: what the budget's memory peaked at
    pool_allocations: int = 0  # buffers the pool had to create (the rest were reused)
    pool_reuses: int = 0


class RestoreBudget:
    """Thread-safe global byte budget with FIFO admission."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError("the memory budget must be positive")
        self.limit_bytes = limit_bytes
        self._cond = threading.Condition()
        self._queue: deque[AdmissionTicket] = deque()
        self._reserved = 0
        self._peak_reserved = 0
        self._in_use = 0
        self._peak_in_use = 0
        self._admitted = 0
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0
        self._peak_held = 0
        self._allocations = 0
        self._reuses = 0
        self.admission_order: list[str] = []  # owners in the order they were admitted

    # -- admission --------------------------------------------------------------------
    def enqueue(self, owner: str, working_set_bytes: int) -> "AdmissionTicket":
        """Join the admission queue; the returned ticket's wait() yields the Lease."""
        self.check_fits(owner, working_set_bytes)
        ticket = AdmissionTicket(self, owner, max(working_set_bytes, 1))
        with self._cond:
            self._queue.append(ticket)
            self._grant_locked()
        return ticket

    def check_fits(self, owner: str, working_set_bytes: int) -> None:
        """BudgetTooSmallError if one restore's minimum exceeds the whole budget."""
        if working_set_bytes > self.limit_bytes:
            raise BudgetTooSmallError(
                f"needs a working set of {working_set_bytes} bytes ({format_size(working_set_bytes)}), "
                f"the whole memory budget is {self.limit_bytes} bytes ({format_size(self.limit_bytes)})",
                backup=owner)

    def admit(self, owner: str, working_set_bytes: int, cancel: threading.Event | None = None) -> "Lease":
        """enqueue() and wait() in one call."""
        return self.enqueue(owner, working_set_bytes).wait(cancel)

    def _grant_locked(self) -> None:
        granted = False
        while self._queue and self._queue[0].working_set_bytes <= self.limit_bytes - self._reserved:
            ticket = self._queue.popleft()
            self._add_reserved_locked(ticket.working_set_bytes)
            ticket.lease = Lease(self, ticket.owner, ticket.working_set_bytes)
            self._admitted += 1
            self.admission_order.append(ticket.owner)
            granted = True
        if granted:
            self._cond.notify_all()

    def _add_reserved_locked(self, nbytes: int) -> None:
        self._reserved += nbytes
        assert self._reserved <= self.limit_bytes, "budget accounting broke its own limit"
        self._peak_reserved = max(self._peak_reserved, self._reserved)

    def _wait_locked(self, cancel: threading.Event | None, owner: str, what: str) -> None:
        if cancel is not None and cancel.is_set():
            raise RestoreCancelled(f"cancelled while waiting for {what}", backup=owner)
        self._cond.wait(_WAIT_SLICE_SECONDS if cancel is not None else None)

    def stats(self) -> BudgetStats:
        with self._cond:
            return BudgetStats(self.limit_bytes, self._reserved, self._peak_reserved, self._in_use,
                               self._peak_in_use, len(self._queue), self._admitted, self._idle_bytes,
                               self._peak_held, self._allocations, self._reuses)

    # -- the buffer pool ----------------------------------------------------------------
    def _grow_in_use_locked(self, nbytes: int, buffer_bytes: int) -> bytearray | None:
        """Count `nbytes` as in use; return a pooled buffer of `buffer_bytes` (0: none)."""
        self._in_use += nbytes
        self._peak_in_use = max(self._peak_in_use, self._in_use)
        buffer = None
        if buffer_bytes:
            idle = self._idle.get(buffer_bytes)
            if idle:
                buffer = idle.pop()
                self._idle_bytes -= buffer_bytes
                self._reuses += 1
        self._evict_locked()
        if buffer_bytes and buffer is None:
            # calloc'd: untouched pages cost nothing until the decoder writes them
            buffer = bytearray(buffer_bytes)
            self._allocations += 1
        self._peak_held = max(self._peak_held, self._in_use + self._idle_bytes)
        return buffer

    def _evict_locked(self) -> None:
        while self._in_use + self._idle_bytes > self.limit_bytes and self._idle_bytes:
            size = max(s for s, bufs in self._idle.items() if bufs)
            self._idle[size].pop()  # dropped: bytearrays of pool size are their own mappings
            self._idle_bytes -= size

    def _return_buffer_locked(self, buffer: bytearray) -> None:
        self._idle.setdefault(len(buffer), []).append(buffer)
        self._idle_bytes += len(buffer)

    def drain_pool(self) -> None:
        """Drop every idle pooled buffer (end of a run)."""
        with self._cond:
            self._idle.clear()
            self._idle_bytes = 0

    @property
    def queue_length(self) -> int:
        with self._cond:
            return len(self._queue)


class AdmissionTicket:
    """A place in the admission queue."""

    def __init__(self, budget: RestoreBudget, owner: str, working_set_bytes: int) -> None:
        self._budget = budget
        self.owner = owner
        self.working_set_bytes = working_set_bytes
        self.lease: Lease | None = None

    def wait(self, cancel: threading.Event | None = None) -> "Lease":
        budget = self._budget
        with budget._cond:
            try:
                while self.lease is None:
                    budget._wait_locked(cancel, self.owner, "admission")
            except BaseException:
                self._withdraw_locked()
                raise
            return self.lease

    def withdraw(self) -> None:
        """Leave the queue (or give the lease back if it was granted meanwhile)."""
        with self._budget._cond:
            self._withdraw_locked()

    def _withdraw_locked(self) -> None:
        budget = self._budget
        if self in budget._queue:
            budget._queue.remove(self)
            budget._grant_locked()  # the next in line may fit now
        elif self.lease is not None:
            self.lease._close_locked()


class Lease:
    """An admitted restore's share of the budget; buffers are reserved from it."""

    def __init__(self, budget: RestoreBudget, owner: str, share_bytes: int) -> None:
        self._budget = budget
        self.owner = owner
        self.share_bytes = share_bytes
        self._used = 0  # of the share
        self._borrowed = 0  # beyond the share, from the free pool
        self.closed = False

    def reserve(self, nbytes: int, purpose: str, *, buffer_bytes: int = 0, may_borrow: bool = False,
                cancel: threading.Event | None = None) -> "Reservation":
        """Block until `nbytes` are available to this restore; the buffer may then exist.

        With `buffer_bytes` (<= nbytes) the reservation carries a pooled bytearray of that
        size (`.buffer`), reused from an earlier reservation when one is idle.
        """
        if buffer_bytes > nbytes:
            raise ValueError("a pooled buffer must fit in its reservation")
        budget = self._budget
        with budget._cond:
            while True:
                if self.closed:
                    raise RuntimeError(f"{self.owner}: reserve on a closed lease")
                if self._used + nbytes <= self.share_bytes:
                    self._used += nbytes
                    borrowed = False
                    break
                if (may_borrow and not budget._queue
                        and nbytes <= budget.limit_bytes - budget._reserved):
                    self._borrowed += nbytes
                    budget._add_reserved_locked(nbytes)
                    borrowed = True
                    break
                if self._used == 0 and self._borrowed == 0:
                    # Nothing of ours is out to come back: waiting would hang forever.
                    raise BudgetTooSmallError(
                        f"{purpose} needs {nbytes} bytes, more than the admitted working set "
                        f"of {self.share_bytes}", backup=self.owner)
                budget._wait_locked(cancel, self.owner, purpose)
            buffer = budget._grow_in_use_locked(nbytes, buffer_bytes)
            return Reservation(self, nbytes, purpose, borrowed, buffer)

    def _release_locked(self, reservation: "Reservation") -> None:
        budget = self._budget
        budget._in_use -= reservation.nbytes
        if reservation.buffer is not None:
            budget._return_buffer_locked(reservation.buffer)
            reservation.buffer = None
        if reservation.borrowed:
            self._borrowed -= reservation.nbytes
            budget._reserved -= reservation.nbytes
            budget._grant_locked()
        else:
            self._used -= reservation.nbytes
        budget._cond.notify_all()

    @property
    def outstanding_bytes(self) -> int:
        with self._budget._cond:
            return self._used + self._borrowed

    def close(self) -> None:
        """Give the share back; every reservation must have been released first."""
        with self._budget._cond:
            self._close_locked()

    def _close_locked(self) -> None:
        if self.closed:
            return
        if self._used or self._borrowed:
            raise RuntimeError(f"{self.owner}: closing a lease with {self._used + self._borrowed} bytes reserved")
        self.closed = True
        self._budget._reserved -= self.share_bytes
        self._budget._grant_locked()
        self._budget._cond.notify_all()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Reservation:
    """Bytes reserved for one buffer; release() exactly when the buffer is gone (idempotent)."""

    __slots__ = ("_lease", "nbytes", "purpose", "borrowed", "buffer", "_released")

    def __init__(self, lease: Lease, nbytes: int, purpose: str, borrowed: bool,
                 buffer: bytearray | None = None) -> None:
        self._lease = lease
        self.buffer = buffer
        self.nbytes = nbytes
        self.purpose = purpose
        self.borrowed = borrowed
        self._released = False

    def release(self) -> None:
        with self._lease._budget._cond:
            if not self._released:
                self._released = True
                self._lease._release_locked(self)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
