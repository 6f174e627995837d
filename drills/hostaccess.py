"""One way to run a command on a host that runs Ceph daemons: the fault backends, preflight, the memory
samplers, the controlled restart and the host facts all go through a `HostAccess`.

Why one: each of them used to open its own SSH connection to the same host, so a session held up to four
connections per host, each with its own error wording. Here there is one connection cache per target (one
paramiko connection per ssh host, opened on first use and reused), and one wording for a host that cannot
be reached ("host <name>: SSH user@addr:port: <why>").

  ssh host    (access.kind "ssh") over paramiko, host keys checked against ~/.ssh/known_hosts when
              ``strict_host_keys`` is on; the command runs through pytest-testinfra's paramiko backend
              on that connection (so ``access.sudo`` wraps it in ``sudo /bin/sh -c``).
  local host  (access.kind "local") a subprocess on this machine: ``sh -c <command>``, inside
              ``ip netns exec <access.netns>`` when the host is a sandbox host with a network namespace.

No global state: the caller makes the object (configuration in), passes it to whoever needs it and closes
it (a context manager). This module sits below every room that uses it: it imports only the target.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from drills.target import Host, Target


@dataclass(frozen=True)
class CommandResult:
    """What a command on a host returned (text, decoded as UTF-8 with replacement)."""

    rc: int
    stdout: str
    stderr: str


class HostAccessError(Exception):
    """A command could not be run on a host, or (with check=True) it failed; the message names the host."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"host {host}: {reason}")
        self.host = host
        self.reason = reason


class HostUnreachable(HostAccessError):
    """No connection to the host: refused, unreachable, key rejected, unknown host key, a timeout."""


class CommandFailed(HostAccessError):
    """The command ran and exited non-zero (raised by ``run(check=True)``); ``result`` is what it returned."""

    def __init__(self, host: str, command: str, result: CommandResult):
        super().__init__(host, f"`{command}` exited {result.rc}: {result.stderr.strip()[:300]}")
        self.command = command
        self.result = result


def local_command(host: Host, command: str) -> list[str]:
    """Pure: the argv that runs ``command`` for a local host (in its network namespace when it has one)."""
    if host.access.netns:
        return ["ip", "netns", "exec", host.access.netns, "sh", "-c", command]
    return ["sh", "-c", command]


