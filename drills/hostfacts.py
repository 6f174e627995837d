"""Facts read on the hosts that run Ceph daemons (not on the machine that runs pytest).

OOM kills, per host:
  sandbox host (access.kind "local", a sandbox target): the kernel's OOM-kill counter of the host's
      memory cgroup ``ceph-drills-<prefix>/<host>`` (v1 ``memory.oom_control``, v2 ``memory.events``).
      `drill sandbox up` makes one for every host, the service host (mon, mgr, rgw) included (never
      limited). A host without one is not measured: the machine's own /proc/vmstat would count every
      sandbox's and every other process's kills.
  ssh host: ``oom_kill`` from the host's /proc/vmstat (kernel 4.13+), over the SSH fault backend.
  anything else, or a read that fails: not measured (value None, with why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


# (host, command) -> stdout; raises on failure. The SSH backend's run in production, a fake in tests.
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


def _ssh_command(target: Target) -> HostCommand:
    backend: Any = None

    def run(host: Host, command: str) -> str:
        nonlocal backend
        if backend is None:
            from drills.faults.backends.ssh import SshBackend

            backend = SshBackend(target)
        return backend.run(host, command).stdout

    return run


def oom_kill_readings(target: Target, *, ssh_run: HostCommand | None = None,
                      cgroup_of: Callable[[str, str], Any] | None = None) -> dict[str, HostCount]:
    """Every host of the target that runs Ceph daemons -> its OOM-kill counter (cumulative; diff two
    readings). ``ssh_run`` and ``cgroup_of(prefix, host)`` are for tests."""
    prefix = _sandbox_prefix(target)
    run = ssh_run
    out: dict[str, HostCount] = {}
    for host in target.hosts:
        if not host.daemons:
            continue
        if host.access.kind == "ssh" and run is None:
            run = _ssh_command(target)
        out[host.name] = oom_kill_reading(target, host, ssh_run=run, cgroup_of=cgroup_of, prefix=prefix)
    return out


def oom_kill_reading(target: Target, host: Host, *, ssh_run: HostCommand | None = None,
                     cgroup_of: Callable[[str, str], Any] | None = None, prefix: str | None = None) -> HostCount:
    """One host's OOM-kill counter (see the module docstring for where it comes from)."""
    if host.access.kind == "ssh":
        run = ssh_run or _ssh_command(target)
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
    try:
        value = cg.read().oom_kills
    except Exception as e:  # noqa: BLE001
        return HostCount(host.name, None, "", f"cannot read the memory cgroup {cg.path}: {e}")
    if value is None:
        return HostCount(host.name, None, "", f"the memory cgroup {cg.path} has no oom_kill counter (kernel older than 4.13)")
    return HostCount(host.name, value, f"cgroup {cg.path}")


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
                    local_meminfo: Callable[[], str] | None = None) -> MemInfo:
    """MemTotal and MemAvailable of a host: over SSH for an ssh host; a local (sandbox) host shares this
    machine's, so it is read here and the source says so. ``ssh_run`` and ``local_meminfo`` are for tests."""
    if host.access.kind == "ssh":
        run = ssh_run or _ssh_command(target)
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
