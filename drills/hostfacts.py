"""Facts read on the hosts that run Ceph daemons (not on the machine that runs pytest).

OOM kills, per host:
  sandbox host (access.kind "local", a sandbox target): the kernel's OOM-kill counter of the host's
      memory cgroup ``ceph-drills-<prefix>/<host>`` (v1 ``memory.oom_control``, v2 ``memory.events``).
      `drill sandbox up` makes one for every host, the service host (mon, mgr, rgw) included (never
      limited). A host without one is not measured: the machine's own /proc/vmstat would count every
      sandbox's and every other process's kills.
  ssh host: ``oom_kill`` from the host's /proc/vmstat (kernel 4.13+), through drills.hostaccess.
  anything else, or a read that fails: not measured (value None, with why).
This is the one OOM-kill counter of the harness: the evidence's per-drill counts, the controlled
restart's host ops and `OomWatch` all read it here; `machine_oom_kills` is this machine's own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from drills.hostaccess import HostAccess
from drills.target import Host, Target

# Prints the counter or nothing: `awk` exits 0 either way, so "absent" and "unreadable" are told apart
# by the output, not the exit code.
VMSTAT_OOM_COMMAND = "awk '$1 == \"oom_kill\" {print $2; found=1} END {if (!found) print \"absent\"}' /proc/vmstat"


@dataclass(frozen=True)
class HostCount:
    """One host's counter: ``value`` None = not measured, ``why`` says why (or where it came from)."""

    host: str
    value: int | None
    source: str  # "cgroup <path>", "ssh /proc/vmstat", or "" when not measured
    why: str = ""

    @property
    def measured(self) -> bool:
        return self.value is not None


# (host, command) -> stdout; raises on failure. HostAccess.run in production, a fake in tests.
HostCommand = Callable[[Host, str], str]


def parse_vmstat_oom(stdout: str) -> int | None:
    """Pure: the output of VMSTAT_OOM_COMMAND -> the counter, None when absent or garbled."""
    text = stdout.strip()
    return int(text) if text.isdigit() else None


def _sandbox_prefix(target: Target) -> str | None:
    if target.cluster.deployment != "sandbox":
        return None
    try:
        from drills.sandbox.bootstrap import spec_of_target

        return spec_of_target(target).prefix
    except Exception:  # noqa: BLE001 - not a sandbox we can describe: its hosts are not measured
        return None


def _run_with(access: HostAccess) -> HostCommand:
    return lambda host, command: access.run(host, command).stdout


def oom_kill_readings(target: Target, *, ssh_run: HostCommand | None = None,
                      cgroup_of: Callable[[str, str], Any] | None = None,
                      access: HostAccess | None = None) -> dict[str, HostCount]:
    """Every host of the target that runs Ceph daemons -> its OOM-kill counter (cumulative; diff two
    readings). ssh hosts are read through ``access`` (the run's HostAccess; without one, a HostAccess of
    this call's own). ``ssh_run`` and ``cgroup_of(prefix, host)`` are for tests."""
    prefix = _sandbox_prefix(target)
    hosts = [h for h in target.hosts if h.daemons]
    if ssh_run is None and access is None and any(h.access.kind == "ssh" for h in hosts):
        with HostAccess(target) as own:
            return oom_kill_readings(target, cgroup_of=cgroup_of, access=own)
    return {h.name: oom_kill_reading(target, h, ssh_run=ssh_run, cgroup_of=cgroup_of, prefix=prefix, access=access)
            for h in hosts}


