"""Daemons and network of a real host over SSH (pytest-testinfra's paramiko backend).

Daemons are systemd units:
  package deployments  ceph-osd@3, ceph-mon@a, ceph-mgr@x, ceph-mds@a, ceph-radosgw@rgw.x
  cephadm              ceph-<fsid>@osd.3, ceph-<fsid>@mon.a, ceph-<fsid>@rgw.x
A kill is ``systemctl kill -s SIG<unit>`` (every process of the unit's cgroup, so
cephadm's container is hit too); a heal is ``reset-failed`` + ``start`` (idempotent).
Note: ceph units have Restart=on-failure, so systemd itself restarts a killed
daemon after RestartSec; the drill measures that gap. A hold at power-on is
``systemctl mask <unit>`` (persistent, so it outlives the power cut); its release
is ``systemctl unmask``.

Network faults are nft tables (drills.faults.nft) loaded with ``nft -f -``; the
SSH port stays open in a blackhole or loss table so the heal can get in.

Gray faults go through systemd, which knows the unit's cgroup on v1 and v2 alike:
``systemctl set-property --runtime <unit> IOWriteBandwidthMax=<dev> N`` (the OSD's ``block``
symlink resolved to its device) or ``CPUQuota=5%``; the heal sets the same properties empty.
``--runtime`` keeps them in /run, so a reboot clears them too. A slow link runs the ``tc`` script
of drills.faults.throttle.

Commands run through drills.hostaccess (one paramiko connection per host, shared with preflight,
the samplers and the controlled restart when the session passes its HostAccess): host keys are
checked against ~/.ssh/known_hosts when ``strict_host_keys`` is on, and every connect error names
the host and the reason (here a BackendUnavailable).
"""

from __future__ import annotations

import base64
import shlex
import signal as signal_mod
from dataclasses import dataclass, field
from typing import Sequence

from drills.faults import nft, throttle
from drills.faults.errors import BackendUnavailable, FaultError, Unsupported
from drills.faults.interface import ROLES, UnsupportedOps
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
from drills.hostaccess import CommandResult, HostAccess, HostAccessError, HostUnreachable
from drills.target import Host, Target

HANDLES = {"daemons": ("ssh",)}


def unit_name(daemon: str, deployment: str, fsid: str) -> str:
    """The systemd unit that runs a Ceph daemon ('osd.3', 'client.rgw.x', ...)."""
    kind, _, name = daemon.partition(".")
    if not name:
        raise FaultError(f"{daemon!r} is not a Ceph daemon name like 'osd.3'")
    if kind == "client" and name.startswith("rgw."):
        kind, name = "rgw", name[len("rgw."):]
    if deployment == "cephadm":
        return f"ceph-{fsid}@{kind}.{name}"
    if deployment == "package":
        if kind == "rgw":
            return f"ceph-radosgw@rgw.{name}"
        if kind in ("osd", "mon", "mgr", "mds"):
            return f"ceph-{kind}@{name}"
    raise FaultError(f"no systemd unit for {daemon!r} in a {deployment!r} deployment")


def _signame(sig: int) -> str:
    return signal_mod.Signals(sig).name  # SIGKILL, SIGSTOP, ...


