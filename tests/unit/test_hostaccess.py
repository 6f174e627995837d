"""The one host-access layer (drills.hostaccess): local hosts run a subprocess here, ssh hosts share one
connection per host (a stand-in connection here; the real sshd is tests/integration/test_hostaccess_ssh.py),
and every user of it (fault backends, preflight, samplers, host facts) takes the one object."""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import drills
from drills.hostaccess import CommandFailed, CommandResult, HostAccess, HostAccessError, HostUnreachable, local_command
from drills.target import Access, Cluster, Host, Network, Rack, Target


def host(name: str, kind: str = "local", netns: str = "") -> Host:
    access = Access(kind=kind, netns=netns, host="127.0.0.1" if kind == "ssh" else "")
    return Host(name, "127.0.0.1", ("osd.0",), access, network=Network(kind="nft") if kind == "ssh" else Network())


def target(*hosts: Host) -> Target:
    return Target(Cluster("c", "fsid", "/dev/null", "/dev/null", deployment="package"), "/tmp",
                  racks=(Rack("r1", tuple(hosts)),))


def test_the_local_command_line():
    assert local_command(host("a"), "echo hi") == ["sh", "-c", "echo hi"]
    assert local_command(host("b", netns="cdx-b"), "nft list tables") == ["ip", "netns", "exec", "cdx-b", "sh", "-c", "nft list tables"]


def test_a_local_host_runs_echo_here():
    h = host("a")
    with HostAccess(target(h)) as access:
        r = access.run(h, "echo hello; echo oops >&2")
        assert r == CommandResult(0, "hello\n", "oops\n")
        assert access.run(h, "cat", input="from stdin").stdout == "from stdin"
        assert access.connected() == []  # no connection for a local host


def test_a_failure_is_returned_with_check_false_and_raised_with_check_true():
    h = host("a")
    access = HostAccess(target(h))
    r = access.run(h, "echo bad >&2; exit 3", check=False)
    assert (r.rc, r.stderr) == (3, "bad\n")
    with pytest.raises(CommandFailed, match=r"^host a: `exit 4` exited 4: $") as e:
        access.run(h, "exit 4")
    assert e.value.result.rc == 4 and isinstance(e.value, HostAccessError)
    with pytest.raises(HostAccessError, match=r"host a: `sleep 5` did not finish within 0.2s"):
        access.run(h, "sleep 5", timeout=0.2)


def test_a_host_without_a_way_in_is_unreachable():
    h = Host("p", "10.0.0.9", ("osd.1",), Access(kind="none"))
    with pytest.raises(HostUnreachable, match="host p: access.kind 'none'"):
        HostAccess(target(h)).run(h, "true")


# --- the connection cache (a stand-in for the paramiko connection) ------------------------------------


@dataclass
class FakeClient:
    closed: bool = False

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeConn:
    """Looks like testinfra's backend: ``run`` and a ``client`` in its __dict__."""

    client: FakeClient = field(default_factory=FakeClient)
    ran: list[str] = field(default_factory=list)
    fail: bool = False

    def run(self, command: str):
        if self.fail:
            raise EOFError("connection dropped")
        self.ran.append(command)
        return CommandResult(0, f"ran {command}\n", "")


def counting_access(t: Target) -> tuple[HostAccess, list[str], list[FakeConn]]:
    access = HostAccess(t)
    connects: list[str] = []
    conns: list[FakeConn] = []

    def connect(h: Host) -> FakeConn:
        connects.append(h.name)
        conns.append(FakeConn())
        return conns[-1]

    access._connect = connect  # type: ignore[method-assign]
    return access, connects, conns


def test_one_connection_per_ssh_host_reused_until_close():
    a, b = host("a", "ssh"), host("b", "ssh")
    access, connects, conns = counting_access(target(a, b))
    assert access.run(a, "one").stdout == "ran one\n"
    access.run(a, "two")
    access.run(b, "three")
    assert connects == ["a", "b"] and conns[0].ran == ["one", "two"]
    assert access.connection(a) is conns[0] and access.connected() == ["a", "b"]
    access.close()
    assert all(c.client.closed for c in conns) and access.connected() == []
    access.run(a, "four")  # usable again: it reconnects
    assert connects == ["a", "b", "a"]


