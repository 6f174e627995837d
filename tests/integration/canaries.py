"""Clusters made worse on purpose, to show a drill check fails before its pass is trusted.

`cpu_starved` puts every OSD process of a sandbox into one cpu cgroup (v1) with a CFS quota, and
moves them back and removes the cgroup on the way out, whatever happened. The cgroup is named
after the sandbox prefix so that a leftover from a crashed test is found and removed next time.
"""

from __future__ import annotations

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
