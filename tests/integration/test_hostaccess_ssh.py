"""drills.hostaccess against a real sshd on 127.0.0.1: commands, failures, stdin and a timeout over one
connection per host, and a host that cannot be reached named with why. No Ceph, no sandbox."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.common import free_port  # noqa: E402

from drills.hostaccess import CommandFailed, HostAccess, HostAccessError, HostUnreachable  # noqa: E402
from drills.target import Access, Cluster, Host, Network, Rack, Target  # noqa: E402

pytestmark = pytest.mark.integration


def ssh_host(name: str, port: int, key: Path) -> Host:
    access = Access(kind="ssh", host="127.0.0.1", port=port, user="root", identity_file=str(key))
    return Host(name=name, address="127.0.0.1", daemons=("osd.0",), access=access, network=Network(kind="nft"))


def target(*hosts: Host) -> Target:
    return Target(Cluster(name="ssh", fsid="f", conf="/dev/null", keyring="/dev/null", deployment="package"), "/tmp",
                  racks=(Rack("r1", hosts),))


@pytest.mark.timeout(60)
def test_commands_share_one_connection_per_host(sshd):
    a, b = ssh_host("a", sshd.port, sshd.client_key), ssh_host("b", sshd.port, sshd.client_key)
    with HostAccess(target(a, b)) as access:
        assert access.run(a, "echo hello; id -u").stdout.split() == ["hello", "0"]
        first = access.connection(a)
        transport = first.client.get_transport()
        r = access.run(a, "echo err >&2; exit 5", check=False)
        assert (r.rc, r.stderr) == (5, "err\n")
        with pytest.raises(CommandFailed, match=r"^host a: `exit 6` exited 6"):
            access.run(a, "exit 6")
        assert access.run(a, "cat", input="through stdin", timeout=10).stdout == "through stdin"
        with pytest.raises(HostAccessError, match=r"host a: SSH command `sleep 5` did not finish within 0.5s"):
            access.run(a, "sleep 5", timeout=0.5)
        assert access.run(a, "echo again").stdout == "again\n"  # a fresh connection after the timeout
        access.run(b, "true")
        assert access.connected() == ["a", "b"]
        second = access.connection(a)
        assert access.connection(a) is second and second.client.get_transport().is_active()
        assert first is not second and not transport.is_active()  # the timed-out one was dropped and closed
    assert access.connected() == []
    assert not second.client.get_transport() or not second.client.get_transport().is_active()


@pytest.mark.timeout(60)
def test_an_unreachable_host_and_a_rejected_key_are_named(sshd):
    dead = ssh_host("dead", free_port(), sshd.client_key)
    with pytest.raises(HostUnreachable, match=r"^host dead: SSH root@127\.0\.0\.1:\d+: .*(refused|unreachable)"):
        HostAccess(target(dead), connect_timeout_s=2).run(dead, "true")
    wrong = ssh_host("wrong", sshd.port, sshd.other_key)
    with pytest.raises(HostUnreachable, match=r"^host wrong: SSH root@127\.0\.0\.1:\d+: key rejected"):
        HostAccess(target(wrong)).run(wrong, "true", check=False)
