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
  rss.bytes{daemon,host}          every sample
  pss.bytes{daemon,host}, uss.bytes{daemon,host}
                                  every rollup_interval (30 s) per daemon, spread over the samples:
                                  smaps_rollup costs the kernel a page-table walk (~10 ms for an OSD)
      (local daemons by pid; remote ones through a HostCommand, e.g. the SSH backend's run)
The cluster sampler makes one mon command a second (status); osd dump only when the osdmap epoch moved.
Events: "cluster.osd_down" / "cluster.osd_up" (label osd.N) when the up set changes,
"cluster.flags" when the cluster flags change.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Protocol, Sequence

import psutil

from drills.cluster import CephCluster
from drills.hostaccess import HostAccess
from drills.target import Host, Target
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
            if next_t < time.monotonic() - self.interval:
                next_t = time.monotonic()  # a slow sample (a hung mon): don't fire a burst to catch up
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


# Every scalar metric the cluster sampler writes: a failed sample writes each of them as a gap.
CLUSTER_GAP_METRICS = (
    "cluster.pgs_total", "cluster.pgs_inactive", "cluster.degraded_ratio", "cluster.degraded_objects",
    "cluster.misplaced_objects", "cluster.unfound_objects", "cluster.recovering_bytes_per_sec",
    "cluster.recovering_objects_per_sec", "cluster.client.read_op_per_sec", "cluster.client.write_op_per_sec",
    "cluster.client.read_bytes_sec", "cluster.client.write_bytes_sec", "cluster.osds_up", "cluster.osds_in",
)
# metric -> pgmap key, for the keys Ceph leaves out when they are zero (nothing degraded, no IO)
_PGMAP_ZERO_WHEN_ABSENT = {
    "cluster.degraded_ratio": "degraded_ratio", "cluster.degraded_objects": "degraded_objects",
    "cluster.misplaced_objects": "misplaced_objects", "cluster.unfound_objects": "unfound_objects",
    "cluster.recovering_bytes_per_sec": "recovering_bytes_per_sec",
    "cluster.recovering_objects_per_sec": "recovering_objects_per_sec",
    "cluster.client.read_op_per_sec": "read_op_per_sec", "cluster.client.write_op_per_sec": "write_op_per_sec",
    "cluster.client.read_bytes_sec": "read_bytes_sec", "cluster.client.write_bytes_sec": "write_bytes_sec",
}


@dataclass(frozen=True)
class ClusterReading:
    """One cluster sample, read in full before anything is written (a failure half-way writes gaps only)."""

    pgs_by_state: dict[str, int]
    scalars: dict[str, float | None]  # metric -> value (None: Ceph did not say)
    up: set[int]
    flags: set[str]


def read_cluster(status: dict, osd_dump: dict) -> ClusterReading:
    """Pure: `ceph status` and `ceph osd dump` JSON -> the figures written. Raises on a malformed reply."""
    pgmap = status["pgmap"]
    states = {s["state_name"]: int(s["count"]) for s in pgmap.get("pgs_by_state", [])}
    scalars: dict[str, float | None] = {
        "cluster.pgs_total": pgmap.get("num_pgs"),
        "cluster.pgs_inactive": sum(n for s, n in states.items() if "active" not in s.split("+")),
    }
    for metric, key in _PGMAP_ZERO_WHEN_ABSENT.items():
        scalars[metric] = pgmap.get(key, 0)
    osdmap = status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)  # pacific nests it once more
    scalars["cluster.osds_up"] = osdmap.get("num_up_osds")  # absent = unknown: a gap, not 0
    scalars["cluster.osds_in"] = osdmap.get("num_in_osds")
    up = {int(o["osd"]) for o in osd_dump["osds"] if o["up"]}
    return ClusterReading(states, scalars, up, set(osd_dump.get("flags_set", [])))


def osdmap_epoch(status: dict) -> int | None:
    """Pure: the osdmap epoch in a `ceph status` reply (nested once more on pacific), None if absent."""
    osdmap = status.get("osdmap", {})
    osdmap = osdmap.get("osdmap", osdmap)
    epoch = osdmap.get("epoch")
    return epoch if isinstance(epoch, int) else None


