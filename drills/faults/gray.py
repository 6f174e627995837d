"""Gray faults: a part of the cluster gets slow or unreliable instead of dying.

* ``SlowDisk``       an OSD's device I/O throttled (bytes/s and/or IOPS, read and write)
* ``CpuStarvation``  an OSD held to a CFS quota (a share of one CPU)
* ``SlowLink``       a host's link rate-limited with ``tc tbf`` (both directions)
* ``Flapping``       a host's network dropped and restored on a schedule for a while
* ``ReadErrors``     reads of a few objects on one OSD fail with EIO (BlueStore's debug read-error injection)

Each is a ledgered ``Fault`` like the power cuts: the backend op and its undo beside each
other, a label for plots, an undo record that ``drill heal`` rebuilds the heal from.  Aim them
by CRUSH name: an OSD (``3`` or ``"osd.3"``), a host or a rack (every OSD or host in it).

For the guard a gray fault takes nothing down - the OSDs stay up, only slower - except
``Flapping``, which takes its hosts down intermittently and counts as down all the while.
``ReadErrors`` acts through the cluster (librados mon and OSD commands), not a host backend.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Sequence

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


# --- read errors: Ceph's own injection, through the cluster ------------------------------

READ_ERR_OPTION = "bluestore_debug_inject_read_err"
MARKED_OBJECT_BYTES = 4096
WARN_REPAIRS_OPTION = "mon_osd_warn_num_repaired"  # OSD_TOO_MANY_REPAIRS when an OSD's count is above it
DEFAULT_WARN_REPAIRS = 10  # Pacific's default
_NAME_CANDIDATES = 512  # names tried to find objects whose primary is the OSD (1 in 6 on the sandbox)


def marked_payload(name: str, size: int = MARKED_OBJECT_BYTES) -> bytes:
    """The content of a marked object, from its name alone: a read can be checked in any process."""
    block = hashlib.sha256(name.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def pick_names_with_primary(candidates: Iterable[str], primary_of: Callable[[str], int], osd_id: int, count: int) -> list[str]:
    """Pure: the first `count` candidate names whose acting primary is `osd_id` (reads go to the primary)."""
    out: list[str] = []
    for name in candidates:
        if primary_of(name) == osd_id:
            out.append(name)
            if len(out) == count:
                break
    return out


def shards_repaired(dump: Any, osd_id: int) -> int | None:
    """Pure: an OSD's `num_shards_repaired` from `pg dump osds` (a list of osd stats, or a dict holding one
    under osd_stats / pg_map.osd_stats, as releases print it); None when absent."""
    if isinstance(dump, dict):
        stats = dump.get("osd_stats")
        if stats is None and isinstance(dump.get("pg_map"), dict):
            stats = dump["pg_map"].get("osd_stats")
    else:
        stats = dump
    for s in stats or []:
        if isinstance(s, dict) and s.get("osd") == osd_id and "num_shards_repaired" in s:
            return int(s["num_shards_repaired"])
    return None


def must_reset_repairs(before: int | None, now: int | None, warn: int) -> bool:
    """Pure: this fault's repairs pushed the OSD's repaired-read count over the OSD_TOO_MANY_REPAIRS line
    (a count already over it before the inject is not ours to reset)."""
    return before is not None and now is not None and before <= warn < now


@dataclass(frozen=True)
class MarkedRead:
    """One client read of a marked object: whether it returned the written bytes, and how long it took."""

    name: str
    ok: bool
    seconds: float
    error: str = ""


class ReadErrors(Fault):
    """Reads of a few objects on one OSD return EIO: BlueStore's debug read-error injection.

    ``inject`` writes ``objects`` small objects of its own (named after the fault) whose acting primary is
    the OSD, sets ``bluestore_debug_inject_read_err = true`` for that OSD in the monitors' config database,
    and marks each object with the OSD's ``injectdataerr`` command: from then on BlueStore on that OSD
    answers a data read of those objects with EIO (``BlueStore::read``, ``_debug_data_eio``). Client reads
    go to the primary, so each marked object is hit by the next client read (or deep scrub) of it.

    ``heal`` removes the objects while the option is still on (BlueStore forgets a mark when its object is
    deleted, ``_debug_obj_on_delete``, only while the option is true; there is no command that clears a
    mark), sets the option back as it was, repairs any PG of those objects a scrub left inconsistent, and,
    if this fault's repaired reads pushed the OSD's count over ``mon_osd_warn_num_repaired`` (the
    OSD_TOO_MANY_REPAIRS warning), restarts the OSD: Pacific keeps that count in the OSD's memory and has
    no ``clear_shards_repaired`` command. The object names and the state before the inject are read
    before anything is touched (``probe``), so the ledger's record can rebuild the whole heal.
    """

    kind = "read_errors"
    role = "daemons"

    def __init__(self, target: Target, aim: int | str, *, pool: str = "", objects: int = 3, names: Sequence[str] = (),
                 config_before: str | None = None, running_before: str | None = None,
                 repairs_before: int | None = None, warn_repairs: int = DEFAULT_WARN_REPAIRS,
                 where: str = "", cluster: Any = None, **kw: Any):
        super().__init__(target, **kw)
        daemons = osd_daemons(target, aim)
        if len(daemons) != 1:
            raise FaultError(f"read errors aim at one OSD; {_aim_name(aim)} is {len(daemons)} OSDs: name one, e.g. {daemons[0]}")
        if not names and objects < 1:
            raise FaultError(f"read errors need at least one object to mark (got objects={objects})")
        self.daemon = daemons[0]
        self.osd_id = int(self.daemon.split(".")[1])
        self.where = where or self.daemon
        self.pool = pool or target.cluster.rados_pool
        self.count = len(names) or int(objects)
        self.names: list[str] = list(names)  # chosen by `plan` (probe), or from the ledger's record
        self.config_before = config_before  # the config db's value for osd.N before the inject; None: no entry
        self.running_before = running_before  # what the OSD ran with before the inject
        self.repairs_before = repairs_before
        self.warn_repairs = int(warn_repairs)
        self.repaired_pgs: list[str] = []  # PGs the heal repaired (scrub had found them inconsistent)
        self.restarted = False  # the heal restarted the OSD to reset its repaired-read count
        self._cluster = cluster

    # -- description --
    @property
    def label(self) -> str:
        return f"read errors {self.where} ({self.count} objects)"

    @property
    def description(self) -> str:
        return (f"EIO on reads of {self.count} objects of pool {self.pool} on {self.daemon} "
                f"({READ_ERR_OPTION} + injectdataerr)")

    def host_names(self) -> list[str]:
        return [self.target.host_of_daemon(self.daemon).name]  # only for the restart that resets the count

    def takes_down(self) -> Outage:
        return Outage()  # the OSD stays up; its peers serve the marked objects

    def undo_record(self) -> dict[str, Any]:
        return {"daemon": self.daemon, "where": self.where, "pool": self.pool, "names": self.names,
                "config_before": self.config_before, "running_before": self.running_before,
                "repairs_before": self.repairs_before, "warn_repairs": self.warn_repairs}

    @classmethod
    def from_undo(cls, target: Target, undo: dict[str, Any], *, fault_id: str, resolve: BackendResolver | None = None) -> "Fault":
        return cls(target, undo["daemon"], pool=undo["pool"], names=undo["names"], config_before=undo.get("config_before"),
                   running_before=undo.get("running_before"), repairs_before=undo.get("repairs_before"),
                   warn_repairs=undo.get("warn_repairs", DEFAULT_WARN_REPAIRS), where=undo.get("where", ""),
                   fault_id=fault_id, resolve=resolve)

    def manual_heal(self) -> str:
        option = (f"ceph config set {self.daemon} {READ_ERR_OPTION} {self.config_before}" if self.config_before is not None
                  else f"ceph config rm {self.daemon} {READ_ERR_OPTION}")
        names = " ".join(self.names) or f"<the objects named {self.fault_id}-*>"
        return (f"for o in {names}; do rados -p {self.pool} rm $o; done; {option}; "
                f"ceph pg repair <pgid> for any of their PGs `ceph health detail` calls inconsistent; "
                f"if OSD_TOO_MANY_REPAIRS names {self.daemon}: restart {self.daemon}")

    # -- the cluster --
    def _with_cluster(self, fn: Callable[[Any], Any]) -> Any:
        if self._cluster is not None:
            return fn(self._cluster)
        from drills.cluster import CephCluster

        with CephCluster(self.target) as c:
            return fn(c)

    def object_names(self) -> list[str]:
        return list(self.names)

    def expected_log_errors(self) -> list[str]:
        """The [ERR] lines this fault causes by design, as regular expressions: the primary's "missing primary copy
        of <object>, will try copies on ..." (PrimaryLogPG::primary_error) for the marked objects only."""
        return [rf"missing primary copy of \S*:{re.escape(n)}:head, will try copies on " for n in self.names]

    def probe(self) -> None:
        """Read the state the heal restores and pick the objects, before anything is touched (and so before the
        ledger arms the record)."""
        super().probe()
        if not self.names:
            self._with_cluster(self._plan)

    def _plan(self, c: Any) -> None:
        from drills.cluster import ClusterError

        pool = next((p for p in c.pools() if p.get("pool_name") == self.pool), None)
        if pool is None:
            raise FaultError(f"pool {self.pool!r} does not exist; set cluster.rados_pool in the target file")
        if pool.get("type") == 3:  # pg_pool_t::TYPE_ERASURE
            raise FaultError(f"pool {self.pool} is erasure-coded; read errors need a replicated pool (repair on read "
                             "from replicas is replicated-only): set cluster.rados_pool to one")
        self.config_before = _config_db_value(c.mon_command("config dump"), self.daemon, READ_ERR_OPTION)
        self.running_before = c.osd_running_config(self.osd_id, READ_ERR_OPTION)
        try:
            self.repairs_before = shards_repaired(c.mgr_command("pg dump", dumpcontents=["osds"]), self.osd_id)
        except ClusterError:
            self.repairs_before = None
        try:
            self.warn_repairs = int(float(c.config_get("mgr", WARN_REPAIRS_OPTION)))
        except (ClusterError, ValueError):
            self.warn_repairs = DEFAULT_WARN_REPAIRS

        def primary_of(name: str) -> int:
            return int(c.mon_command("osd map", pool=self.pool, object=name)["acting_primary"])

        candidates = (f"{self.fault_id}-{i:03d}" for i in range(_NAME_CANDIDATES))
        self.names = pick_names_with_primary(candidates, primary_of, self.osd_id, self.count)
        if len(self.names) < self.count:
            raise FaultError(f"{self.daemon} is the primary of only {len(self.names)} of {_NAME_CANDIDATES} object names "
                             f"in pool {self.pool}; is it up and in? (ceph osd tree)")

    # -- inject, heal --
    def inject(self) -> None:
        self.injected = True

        def go(c: Any) -> None:
            if not self.names:
                self._plan(c)
            with c.open_ioctx(self.pool) as io:
                for n in self.names:
                    io.write_full(n, marked_payload(n))
            c.mon_command("config set", who=self.daemon, name=READ_ERR_OPTION, value="true")
            _wait_running(c, self.osd_id, "true")
            for n in self.names:
                c.osd_command(self.osd_id, "injectdataerr", pool=self.pool, objname=n)

        self._with_cluster(go)

    def heal(self) -> None:
        errors: list[str] = []

        def step(what: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - the other steps still run
                errors.append(f"{what}: {e}")

        def go(c: Any) -> None:
            # The objects go first, while the option is still on: only then does BlueStore forget their marks.
            step("remove the marked objects", lambda: self._remove_objects(c))
            step(f"set {READ_ERR_OPTION} back", lambda: self._restore_option(c))
            step("repair their PGs", lambda: self._repair_inconsistent(c))
            step("reset the repaired-read count", lambda: self._reset_repairs_if_raised(c))

        try:
            self._with_cluster(go)
        except Exception as e:  # noqa: BLE001 - no cluster: nothing of the heal ran
            errors.append(f"cannot reach the cluster: {e}")
        if errors:
            raise HealFailed(f"read errors on {self.daemon}: " + "; ".join(errors))
        self.injected = False

    def _remove_objects(self, c: Any) -> None:
        import rados

        with c.open_ioctx(self.pool) as io:
            for n in self.names:
                try:
                    io.remove_object(n)
                except rados.ObjectNotFound:
                    pass

    def _restore_option(self, c: Any) -> None:
        if self.config_before is None:
            c.mon_command("config rm", who=self.daemon, name=READ_ERR_OPTION)
        else:
            c.mon_command("config set", who=self.daemon, name=READ_ERR_OPTION, value=self.config_before)
        if self.running_before is not None:
            _wait_running(c, self.osd_id, self.running_before)

    def _repair_inconsistent(self, c: Any, timeout: float = 180.0) -> None:
        """`pg repair` of every PG of the marked objects that a scrub left inconsistent, until none is."""
        from drills.telemetry.evidence import is_inconsistent, pgs_of_objects

        if not self.names:
            return
        pgs = pgs_of_objects(c, self.pool, self.names)

        def bad() -> list[str]:
            stats = c.mgr_command("pg ls-by-pool", poolstr=self.pool)
            stats = stats.get("pg_stats", []) if isinstance(stats, dict) else stats
            return sorted(p["pgid"] for p in stats if p["pgid"] in pgs and is_inconsistent(p))

        found = bad()
        if not found:
            return
        self.repaired_pgs = found
        deadline = time.monotonic() + timeout
        last_request = -1e9
        while found:
            if time.monotonic() - last_request >= 20:  # an OSD drops a repair request it got mid-peering
                for pg in found:
                    c.mgr_command("pg repair", pgid=pg)
                last_request = time.monotonic()
            if time.monotonic() >= deadline:
                raise FaultError(f"PG(s) {', '.join(found)} still inconsistent {timeout:.0f} s after `pg repair`; "
                                 "see `ceph health detail` and `rados list-inconsistent-obj <pgid>`")
            time.sleep(1)
            found = bad()

    def _reset_repairs_if_raised(self, c: Any) -> None:
        from drills.cluster import ClusterError

        try:
            now = shards_repaired(c.mgr_command("pg dump", dumpcontents=["osds"]), self.osd_id)
        except ClusterError:
            return  # the count cannot be read; the drill's health allow-list says what was raised
        if not must_reset_repairs(self.repairs_before, now, self.warn_repairs):
            return
        h = self.target.host_of_daemon(self.daemon)
        self.backend(h).stop_daemon(h, self.daemon)
        self.backend(h).start_daemon(h, self.daemon)
        self.restarted = True
        c.wait_for_osds(up={self.osd_id}, timeout=120)

    def repaired_since_inject(self, c: Any) -> int | None:
        """Reads the OSD repaired since the inject (its `num_shards_repaired`, as the mgr last heard it)."""
        from drills.cluster import ClusterError

        try:
            now = shards_repaired(c.mgr_command("pg dump", dumpcontents=["osds"]), self.osd_id)
        except ClusterError:
            return None
        return None if now is None or self.repairs_before is None else now - self.repairs_before

    def read_marked(self, c: Any) -> list[MarkedRead]:
        """Read every marked object once through the client (librados, with the target's op timeout): what a
        client gets from an OSD whose copy cannot be read."""
        import rados

        out = []
        with c.open_ioctx(self.pool) as io:
            for n in self.names:
                t0 = time.monotonic()
                try:
                    data = io.read(n, MARKED_OBJECT_BYTES + 1, 0)
                except rados.Error as e:
                    out.append(MarkedRead(n, False, time.monotonic() - t0, f"{type(e).__name__}: {e}"))
                    continue
                ok = data == marked_payload(n)
                out.append(MarkedRead(n, ok, time.monotonic() - t0, "" if ok else f"read {len(data)} bytes, not what was written"))
        return out


def _config_db_value(dump: Any, who: str, name: str) -> str | None:
    """Pure: the value `config dump` holds for exactly `who` (not its parents) and `name`; None: no entry."""
    for e in dump if isinstance(dump, list) else []:
        if isinstance(e, dict) and e.get("section") == who and e.get("name") == name:
            return str(e.get("value"))
    return None


def _wait_running(c: Any, osd_id: int, value: str, timeout: float = 20.0) -> None:
    """Until the OSD runs with `value` for the read-error option (the monitors push config changes to it)."""
    from drills.cluster import ClusterError

    deadline = time.monotonic() + timeout
    seen = "?"
    while True:
        try:
            seen = c.osd_running_config(osd_id, READ_ERR_OPTION)
        except ClusterError as e:
            seen = str(e)
        if seen == value:
            return
        if time.monotonic() >= deadline:
            raise FaultError(f"osd.{osd_id} still runs with {READ_ERR_OPTION}={seen} {timeout:.0f} s after the change "
                             f"(wanted {value}); check it with `ceph tell osd.{osd_id} config get {READ_ERR_OPTION}`")
        time.sleep(0.5)


GRAY_FAULTS: tuple[type[Fault], ...] = (SlowDisk, CpuStarvation, SlowLink, Flapping, ReadErrors)

__all__ = ["SlowDisk", "CpuStarvation", "SlowLink", "Flapping", "ReadErrors", "MarkedRead", "GRAY_FAULTS", "DiskLimit",
           "CpuLimit", "LinkLimit", "osd_daemons", "gray_hosts", "marked_payload", "pick_names_with_primary",
           "shards_repaired", "must_reset_repairs", "READ_ERR_OPTION"]
