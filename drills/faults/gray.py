"""Gray faults: a part of the cluster gets slow or unreliable instead of dying.

* ``SlowDisk``       an OSD's device I/O throttled (bytes/s and/or IOPS, read and write)
* ``CpuStarvation``  an OSD held to a CFS quota (a share of one CPU)
* ``SlowLink``       a host's link rate-limited with ``tc tbf`` (both directions)
* ``Flapping``       a host's network dropped and restored on a schedule for a while

Each is a ledgered ``Fault`` like the power cuts: the backend op and its undo beside each
other, a label for plots, an undo record that ``drill heal`` rebuilds the heal from.  Aim them
by CRUSH name: an OSD (``3`` or ``"osd.3"``), a host or a rack (every OSD or host in it).

For the guard a gray fault takes nothing down - the OSDs stay up, only slower - except
``Flapping``, which takes its hosts down intermittently and counts as down all the while.
"""

from __future__ import annotations

import shlex
import threading
import time
from typing import Any, Callable, ClassVar, Sequence

from drills.faults.errors import FaultError, HealFailed

from drills.faults.interface import BackendResolver

from drills.faults.fault import Fault, Outage
from drills.faults.throttle import (
    SYSTEMD_CPU_RESET,
    SYSTEMD_IO_RESET,
    CpuLimit,
    DiskLimit,
    LinkLimit,
    link_unlimit_script,
    one_line,
)
from drills.target import Host, Target, TargetError


def osd_daemons(target: Target, aim: int | str | Sequence[str]) -> list[str]:
    """The OSDs a CRUSH name stands for: an osd id ('3', 3, 'osd.3'), a host, a rack, or a list of OSDs."""
    if not isinstance(aim, (str, int)):
        names = [osd_daemons(target, a) for a in aim]
        return sorted({d for ds in names for d in ds}, key=lambda d: int(d.split(".")[1]))
    name = str(aim)
    if name.isdigit() or name.startswith("osd."):
        daemon = name if name.startswith("osd.") else f"osd.{name}"
        target.host_of_daemon(daemon)  # an unknown OSD fails here, before anything is touched
        return [daemon]
    hosts = gray_hosts(target, name)
    daemons = [f"osd.{i}" for h in hosts for i in h.osd_ids]
    if not daemons:
        raise FaultError(f"{name} has no OSDs in the target")
    return daemons


def gray_hosts(target: Target, aim: str | Sequence[str]) -> list[Host]:
    """The hosts a CRUSH name stands for: a host, or every host of a rack (a list: each of them)."""
    if not isinstance(aim, str):
        return [h for a in aim for h in gray_hosts(target, a)]
    try:
        return [target.host(aim)]
    except TargetError:
        try:
            return list(target.rack(aim).hosts)
        except TargetError:
            raise TargetError(f"{aim!r} is neither a host nor a rack of the target "
                              f"(hosts: {', '.join(h.name for h in target.hosts)}; racks: {', '.join(r.name for r in target.racks)})") from None


def _aim_name(aim: int | str | Sequence[str]) -> str:
    if isinstance(aim, int) or (isinstance(aim, str) and aim.isdigit()):
        return f"osd.{aim}"
    return aim if isinstance(aim, str) else ",".join(str(a) for a in aim)


def _each_daemon(fault: "_OsdGrayFault", action: Callable[[Host, str], None], what: str) -> None:
    """Heal every daemon even if some fail; one error naming them all."""
    errors = []
    for d in fault.daemons:
        h = fault.target.host_of_daemon(d)
        try:
            action(h, d)
        except Exception as e:  # noqa: BLE001 - the other daemons still get their turn
            errors.append(f"{d} on {h.name}: {e}")
    if errors:
        raise HealFailed(f"{what} failed for {len(errors)} daemon(s): " + "; ".join(errors))


def _sandbox_prefix(host: Host) -> str:
    """The sandbox's prefix, from its namespace name ``<prefix>-<host>`` (as the sandbox names its links)."""
    return host.access.netns.split("-")[0]


def _cgroup_release_cmd(path: str) -> str:
    root = path.rsplit("/", 2)[0]
    return f"for p in $(cat {path}/cgroup.procs); do echo $p > {root}/cgroup.procs; done; rmdir {path}"


# --- per-OSD faults ----------------------------------------------------------------------