class ClusterSampler(Sampler):
    """PG states, degraded/misplaced/unfound objects, recovery rate, client IO, OSD up/in, flags."""

    name = "cluster"

    def __init__(self, timeline: Timeline, cluster: CephCluster, interval: float = 1.0):
        super().__init__(timeline, interval)
        self.cluster = cluster
        self._up: set[int] | None = None
        self._flags: set[str] | None = None
        self._states_seen: set[str] = set()
        self._osd_dump: dict | None = None  # the last osd dump, and the osdmap epoch it was read at
        self._osd_dump_epoch: int | None = None
        self.osd_dumps_read = 0

    def _current_osd_dump(self, status: dict) -> dict:
        """The osd dump for this status: re-read only when the osdmap epoch moved. Every change of the
        up set or the flags is a new osdmap epoch (a swap that keeps the up count too), so one mon
        command a second (`status`) is enough while nothing changes. A status without an epoch: read it."""
        epoch = osdmap_epoch(status)
        if self._osd_dump is None or epoch is None or epoch != self._osd_dump_epoch:
            dump = self.cluster.osd_dump()
            self.osd_dumps_read += 1
            self._osd_dump, self._osd_dump_epoch = dump, epoch
        return self._osd_dump

    def sample_once(self, now: float) -> None:
        status = self.cluster.status()
        reading = read_cluster(status, self._current_osd_dump(status))
        tl = self.timeline
        for state in sorted(self._states_seen - set(reading.pgs_by_state)):
            tl.sample("cluster.pgs", 0, t=now, state=state)  # a state that emptied reads 0, not a gap
        self._states_seen |= set(reading.pgs_by_state)
        for state, n in reading.pgs_by_state.items():
            tl.sample("cluster.pgs", n, t=now, state=state)
        for metric, value in reading.scalars.items():
            tl.sample(metric, value, t=now)
        if self._up is not None:
            for i in sorted(self._up - reading.up):
                tl.event("cluster.osd_down", f"osd.{i}", t=now, osd=i)
            for i in sorted(reading.up - self._up):
                tl.event("cluster.osd_up", f"osd.{i}", t=now, osd=i)
        self._up = reading.up
        if reading.flags != self._flags:
            tl.event("cluster.flags", ",".join(sorted(reading.flags)) or "none", t=now, flags=sorted(reading.flags))
            self._flags = reading.flags

    def on_failure(self, now: float, error: Exception) -> None:
        for m in CLUSTER_GAP_METRICS:
            self.timeline.sample(m, None, t=now)
        for state in sorted(self._states_seen):
            self.timeline.sample("cluster.pgs", None, t=now, state=state)
        super().on_failure(now, error)


@dataclass(frozen=True)
class DaemonMemory:
    """One daemon's memory. pss/uss None: not read this time (see MemoryReader.read) or unreadable."""

    rss: int
    pss: int | None
    uss: int | None


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def parse_smaps_rollup(text: str) -> tuple[int | None, int | None]:
    """Pure: /proc/PID/smaps_rollup text -> (PSS, USS) in bytes; USS = Private_Clean + Private_Dirty."""
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            fields[key] = int(words[0]) * 1024
    if "Pss" not in fields:
        return None, None
    return fields["Pss"], fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)


def local_daemon_memory(pid: int) -> DaemonMemory:
    """RSS (statm), PSS and USS (smaps_rollup) of a local process, read once; raises if it is gone."""
    with open(f"/proc/{pid}/statm", "rb") as f:
        rss = int(f.read().split()[1]) * PAGE_SIZE
    pss = uss = None
    try:
        pss, uss = parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (OSError, ValueError):
        pass
    return DaemonMemory(rss, pss, uss)


PidLookup = Callable[[str], "int | None"]


def sandbox_pid_lookup(target: Target) -> PidLookup:
    from drills.sandbox import host as hostctl
    from drills.sandbox.bootstrap import spec_of_target

    spec = spec_of_target(target)
    return lambda daemon: hostctl.daemon_pid(spec, daemon)


