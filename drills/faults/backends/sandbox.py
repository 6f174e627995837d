"""The sandbox backend: local daemons in per-host network namespaces, nftables inside them.

A power cut is silent, as a real one: the host's namespace first drops every packet
(so the dying daemons' FIN/RST never leave), then all its daemons get SIGKILL at once.
Peers see silence and must wait out osd_heartbeat_grace. Power restore lifts the
blackhole and, like a host booting, starts its daemons (or leaves them held for a
controlled start). A host given a memory budget (``drill sandbox up --host-memory``, or
``drills.sandbox.cgroups``) starts its daemons inside its memory cgroup.

Gray faults: a slow disk puts the OSD in its own cgroup v1 ``blkio`` cgroup with
``blkio.throttle.*`` limits on the disk under its BlueStore file (the sandbox's OSDs are sparse
files, so that is the disk of the sandbox directory's file system; only this OSD's I/O is
limited); CPU starvation does the same with a ``cpu`` cgroup's CFS quota; a slow link runs the
``tc`` script of ``drills.faults.throttle`` inside the host's namespace.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Sequence

from drills.faults import nft, throttle
from drills.faults.errors import BackendUnavailable, FaultError, Unsupported
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
from drills.hostaccess import CommandResult, HostAccess, HostAccessError
from drills.sandbox import host as hostctl
from drills.sandbox.bootstrap import spec_of_target
from drills.sandbox.cgroups import CgroupError, ProcessCgroup, block_device_of, existing_host_cgroup
from drills.sandbox.spec import SandboxError, SandboxSpec
from drills.target import Host, Target

HANDLES = {"power": ("sandbox",), "daemons": ("local",), "network": ("sandbox",)}

POWER_TAG = "power"


class SandboxBackend:
    def __init__(self, target: Target, access: HostAccess | None = None):
        self.target = target
        self.access = access if access is not None else HostAccess(target)  # local hosts: no connection to close
        try:
            self.spec: SandboxSpec = spec_of_target(target)
        except SandboxError as e:
            raise BackendUnavailable(target.cluster.name, str(e)) from None

    # --- helpers -------------------------------------------------------------
    def _ns(self, host: Host) -> str:
        if not host.access.netns:
            raise BackendUnavailable(host.name, "access.netns is empty: not a sandbox host")
        return host.access.netns

    def _in_ns(self, host: Host, command: str, input: str | None = None) -> CommandResult:
        """A command inside the host's namespace (drills.hostaccess runs it through ``ip netns exec``)."""
        self._ns(host)
        try:
            return self.access.run(host, command, check=False, timeout=30, input=input)
        except HostAccessError as e:
            raise FaultError(str(e)) from None

    def _nft(self, host: Host, ruleset: str) -> None:
        p = self._in_ns(host, "nft -f -", input=ruleset)
        if p.rc != 0:
            raise FaultError(f"host {host.name}: nft failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.rc}")

    def tables(self, host: Host) -> list[str]:
        """The drills_ nft tables now in the host's namespace."""
        p = self._in_ns(host, "nft list tables")
        return nft.list_drill_tables(p.stdout) if p.rc == 0 else []

    def _sandbox_host(self, host: Host):
        try:
            return self.spec.host(host.name)
        except SandboxError as e:
            raise BackendUnavailable(host.name, str(e)) from None

    # --- HostBackend -----------------------------------------------------------
    def probe(self, host: Host, role: str) -> None:
        ns = self._ns(host)
        if ns not in hostctl.list_netns():
            raise BackendUnavailable(host.name, f"network namespace {ns} does not exist: is the sandbox up? (drill sandbox status)")
        self._sandbox_host(host)

    def power_off(self, host: Host) -> None:
        # Silence first, then every daemon dies at the same instant.
        self._nft(host, nft.blackhole_ruleset(POWER_TAG))
        killed = []
        for d in host.daemons:
            hostctl.signal_daemon(self.spec, d, signal.SIGCONT)  # a hung daemon dies too
            if (pid := hostctl.signal_daemon(self.spec, d, signal.SIGKILL)) is not None:
                killed.append(pid)
        # Power is off when the processes are gone, not when the signal is sent: a process with a large
        # heap in a memory cgroup takes a moment to exit, and a heal must not find it still "running".
        for pid in killed:
            hostctl.wait_gone(pid, 10)

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        self._nft(host, nft.delete_ruleset(POWER_TAG))
        if start_daemons:
            for d in host.daemons:
                if not self.held(d):  # as systemd skips a masked unit at boot
                    self.start_daemon(host, d)

    # A hold is a file per daemon in the sandbox directory, the sandbox's `systemctl mask`: power-on skips the
    # daemon and a start is refused until it is released. `drill sandbox down` removes it with the directory.
    def _held_file(self, daemon: str) -> Path:
        return self.spec.path / "held" / daemon

    def held(self, daemon: str) -> bool:
        return self._held_file(daemon).exists()

    def hold_daemon(self, host: Host, daemon: str) -> None:
        self._held_file(daemon).parent.mkdir(exist_ok=True)
        self._held_file(daemon).touch()

    def release_daemon(self, host: Host, daemon: str) -> None:
        self._held_file(daemon).unlink(missing_ok=True)

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None:
        if hostctl.signal_daemon(self.spec, daemon, sig) is None and sig not in (signal.SIGCONT,):
            raise FaultError(f"host {host.name}: {daemon} is not running")

    def start_daemon(self, host: Host, daemon: str) -> None:
        if self.held(daemon):
            raise FaultError(f"host {host.name}: {daemon} is held at power-on (a daemon_hold fault): release it first")
        # A host with a memory budget runs its daemons in its cgroup: the kernel enforces the budget.
        cgroup = existing_host_cgroup(self.spec.prefix, host.name)
        try:
            hostctl.start_daemon(self.spec, self._sandbox_host(host), daemon, cgroup.procs if cgroup else None)
        except SandboxError as e:
            raise FaultError(f"host {host.name}: {e}") from None

    def stop_daemon(self, host: Host, daemon: str) -> None:
        hostctl.stop_daemon(self.spec, daemon)

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        self._nft(host, nft.blackhole_ruleset(tag) if peers is None else nft.partition_ruleset(tag, list(peers)))

    def unblock_network(self, host: Host, tag: str) -> None:
        self._nft(host, nft.delete_ruleset(tag))

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None:
        self._nft(host, nft.packet_loss_ruleset(tag, percent))

    def clear_packet_loss(self, host: Host, tag: str) -> None:
        self._nft(host, nft.delete_ruleset(tag))


    # --- gray faults -------------------------------------------------------------
    def fault_cgroup(self, controller: str, daemon: str, tag: str) -> ProcessCgroup:
        """The fault's own cgroup for one daemon (one per daemon: a limit is per OSD, not shared)."""
        return ProcessCgroup.of(controller, self.spec.prefix, f"{tag}.{daemon}")

    def _confine(self, host: Host, daemon: str, controller: str, settings: dict[str, str], tag: str) -> None:
        cg = self.fault_cgroup(controller, daemon, tag)
        if not cg.available():
            raise Unsupported(f"host {host.name}: no cgroup v1 {controller} controller on this machine ({cg.controller_root})")
        pid = hostctl.daemon_pid(self.spec, daemon)
        if pid is None:
            raise FaultError(f"host {host.name}: {daemon} is not running")
        try:
            cg.create(settings).add(pid)
        except CgroupError as e:
            raise FaultError(f"host {host.name}: {e}") from None

    def _release(self, host: Host, daemon: str, controller: str, tag: str) -> None:
        try:
            self.fault_cgroup(controller, daemon, tag).release()
        except CgroupError as e:
            raise FaultError(f"host {host.name}: {e}") from None

    def osd_block_file(self, daemon: str) -> Path:
        kind, _, ident = daemon.partition(".")
        if kind != "osd":
            raise Unsupported(f"{daemon}: the sandbox throttles OSD devices only")
        return self.spec.path / "osd" / f"ceph-{ident}" / "block"

    def throttle_disk(self, host: Host, daemon: str, limit: DiskLimit, tag: str) -> None:
        block = self.osd_block_file(daemon)
        try:
            device = block_device_of(block)
        except (CgroupError, OSError) as e:
            raise FaultError(f"host {host.name}: cannot find the disk under {daemon}'s {block}: {e}") from None
        self._confine(host, daemon, "blkio", limit.blkio_files(device), tag)

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None:
        self._release(host, daemon, "blkio", tag)

    def limit_cpu(self, host: Host, daemon: str, limit: CpuLimit, tag: str) -> None:
        self._confine(host, daemon, "cpu", limit.cgroup_files(), tag)

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None:
        self._release(host, daemon, "cpu", tag)

    def _sh_in_ns(self, host: Host, script: str) -> None:
        p = self._in_ns(host, script)
        if p.rc != 0:
            err = p.stderr.strip().splitlines()
            raise FaultError(f"host {host.name}: tc failed: {err[-1] if err else p.rc}")

    def limit_link(self, host: Host, limit: LinkLimit, tag: str) -> None:
        self._sh_in_ns(host, throttle.link_limit_script(tag, limit, address=host.address, interfaces=host.network.interfaces))

    def unlimit_link(self, host: Host, tag: str) -> None:
        self._sh_in_ns(host, throttle.link_unlimit_script(tag, address=host.address, interfaces=host.network.interfaces))


def make_backend(target: Target, host_access: HostAccess | None = None) -> SandboxBackend:
    return SandboxBackend(target, host_access)
