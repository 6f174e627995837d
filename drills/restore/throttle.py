"""Protect the cluster's other clients from the restores: one rate limit for all of them.

* `TokenBucket`: bytes per second for every restore of a run together.  A writer takes its
  bytes before the write and sleeps off any debt, so the aggregate rate is the limit
  whatever the number of restores (the bucket holds at most `burst_bytes`).
* `AdaptiveThrottle`: AIMD on that limit, every `interval` seconds.  Backs off (x0.5, not
  below `floor`) when the cluster reports slow ops (health check SLOW_OPS, through the
  restores' own librados client) or when the restores' own write latency p99 (a client of
  the same cluster, measured from aio_write to its completion) rises above
  `p99_factor` x the p99 seen while the cluster was calm; otherwise raises the limit by
  `increase_fraction` of the ceiling.  The ceiling is --max-rate or, without one, the
  aggregate rate measured during the first interval (unthrottled).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drills.restore.errors import RestoreCancelled

SlowOpsProbe = Callable[[], "int | None"]  # slow ops the cluster reports now; None = could not ask


class TokenBucket:
    """Thread-safe byte rate limit; rate 0 = unlimited."""

    def __init__(self, rate_bytes_per_s: float, burst_bytes: int) -> None:
        self._lock = threading.Lock()
        self._rate = float(rate_bytes_per_s)
        self._burst = float(max(burst_bytes, 1))
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self.waited_seconds = 0.0

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def set_rate(self, rate_bytes_per_s: float) -> None:
        with self._lock:
            self._refill_locked()
            self._rate = float(rate_bytes_per_s)

    def _refill_locked(self) -> None:
        now = time.monotonic()
        if self._rate > 0:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def take(self, nbytes: int, cancel: threading.Event | None = None) -> None:
        """Take `nbytes`; sleep until the bucket is out of debt (cancel-aware)."""
        with self._lock:
            if self._rate <= 0:
                return
            self._refill_locked()
            self._tokens -= nbytes
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait <= 0:
            return
        self.waited_seconds += wait
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if cancel is not None and cancel.wait(min(left, 0.05)):
                raise RestoreCancelled("cancelled while rate limited")
            if cancel is None:
                time.sleep(min(left, 0.05))


@dataclass
class LatencyWindow:
    """Write latencies of the current interval (seconds)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[float] = field(default_factory=list)
    bytes_written: int = 0

    def add(self, seconds: float, nbytes: int) -> None:
        with self.lock:
            if len(self.samples) < 100_000:
                self.samples.append(seconds)
            self.bytes_written += nbytes

    def drain(self) -> tuple[list[float], int]:
        with self.lock:
            samples, written = self.samples, self.bytes_written
            self.samples, self.bytes_written = [], 0
        return samples, written


def p99(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


@dataclass(frozen=True)
class ThrottleStep:
    """One decision of the adaptive throttle (for the report and the drill's timeline)."""

    t: float
    rate_bytes_per_s: float
    write_p99_ms: float | None
    slow_ops: int | None
    reason: str


class AdaptiveThrottle:
    """AIMD on a TokenBucket from slow ops and the restores' own write p99 (see the module docstring)."""

    def __init__(self, bucket: TokenBucket, latencies: LatencyWindow, *, ceiling_bytes_per_s: float = 0.0,
                 slow_ops_probe: SlowOpsProbe | None = None, interval: float = 2.0, p99_factor: float = 3.0,
                 decrease: float = 0.5, increase_fraction: float = 0.1, floor_bytes_per_s: float = 1e6) -> None:
        self.bucket = bucket
        self.latencies = latencies
        self.ceiling = ceiling_bytes_per_s
        self.slow_ops_probe = slow_ops_probe
        self.interval = interval
        self.p99_factor = p99_factor
        self.decrease = decrease
        self.increase_fraction = increase_fraction
        self.floor = floor_bytes_per_s
        self.calm_p99: float | None = None
        self.steps: list[ThrottleStep] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-throttle", daemon=True)

    def start(self) -> "AdaptiveThrottle":
        if self.ceiling > 0:
            self.bucket.set_rate(self.ceiling)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def decide(self, write_p99: float | None, slow_ops: int | None, bytes_per_s: float) -> ThrottleStep:
        """One AIMD step from this interval's readings (pure apart from the bucket; unit-tested)."""
        rate = self.bucket.rate
        if self.ceiling <= 0:
            if bytes_per_s <= 0:
                return ThrottleStep(time.time(), rate, _ms(write_p99), slow_ops, "warming up: nothing written yet")
            self.ceiling = bytes_per_s  # the unthrottled rate of the first interval
            rate = bytes_per_s
        congested = ""
        if slow_ops:
            congested = f"cluster reports {slow_ops} slow ops"
        elif write_p99 is not None and self.calm_p99 is not None and write_p99 > self.p99_factor * self.calm_p99:
            congested = (f"write p99 {write_p99 * 1e3:.0f} ms > {self.p99_factor:g} x calm "
                         f"{self.calm_p99 * 1e3:.0f} ms")
        if congested:
            rate = max(self.floor, (rate or self.ceiling) * self.decrease)
            reason = f"back off: {congested}"
        else:
            if write_p99 is not None:
                self.calm_p99 = write_p99 if self.calm_p99 is None else min(self.calm_p99, write_p99)
            rate = min(self.ceiling, (rate or self.ceiling) + self.increase_fraction * self.ceiling)
            reason = "calm: increase"
        self.bucket.set_rate(rate)
        step = ThrottleStep(time.time(), rate, _ms(write_p99), slow_ops, reason)
        self.steps.append(step)
        return step

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            samples, written = self.latencies.drain()
            slow_ops = self.slow_ops_probe() if self.slow_ops_probe else None
            self.decide(p99(samples), slow_ops, written / (now - last))
            last = now


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def rados_slow_ops_probe(cluster: Any) -> SlowOpsProbe:
    """Slow ops from `ceph health` (check SLOW_OPS) through a connected rados.Rados."""

    def probe() -> int | None:
        try:
            ret, out, _err = cluster.mon_command(json.dumps({"prefix": "health", "format": "json"}), b"", timeout=5)
            if ret != 0:
                return None
            checks = json.loads(out).get("checks", {})
        except Exception:  # a probe that cannot ask says so (None), it never stops the restores
            return None
        slow = checks.get("SLOW_OPS")
        if not slow:
            return 0
        count = slow.get("summary", {}).get("count")
        return int(count) if isinstance(count, int) and count > 0 else 1

    return probe