class MemoryReader(Protocol):
    """Where daemon memory comes from.

    read() returns every asked daemon (None = not running / unknown). PSS and USS cost far more to read
    than RSS (the kernel walks the page tables), so they are read only for the daemons in `rollup_of`;
    for the others pss/uss are None and not written.
    """

    def read(self, daemons: Sequence[str], rollup_of: Collection[str] = ()) -> dict[str, DaemonMemory | None]:
        ...


@dataclass
class _OpenDaemon:
    pid: int
    statm_fd: int


@dataclass
class LocalMemoryReader:
    """Daemons on this machine (the sandbox): pid from `pid_of`, memory from /proc.

    The pid is looked up once and /proc/PID/statm kept open: reading an open statm is a few
    microseconds and fails once that process is gone (the fd holds the process, not the number, so a
    reused pid is never read). Only then is the pid looked up again (a restarted daemon has a new one).
    """

    pid_of: PidLookup
    _open: dict[str, _OpenDaemon] = field(default_factory=dict, init=False, repr=False)

    def read(self, daemons: Sequence[str], rollup_of: Collection[str] = ()) -> dict[str, DaemonMemory | None]:
        return {d: self._read_one(d, d in rollup_of) for d in daemons}

    def _read_one(self, daemon: str, with_rollup: bool) -> DaemonMemory | None:
        try:
            handle = self._open.get(daemon) or self._resolve(daemon)
            if handle is None:
                return None  # not running
            resident_pages = int(os.pread(handle.statm_fd, 128, 0).split()[1])
            if resident_pages == 0:  # a zombie: its memory is gone, it is not running
                raise ProcessLookupError(handle.pid)
            pss = uss = None
            if with_rollup:
                pss, uss = parse_smaps_rollup(Path(f"/proc/{handle.pid}/smaps_rollup").read_text())
            return DaemonMemory(resident_pages * PAGE_SIZE, pss, uss)
        except (psutil.Error, OSError, ValueError, IndexError):
            self._forget(daemon)  # gone between the lookup and the read (or since the last sample): a gap
            return None

    def _resolve(self, daemon: str) -> _OpenDaemon | None:
        pid = self.pid_of(daemon)
        if pid is None:
            return None
        handle = _OpenDaemon(pid, os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC))
        self._open[daemon] = handle
        return handle

    def _forget(self, daemon: str) -> None:
        handle = self._open.pop(daemon, None)
        if handle is not None:
            os.close(handle.statm_fd)

    def close(self) -> None:
        for daemon in list(self._open):
            self._forget(daemon)


# Runs a shell command on a host and returns its stdout; raises when the host cannot be reached.
# `access_command(host_access)` is the one the plugin uses.
HostCommand = Callable[[Host, str], str]


def access_command(access: HostAccess) -> HostCommand:
    """A HostCommand over drills.hostaccess (the exit status is the probe's own business: check=False)."""
    return lambda host, command: access.run(host, command, check=False).stdout


def remote_memory_probe(with_rollup: bool = True) -> str:
    """One round trip per host and sample: pid, VmRSS (kB), Pss and Private_* (kB) from smaps_rollup
    (left empty without `with_rollup`: the costly part, done at the lower PSS rate), cmdline."""
    roll = ("roll=$(awk '/^Pss:/{pss=$2} /^Private_(Clean|Dirty):/{priv+=$2} END{print pss\" \"priv}' "
            "/proc/$p/smaps_rollup 2>/dev/null); ") if with_rollup else "roll=; "
    return (
        "for p in $(pgrep -x 'ceph-osd|ceph-mon|ceph-mgr|ceph-mds|radosgw'); do "
        "rss=$(awk '/^VmRSS:/{print $2}' /proc/$p/status 2>/dev/null); "
        + roll +
        "cmd=$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null); "
        "echo \"$p|$rss|$roll|$cmd\"; done; true"
    )