def oom_kill_reading(target: Target, host: Host, *, ssh_run: HostCommand | None = None,
                     cgroup_of: Callable[[str, str], Any] | None = None, prefix: str | None = None,
                     access: HostAccess | None = None) -> HostCount:
    """One host's OOM-kill counter (see the module docstring for where it comes from)."""
    if host.access.kind == "ssh":
        if ssh_run is None and access is None:
            with HostAccess(target) as own:
                return oom_kill_reading(target, host, access=own)
        run = ssh_run or _run_with(access)  # type: ignore[arg-type]
        try:
            value = parse_vmstat_oom(run(host, VMSTAT_OOM_COMMAND))
        except Exception as e:  # noqa: BLE001 - an unreachable host is not measured, never 0
            return HostCount(host.name, None, "", f"cannot read /proc/vmstat over SSH: {e}")
        if value is None:
            return HostCount(host.name, None, "", "no oom_kill line in /proc/vmstat (kernel older than 4.13)")
        return HostCount(host.name, value, "ssh /proc/vmstat")
    prefix = prefix if prefix is not None else _sandbox_prefix(target)
    if host.access.kind != "local" or prefix is None:
        return HostCount(host.name, None, "", f"host {host.name} is reached as {host.access.kind!r} outside a sandbox: "
                         "no per-host OOM counter")
    if cgroup_of is None:
        from drills.sandbox.cgroups import existing_host_cgroup

        cgroup_of = existing_host_cgroup
    cg = cgroup_of(prefix, host.name)
    if cg is None:
        return HostCount(host.name, None, "", f"no memory cgroup for sandbox host {host.name} "
                         "(a sandbox made before service hosts had one: run `drill sandbox up` again)")
    return cgroup_oom_reading(host.name, cg)


def cgroup_oom_reading(host: str, cg: Any) -> HostCount:
    """A memory cgroup's OOM-kill counter (drills.sandbox.cgroups.HostCgroup: v1 ``memory.oom_control``,
    v2 ``memory.events``); None with why when the kernel keeps none or the read fails."""
    try:
        value = cg.read().oom_kills
    except Exception as e:  # noqa: BLE001
        return HostCount(host, None, "", f"cannot read the memory cgroup {cg.path}: {e}")
    if value is None:
        return HostCount(host, None, "", f"the memory cgroup {cg.path} has no oom_kill counter (kernel older than 4.13)")
    return HostCount(host, value, f"cgroup {cg.path}")


class NotCounted(Exception):
    """A caller that cannot go on without the OOM-kill count (a watch, the controlled start) got none."""


def counted(reading: HostCount) -> int:
    """The reading's value; NotCounted naming the host and why when it was not measured (never 0)."""
    if reading.value is None:
        raise NotCounted(f"host {reading.host}: OOM kills cannot be counted: {reading.why}")
    return reading.value


def machine_oom_kills(vmstat: str = "/proc/vmstat") -> int | None:
    """This machine's oom_kill counter (every process's kills, every sandbox's too); None when the
    kernel has no such line or the file cannot be read."""
    try:
        with open(vmstat) as f:
            text = f.read()
    except OSError:
        return None
    return parse_vmstat_file(text)