class _OsdGrayFault(Fault):
    role = "daemons"
    controller: ClassVar[str]  # the sandbox's cgroup v1 controller
    reset_properties: ClassVar[tuple[str, ...]]  # what the SSH heal sets empty

    def __init__(self, target: Target, aim: int | str | Sequence[str], *, where: str = "", **kw: Any):
        super().__init__(target, **kw)
        self.daemons = osd_daemons(target, aim)
        self.where = where or _aim_name(aim)  # the name as given, for the label

    def host_names(self) -> list[str]:
        return list(dict.fromkeys(self.target.host_of_daemon(d).name for d in self.daemons))

    def takes_down(self) -> Outage:
        return Outage()  # slower, still up: the guard counts nothing

    def _limit_record(self) -> dict[str, Any]:
        raise NotImplementedError

    def undo_record(self) -> dict[str, Any]:
        return {"daemons": self.daemons, "where": self.where, "limit": self._limit_record()}

    def manual_heal(self) -> str:
        from drills.faults.backends.ssh import unit_name
        from drills.sandbox.cgroups import ProcessCgroup

        steps = []
        for d in self.daemons:
            h = self.target.host_of_daemon(d)
            if h.access.kind == "ssh":
                unit = unit_name(d, self.target.cluster.deployment, self.target.cluster.fsid)
                steps.append(f"on host {h.name}: systemctl set-property --runtime {shlex.quote(unit)} {' '.join(self.reset_properties)}")
            else:  # the sandbox: the fault's own cgroup, named after the sandbox's prefix
                path = ProcessCgroup.of(self.controller, _sandbox_prefix(h), f"{self.fault_id}.{d}").path
                steps.append(_cgroup_release_cmd(str(path)))
        return "; ".join(steps)


class SlowDisk(_OsdGrayFault):
    """An OSD's device I/O throttled: the blkio cgroup (sandbox) or systemd IO*Max= (staging)."""

    kind = "slow_disk"
    controller = "blkio"
    reset_properties = SYSTEMD_IO_RESET

    def __init__(self, target: Target, aim: int | str | Sequence[str], limit: DiskLimit, **kw: Any):
        super().__init__(target, aim, **kw)
        self.limit = limit

    @property
    def label(self) -> str:
        return f"slow disk {self.where} ({self.limit.describe()})"

    def _limit_record(self) -> dict[str, Any]:
        return self.limit.to_record()

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["daemons"], DiskLimit.from_record(undo["limit"]), where=undo.get("where", ""),
                   fault_id=fault_id, resolve=resolve)

    def inject(self) -> None:
        self.injected = True
        for d in self.daemons:
            h = self.target.host_of_daemon(d)
            self.backend(h).throttle_disk(h, d, self.limit, self.fault_id)

    def heal(self) -> None:
        _each_daemon(self, lambda h, d: self.backend(h).unthrottle_disk(h, d, self.fault_id), "lift the disk throttle")
        self.injected = False


class CpuStarvation(_OsdGrayFault):
    """An OSD held to a share of one CPU: a cpu cgroup's CFS quota (sandbox) or systemd CPUQuota= (staging)."""

    kind = "cpu_starvation"
    controller = "cpu"
    reset_properties = SYSTEMD_CPU_RESET

    def __init__(self, target: Target, aim: int | str | Sequence[str], limit: CpuLimit | float, **kw: Any):
        super().__init__(target, aim, **kw)
        self.limit = limit if isinstance(limit, CpuLimit) else CpuLimit(float(limit))

    @property
    def label(self) -> str:
        return f"cpu {self.limit.describe().removesuffix(' CPU')} {self.where}"

    def _limit_record(self) -> dict[str, Any]:
        return self.limit.to_record()

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["daemons"], CpuLimit.from_record(undo["limit"]), where=undo.get("where", ""),
                   fault_id=fault_id, resolve=resolve)

    def inject(self) -> None:
        self.injected = True
        for d in self.daemons:
            h = self.target.host_of_daemon(d)
            self.backend(h).limit_cpu(h, d, self.limit, self.fault_id)

    def heal(self) -> None:
        _each_daemon(self, lambda h, d: self.backend(h).unlimit_cpu(h, d, self.fault_id), "lift the CPU limit")
        self.injected = False


# --- per-host faults -------------------------------------------------------------------


class _HostGrayFault(Fault):
    role = "network"

    def __init__(self, target: Target, aim: str | Sequence[str], *, where: str = "", **kw: Any):
        super().__init__(target, **kw)
        self._hosts = [h.name for h in gray_hosts(target, aim)]
        if not self._hosts:
            raise FaultError(f"{aim!r} has no hosts")
        self.where = where or _aim_name(aim)

    def host_names(self) -> list[str]:
        return list(self._hosts)


class SlowLink(_HostGrayFault):
    """A host's cluster link rate-limited (tc tbf out, ifb + tbf in); heal deletes the qdiscs and the ifb."""

    kind = "slow_link"

    def __init__(self, target: Target, aim: str | Sequence[str], limit: LinkLimit, **kw: Any):
        super().__init__(target, aim, **kw)
        self.limit = limit

    @property
    def label(self) -> str:
        return f"slow link {self.where} ({self.limit.describe()})"

    def takes_down(self) -> Outage:
        return Outage()

    def undo_record(self) -> dict[str, Any]:
        return {"hosts": self._hosts, "where": self.where, "limit": self.limit.to_record()}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["hosts"], LinkLimit.from_record(undo["limit"]), where=undo.get("where", ""),
                   fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        steps = []
        for h in self.hosts():
            script = one_line(link_unlimit_script(self.fault_id, address=h.address, interfaces=h.network.interfaces))
            if h.network.kind == "sandbox":
                steps.append(f"ip netns exec {h.access.netns} sh -c {shlex.quote(script)}")
            else:
                steps.append(f"on host {h.name}: {script}")
        return "; ".join(steps)

    def inject(self) -> None:
        self.injected = True
        for h in self.hosts():
            self.backend(h).limit_link(h, self.limit, self.fault_id)

    def heal(self) -> None:
        errors = []
        for h in self.hosts():
            try:
                self.backend(h).unlimit_link(h, self.fault_id)
            except Exception as e:  # noqa: BLE001 - the other hosts still get their turn
                errors.append(f"{h.name}: {e}")
        if errors:
            raise HealFailed("lift the link limit failed on: " + "; ".join(errors))
        self.injected = False