def test_threads_asking_at_once_share_one_connection():
    a = host("a", "ssh")
    access, connects, _ = counting_access(target(a))
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        access.run(a, "true")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert connects == ["a"]


def test_a_dropped_connection_is_forgotten_and_the_next_command_reconnects():
    a = host("a", "ssh")
    access, connects, conns = counting_access(target(a))
    access.run(a, "true")
    conns[0].fail = True
    with pytest.raises(HostAccessError, match=r"host a: SSH command failed \(EOFError: connection dropped\)"):
        access.run(a, "true")
    assert conns[0].client.closed and access.connected() == []
    access.run(a, "true")
    assert connects == ["a", "a"]


# --- its users take the one object ---------------------------------------------------------------------


@dataclass
class ScriptedAccess:
    """A HostAccess stand-in: answers by command, or raises what it is given."""

    answers: dict[str, CommandResult] = field(default_factory=dict)
    error: Exception | None = None
    calls: list[tuple[str, str, bool]] = field(default_factory=list)
    closed: bool = False

    def run(self, host: Host, command: str, *, check: bool = True, timeout: float | None = None, input: str | None = None) -> CommandResult:
        self.calls.append((host.name, command, check))
        if self.error is not None:
            raise self.error
        r = self.answers.get(command, CommandResult(0, "", ""))
        if check and r.rc != 0:
            raise CommandFailed(host.name, command, r)
        return r

    def close(self) -> None:
        self.closed = True


def test_the_ssh_fault_backend_runs_through_the_given_access_and_words_errors_as_faults():
    from drills.faults.backends import BackendRegistry
    from drills.faults.backends.ssh import SshBackend
    from drills.faults.errors import BackendUnavailable, FaultError

    a = host("a", "ssh")
    t = target(a)
    access = ScriptedAccess({"exit 7": CommandResult(7, "", "boom\n")})
    b = SshBackend(t, access=access)  # type: ignore[arg-type]
    assert b.run(a, "exit 7", check=False).rc == 7
    with pytest.raises(FaultError, match=r"^host a: `exit 7` exited 7: boom$"):
        b.run(a, "exit 7")
    b.close()
    assert not access.closed  # the owner closes a shared access
    access.error = HostUnreachable("a", "SSH root@127.0.0.1:22: key rejected")
    with pytest.raises(BackendUnavailable, match=r"^host a: SSH root@127.0.0.1:22: key rejected$"):
        b.probe(a, "daemons")
    access.error = HostAccessError("a", "SSH command failed (EOFError: )")
    with pytest.raises(FaultError, match="SSH command failed"):
        b.run(a, "true")
    own = SshBackend(t, connect_timeout_s=3, strict_host_keys=True)  # no access given: one of its own
    assert own.access is not None and own.access.connect_timeout_s == 3 and own.access.strict_host_keys
    reg = BackendRegistry(t, host_access=access)  # type: ignore[arg-type]
    assert reg.backend(a, "daemons").access is access and reg.backend(a, "network") is reg.backend(a, "daemons")


def test_preflight_samplers_and_host_ops_use_the_given_access():
    from drills.hostfacts import VMSTAT_OOM_COMMAND
    from drills.preflight.checks import host_runner
    from drills.restart.hostops import SshHostOps, host_ops_for
    from drills.telemetry.samplers import access_command

    a = host("a", "ssh")
    t = target(a)
    access = ScriptedAccess({"cat /proc/meminfo": CommandResult(0, "MemTotal: 1 kB\n", ""), "false": CommandResult(1, "no\n", "")})
    run = host_runner(access)  # type: ignore[arg-type]
    assert run(a, "cat /proc/meminfo") == (0, "MemTotal: 1 kB\n") and run(a, "false") == (1, "no\n")
    assert access_command(access)(a, "false") == "no\n"  # type: ignore[arg-type]
    assert all(check is False for _, _, check in access.calls)
    ops = host_ops_for(t, access)  # type: ignore[arg-type]
    assert isinstance(ops, SshHostOps) and ops.access is access and ops._backend.access is access
    access.answers[VMSTAT_OOM_COMMAND] = CommandResult(0, "9\n", "")
    assert ops.oom_kills(a) == 9


def test_the_layer_imports_only_downwards():
    src = Path(drills.__file__).parent / "hostaccess.py"
    imported = {n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("drills")} == {"drills.target"}
