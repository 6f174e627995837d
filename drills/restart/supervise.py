"""An uncontrolled start as systemd does it: every daemon at once, and each one that dies is started
again after RestartSec, until StartLimitBurst starts within StartLimitInterval (ceph-osd@.service:
Restart=on-failure, RestartSec=10s, StartLimitBurst=3, StartLimitInterval=30min). The sandbox has no
systemd; this is its stand-in so that OOM-killed OSDs come back and press on memory again - the
chain reaction of the seed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from drills.restart.orchestrator import EventSink, HostOps
from drills.target import Host


@dataclass
class SystemdLikeSupervisor:
    hosts: HostOps
    daemons: list[tuple[Host, str]]
    restart_sec: float = 10.0
    start_limit_burst: int = 3
    start_limit_interval: float = 1800.0
    on_event: EventSink = lambda kind, label, data: None
    starts: dict[str, list[float]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)  # hit the start limit: left down, as systemd would
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    clock: Callable[[], float] = time.monotonic

    def _start(self, host: Host, daemon: str) -> None:
        now = self.clock()
        recent = [t for t in self.starts.get(daemon, []) if now - t < self.start_limit_interval]
        if len(recent) >= self.start_limit_burst:
            if daemon not in self.failed:
                self.failed.add(daemon)
                self.on_event("supervisor.start_limit", f"{daemon} start limit hit", {"daemon": daemon, "starts": len(recent)})
            return
        self.starts[daemon] = recent + [now]
        try:
            self.hosts.start(host, daemon)
            self.on_event("supervisor.start", f"start {daemon}", {"daemon": daemon, "attempt": len(recent) + 1})
        except Exception as e:  # noqa: BLE001 - a failed start counts as a start, as in systemd
            self.on_event("supervisor.start_failed", f"{daemon} failed to start", {"daemon": daemon, "error": str(e)})

    def start_all(self) -> "SystemdLikeSupervisor":
        for h, d in self.daemons:
            self._start(h, d)
        self._thread = threading.Thread(target=self._watch, name="systemd-like", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        died_at: dict[str, float] = {}
        while not self._stop.wait(1.0):
            for h, d in self.daemons:
                if d in self.failed:
                    continue
                try:
                    alive = self.hosts.running(h, d)
                except Exception:  # noqa: BLE001
                    continue
                if alive:
                    died_at.pop(d, None)
                    continue
                t = died_at.setdefault(d, self.clock())
                if self.clock() - t >= self.restart_sec:
                    died_at.pop(d, None)
                    self._start(h, d)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
