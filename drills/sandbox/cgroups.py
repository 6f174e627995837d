"""Per-host memory cgroups for the sandbox: the kernel's own OOM killer enforces a host's memory budget.

Each logical sandbox host gets ``<root>/ceph-drills-<prefix>/<host>`` with its memory limit set to the
host's budget (cgroup v1: ``memory.limit_in_bytes``; v2: ``memory.max``, with ``memory.swap.max = 0``
so the limit is a real one). Daemons started with ``cgroup_procs=HostCgroup.procs`` join it before
exec, so everything they allocate is charged there; when the host's daemons together exceed the
budget the kernel OOM-kills one of them with SIGKILL, as on a real host.

OOM kills are counted by the kernel per cgroup (v1 ``memory.oom_control`` line ``oom_kill N``, kernel
4.13+; v2 ``memory.events`` line ``oom_kill N``), read as `CgroupMemory.oom_kills`; drills.hostfacts
is where that counter is read per host and where `OomWatch` turns its rises into named kills.

``bootstrap.remove_cgroups`` already removes ``ceph-drills-<prefix>`` on ``sandbox down``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

V1_MEMORY_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


class CgroupError(Exception):
    """A memory cgroup that cannot be made or read; the message says what to check."""


def memory_root() -> tuple[Path, int]:
    """(root, version) of the memory controller on this machine: v1 when mounted, else unified v2."""
    if (V1_MEMORY_ROOT / "memory.limit_in_bytes").exists() or (V1_MEMORY_ROOT / "memory.usage_in_bytes").exists():
        return V1_MEMORY_ROOT, 1
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return V2_ROOT, 2
    raise CgroupError("no memory cgroup controller: neither /sys/fs/cgroup/memory (v1) nor memory in /sys/fs/cgroup/cgroup.controllers (v2)")


def base_name(prefix: str) -> str:
    return f"ceph-drills-{prefix}"


@dataclass(frozen=True)
class CgroupMemory:
    """One reading of a host cgroup."""

    usage: int  # bytes charged (anon + page cache)
    working_set: int  # usage minus inactive file cache (what the kernel cannot simply drop)
    limit: int  # bytes; 0 = unlimited
    peak: int | None  # max usage since creation or the last reset_peak (v1 max_usage_in_bytes; v2 memory.peak,
    #                   kernels 5.19+); None = this kernel keeps no peak (never the current usage in its place)
    oom_kills: int | None  # the kernel's count of OOM kills in this cgroup; None = no such counter (kernel < 4.13)
    anon: int = 0  # anonymous memory (the daemons' heaps): what a start-up needs; page cache is reclaimed first


@dataclass(frozen=True)
class HostCgroup:
    """The memory cgroup of one sandbox host."""

    path: Path
    version: int  # 1 or 2

    @classmethod
    def of(cls, prefix: str, host: str, root: Path | None = None, version: int | None = None) -> "HostCgroup":
        if root is None or version is None:
            root, version = memory_root()
        return cls(root / base_name(prefix) / host, version)

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def exists(self) -> bool:
        return self.procs.exists()

    def _write(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError as e:
            raise CgroupError(f"cannot write {value!r} to {self.path / name}: {e.strerror or e}") from None

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError as e:
            raise CgroupError(f"cannot read {self.path / name}: {e.strerror or e}") from None

    def create(self, limit: int | None) -> "HostCgroup":
        """Make the cgroup (and its parent) and set its memory limit (None: no limit, the host's OOM kills
        and memory are still its own to read); idempotent."""
        if limit is not None and limit <= 0:
            raise CgroupError(f"a host memory budget must be positive (got {limit})")
        try:
            if self.version == 2:
                parent = self.path.parent
                parent.mkdir(exist_ok=True)
                # Children get a memory controller only when the parent delegates it.
                (parent.parent / "cgroup.subtree_control").write_text("+memory")
                (parent / "cgroup.subtree_control").write_text("+memory")
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot create memory cgroup {self.path}: {e.strerror or e} (root needed)") from None
        self.set_limit(limit)
        return self

    def set_limit(self, limit: int | None) -> None:
        """Bytes, or None for no limit."""
        if self.version == 1:
            try:  # daemons moved in bring their memory along (deprecated; newer kernels refuse it)
                self._write("memory.move_charge_at_immigrate", "3")
            except CgroupError:
                pass
            self._write("memory.limit_in_bytes", "-1" if limit is None else str(limit))
            self._write("memory.oom_control", "0")  # OOM killer on (never just stall the host)
        else:
            self._write("memory.max", "max" if limit is None else str(limit))
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", "0")

    def add(self, pid: int) -> None:
        """Move a running process (all its threads) into the cgroup."""
        self._write("cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        return [int(x) for x in self._read("cgroup.procs").split() if x.strip()]

    def reset_peak(self) -> None:
        if self.version == 1:
            self._write("memory.max_usage_in_bytes", "0")
        elif (self.path / "memory.peak").exists():
            try:
                self._write("memory.peak", "0")  # kernels 6.12+: resets the peak for this writer
            except CgroupError:
                pass

    def read(self) -> CgroupMemory:
        if self.version == 1:
            usage = int(self._read("memory.usage_in_bytes"))
            limit = int(self._read("memory.limit_in_bytes"))
            peak = int(self._read("memory.max_usage_in_bytes"))
            stat = parse_kv(self._read("memory.stat"))
            inactive_file = stat.get("total_inactive_file", stat.get("inactive_file", 0))
            oom = parse_kv(self._read("memory.oom_control")).get("oom_kill")
            return CgroupMemory(usage, max(0, usage - inactive_file), 0 if limit >= 1 << 60 else limit, peak, oom,
                                stat.get("total_rss", stat.get("rss", 0)))
        usage = int(self._read("memory.current"))
        raw_max = self._read("memory.max").strip()
        peak_file = self.path / "memory.peak"
        peak = int(self._read("memory.peak")) if peak_file.exists() else None
        stat = parse_kv(self._read("memory.stat"))
        oom = parse_kv(self._read("memory.events")).get("oom_kill")
        return CgroupMemory(usage, max(0, usage - stat.get("inactive_file", 0)), 0 if raw_max == "max" else int(raw_max), peak, oom,
                            stat.get("anon", 0))

    def remove(self) -> None:
        """Remove the cgroup if empty (the kernel refuses while processes are in it)."""
        try:
            self.path.rmdir()
        except OSError:
            pass


def parse_kv(text: str) -> dict[str, int]:
    """'key value' lines (memory.stat, memory.oom_control, memory.events) -> dict; non-numbers skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def existing_host_cgroup(prefix: str, host: str) -> HostCgroup | None:
    """The host's cgroup if a budget was set up for it, else None (daemons then run unconfined)."""
    try:
        cg = HostCgroup.of(prefix, host)
    except CgroupError:
        return None
    return cg if cg.exists() else None