class Flapping(_HostGrayFault):
    """A host's network dropped (a blackhole, as a power cut's silence) and restored on a schedule.

    ``inject`` drops it at once and starts a background schedule: down ``down_s``, up ``up_s``,
    and so on until ``duration_s`` from the inject, ending up.  ``heal`` stops the schedule and
    leaves the network up, whatever phase it was in; after a crash ``drill heal`` lifts the block.
    """

    kind = "flapping"

    def __init__(self, target: Target, aim: str | Sequence[str], *, down_s: float = 5.0, up_s: float = 5.0,
                 duration_s: float = 60.0, **kw: Any):
        super().__init__(target, aim, **kw)
        if down_s <= 0 or up_s <= 0 or duration_s <= 0:
            raise FaultError(f"flapping needs positive down_s, up_s and duration_s (got {down_s}, {up_s}, {duration_s})")
        self.down_s, self.up_s, self.duration_s = float(down_s), float(up_s), float(duration_s)
        self.transitions: list[tuple[float, str]] = []  # (wall time, "down" | "up"), for the timeline
        self.schedule_error: str = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        return f"flap {self.where} {self.down_s:g}s down/{self.up_s:g}s up"

    @property
    def description(self) -> str:
        return f"{self.label} for {self.duration_s:g}s"

    def takes_down(self) -> Outage:
        # Down half the time: the guard must allow it as if down all the time.
        hs = self.hosts()
        return Outage(frozenset(h.name for h in hs), frozenset(d for h in hs for d in h.daemons))

    def undo_record(self) -> dict[str, Any]:
        return {"hosts": self._hosts, "where": self.where, "down_s": self.down_s, "up_s": self.up_s, "duration_s": self.duration_s}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["hosts"], down_s=undo["down_s"], up_s=undo["up_s"], duration_s=undo["duration_s"],
                   where=undo.get("where", ""), fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        from drills.faults.nft import FAMILY, table_name

        steps = []
        for h in self.hosts():
            cmd = f"nft delete table {FAMILY} {table_name(self.fault_id)}"
            steps.append(f"ip netns exec {h.access.netns} {cmd}" if h.network.kind == "sandbox" else f"on host {h.name}: {cmd}")
        return "; ".join(steps)

    def _down(self) -> None:
        for h in self.hosts():
            self.backend(h).block_network(h, None, self.fault_id)
        self.transitions.append((time.time(), "down"))

    def _up(self) -> None:
        for h in self.hosts():
            self.backend(h).unblock_network(h, self.fault_id)
        self.transitions.append((time.time(), "up"))

    def inject(self) -> None:
        self.injected = True
        self._stop.clear()
        end = time.monotonic() + self.duration_s
        self._down()  # at once, in the caller: a first drop that fails fails the inject
        self._thread = threading.Thread(target=self._schedule, args=(end,), name=f"flapping {self.fault_id}", daemon=True)
        self._thread.start()

    def _schedule(self, end: float) -> None:
        down = True
        try:
            while True:
                wait = min(self.down_s if down else self.up_s, end - time.monotonic())
                if wait <= 0 or self._stop.wait(wait) or time.monotonic() >= end:
                    break
                if down:
                    self._up()
                else:
                    self._down()
                down = not down
            if down and not self._stop.is_set():
                self._up()  # the schedule ends up; on a heal, the heal lifts it
        except Exception as e:  # noqa: BLE001 - kept for the heal to report; the heal lifts the block anyway
            self.schedule_error = str(e)

    def heal(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=90)  # a backend call is bounded (30 s subprocess timeouts)
        errors = []
        for h in self.hosts():
            try:
                self.backend(h).unblock_network(h, self.fault_id)
            except Exception as e:  # noqa: BLE001 - the other hosts still get their turn
                errors.append(f"{h.name}: {e}")
        if errors:
            raise HealFailed("unblock network failed on: " + "; ".join(errors))
        if not self.transitions or self.transitions[-1][1] != "up":
            self.transitions.append((time.time(), "up"))
        self.injected = False


GRAY_FAULTS: tuple[type[Fault], ...] = (SlowDisk, CpuStarvation, SlowLink, Flapping)

__all__ = ["SlowDisk", "CpuStarvation", "SlowLink", "Flapping", "GRAY_FAULTS", "DiskLimit", "CpuLimit", "LinkLimit",
           "osd_daemons", "gray_hosts"]
