"""Clusters made worse on purpose, to show a drill check fails before its pass is trusted; and what every
output of a run must agree on.

`cpu_starved` puts every OSD process of a sandbox into one cpu cgroup (v1) with a CFS quota, and
moves them back and removes the cgroup on the way out, whatever happened. The cgroup is named
after the sandbox prefix so that a leftover from a crashed test is found and removed next time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from drills.sandbox import host as hostctl
from drills.sandbox.spec import SandboxSpec

CPU_ROOT = Path("/sys/fs/cgroup/cpu")


def _release(cg: Path) -> None:
    if not cg.exists():
        return
    for pid in (cg / "cgroup.procs").read_text().split():
        try:
            (CPU_ROOT / "cgroup.procs").write_text(pid)
        except OSError:
            pass  # the process is gone
    cg.rmdir()


@contextmanager
def cpu_starved(spec: SandboxSpec, osds: list[int], share: float) -> Iterator[list[int]]:
    """Every listed OSD of the sandbox shares `share` of one CPU (0.05 = 5 %) until the block ends."""
    cg = CPU_ROOT / f"ceph-drills-canary-{spec.prefix}"
    _release(cg)  # a crashed run's leftover
    cg.mkdir()
    try:
        (cg / "cpu.cfs_period_us").write_text("100000")
        (cg / "cpu.cfs_quota_us").write_text(str(int(100000 * share)))
        pids = []
        for osd in osds:
            pid = hostctl.daemon_pid(spec, f"osd.{osd}")
            assert pid, f"osd.{osd} is not running"
            (cg / "cgroup.procs").write_text(str(pid))
            pids.append(pid)
        yield pids
    finally:
        _release(cg)


def drill_run(target: Path | str, reports: Path, *extra: str, suite: str = "smoke", env: dict[str, str] | None = None,
              timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drills.cli", "run", "--target", str(target), "--suite", suite,
                           "--report-dir", str(reports), *extra],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start_drill_run(target: Path | str, reports: Path, *extra: str, suite: str = "smoke",
                    env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "drills.cli", "run", "--target", str(target), "--suite", suite,
                             "--report-dir", str(reports), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def wait_for_phase(reports: Path, phase: str, proc: subprocess.Popen[str], timeout: float = 600) -> bool:
    """True once a run under `reports` wrote the phase event `phase` (or the run ended first: False)."""
    deadline = time.monotonic() + timeout
    needle = f'"kind": "phase", "label": "{phase}"'
    while time.monotonic() < deadline and proc.poll() is None:
        for events in reports.glob("*/events.jsonl"):
            if needle in events.read_text():
                return True
        time.sleep(0.5)
    return False


def outputs_agree(run_dir: Path, verdict: str, exit_code: int) -> dict:
    """summary.json, the .prom file, the HTML badge and the JUnit properties all say `verdict`."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["verdict"], summary["exit_code"]) == (verdict, exit_code), summary["reasons"]
    prom = (run_dir / "ceph_drills.prom").read_text()
    assert f"ceph_drills_run_passed {1 if verdict == 'passed' else 0}" in prom
    assert f"ceph_drills_run_exit_code {exit_code}" in prom
    assert f'class="badge {verdict}">{verdict}' in (run_dir / "index.html").read_text()
    props = {p.get("name"): p.get("value") for p in ET.parse(run_dir / "junit.xml").getroot().iter("property")}
    assert (props["ceph_drills_verdict"], props["ceph_drills_exit_code"]) == (verdict, str(exit_code))
    return summary


def results(run_dir: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (run_dir / "drills").glob("*.json")}
