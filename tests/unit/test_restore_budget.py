"""RestoreBudget: FIFO admission, limits, refusal, thread safety."""

from __future__ import annotations

import random
import threading
import time

import pytest

from drills.restore.budget import RestoreBudget, parse_size
from drills.restore.errors import BudgetTooSmallError, RestoreCancelled

MiB = 1 << 20


def test_parse_size_units() -> None:
    assert parse_size("256MiB") == 256 * 2**20
    with pytest.raises(ValueError, match="ambiguous"):  # drills/units.py: 1.5G is 1.5 GiB to Ceph, 1.5e9 to SI
        parse_size("1.5G")
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("12XB")


def test_working_set_larger_than_budget_is_refused_at_admission() -> None:
    budget = RestoreBudget(1000)
    with pytest.raises(BudgetTooSmallError, match="backup b1.*1001"):
        budget.enqueue("b1", 1001)
    assert budget.stats().reserved_bytes == 0


def test_fifo_admission_a_small_request_does_not_overtake_a_large_one() -> None:
    budget = RestoreBudget(100)
    first = budget.admit("first", 60)
    big = budget.enqueue("big", 80)  # must wait for `first`
    small = budget.enqueue("small", 10)  # would fit now, but queues behind `big`
    assert big.lease is None and small.lease is None
    assert budget.queue_length == 2
    first.close()
    assert big.lease is not None and small.lease is not None  # both fit once first is gone
    assert budget.admission_order == ["first", "big", "small"]


def test_reserve_within_share_blocks_until_own_release() -> None:
    budget = RestoreBudget(100)
    lease = budget.admit("r", 50)
    held = lease.reserve(40, "window")
    got: list[int] = []

    def second() -> None:
        with lease.reserve(40, "window"):
            got.append(budget.stats().in_use_bytes)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.1)
    assert got == []  # blocked: only 10 bytes left in the share, no borrowing asked
    held.release()
    t.join(2)
    assert got == [40]
    lease.close()
    assert budget.stats().reserved_bytes == 0


def test_borrowing_is_refused_while_someone_queues() -> None:
    budget = RestoreBudget(100)
    lease = budget.admit("r", 60)
    lease.reserve(60, "a")
    ticket = budget.enqueue("waiting", 50)
    with pytest.raises(RestoreCancelled):
        cancel = threading.Event()
        threading.Timer(0.1, cancel.set).start()
        lease.reserve(30, "b", may_borrow=True, cancel=cancel)  # 40 free, but "waiting" is queued
    ticket.withdraw()
    extra = lease.reserve(30, "b", may_borrow=True)
    assert extra.borrowed and budget.stats().reserved_bytes == 90


def test_cancelled_admission_leaves_the_queue() -> None:
    budget = RestoreBudget(100)
    lease = budget.admit("a", 90)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RestoreCancelled):
        budget.admit("b", 50, cancel)
    assert budget.queue_length == 0
    lease.close()


def test_concurrent_hammering_never_exceeds_the_limit() -> None:
    budget = RestoreBudget(1000)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with budget.admit(f"w{seed}", rng.randint(100, 400)) as lease:
                for _ in range(200):
                    r = lease.reserve(rng.randint(1, 100), "buf", may_borrow=rng.random() < 0.5)
                    assert budget.stats().reserved_bytes <= 1000
                    r.release()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    stats = budget.stats()
    assert stats.admitted == 16
    assert 0 < stats.peak_reserved_bytes <= 1000
    assert stats.reserved_bytes == 0 and stats.in_use_bytes == 0


def test_pool_reuses_buffers_and_evicts_idle_ones_to_stay_in_the_limit() -> None:
    budget = RestoreBudget(10 * MiB)
    lease = budget.admit("a", 10 * MiB)
    first = lease.reserve(4 * MiB, "window", buffer_bytes=4 * MiB)
    assert first.buffer is not None and len(first.buffer) == 4 * MiB
    buffer_id = id(first.buffer)
    first.release()
    again = lease.reserve(4 * MiB, "window", buffer_bytes=4 * MiB)
    assert id(again.buffer) == buffer_id  # reused, not reallocated
    again.release()
    # 8 MiB of other memory: the idle 4 MiB window would put in-use + idle at 12 MiB > 10.
    other = lease.reserve(8 * MiB, "decoder state")
    stats = budget.stats()
    assert stats.pool_idle_bytes == 0 and stats.in_use_bytes + stats.pool_idle_bytes <= 10 * MiB
    assert stats.peak_held_bytes <= 10 * MiB and stats.pool_allocations == 1 and stats.pool_reuses == 1
    other.release()
    lease.close()
