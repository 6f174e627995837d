"""Bad input that only a librados connection reveals: a mon that does not answer, a cluster whose fsid is
not the target file's. Refused with exit 2 and one line, nothing injected. The rest of the bad-input
corpus needs no cluster: tests/unit/test_bad_input.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from drills.faults.ledger import LEDGER_FILE, FaultLedger
from drills.sandbox.spec import SandboxSpec
from drills.target import Target, load_target

REPO = Path(__file__).resolve().parents[2]


def drill(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drills.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def _closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connecting to it is refused


def test_an_unreachable_mon_is_refused_in_one_line(tmp_path):
    """No cluster needed, but librados hunts for a mon until its 15 s mount timeout, too slow for tests/unit."""
    port = _closed_loopback_port()
    (tmp_path / "ceph.conf").write_text(f"[global]\nmon_host = 127.0.0.1:{port}\n")
    (tmp_path / "keyring").write_text("[client.admin]\n\tkey = AQBzd0VmAAAAABAAe8c0lGs0OcMytA9DGz6gxA==\n")
    target = tmp_path / "target.toml"
    target.write_text(f'state_dir = "{tmp_path}/state"\n[cluster]\nname = "gone"\n'
                      f'fsid = "5e1b1c0c-0000-4000-8000-00000000d811"\nconf = "{tmp_path}/ceph.conf"\nkeyring = "{tmp_path}/keyring"\n')
    p = drill(["target", "--target", str(target), "--connect"], cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f"{tmp_path}/ceph.conf" in p.stderr and "monitors are up and reachable" in p.stderr
    assert not (tmp_path / "state" / LEDGER_FILE).exists()


@pytest.mark.integration
def test_a_wrong_fsid_is_refused_before_any_drill(sandbox_target: Target, sandbox_spec: SandboxSpec, tmp_path):
    """The target file names another cluster: `drill target --connect` and `drill run` refuse it, exit 2,
    and the sandbox's fault ledger gets no entry."""
    wrong = tmp_path / "wrong-fsid.toml"
    text = Path(sandbox_spec.target_path).read_text()
    assert sandbox_target.cluster.fsid in text
    wrong.write_text(text.replace(sandbox_target.cluster.fsid, "00000000-0000-4000-8000-000000000bad"))
    ledger = Path(sandbox_target.state_dir) / LEDGER_FILE
    before = ledger.read_text() if ledger.exists() else ""

    p = drill(["target", "--target", str(wrong), "--connect"], cwd=tmp_path)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert sandbox_target.cluster.fsid in p.stderr and "000000000bad" in p.stderr and str(wrong) in p.stderr

    p = drill(["run", "--target", str(wrong), "--suite", "smoke", "--report-dir", str(tmp_path / "reports")], cwd=tmp_path,
              timeout=600)
    assert p.returncode == 2, (p.stdout[-3000:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr and str(wrong) in p.stderr
    assert (ledger.read_text() if ledger.exists() else "") == before
    assert FaultLedger(sandbox_target.state_dir).pending() == []
    assert load_target(sandbox_spec.target_path).cluster.fsid == sandbox_target.cluster.fsid