@dataclass(eq=False)  # one object is one set of connections: compared by identity
class HostAccess:
    """Runs commands on the target's hosts; one SSH connection per ssh host, reused until ``close()``."""

    target: Target
    connect_timeout_s: float = 10.0
    strict_host_keys: bool = False  # True: unknown host keys are refused (RejectPolicy + known_hosts)
    _conns: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _host_locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)

    def __enter__(self) -> "HostAccess":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- running commands --
    def run(self, host: Host, command: str, *, check: bool = True, timeout: float | None = None,
            input: str | None = None) -> CommandResult:
        """Run a shell command on the host. ``check``: a non-zero exit raises CommandFailed. ``timeout``
        (seconds): a command still running then raises HostAccessError. ``input``: text for its stdin.
        A lost connection raises HostAccessError and is dropped (the next call reconnects)."""
        if host.access.kind == "ssh":
            result = self._run_ssh(host, command, timeout, input)
        elif host.access.kind == "local":
            result = self._run_local(host, command, timeout, input)
        else:
            raise HostUnreachable(host.name, f"access.kind {host.access.kind!r}: no way to run commands on it")
        if check and result.rc != 0:
            raise CommandFailed(host.name, command, result)
        return result

    def _run_local(self, host: Host, command: str, timeout: float | None, input: str | None) -> CommandResult:
        try:
            p = subprocess.run(local_command(host, command), input=input, capture_output=True, text=True,
                               errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HostAccessError(host.name, f"`{command}` did not finish within {timeout:g}s") from None
        except OSError as e:  # no `ip` or `sh`
            raise HostAccessError(host.name, f"cannot run `{command}`: {e.strerror or e}") from None
        return CommandResult(p.returncode, p.stdout, p.stderr)

    def _run_ssh(self, host: Host, command: str, timeout: float | None, input: str | None) -> CommandResult:
        import paramiko

        backend = self.connection(host)
        try:
            if timeout is None and input is None:
                r = backend.run(command)  # testinfra's run: sudo-wraps, and reconnects once after a dropped transport
                return CommandResult(r.rc, r.stdout, r.stderr)
            return _exec_on_channel(backend, command, timeout, input)
        except (socket.timeout, TimeoutError):
            self._drop(host.name)
            raise HostAccessError(host.name, f"SSH command `{command}` did not finish within {timeout:g}s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._drop(host.name)  # reconnect next time (the host may have rebooted)
            raise HostAccessError(host.name, f"SSH command failed ({e.__class__.__name__}: {e})") from None

    # -- the connection cache --
    def connection(self, host: Host) -> Any:
        """The host's testinfra paramiko backend on our own checked connection, opened on first use."""
        with self._lock:
            if host.name in self._conns:
                return self._conns[host.name]
            host_lock = self._host_locks.setdefault(host.name, threading.Lock())
        with host_lock:  # one connect per host, even when two threads ask at once; other hosts do not wait
            with self._lock:
                if host.name in self._conns:
                    return self._conns[host.name]
            backend = self._connect(host)
            with self._lock:
                self._conns[host.name] = backend
            return backend

    def connected(self) -> list[str]:
        """The hosts with an open connection (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._conns)

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
            raise HostUnreachable(host.name, f"{where}: connection refused or unreachable (is sshd listening on port {a.port}?)") from None
        except paramiko.AuthenticationException:
            raise HostUnreachable(host.name, f"{where}: key rejected (authentication failed; identity_file {a.identity_file or 'default'})") from None
        except paramiko.BadHostKeyException:
            raise HostUnreachable(host.name, f"{where}: host key does not match known_hosts (possible impersonation)") from None
        except paramiko.SSHException as e:
            raise HostUnreachable(host.name, f"{where}: {e}") from None
        except (socket.timeout, TimeoutError):
            raise HostUnreachable(host.name, f"{where}: no answer within {self.connect_timeout_s:.0f}s (unreachable)") from None
        except OSError as e:  # refused, no route, bad key file
            raise HostUnreachable(host.name, f"{where}: {e.strerror or e}") from None
        backend = testinfra.backend.get_backend(f"paramiko://{a.user}@{a.host}:{a.port}", sudo=a.sudo)
        backend.client = client  # testinfra runs commands (and sudo-wraps them) over our connection
        return backend

    def _drop(self, name: str) -> None:
        with self._lock:
            backend = self._conns.pop(name, None)
        _close_backend(backend)

    def close(self) -> None:
        """Close every connection; the object can be used again (it reconnects)."""
        with self._lock:
            backends, self._conns = list(self._conns.values()), {}
        for b in backends:
            _close_backend(b)


def _close_backend(backend: Any) -> None:
    client = backend.__dict__.get("client") if backend is not None else None  # testinfra's cached property
    if client is not None:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


def _exec_on_channel(backend: Any, command: str, timeout: float | None, input: str | None) -> CommandResult:
    """testinfra's run with a timeout and stdin: the same sudo wrapping, our own channel."""
    transport = backend.client.get_transport()
    if transport is None or not transport.is_active():
        raise EOFError("the SSH transport is closed")
    chan = transport.open_session(timeout=timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(backend.encode(backend.get_command(command)))
        if input is not None:
            chan.sendall(input.encode())
        chan.shutdown_write()
        stdout = b"".join(chan.makefile("rb"))
        stderr = b"".join(chan.makefile_stderr("rb"))
        rc = chan.recv_exit_status()
    finally:
        chan.close()
    return CommandResult(rc, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


__all__ = ("CommandResult", "CommandFailed", "HostAccess", "HostAccessError", "HostUnreachable", "local_command")