# --- per-fault cgroups of other controllers (gray faults) --------------------------------

V1_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ProcessCgroup:
    """A cgroup v1 of one controller (``blkio``, ``cpu``) that a fault puts a few daemons in, limited.

    ``<root>/<controller>/ceph-drills-<prefix>/<name>``: under the sandbox's own directory, so that
    ``sandbox down`` finds a crashed run's leftover. ``release`` moves the processes back to the
    controller's root (where sandbox daemons run: they only ever join a memory cgroup) and removes it.
    """

    controller: str
    path: Path

    @classmethod
    def of(cls, controller: str, prefix: str, name: str, root: Path = V1_ROOT) -> "ProcessCgroup":
        return cls(controller, root / controller / base_name(prefix) / name)

    @property
    def controller_root(self) -> Path:
        return self.path.parent.parent

    def available(self) -> bool:
        return (self.controller_root / "cgroup.procs").exists() and (self.controller_root / "tasks").exists()

    def create(self, settings: dict[str, str]) -> "ProcessCgroup":
        """Make it (idempotent) and write each ``file: value`` (e.g. ``cpu.cfs_quota_us: 5000``)."""
        if not self.available():
            raise CgroupError(f"no cgroup v1 {self.controller} controller at {self.controller_root}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot create {self.path}: {e.strerror or e} (root needed)") from None
        for name, value in settings.items():
            try:
                (self.path / name).write_text(value)
            except OSError as e:
                raise CgroupError(f"cannot write {value!r} to {self.path / name}: {e.strerror or e}") from None
        return self

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def add(self, pid: int) -> None:
        """Move a process (every thread: v1 cgroup.procs takes the whole thread group)."""
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            raise CgroupError(f"cannot move pid {pid} into {self.path}: {e.strerror or e}") from None

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def release(self) -> None:
        """Move every process back to the controller's root and remove the cgroup (and its parent when
        empty); idempotent. Limits go with the directory."""
        if not self.path.is_dir():
            return
        for pid in self.pids():
            try:
                (self.controller_root / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:
                pass  # exited meanwhile
            except OSError as e:
                raise CgroupError(f"cannot move pid {pid} out of {self.path}: {e.strerror or e}") from None
        try:
            self.path.rmdir()
        except OSError as e:
            raise CgroupError(f"cannot remove {self.path}: {e.strerror or e} (processes still in it: {self.pids()})") from None
        try:
            self.path.parent.rmdir()  # ceph-drills-<prefix> of this controller, when nothing else is in it
        except OSError:
            pass


def block_device_of(path: Path) -> str:
    """"MAJ:MIN" of the whole disk under a file (blkio throttles disks, not partitions)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sys_dev = Path("/sys/dev/block") / dev
    if not sys_dev.exists():
        raise CgroupError(f"{path} is on device {dev}, which is not a block device (tmpfs, overlay?): no blkio limit can hold it")
    if (sys_dev / "partition").exists():
        dev = (sys_dev.resolve().parent / "dev").read_text().strip()  # the partition's disk
    return dev
