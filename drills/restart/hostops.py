"""How the orchestrator reaches hosts and the cluster: the sandbox (local, cgroups) or ssh (systemd).

Sandbox: daemons start through the sandbox fault backend, inside the host's memory cgroup (every
sandbox OSD host has one; limited with --host-memory); a host's use is its cgroup's anonymous memory
(the daemons' heaps; page cache is reclaimed before the kernel OOM-kills), else the sum of its daemons'
RSS; OOM kills are the cgroup's kernel counter (a host without one cannot be watched: the machine's
counter would count every other sandbox's kills too, so that raises).

SSH: daemons are systemd units (start / restart through the ssh backend); memory is one probe per
look (every Ceph daemon's RSS, and MemAvailable); OOM kills are /proc/vmstat's oom_kill counter.
A counter that cannot be read raises (FaultError), never reads 0. Both kinds read the counter through
drills.hostfacts, and reach hosts through one drills.hostaccess.HostAccess (the caller's, when given).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

import psutil

from drills.cluster import CephCluster, ClusterError
from drills.hostaccess import HostAccess
from drills.restart.orchestrator import HostMemory
from drills.target import Host, Target


@dataclass
class _BackendHostOps:
    """What both host kinds do through their fault backend (probe, start, stop) and the host facts
    (the OOM-kill counter of drills.hostfacts). ``access``: the run's HostAccess (None: one of its own)."""

    target: Target
    access: HostAccess | None = None
    _backend: Any = field(default=None, init=False)

    def probe(self, host: Host) -> None:
        """Reachable, with the tools to start daemons: raises BackendUnavailable naming the host and why."""
        self._backend.probe(host, "daemons")

    def start(self, host: Host, daemon: str) -> None:
        self._backend.start_daemon(host, daemon)

    def stop(self, host: Host, daemon: str) -> None:
        self._backend.stop_daemon(host, daemon)

    def oom_kills(self, host: Host) -> int:
        """The host's OOM-kill counter (drills.hostfacts); raises FaultError naming why it cannot be read."""
        from drills.faults.errors import FaultError
        from drills.hostfacts import NotCounted, counted, oom_kill_reading

        try:
            return counted(oom_kill_reading(self.target, host, access=self.access))
        except NotCounted as e:
            raise FaultError(str(e)) from None


@dataclass
class SandboxHostOps(_BackendHostOps):
    def __post_init__(self) -> None:
        from drills.faults.backends.sandbox import SandboxBackend

        self._backend = SandboxBackend(self.target, self.access)
        self.spec = self._backend.spec

    def _pid(self, daemon: str) -> int | None:
        from drills.sandbox import host as hostctl

        return hostctl.daemon_pid(self.spec, daemon)

    def _cgroup(self, host: Host) -> Any:
        from drills.sandbox.cgroups import existing_host_cgroup

        return existing_host_cgroup(self.spec.prefix, host.name)

    def restart(self, host: Host, daemon: str) -> None:
        self._backend.stop_daemon(host, daemon)
        self._backend.start_daemon(host, daemon)

    def running(self, host: Host, daemon: str) -> bool:
        return self._pid(daemon) is not None

    def memory(self, host: Host, budget: int) -> HostMemory:
        rss: dict[str, int] = {}
        for d in host.daemons:
            pid = self._pid(d)
            if pid is None:
                continue
            try:
                rss[d] = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        cg = self._cgroup(host)
        # The cgroup's anonymous memory, not its usage: BlueFS reads fill the page cache, which the kernel
        # reclaims before it OOM-kills, so counting it would hold OSDs back for memory that is there.
        used = cg.read().anon if cg is not None else sum(rss.values())
        return HostMemory(host.name, budget, used, rss, psutil.virtual_memory().available)


@dataclass
class SshHostOps(_BackendHostOps):
    def __post_init__(self) -> None:
        from drills.faults.backends.ssh import SshBackend

        if self.access is None:
            self.access = HostAccess(self.target)  # shared by the backend and the OOM counter
        self._backend = SshBackend(self.target, access=self.access)

    def restart(self, host: Host, daemon: str) -> None:
        u = shlex.quote(self._backend.unit(daemon))
        self._backend.run(host, f"systemctl reset-failed {u} 2>/dev/null; systemctl restart {u}")

    def running(self, host: Host, daemon: str) -> bool:
        u = shlex.quote(self._backend.unit(daemon))
        return self._backend.run(host, f"systemctl is-active --quiet {u}", check=False).rc == 0

    def memory(self, host: Host, budget: int) -> HostMemory:
        from drills.telemetry.samplers import REMOTE_MEMORY_PROBE, parse_memory_probe

        out = self._backend.run(host, REMOTE_MEMORY_PROBE + "; echo MEMAVAIL $(awk '/^MemAvailable:/{print $2}' /proc/meminfo)").stdout
        avail = None
        for line in out.splitlines():
            if line.startswith("MEMAVAIL "):
                v = line.split()[1:]
                avail = int(v[0]) * 1024 if v and v[0].isdigit() else None
        rss = {d: m.rss for d, m in parse_memory_probe(out).items() if d in host.daemons}
        return HostMemory(host.name, budget, sum(rss.values()), rss, avail)