REMOTE_MEMORY_PROBE = remote_memory_probe(with_rollup=True)

_DAEMON_KINDS = {"ceph-osd": "osd", "ceph-mon": "mon", "ceph-mgr": "mgr", "ceph-mds": "mds", "radosgw": "client"}


def daemon_of_cmdline(cmdline: str) -> str | None:
    """'/usr/bin/ceph-osd -f --cluster ceph --id 3 --setuser ceph' -> 'osd.3'; also `-i N`, `-n osd.3`,
    `--name client.rgw.x` (radosgw, cephadm). None when the daemon name cannot be told."""
    words = cmdline.split()
    if not words:
        return None
    kind = _DAEMON_KINDS.get(Path(words[0]).name)
    if kind is None:
        return None
    for flag, value in zip(words, words[1:]):
        if flag in ("-n", "--name"):
            return value
        if flag in ("-i", "--id"):
            return f"{kind}.{value}"
    for word in words:
        if word.startswith("--id="):
            return f"{kind}.{word.split('=', 1)[1]}"
        if word.startswith("--name="):
            return word.split("=", 1)[1]
    return None


def parse_memory_probe(text: str) -> dict[str, DaemonMemory]:
    """Pure: REMOTE_MEMORY_PROBE output -> memory per daemon. Lines of vanished processes are skipped."""
    out: dict[str, DaemonMemory] = {}
    for line in text.splitlines():
        parts = line.split("|", 3)
        if len(parts) != 4:
            continue
        _pid, rss_kb, roll, cmdline = parts
        daemon = daemon_of_cmdline(cmdline.strip())
        if daemon is None or not rss_kb.strip().isdigit():
            continue  # exited between pgrep and the read, or a kernel thread without VmRSS
        roll_fields = roll.split()
        pss = int(roll_fields[0]) * 1024 if len(roll_fields) == 2 and roll_fields[0].isdigit() else None
        uss = int(roll_fields[1]) * 1024 if len(roll_fields) == 2 and roll_fields[1].isdigit() else None
        out[daemon] = DaemonMemory(int(rss_kb) * 1024, pss, uss)
    return out


@dataclass
class RemoteMemoryReader:
    """Daemons on remote hosts, read through `run` (one probe command per host and sample; the probe
    reads smaps_rollup only when a daemon of that host is due for PSS/USS).

    A host whose probe fails (unreachable, powered off) gives gaps for all of its daemons; a daemon not
    found in its host's process list (not running) is a gap too.
    """

    run: HostCommand
    hosts_by_daemon: dict[str, Host]

    def read(self, daemons: Sequence[str], rollup_of: Collection[str] = ()) -> dict[str, DaemonMemory | None]:
        by_host: dict[str, list[str]] = {}
        for d in daemons:
            by_host.setdefault(self.hosts_by_daemon[d].name, []).append(d)
        out: dict[str, DaemonMemory | None] = {}
        for names in by_host.values():
            host = self.hosts_by_daemon[names[0]]
            probe = remote_memory_probe(with_rollup=any(d in rollup_of for d in names))
            try:
                found = parse_memory_probe(self.run(host, probe))
            except Exception:  # noqa: BLE001 - an unreachable host: its daemons are gaps this second
                found = {}
            for d in names:
                out[d] = found.get(d)
        return out


