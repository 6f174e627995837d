"""SshBackend against a real sshd on 127.0.0.1 (no systemd there, so units are checked by text).

Runs commands through testinfra over our paramiko connection, loads and deletes
nft tables on "the host" (this machine: the tables are drills_ tables that
match nothing - a partition from 198.18.255.254 only), and checks the errors
for a wrong key, an unreachable host and a host key that is not known.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.common import free_port  # noqa: E402
from emulators.sshd import Sshd  # noqa: E402

from drills.faults import nft  # noqa: E402
from drills.faults.backends.ssh import SshBackend, unit_name  # noqa: E402
from drills.faults.errors import BackendUnavailable, FaultError
from drills.faults.kinds import NetworkPartition, PacketLoss
from drills.faults.session import FaultSession  # noqa: E402
from drills.faults.guard import FaultGuard  # noqa: E402
from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.target import Access, Cluster, Host, Network, Target  # noqa: E402

FSID = "55a5a5a5-0000-4000-8000-0000000055d0"


def ssh_target(state_dir: Path, sshd: Sshd, *, key: Path | None = None, port: int | None = None) -> Target:
    access = Access(kind="ssh", host="127.0.0.1", port=port or sshd.port, user="root", identity_file=str(key or sshd.client_key))
    node = Host(name="node1", address="127.0.0.1", daemons=("osd.0",), access=access, network=Network(kind="nft"))
    far = Host(name="far", address="198.18.255.254", daemons=("osd.1",))
    return Target(
        cluster=Cluster(name="ssh", fsid=FSID, conf="/dev/null", keyring="/dev/null", deployment="package"),
        state_dir=str(state_dir),
        destructive=True,
        service_hosts=(node, far),
    )


def test_unit_names():
    assert unit_name("osd.3", "package", FSID) == "ceph-osd@3"
    assert unit_name("mon.a", "package", FSID) == "ceph-mon@a"
    assert unit_name("client.rgw.sandbox", "package", FSID) == "ceph-radosgw@rgw.sandbox"
    assert unit_name("osd.3", "cephadm", FSID) == f"ceph-{FSID}@osd.3"
    assert unit_name("client.rgw.s3", "cephadm", FSID) == f"ceph-{FSID}@rgw.s3"
    with pytest.raises(FaultError):
        unit_name("osd.3", "sandbox", FSID)


@pytest.mark.timeout(60)
def test_commands_run_over_ssh(sshd, tmp_path):
    t = ssh_target(tmp_path, sshd)
    b = SshBackend(t)
    h = t.host("node1")
    assert b.run(h, "echo hello; id -u").stdout.split() == ["hello", "0"]
    with pytest.raises(FaultError, match=r"host node1: `exit 7` exited 7"):
        b.run(h, "exit 7")
    b.close()


@pytest.mark.timeout(60)
def test_systemctl_commands_are_the_right_ones(sshd, tmp_path, monkeypatch):
    # No systemd here: record the commands instead of running them (the command text is the contract).
    t = ssh_target(tmp_path, sshd)
    b = SshBackend(t)
    h = t.host("node1")
    sent: list[str] = []
    monkeypatch.setattr(b, "run", lambda host, cmd, check=True: sent.append(cmd))
    b.kill_daemon(h, "osd.0", signal.SIGKILL)
    b.kill_daemon(h, "osd.0", signal.SIGSTOP)
    b.stop_daemon(h, "osd.0")
    b.start_daemon(h, "osd.0")
    b.hold_daemon(h, "osd.0")
    b.release_daemon(h, "osd.0")
    assert sent == [
        "systemctl kill -s SIGKILL ceph-osd@0",
        "systemctl kill -s SIGSTOP ceph-osd@0",
        "systemctl stop ceph-osd@0",
        "systemctl reset-failed ceph-osd@0 2>/dev/null; systemctl start ceph-osd@0",
        "systemctl mask ceph-osd@0",  # persistent (not --runtime): the hold must outlive the power cut
        "systemctl unmask ceph-osd@0",
    ]


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("nft") is None, reason="nft not installed (Debian package nftables)")
def test_network_faults_load_and_delete_their_own_nft_table(sshd, tmp_path):
    t = ssh_target(tmp_path / "state", sshd)
    b = SshBackend(t)
    h = t.host("node1")

    def drill_tables() -> list[str]:
        return nft.list_drill_tables(b.run(h, "nft list tables").stdout)

    before = drill_tables()
    with FaultSession(t, guard=FaultGuard(t, live_fsid=FSID)) as s:
        # Partition node1 from an address nobody uses: real rules, harmless to this machine.
        p = s.inject(NetworkPartition(t, ["node1"], ["far"]))
        table = nft.table_name(p.fault_id)
        assert table in drill_tables()
        listing = b.run(h, f"nft list table inet {table}").stdout
        assert "198.18.255.254" in listing and "tcp dport 22 accept" not in listing
        s.heal(p)
        assert table not in drill_tables()
        # 1% loss only on a link that does not exist here: loaded, and matches nothing.
        h2 = dataclasses.replace(h, network=Network(kind="nft", interfaces=("drillsnone0",)))
        b.set_packet_loss(h2, 1, "loss-test")
        assert "drills_loss_test" in drill_tables()
        assert f"tcp dport {sshd.port} accept" in b.run(h, "nft list table inet drills_loss_test").stdout
        b.clear_packet_loss(h2, "loss-test")
        b.clear_packet_loss(h2, "loss-test")  # idempotent
    assert drill_tables() == before
    assert FaultLedger(t.state_dir).pending() == []


@pytest.mark.timeout(60)
def test_wrong_key_unreachable_and_unknown_host_key(sshd, tmp_path):
    bad = ssh_target(tmp_path / "a", sshd, key=sshd.other_key)
    with FaultSession(bad, guard=FaultGuard(bad, live_fsid=FSID)) as s:
        with pytest.raises(BackendUnavailable, match=r"^host node1: SSH root@127\.0\.0\.1:\d+: key rejected"):
            s.inject(PacketLoss(bad, "node1", 10))
    assert not Path(bad.state_dir, "fault-ledger.jsonl").exists()

    dead = ssh_target(tmp_path / "b", sshd, port=free_port())
    with pytest.raises(BackendUnavailable, match=r"^host node1: SSH root@127\.0\.0\.1:\d+: .*(refused|unreachable)"):
        SshBackend(dead, connect_timeout_s=2).probe(dead.host("node1"), "network")

    no_key_file = ssh_target(tmp_path / "c", sshd, key=tmp_path / "missing_key")
    with pytest.raises(BackendUnavailable, match="host node1: SSH"):
        SshBackend(no_key_file).probe(no_key_file.host("node1"), "daemons")

    good = ssh_target(tmp_path / "d", sshd)
    with pytest.raises(BackendUnavailable, match=r"host node1: SSH .*not found in known_hosts"):
        SshBackend(good, strict_host_keys=True).probe(good.host("node1"), "network")
    SshBackend(good).probe(good.host("node1"), "network")  # nft is there


@pytest.mark.timeout(60)
def test_probe_reports_missing_systemctl(sshd, tmp_path):
    t = ssh_target(tmp_path, sshd)
    if shutil.which("systemctl"):
        pytest.skip("systemctl exists here; the missing-tool path cannot be shown")
    with pytest.raises(BackendUnavailable, match="systemctl not found"):
        SshBackend(t).probe(t.host("node1"), "daemons")
