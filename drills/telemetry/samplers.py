"""Background samplers at 1 Hz: cluster state from the pgmap and per-daemon memory.

Each sampler runs in its own thread and writes to the run's Timeline. A failed sample
is written as a gap (value null), never as zero, and never stops the run.

Metrics:
  cluster.pgs{state}              PG count per state string
  cluster.pgs_total, cluster.pgs_inactive
  cluster.degraded_ratio          degraded copies / all copies (0..1)
  cluster.degraded_objects, cluster.misplaced_objects, cluster.unfound_objects
  cluster.recovering_bytes_per_sec
  cluster.client.{read,write}_op_per_sec, cluster.client.{read,write}_bytes_sec
  cluster.osds_up, cluster.osds_in
  rss.bytes{daemon,host}, pss.bytes{daemon,host}, uss.bytes{daemon,host}   (local daemons)
Events: "cluster.osd_down" / "cluster.osd_up" (label osd.N) when the up set changes,
"cluster.flags" when the cluster flags change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from drills.cluster import CephCluster
from drills.target import Target
from drills.timeline import Timeline


class Sampler:
    """A thread that calls `sample_once` every `interval` seconds until stopped."""

    name = "sampler"

    def __init__(self, timeline: Timeline, interval: float = 1.0):
        self.timeline = timeline
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples_taken = 0
        self.samples_failed = 0
        self.cpu_seconds = 0.0  # thread CPU spent sampling: the sampler's own overhead

    def sample_once(self, now: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            now = time.time()
            c0 = time.thread_time()
            try:
                self.sample_once(now)
                self.samples_taken += 1
            except Exception as e:  # noqa: BLE001 - a sampler never crashes a run
                self.samples_failed += 1
                self.on_failure(now, e)
            self.cpu_seconds += time.thread_time() - c0
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def on_failure(self, now: float, error: Exception) -> None:
        self.timeline.event("sampler.gap", self.name, t=now, error=f"{type(error).__name__}: {error}")

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval * 5 + 30)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


CLUSTER_GAP_METRICS = ("cluster.degraded_ratio", "cluster.pgs_total", "cluster.osds_up")


class ClusterSampler(Sampler):
    """PG states, degraded/misplaced/unfound objects, recovery rate, client IO, OSD up/in, flags."""

    name = "cluster"

    def __init__(self, timeline: Timeline, cluster: CephCluster, interval: float = 1.0):
        super().__init__(timeline, interval)
        self.cluster = cluster
        self._up: set[int] | None = None
        self._flags: set[str] | None = None
        self._states_seen: set[str] = set()

    def sample_once(self, now: float) -> None:
        status = self.cluster.status()
        pgmap = status["pgmap"]
        tl = self.timeline
        states = {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])}
        for state in self._states_seen - set(states):
            tl.sample("cluster.pgs", 0, t=now, state=state)  # a state that emptied reads 0, not a gap
        self._states_seen |= set(states)
        for state, n in states.items():
            tl.sample("cluster.pgs", n, t=now, state=state)
        tl.sample("cluster.pgs_total", pgmap.get("num_pgs", 0), t=now)
        tl.sample("cluster.pgs_inactive", sum(n for s, n in states.items() if "active" not in s.split("+")), t=now)
        tl.sample("cluster.degraded_ratio", pgmap.get("degraded_ratio", 0.0), t=now)
        for key in ("degraded_objects", "misplaced_objects", "unfound_objects", "recovering_bytes_per_sec",
                    "recovering_objects_per_sec"):
            tl.sample(f"cluster.{key}", pgmap.get(key, 0), t=now)
        for key in ("read_op_per_sec", "write_op_per_sec", "read_bytes_sec", "write_bytes_sec"):
            tl.sample(f"cluster.client.{key}", pgmap.get(key, 0), t=now)
        osdmap = status.get("osdmap", {})
        osdmap = osdmap.get("osdmap", osdmap)  # pacific nests it once more
        tl.sample("cluster.osds_up", osdmap.get("num_up_osds"), t=now)
        tl.sample("cluster.osds_in", osdmap.get("num_in_osds"), t=now)
        # The up set and flags change rarely; osd dump only when the counts say so is not
        # enough (a swap keeps the count), so it is read every sample: one small mon command.
        dump = self.cluster.osd_dump()
        up = {o["osd"] for o in dump["osds"] if o["up"]}
        if self._up is not None:
            for i in sorted(self._up - up):
                tl.event("cluster.osd_down", f"osd.{i}", t=now, osd=i)
            for i in sorted(up - self._up):
                tl.event("cluster.osd_up", f"osd.{i}", t=now, osd=i)
        self._up = up
        flags = set(dump.get("flags_set", []))
        if flags != self._flags:
            tl.event("cluster.flags", ",".join(sorted(flags)) or "none", t=now, flags=sorted(flags))
            self._flags = flags

    def on_failure(self, now: float, error: Exception) -> None:
        for m in CLUSTER_GAP_METRICS:
            self.timeline.sample(m, None, t=now)
        super().on_failure(now, error)


@dataclass(frozen=True)
class DaemonMemory:
    rss: int
    pss: int | None
    uss: int | None


def local_daemon_memory(pid: int) -> DaemonMemory:
    """RSS, PSS and USS of a local process; PSS/USS from smaps_rollup (cheap, unlike full smaps)."""
    rss = psutil.Process(pid).memory_info().rss
    pss = uss = None
    try:
        fields = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, v = line.split(":", 1)
            fields[k] = int(v.split()[0]) * 1024
        pss = fields.get("Pss")
        uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    except (OSError, ValueError):
        pass
    return DaemonMemory(rss, pss, uss)


PidLookup = Callable[[str], "int | None"]


def sandbox_pid_lookup(target: Target) -> PidLookup:
    from drills.sandbox import host as hostctl
    from drills.sandbox.bootstrap import spec_of_target

    spec = spec_of_target(target)
    return lambda daemon: hostctl.daemon_pid(spec, daemon)


class MemorySampler(Sampler):
    """Per-daemon RSS (and PSS/USS) of the target's local daemons.

    A daemon that is not running (power cut, killed) has no memory: its sample is a gap.
    """

    name = "memory"

    def __init__(self, timeline: Timeline, target: Target, pid_of: PidLookup, interval: float = 1.0, daemons: list[str] | None = None):
        super().__init__(timeline, interval)
        self.pid_of = pid_of
        self.hosts = {d: h.name for h in target.hosts for d in h.daemons}
        self.daemons = daemons or [d for d in self.hosts]

    def sample_once(self, now: float) -> None:
        for d in self.daemons:
            labels = {"daemon": d, "host": self.hosts.get(d, "")}
            pid = self.pid_of(d)
            mem = None
            if pid is not None:
                try:
                    mem = local_daemon_memory(pid)
                except psutil.Error:
                    mem = None
            self.timeline.sample("rss.bytes", None if mem is None else mem.rss, t=now, **labels)
            self.timeline.sample("pss.bytes", None if mem is None else mem.pss, t=now, **labels)
            self.timeline.sample("uss.bytes", None if mem is None else mem.uss, t=now, **labels)


def default_samplers(timeline: Timeline, target: Target, cluster: CephCluster, interval: float = 1.0) -> list[Sampler]:
    samplers: list[Sampler] = [ClusterSampler(timeline, cluster, interval)]
    if target.cluster.deployment == "sandbox":
        samplers.append(MemorySampler(timeline, target, sandbox_pid_lookup(target), interval))
    return samplers


def mempool_snapshot(cluster: CephCluster, osd_id: int) -> dict:
    """`ceph tell osd.N dump_mempools`, on request."""
    return cluster.osd_command(osd_id, "dump_mempools")


def heap_stats(cluster: CephCluster, osd_id: int) -> str:
    """tcmalloc `heap stats` of an OSD, on request."""
    return str(cluster.osd_command(osd_id, "heap", heapcmd="stats"))