@dataclass
class SshBackend(UnsupportedOps):
    """Faults on ssh hosts. Commands go through ``access`` (drills.hostaccess): the session's shared one
    when given (its owner closes it), else one of its own made with ``connect_timeout_s`` and
    ``strict_host_keys`` (closed by ``close()``)."""

    target: Target
    connect_timeout_s: float = 10.0
    strict_host_keys: bool = False  # True: unknown host keys are refused (RejectPolicy + known_hosts)
    access: HostAccess | None = None
    _owns_access: bool = field(default=False, init=False, repr=False)
    kind = "ssh"

    def __post_init__(self) -> None:
        if self.access is None:
            self.access = HostAccess(self.target, connect_timeout_s=self.connect_timeout_s, strict_host_keys=self.strict_host_keys)
            self._owns_access = True

    def run(self, host: Host, command: str, *, check: bool = True) -> CommandResult:
        """Run a shell command on the host; raise FaultError with its stderr if it fails
        (BackendUnavailable when the host cannot be reached)."""
        assert self.access is not None
        try:
            return self.access.run(host, command, check=check)
        except HostUnreachable as e:
            raise BackendUnavailable(e.host, e.reason) from None
        except HostAccessError as e:
            raise FaultError(str(e)) from None

    def close(self) -> None:
        if self._owns_access and self.access is not None:
            self.access.close()

    # -- HostBackend --
    def probe(self, host: Host, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if role == "power":
            super().probe(host, role)
        r = self.run(host, "true", check=False)
        if r.rc != 0:
            raise BackendUnavailable(host.name, f"SSH {host.access.host}: `true` exited {r.rc}: {r.stderr.strip()[:200]}")
        need = "systemctl" if role == "daemons" else "nft"
        r = self.run(host, f"command -v {need}", check=False)
        if r.rc != 0:
            raise BackendUnavailable(host.name, f"SSH {host.access.host}: {need} not found on the host")

    def unit(self, daemon: str) -> str:
        return unit_name(daemon, self.target.cluster.deployment, self.target.cluster.fsid)

    def kill_daemon(self, host: Host, daemon: str, sig: int) -> None:
        self.run(host, f"systemctl kill -s {_signame(sig)} {shlex.quote(self.unit(daemon))}")

    def start_daemon(self, host: Host, daemon: str) -> None:
        u = shlex.quote(self.unit(daemon))
        # reset-failed: a unit that hit its start limit after repeated kills would refuse to start.
        self.run(host, f"systemctl reset-failed {u} 2>/dev/null; systemctl start {u}")

    def stop_daemon(self, host: Host, daemon: str) -> None:
        self.run(host, f"systemctl stop {shlex.quote(self.unit(daemon))}")

    def hold_daemon(self, host: Host, daemon: str) -> None:
        # Not --runtime: /run is gone after the power cut, and the hold is for the boot after it. A masked
        # unit is not started at boot, and a late `systemctl start` (ceph-volume's activation) fails.
        self.run(host, f"systemctl mask {shlex.quote(self.unit(daemon))}")

    def release_daemon(self, host: Host, daemon: str) -> None:
        self.run(host, f"systemctl unmask {shlex.quote(self.unit(daemon))}")

    def load_ruleset(self, host: Host, ruleset: str) -> None:
        # base64 through the shell: the ruleset has quotes and braces; no heredoc quoting games.
        b64 = base64.b64encode(ruleset.encode()).decode()
        self.run(host, f"echo {b64} | base64 -d | nft -f -")

    def _keep(self, host: Host) -> list[int]:
        return [host.access.port]

    def block_network(self, host: Host, peers: Sequence[str] | None, tag: str) -> None:
        if peers is None:
            rules = nft.blackhole_ruleset(tag, interfaces=host.network.interfaces, keep_tcp_ports=self._keep(host))
        else:
            rules = nft.partition_ruleset(tag, peers, keep_tcp_ports=self._keep(host))
        self.load_ruleset(host, rules)

    def unblock_network(self, host: Host, tag: str) -> None:
        self.load_ruleset(host, nft.delete_ruleset(tag))

    def set_packet_loss(self, host: Host, percent: int, tag: str) -> None:
        self.load_ruleset(
            host, nft.packet_loss_ruleset(tag, percent, interfaces=host.network.interfaces, keep_tcp_ports=self._keep(host))
        )

    def clear_packet_loss(self, host: Host, tag: str) -> None:
        self.load_ruleset(host, nft.delete_ruleset(tag))


    # -- gray faults --
    def run_script(self, host: Host, script: str) -> None:
        b64 = base64.b64encode(script.encode()).decode()
        self.run(host, f"echo {b64} | base64 -d | sh")

    def set_unit_properties(self, host: Host, daemon: str, properties: Sequence[str]) -> None:
        self.run(host, f"systemctl set-property --runtime {shlex.quote(self.unit(daemon))} {' '.join(properties)}")

    def throttle_disk(self, host: Host, daemon: str, limit: DiskLimit, tag: str) -> None:
        kind, _, ident = daemon.partition(".")
        if kind != "osd":
            raise Unsupported(f"host {host.name}: {daemon}: only OSD devices are throttled")
        block = throttle.osd_block_path(self.target.cluster.deployment, self.target.cluster.fsid, int(ident))
        self.set_unit_properties(host, daemon, limit.systemd_properties(f"$(readlink -f {shlex.quote(block)})"))

    def unthrottle_disk(self, host: Host, daemon: str, tag: str) -> None:
        self.set_unit_properties(host, daemon, throttle.SYSTEMD_IO_RESET)

    def limit_cpu(self, host: Host, daemon: str, limit: CpuLimit, tag: str) -> None:
        self.set_unit_properties(host, daemon, limit.systemd_properties())

    def unlimit_cpu(self, host: Host, daemon: str, tag: str) -> None:
        self.set_unit_properties(host, daemon, throttle.SYSTEMD_CPU_RESET)

    def limit_link(self, host: Host, limit: LinkLimit, tag: str) -> None:
        self.run_script(host, throttle.link_limit_script(tag, limit, address=host.address, interfaces=host.network.interfaces))

    def unlimit_link(self, host: Host, tag: str) -> None:
        self.run_script(host, throttle.link_unlimit_script(tag, address=host.address, interfaces=host.network.interfaces))


def make_backend(target: Target, host_access: HostAccess | None = None) -> SshBackend:
    return SshBackend(target, access=host_access)