def host_ops_for(target: Target, access: HostAccess | None = None) -> SandboxHostOps | SshHostOps:
    """The target's host ops; ``access`` is the run's HostAccess (None: the host ops make their own)."""
    kinds = {h.access.kind for r in target.racks for h in r.hosts}
    if target.cluster.deployment == "sandbox" and kinds <= {"local"}:
        return SandboxHostOps(target, access)
    if kinds <= {"ssh"}:
        return SshHostOps(target, access)
    raise ClusterError(f"controlled restart needs every OSD host reachable the same way (local sandbox or ssh); the target mixes {sorted(kinds)}")


def pgs_ready(pg_stats: list[dict[str, Any]], osd: int, wait: str) -> tuple[bool, str]:
    """Pure: every PG whose up set holds ``osd`` has it acting and is active (wait=peered) or
    active+clean (wait=clean). A PG list with none for the OSD is not ready (the map has not caught up)."""
    mine = [p for p in pg_stats if osd in p.get("up", [])]
    if not mine:
        return False, f"no PGs mapped to osd.{osd} yet"
    waiting = []
    for p in mine:
        states = p.get("state", "").split("+")
        ok = osd in p.get("acting", []) and "active" in states and (wait != "clean" or "clean" in states)
        if not ok:
            waiting.append(f"{p['pgid']} {p.get('state')}")
    if waiting:
        return False, f"{len(waiting)}/{len(mine)} PGs of osd.{osd} not {wait}: {', '.join(waiting[:5])}"
    return True, f"{len(mine)} PGs of osd.{osd} {wait}"


_UP_SET = re.compile(r"^\S+ raw \(\[[^\]]*\], p-?\d+\) up \(\[([^\]]*)\]", re.M)


def pgs_in_up_sets(dump_all: str, osd: int) -> int:
    """Pure: PGs whose up set holds ``osd`` in `osdmaptool --test-map-pgs-dump-all` output."""
    return sum(1 for m in _UP_SET.finditer(dump_all) if str(osd) in m.group(1).split(","))


def mapped_pg_count(osdmap: bytes, osd: int) -> int | None:
    """PGs the OSD map gives ``osd`` once it is up (`osdmaptool --mark-up`; nothing is written to the
    cluster). `pg dump` cannot say: a down OSD is in no up set, and a held OSD is down. None when
    osdmaptool (package ceph-base) is missing or fails."""
    with tempfile.NamedTemporaryFile(prefix="drills-osdmap-") as f:
        f.write(osdmap)
        f.flush()
        try:
            out = subprocess.run(["osdmaptool", f.name, "--mark-up", str(osd), "--test-map-pgs-dump-all"],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    return pgs_in_up_sets(out, osd)


@dataclass
class CephClusterOps:
    cluster: CephCluster

    def osd_up(self, osd: int) -> bool:
        try:
            return osd in self.cluster.osds_up()
        except ClusterError:
            return False

    def _pg_stats(self) -> list[dict[str, Any]]:
        dump = self.cluster.mgr_command("pg dump", dumpcontents=["pgs_brief"])
        return dump.get("pg_stats", []) if isinstance(dump, dict) else dump

    def osd_ready(self, osd: int, wait: str) -> tuple[bool, str]:
        try:
            stats = self._pg_stats()
        except (ClusterError, ValueError) as e:
            return False, f"pg dump failed: {e}"
        return pgs_ready(stats, osd, wait)

    def heap_release(self, osd: int) -> None:
        self.cluster.heap_release(osd)

    def osd_pg_count(self, osd: int) -> int | None:
        """From the OSD map (right for a held, down OSD); else, for an up OSD, from `pg dump`."""
        try:
            count = mapped_pg_count(self.cluster.osdmap_binary(), osd)
        except ClusterError:
            count = None
        if count is None:
            try:
                count = sum(1 for p in self._pg_stats() if osd in p.get("up", []))
            except (ClusterError, ValueError):
                return None
        return count or None