def parse_vmstat_file(text: str) -> int | None:
    """Pure: /proc/vmstat itself -> its oom_kill counter, None when absent."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "oom_kill" and parts[1].isdigit():
            return int(parts[1])
    return None


def oom_kills_by_host(target: Target, **kw: Any) -> dict[str, int | None]:
    """Host -> its cumulative OOM-kill count, None when it cannot be read (see `oom_kill_readings` for why)."""
    return {h: r.value for h, r in oom_kill_readings(target, **kw).items()}


def oom_kills_between(before: dict[str, int | None], after: dict[str, int | None]) -> dict[str, int | None]:
    """Pure: kills per host between two readings; None where either is missing (a counter that went
    down means the cgroup was re-made: also None, the kills in between are unknown)."""
    out: dict[str, int | None] = {}
    for host in sorted(set(before) | set(after)):
        a, b = before.get(host), after.get(host)
        out[host] = b - a if a is not None and b is not None and b >= a else None
    return out


# --- OOM kills, named (the sandbox's host cgroups) --------------------------------------------------


@dataclass(frozen=True)
class OomKill:
    host: str
    daemon: str  # "" when the counter rose but no watched daemon vanished (another process was chosen)
    pid: int
    t: float  # wall clock when noticed
    rss_before: int  # last RSS seen before the kill (bytes)


PidOf = Callable[[str], "int | None"]
RssOf = Callable[[int], int]


@dataclass
class OomWatch:
    """Polls host cgroups: a rise of a cgroup's oom_kill counter plus a watched daemon gone = an OOM kill.

    The sandbox's daemons are daemonised (not our children), so there is no exit status to read; the
    kernel's counter is what says "killed by the OOM killer" (always SIGKILL), the vanished pid says whom.
    A cgroup without a counter cannot be watched: NotCounted, never a count of 0.
    """

    cgroups: dict[str, Any]  # host -> its drills.sandbox.cgroups.HostCgroup
    daemons: dict[str, Sequence[str]]  # host -> daemons to name
    pid_of: PidOf
    rss_of: RssOf
    kills: list[OomKill] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)
    _pids: dict[str, int] = field(default_factory=dict)
    _rss: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for host, cg in self.cgroups.items():
            self._counts[host] = counted(cgroup_oom_reading(host, cg))
        self._snapshot()

    def _snapshot(self) -> None:
        for names in self.daemons.values():
            for d in names:
                pid = self.pid_of(d)
                if pid is not None:
                    self._pids[d] = pid
                    try:
                        self._rss[d] = self.rss_of(pid)
                    except Exception:  # noqa: BLE001 - gone between the two reads
                        pass
                else:
                    self._pids.pop(d, None)

    def poll(self) -> list[OomKill]:
        """New kills since the last poll (also appended to ``kills``)."""
        new: list[OomKill] = []
        now = time.time()
        for host, cg in self.cgroups.items():
            count = counted(cgroup_oom_reading(host, cg))
            rose = count - self._counts.get(host, 0)
            self._counts[host] = count
            if rose <= 0:
                continue
            gone = [d for d in self.daemons.get(host, ()) if d in self._pids and not _alive(self._pids[d], self.pid_of(d))]
            for i in range(rose):
                d = gone[i] if i < len(gone) else ""
                new.append(OomKill(host, d, self._pids.get(d, 0), now, self._rss.get(d, 0)))
        self._snapshot()
        self.kills.extend(new)
        return new


def _alive(old_pid: int, current: int | None) -> bool:
    return current is not None and current == old_pid and os.path.exists(f"/proc/{old_pid}")


# --- memory: MemTotal / MemAvailable --------------------------------------------------------------

# Both lines or nothing; the values are kB as the kernel prints them.
MEMINFO_COMMAND = "awk '$1 == \"MemTotal:\" || $1 == \"MemAvailable:\" {print $1, $2}' /proc/meminfo"


@dataclass(frozen=True)
class MemInfo:
    """A host's /proc/meminfo totals in bytes; ``total`` None = not measured, ``why`` says why."""

    host: str
    total: int | None
    available: int | None
    source: str  # "ssh /proc/meminfo", "/proc/meminfo of this machine", or "" when not measured
    why: str = ""


def parse_meminfo(stdout: str) -> tuple[int | None, int | None]:
    """Pure: MEMINFO_COMMAND's output (or /proc/meminfo itself) -> (MemTotal, MemAvailable) in bytes."""
    found: dict[str, int] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("MemTotal:", "MemAvailable:") and parts[1].isdigit():
            found[parts[0]] = int(parts[1]) * 1024
    return found.get("MemTotal:"), found.get("MemAvailable:")


def meminfo_reading(target: Target, host: Host, *, ssh_run: HostCommand | None = None,
                    local_meminfo: Callable[[], str] | None = None, access: HostAccess | None = None) -> MemInfo:
    """MemTotal and MemAvailable of a host: over SSH (through ``access``, else a HostAccess of this call's
    own) for an ssh host; a local (sandbox) host shares this machine's, so it is read here and the source
    says so. ``ssh_run`` and ``local_meminfo`` are for tests."""
    if host.access.kind == "ssh":
        if ssh_run is None and access is None:
            with HostAccess(target) as own:
                return meminfo_reading(target, host, access=own)
        run = ssh_run or _run_with(access)  # type: ignore[arg-type]
        try:
            total, available = parse_meminfo(run(host, MEMINFO_COMMAND))
        except Exception as e:  # noqa: BLE001 - an unreachable host is not measured, never 0
            return MemInfo(host.name, None, None, "", f"cannot read /proc/meminfo over SSH: {e}")
        source = "ssh /proc/meminfo"
    else:
        try:
            text = local_meminfo() if local_meminfo is not None else open("/proc/meminfo").read()
        except OSError as e:
            return MemInfo(host.name, None, None, "", f"cannot read /proc/meminfo: {e}")
        total, available = parse_meminfo(text)
        source = "/proc/meminfo of this machine (shared by every local host)"
    if total is None:
        return MemInfo(host.name, None, available, "", "no MemTotal line in /proc/meminfo")
    return MemInfo(host.name, total, available, source)
