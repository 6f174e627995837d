"""--max-rate (one token bucket for all restores) and the adaptive AIMD decisions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from drills.restore.engine import EngineConfig, RestoreEngine, file_job
from drills.restore.format import cinder_prefix, write_backup
from drills.restore.store import PosixBackupStore
from drills.restore.throttle import AdaptiveThrottle, LatencyWindow, TokenBucket, p99

MiB = 1 << 20


def test_bucket_bounds_the_aggregate_rate_of_many_writers() -> None:
    bucket = TokenBucket(20 * MiB, burst_bytes=1 * MiB)
    total = 6 * MiB

    def writer() -> None:
        for _ in range(total // 8 // (256 * 1024)):
            bucket.take(256 * 1024)

    started = time.monotonic()
    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    # 6 MiB at 20 MiB/s with a 1 MiB burst: at least 0.25 s whatever the writer count.
    assert elapsed >= (total - 1 * MiB) / (20 * MiB) * 0.95


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(0, burst_bytes=1)
    started = time.monotonic()
    for _ in range(1000):
        bucket.take(1 << 30)
    assert time.monotonic() - started < 0.5 and bucket.waited_seconds == 0


def test_aimd_backs_off_on_slow_ops_and_p99_and_recovers() -> None:
    bucket = TokenBucket(0, burst_bytes=MiB)
    throttle = AdaptiveThrottle(bucket, LatencyWindow(), ceiling_bytes_per_s=100e6, floor_bytes_per_s=5e6)
    bucket.set_rate(100e6)
    assert throttle.decide(0.010, 0, 90e6).rate_bytes_per_s == 100e6  # calm: stays at the ceiling
    assert throttle.decide(0.012, 3, 90e6).rate_bytes_per_s == 50e6  # slow ops: halve
    step = throttle.decide(0.050, 0, 40e6)  # p99 5x the calm 10 ms: halve again
    assert step.rate_bytes_per_s == 25e6 and "p99" in step.reason
    assert throttle.decide(0.011, 0, 25e6).rate_bytes_per_s == 35e6  # calm again: +10 % of the ceiling
    for _ in range(20):
        throttle.decide(0.011, 0, 30e6)
    assert bucket.rate == 100e6  # back at the ceiling, never above
    for _ in range(20):
        throttle.decide(0.011, 5, 30e6)
    assert bucket.rate == 5e6  # never below the floor


def test_without_ceiling_the_first_interval_sets_it() -> None:
    bucket = TokenBucket(0, burst_bytes=MiB)
    throttle = AdaptiveThrottle(bucket, LatencyWindow())
    assert "warming up" in throttle.decide(None, None, 0).reason
    throttle.decide(0.01, 0, 80e6)
    assert throttle.ceiling == 80e6 and bucket.rate == 80e6
    assert p99([0.001] * 99 + [1.0]) == 1.0 and p99([]) is None


def test_engine_max_rate_limits_all_restores_together(tmp_path: Path) -> None:
    volume = bytes(range(256)) * (4 * MiB // 256)  # no zero windows: every byte is written
    store = PosixBackupStore(tmp_path / "c")
    prefix = cinder_prefix("v", "b")
    write_backup(volume, store, prefix, 1 * MiB, "zlib")
    jobs = [file_job(store, prefix, str(tmp_path / f"out{i}.img")) for i in range(3)]
    config = EngineConfig(memory_budget_bytes=64 * MiB, concurrency=3, window_bytes=256 * 1024,
                          read_piece_bytes=64 * 1024, max_rate_bytes_per_s=8 * MiB)
    report = RestoreEngine(config).run(jobs)
    assert report.ok
    # 12 MiB at 8 MiB/s, burst 2 MiB (a quarter second): at least 1.25 s; unlimited it takes far less.
    assert report.seconds >= (12 * MiB - 2 * MiB) / (8 * MiB) * 0.95
    assert all((tmp_path / f"out{i}.img").read_bytes() == volume for i in range(3))
