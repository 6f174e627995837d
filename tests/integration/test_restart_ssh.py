"""The controlled restart's ssh path against a real sshd on 127.0.0.1 and the test sandbox's cluster.

The loopback "host" is this machine, so its Ceph processes are the test sandbox's: the memory probe over
SSH must find the same OSD RSS psutil reads locally. There is no systemd here, so starting units is not
exercised (its command lines are checked in test_ssh_backend.py); what is: memory and OOM counters over
SSH, and an unreachable host refused before any flag is set.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.common import free_port  # noqa: E402
from emulators.sshd import Sshd  # noqa: E402

from drills.faults.ledger import FaultLedger  # noqa: E402
from drills.cli import EXIT_ERROR, main  # noqa: E402
from drills.hostfacts import machine_oom_kills  # noqa: E402
from drills.restart.hostops import SshHostOps, host_ops_for  # noqa: E402
from drills.target import Access, Host, Network, Rack, Target, dump_target  # noqa: E402

pytestmark = pytest.mark.integration
MiB = 1 << 20


def ssh_view(sandbox_target: Target, sshd: Sshd, state_dir: Path, port: int | None = None) -> Target:
    """The test sandbox's cluster, its first OSD host reached over SSH on loopback."""
    first = sandbox_target.racks[0].hosts[0]
    access = Access(kind="ssh", host="127.0.0.1", port=port or sshd.port, user="root", identity_file=str(sshd.client_key))
    node = Host(name="node1", address="127.0.0.1", daemons=first.daemons, access=access, network=Network(kind="nft"))
    return dataclasses.replace(sandbox_target, cluster=dataclasses.replace(sandbox_target.cluster, deployment="package"),
                               racks=(Rack("rackS", (node,)),), service_hosts=(), state_dir=str(state_dir))


def local_rss(osd_id: int) -> set[int]:
    """RSS of every local ceph-osd with this id (another sandbox on the machine may have the same id)."""
    out = set()
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if p.info["name"] == "ceph-osd" and "-i" in cmd and cmd[cmd.index("-i") + 1] == str(osd_id):
            try:
                out.add(p.memory_info().rss)
            except psutil.Error:
                pass
    return out


@pytest.mark.timeout(120)
def test_memory_and_oom_counter_are_read_over_ssh(sandbox_target, sshd, tmp_path):
    t = ssh_view(sandbox_target, sshd, tmp_path)
    ops = host_ops_for(t)
    assert isinstance(ops, SshHostOps)
    node = t.host("node1")
    osd = next(d for d in node.daemons if d.startswith("osd."))
    mem = ops.memory(node, 2048 * MiB)
    assert osd in mem.daemons, mem
    local = local_rss(int(osd.split(".")[1]))
    # the same process, read a moment apart: within 16 MiB of one local reading
    assert any(abs(mem.daemons[osd] - r) < 16 * MiB for r in local), (mem.daemons[osd], local)
    assert mem.used == sum(mem.daemons.values()) and mem.machine_available and mem.machine_available > 0
    assert ops.oom_kills(node) == machine_oom_kills()


@pytest.mark.timeout(120)
def test_restart_cli_refuses_an_unreachable_host_before_setting_flags(sandbox_target, sandbox_cluster, sshd, tmp_path, capsys):
    t = ssh_view(sandbox_target, sshd, tmp_path / "state", port=free_port())
    path = tmp_path / "ssh-target.toml"
    dump_target(t, path)
    flags_before = sandbox_cluster.flags()
    rc = main(["restart", "--target", str(path), "--host", "node1", "--memory-budget", "1GiB", "--start-need", "200MiB",
               "--report-dir", str(tmp_path / "reports")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_ERROR
    assert len(err.splitlines()) == 1 and err.startswith("drill: error: host node1: SSH root@127.0.0.1:") and "refused" in err, err
    assert sandbox_cluster.flags() == flags_before  # no noout/nodeep-scrub left behind
    assert FaultLedger(t.state_dir).pending() == []
    assert sorted(sandbox_cluster.osds_up()) == sorted(sandbox_cluster.osds_in())  # nothing was stopped
