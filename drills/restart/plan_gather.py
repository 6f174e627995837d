"""Read-only: the readings a restart plan needs, from the live cluster, the hosts and the history.

    PGs per OSD         the OSD map (`osd getmap`, then `osdmaptool --mark-up N --test-map-pgs-dump-all`, a
                        local tool on a copy: right for a down OSD too), else `pg dump`'s up sets (up OSDs)
    osd_memory_target   the running OSD (`ceph tell osd.N config get`), else the mon's config db
    host memory         sandbox host with a cgroup limit: the limit, and the cgroup's anonymous memory in use;
                        otherwise MemTotal and MemTotal - MemAvailable (/proc/meminfo: over SSH, or this
                        machine's for a local host). With a memory budget (--memory-budget, memory_budget in
                        the target): the budget, capped by what the host has free, and the host's Ceph
                        daemons' use (the controlled start's view: min(budget - used, MemAvailable)).
                        The planned OSDs' own RSS is taken off the use: a restart frees it.
    start-up cost       earlier drills' `startup_pgs` with their `rss_peak` per OSD (history.sqlite, same fsid)

Nothing is set, started or written: mon/mgr/osd commands that only read, /proc and cgroup files, and the
history database opened read-only. A reading that fails is `Reading(None, why)`, never 0.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from drills.cluster import CephCluster, ClusterError
from drills.hostfacts import MemInfo, meminfo_reading
from drills.restart.hostops import mapped_pg_count
from drills.restart.plan import (
    DEFAULT_NEED_MARGIN, HostInput, OsdInput, PlanInputs, Reading, StartupCost, StartupSample, assumed_cost,
    startup_cost_from_history,
)
from drills.target import Host, Target
from drills.units import MiB

# The measurement the controlled-restart drill records per OSD (PGs it held when it started), next to rss_peak.
STARTUP_PGS_METRIC = "startup_pgs"
STARTUP_DRILLS = ("controlled_restart",)
HISTORY_ROWS = 200  # the most recent OSD starts looked at


def _osd_id(daemon: str) -> int:
    return int(daemon.split(".", 1)[1])


def pg_counts(cluster: CephCluster, osds: Sequence[str]) -> dict[str, Reading]:
    """PGs each OSD holds once up: the OSD map first (a held, down OSD is in no up set of `pg dump`)."""
    why_map = ""
    try:
        osdmap: bytes | None = cluster.osdmap_binary()
    except ClusterError as e:
        osdmap, why_map = None, f"osd getmap failed: {e}"
    stats: list[dict[str, Any]] | None = None
    why_dump = ""
    out: dict[str, Reading] = {}
    for d in osds:
        osd = _osd_id(d)
        count = mapped_pg_count(osdmap, osd) if osdmap is not None else None
        if count is not None:
            out[d] = Reading(count, "OSD map (osdmaptool --mark-up)")
            continue
        why_map = why_map or "osdmaptool (package ceph-base) missing or failed"
        if stats is None and not why_dump:
            try:
                dump = cluster.mgr_command("pg dump", dumpcontents=["pgs_brief"])
                stats = dump.get("pg_stats", []) if isinstance(dump, dict) else list(dump)
            except (ClusterError, ValueError) as e:
                why_dump = f"pg dump failed: {e}"
        mine = sum(1 for p in stats or [] if osd in p.get("up", []))
        if mine:
            out[d] = Reading(mine, "pg dump up sets")
        else:
            out[d] = Reading.missing(f"{why_map}; {why_dump or f'pg dump lists {d} in no up set (down?)'}")
    return out


def memory_targets(cluster: CephCluster, osds: Sequence[str]) -> dict[str, Reading]:
    """Each OSD's osd_memory_target: as it runs, else as the mon's config db has it for that OSD."""
    out: dict[str, Reading] = {}
    for d in osds:
        try:
            v = cluster.osd_command(_osd_id(d), "config get", var="osd_memory_target")
            out[d] = Reading(int(float(v["osd_memory_target"] if isinstance(v, dict) else v)), "the running OSD")
            continue
        except (ClusterError, KeyError, ValueError, TypeError) as e:
            running_why = f"{type(e).__name__}: {e}"[:120]
        try:
            out[d] = Reading(int(float(cluster.config_get(d, "osd_memory_target"))), "the mon's config db (OSD not answering)")
        except (ClusterError, ValueError) as e:
            out[d] = Reading.missing(f"neither the OSD ({running_why}) nor the config db ({e}) answered")
    return out


def _sandbox_prefix(target: Target) -> str | None:
    if target.cluster.deployment != "sandbox":
        return None
    try:
        from drills.sandbox.bootstrap import spec_of_target

        return spec_of_target(target).prefix
    except Exception:  # noqa: BLE001 - not a sandbox we can describe: its hosts are read through /proc/meminfo
        return None


def host_input(target: Target, host: Host, planned: Sequence[str], *, host_ops: Any, budget: int,
               prefix: str | None, meminfo: Callable[[Target, Host], MemInfo] = meminfo_reading) -> HostInput:
    """One host's memory and what is in use apart from the planned OSDs (read, nothing changed).

    Without a budget: the host's own memory (cgroup limit, else MemTotal) and everything in use there. With
    one (as the controlled start has it): the budget and the host's Ceph daemons' use, the budget capped by
    what the host has free (the controlled start's min(budget - used, MemAvailable))."""
    try:
        host_ops.probe(host)
        mem = host_ops.memory(host, budget)
    except Exception as e:  # noqa: BLE001 - unreachable: not measured, with why
        why = f"host {host.name} not reachable: {e}"
        return HostInput(host.name, Reading.missing(why), Reading.missing(why))
    planned_rss = sum(mem.daemons.get(d, 0) for d in planned)  # freed when they restart; a stopped one has none
    physical = _physical(target, host, planned_rss, prefix, meminfo)
    if not budget:
        return physical
    ceph_used = max(0, mem.used - planned_rss)
    used = Reading(ceph_used, "the host's Ceph daemons (as the controlled start counts them) minus the planned OSDs' RSS")
    if physical.memory.value is None or physical.used_by_others.value is None:
        return HostInput(host.name, Reading(budget, f"memory budget {budget // MiB} MiB (the host's free memory not "
                                                    f"measured: {physical.memory.source})"), used)
    free = physical.memory.value - physical.used_by_others.value
    if ceph_used + free < budget:
        return HostInput(host.name, Reading(ceph_used + free, f"memory budget {budget // MiB} MiB capped by what the host has "
                                                              f"free ({free // MiB} MiB: {physical.memory.source})"), used)
    return HostInput(host.name, Reading(budget, f"memory budget {budget // MiB} MiB"), used)


def _physical(target: Target, host: Host, planned_rss: int, prefix: str | None,
              meminfo: Callable[[Target, Host], MemInfo]) -> HostInput:
    """The host's own memory: its cgroup limit (sandbox) or MemTotal, and everything in use there."""
    cg = None
    if prefix is not None and host.access.kind == "local":
        from drills.sandbox.cgroups import existing_host_cgroup

        cg = existing_host_cgroup(prefix, host.name)
    if cg is not None:
        try:
            reading = cg.read()
        except Exception as e:  # noqa: BLE001
            why = f"cannot read the memory cgroup {cg.path}: {e}"
            return HostInput(host.name, Reading.missing(why), Reading.missing(why))
        if reading.limit:
            return HostInput(host.name, Reading(reading.limit, f"memory cgroup limit ({cg.path})"),
                             Reading(max(0, reading.anon - planned_rss), "cgroup anonymous memory minus the planned OSDs' RSS"))
    info = meminfo(target, host)
    if info.total is None or info.available is None:
        why = info.why or "no MemAvailable line in /proc/meminfo"
        return HostInput(host.name, Reading.missing(why), Reading.missing(why))
    limitless = ", no memory cgroup limit" if cg is not None else ""
    return HostInput(host.name, Reading(info.total, f"MemTotal, {info.source}{limitless}"),
                     Reading(max(0, info.total - info.available - planned_rss),
                             "MemTotal - MemAvailable minus the planned OSDs' RSS"))


def history_samples(db_path: str | Path, fsid: str, drills: Sequence[str] = STARTUP_DRILLS) -> tuple[list[StartupSample], str]:
    """Earlier OSD starts on this cluster (same fsid): peak RSS and PG count per OSD, newest first; and
    why there are none. The database is opened read-only (never created)."""
    path = Path(db_path)
    if not path.is_file():
        return [], f"no history database at {path}"
    marks = ",".join("?" * len(drills))
    sql = (f"SELECT p.run_id, p.drill, p.subject, p.value AS pgs, k.value AS peak FROM figures p "
           f"JOIN figures k ON k.run_id = p.run_id AND k.drill = p.drill AND k.phase = p.phase "
           f"AND k.subject = p.subject AND k.metric = 'rss_peak' "
           f"JOIN runs r ON r.run_id = p.run_id "
           f"WHERE p.metric = ? AND p.drill IN ({marks}) AND r.fsid = ? AND p.value > 0 AND k.value > 0 "
           f"ORDER BY r.started DESC LIMIT {HISTORY_ROWS}")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
            rows = conn.execute(sql, (STARTUP_PGS_METRIC, *drills, fsid)).fetchall()
    except sqlite3.Error as e:
        return [], f"history database {path} unreadable: {e}"
    samples = [StartupSample(r[0], r[1], r[2], int(r[4]), int(r[3])) for r in rows]
    return samples, "" if samples else f"no OSD start with its PG count recorded for this cluster in {path}"


def startup_cost(history_db: str | Path | None, fsid: str, margin: float = DEFAULT_NEED_MARGIN) -> StartupCost:
    if history_db is None:
        return assumed_cost(margin, "no history database given")
    samples, why = history_samples(history_db, fsid)
    return startup_cost_from_history(samples, margin) if samples else assumed_cost(margin, why)


def gather_plan_inputs(target: Target, cluster: CephCluster, pairs: Sequence[tuple[Host, str]], selection: str, *,
                       budget: int | None = None, budgets: Mapping[str, int] | None = None, history_db: str | Path | None = None,
                       margin: float = DEFAULT_NEED_MARGIN, host_ops: Any = None) -> PlanInputs:
    """Everything `make_plan` needs for these (host, OSD) pairs (`select_osds`), read without changing anything.
    A host's budget: ``budgets[host]``, else ``budget``, else its memory_budget in the target, else none."""
    from drills.restart.hostops import host_ops_for

    osds = [d for _, d in pairs]
    pgs = pg_counts(cluster, osds)
    targets = memory_targets(cluster, osds)
    hosts = list({h.name: h for h, _ in pairs}.values())
    ops = host_ops if host_ops is not None else host_ops_for(target)
    prefix = _sandbox_prefix(target)
    access = getattr(ops, "access", None)  # the host ops' connections serve the meminfo reads too

    def meminfo(t: Target, h: Host) -> MemInfo:
        return meminfo_reading(t, h, access=access)

    host_inputs = tuple(host_input(target, h, [d for hh, d in pairs if hh.name == h.name], host_ops=ops,
                                   budget=(budgets or {}).get(h.name) or budget or h.memory_budget, prefix=prefix,
                                   meminfo=meminfo) for h in hosts)
    return PlanInputs(selection, tuple(OsdInput(d, h.name, pgs[d], targets[d]) for h, d in pairs), host_inputs,
                      startup_cost(history_db, cluster.fsid(), margin))