def rollup_slots(daemons: Sequence[str], every: int) -> dict[str, int]:
    """Pure: which sample (mod `every`) reads each daemon's PSS/USS, spread so that each sample reads
    about len(daemons) / every of them instead of all of them at once every `every` samples."""
    n = max(1, len(daemons))
    return {d: (i * every) // n for i, d in enumerate(daemons)}


# PSS/USS cost the kernel a page-table walk per daemon (~5-10 ms for a 1 GiB OSD); RSS is a counter.
DEFAULT_ROLLUP_INTERVAL = 30.0


class MemorySampler(Sampler):
    """Per-daemon RSS every sample, PSS/USS every `rollup_interval` seconds per daemon (spread over the
    samples), from a MemoryReader (local: the sandbox; remote: through a HostCommand such as the SSH
    backend).

    A daemon that is not running (power cut, killed) or cannot be read has no sample value: a gap.
    """

    name = "memory"

    def __init__(self, timeline: Timeline, target: Target, pid_of: PidLookup | None = None, interval: float = 1.0,
                 daemons: list[str] | None = None, reader: MemoryReader | None = None,
                 rollup_interval: float = DEFAULT_ROLLUP_INTERVAL):
        super().__init__(timeline, interval)
        if reader is None:
            if pid_of is None:
                raise ValueError("MemorySampler needs pid_of (local daemons) or a reader")
            reader = LocalMemoryReader(pid_of)
        if rollup_interval <= 0:
            raise ValueError(f"rollup_interval must be positive seconds (got {rollup_interval})")
        self.reader = reader
        self.hosts = {d: h.name for h in target.hosts for d in h.daemons}
        self.daemons = daemons or [d for d in self.hosts]
        self.rollup_every = max(1, round(rollup_interval / interval))  # in samples
        self._rollup_slot = rollup_slots(self.daemons, self.rollup_every)
        self._tick = 0
        self._due: set[str] = set()  # the daemons whose PSS/USS the current sample reads

    def rollup_due(self) -> list[str]:
        """The daemons whose PSS/USS this sample reads."""
        slot = self._tick % self.rollup_every
        return [d for d in self.daemons if self._rollup_slot[d] == slot]

    def sample_once(self, now: float) -> None:
        self._due = set(self.rollup_due())
        self._tick += 1
        memory = self.reader.read(self.daemons, self._due)
        for d in self.daemons:
            self._write(now, d, memory.get(d), d in self._due)

    def _write(self, now: float, daemon: str, mem: DaemonMemory | None, with_rollup: bool) -> None:
        labels = {"daemon": daemon, "host": self.hosts.get(daemon, "")}
        self.timeline.sample("rss.bytes", None if mem is None else mem.rss, t=now, **labels)
        if with_rollup:
            self.timeline.sample("pss.bytes", None if mem is None else mem.pss, t=now, **labels)
            self.timeline.sample("uss.bytes", None if mem is None else mem.uss, t=now, **labels)

    def on_failure(self, now: float, error: Exception) -> None:
        for d in self.daemons:
            self._write(now, d, None, d in self._due)
        super().on_failure(now, error)

    def stop(self) -> None:
        super().stop()
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


def default_samplers(timeline: Timeline, target: Target, cluster: CephCluster, interval: float = 1.0,
                     host_command: HostCommand | None = None,
                     rollup_interval: float = DEFAULT_ROLLUP_INTERVAL,
                     host_access: HostAccess | None = None) -> list[Sampler]:
    """The cluster sampler, and a memory sampler: local pids for the sandbox, otherwise over
    `host_command` when one is given, else through `host_access` (the run's HostAccess) when the target
    has ssh hosts."""
    if host_command is None and host_access is not None and any(h.access.kind == "ssh" for h in target.hosts):
        host_command = access_command(host_access)
    samplers: list[Sampler] = [ClusterSampler(timeline, cluster, interval)]
    if target.cluster.deployment == "sandbox":
        samplers.append(MemorySampler(timeline, target, sandbox_pid_lookup(target), interval,
                                      rollup_interval=rollup_interval))
    elif host_command is not None:
        hosts = {d: h for h in target.hosts for d in h.daemons}
        samplers.append(MemorySampler(timeline, target, interval=interval,
                                      reader=RemoteMemoryReader(host_command, hosts),
                                      rollup_interval=rollup_interval))
    return samplers


def mempool_snapshot(cluster: CephCluster, osd_id: int) -> dict:
    """`ceph tell osd.N dump_mempools`, on request."""
    return cluster.osd_command(osd_id, "dump_mempools")


def heap_stats(cluster: CephCluster, osd_id: int) -> str:
    """tcmalloc `heap stats` of an OSD, on request."""
    return str(cluster.osd_command(osd_id, "heap", heapcmd="stats"))
