"""Daemons and network of a real host over SSH (pytest-testinfra's paramiko backend).

Daemons are systemd units:
  package deployments  ceph-osd@3, ceph-mon@a, ceph-mgr@x, ceph-mds@a, ceph-radosgw@rgw.x
  cephadm              ceph-<fsid>@osd.3, ceph-<fsid>@mon.a, ceph-<fsid>@rgw.x
A kill is ``systemctl kill -s SIG<unit>`` (every process of the unit's cgroup, so
cephadm's container is hit too); a heal is ``reset-failed`` + ``start`` (idempotent).
Note: ceph units have Restart=on-failure, so systemd itself restarts a killed
daemon after RestartSec; the drill measures that gap.

Network faults are nft tables (drills.faults.nft) loaded with ``nft -f -``; the
SSH port stays open in a blackhole or loss table so the heal can get in.

Gray faults go through systemd, which knows the unit's cgroup on v1 and v2 alike:
``systemctl set-property --runtime <unit> IOWriteBandwidthMax=<dev> N`` (the OSD's ``block``
symlink resolved to its device) or ``CPUQuota=5%``; the heal sets the same properties empty.
``--runtime`` keeps them in /run, so a reboot clears them too. A slow link runs the ``tc`` script
of drills.faults.throttle.

We open the paramiko connection ourselves and hand it to testinfra (its
``client`` is a cached property): testinfra accepts unknown host keys with a
warning and reports connect errors raw; here host keys are checked against
~/.ssh/known_hosts when ``strict_host_keys`` is on, and every connect error
names the host and the reason.
"""

from __future__ import annotations

import base64
import shlex
import signal as signal_mod
import socket
from dataclasses import dataclass, field
from typing import Any, Sequence

from drills.faults import nft, throttle
from drills.faults.errors import BackendUnavailable, FaultError, Unsupported
from drills.faults.interface import ROLES, UnsupportedOps
from drills.faults.throttle import CpuLimit, DiskLimit, LinkLimit
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
    target: Target
    connect_timeout_s: float = 10.0
    strict_host_keys: bool = False  # True: unknown host keys are refused (RejectPolicy + known_hosts)
    _conns: dict[str, Any] = field(default_factory=dict)
    kind = "ssh"

    # -- connection --
    def _connect(self, host: Host) -> Any:
        import paramiko
        import testinfra.backend

        a = host.access
        where = f"SSH {a.user}@{a.host}:{a.port}"
        client = paramiko.SSHClient()
        if self.strict_host_keys:
            client.load_system_host_keys()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.WarningPolicy())
        try:
            client.connect(
                a.host,
                port=a.port,
                username=a.user,
                key_filename=a.identity_file or None,
                timeout=self.connect_timeout_s,
                banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
                look_for_keys=not a.identity_file,
                allow_agent=not a.identity_file,
            )
        except paramiko.ssh_exception.NoValidConnectionsError:
            raise BackendUnavailable(host.name, f"{where}: connection refused or unreachable (is sshd listening on port {a.port}?)") from None
        except paramiko.AuthenticationException:
            raise BackendUnavailable(host.name, f"{where}: key rejected (authentication failed; identity_file {a.identity_file or 'default'})") from None
        except paramiko.BadHostKeyException:
            raise BackendUnavailable(host.name, f"{where}: host key does not match known_hosts (possible impersonation)") from None
        except paramiko.SSHException as e:
            raise BackendUnavailable(host.name, f"{where}: {e}") from None
        except (socket.timeout, TimeoutError):
            raise BackendUnavailable(host.name, f"{where}: no answer within {self.connect_timeout_s:.0f}s (unreachable)") from None
        except OSError as e:  # refused, no route, bad key file
            raise BackendUnavailable(host.name, f"{where}: {e.strerror or e}") from None
        backend = testinfra.backend.get_backend(f"paramiko://{a.user}@{a.host}:{a.port}", sudo=a.sudo)
        backend.client = client  # testinfra runs commands (and sudo-wraps them) over our connection
        return backend

    def _backend(self, host: Host) -> Any:
        if host.name not in self._conns:
            self._conns[host.name] = self._connect(host)
        return self._conns[host.name]

    def run(self, host: Host, command: str, *, check: bool = True) -> Any:
        """Run a shell command on the host; raise FaultError with its stderr if it fails."""
        import paramiko

        try:
            result = self._backend(host).run(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._conns.pop(host.name, None)  # reconnect next time (the host may have rebooted)
            raise FaultError(f"host {host.name}: SSH command failed ({e.__class__.__name__}: {e})") from None
        if check and result.rc != 0:
            raise FaultError(f"host {host.name}: `{command}` exited {result.rc}: {result.stderr.strip()[:300]}")
        return result

    def close(self) -> None:
        for b in self._conns.values():
            client = b.__dict__.get("client")
            if client is not None:
                client.close()
        self._conns.clear()

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


def make_backend(target: Target) -> SshBackend:
    return SshBackend(target)
