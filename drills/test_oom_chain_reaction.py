"""Drill oom_chain_reaction: a rack comes back after writes; started all at once under a memory budget
the kernel OOM-kills OSDs; started one at a time (drills/restart) under the same budget it does not.

Sandbox only, with 2 or more OSDs per host, best 3 (`drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 3`):
each OSD host's daemons run in a memory cgroup (drills/sandbox/cgroups.py), so the kernel's real OOM killer
enforces the budget. Runbook, done twice with the same fault, the same writes, the same limits:

  set-up      osd_max_pg_log_entries raised (and osd_min_pg_log_entries left low) so every write while the
              rack is down is a PG log entry and a missing object the returning OSDs take into memory, and a
              recovered OSD restarted comes back small; recovery sleep 0 so recovery ends in minutes
  fault       rack power cut (silent); noout etc. set through the fault ledger
  writes      the verifying writer (20/s, read back at the end) and N small objects
  start       round "uncontrolled": every OSD of the rack at once, each OOM-killed one started again after
              10 s, at most 3 starts (ceph-osd@.service's Restart/StartLimit) -> OOM kills, time to HEALTH_OK
              or never within the bound
              round "controlled": drills.restart.ControlledRestart under the same budget -> OOM kills,
              peak per host vs its budget, time to HEALTH_OK
  heal        limits lifted, everything started, until active+clean; RSS per OSD after clean and after
              `heap release` (refused where ceph-osd is not built with tcmalloc: said, not hidden)

Knobs: DRILL_RACK (default the last rack), DRILL_OOM_OBJECTS (default 100000), DRILL_OOM_BUDGET (bytes
or 800MiB: the rack's hosts' budget; the other hosts get DRILL_OOM_SURVIVOR_BUDGET, default 3GiB),
DRILL_OOM_BOUND (seconds to wait for HEALTH_OK, default 600), DRILL_OOM_WAIT (what the controlled start waits for
before the next OSD: clean, the article's "wait until it has synchronised", or peered), DRILL_OOM_NEED_MARGIN
(the controlled start's margin on a learned start-up need per PG, default 1.1).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field

import psutil
import pytest

from drills.cluster import CephCluster, ClusterError, WaitTimeout
from drills.faults.kinds import RackPowerCut
from drills.faults.session import FaultSession
from drills.hostfacts import OomWatch
from drills.restart.flags import ClusterFlags
from drills.restart.hostops import CephClusterOps, SandboxHostOps
from drills.restart.orchestrator import ControlledRestart, RestartConfig, RestartResult
from drills.restart.supervise import SystemdLikeSupervisor
from drills.sandbox import host as hostctl
from drills.sandbox.bootstrap import spec_of_target
from drills.sandbox.cgroups import HostCgroup
from drills.target import Target
from drills.units import MiB, parse_bytes
from drills.workloads.verifier import RadosObjectBackend, VerifierConfig, VerifyingWriter

DRILL = "oom_chain_reaction"
OWN_RUNBOOK = True  # not the FaultDrill phases: two rounds, see plan_notes

# A PG log is kept up to osd_max_pg_log_entries while its PG is degraded; with a high target per OSD it is
# not trimmed back below osd_min_pg_log_entries per PG. So every write while the rack is down is a log entry
# the survivors keep and the returning OSDs take in with a missing object (log-based recovery, not backfill),
# and a recovered OSD, restarted, comes back small (its missing set gone, the heap new): the article's
# "restart the biggest daemon". Measured: with a low target the logs are trimmed while degraded, the returning
# OSDs backfill instead, and two at once fit where the article's chain reaction needs them not to.
PG_LOG_SETTINGS = {
    "osd_min_pg_log_entries": "1000",
    "osd_max_pg_log_entries": "500000",
    "osd_target_pg_log_entries_per_osd": "100000000",
    "osd_pg_log_dups_tracked": "3000",
    "osd_pg_log_trim_min": "100",
    "osd_max_backfills": "16",
    "osd_recovery_max_active": "16",
    "osd_recovery_sleep": "0",
    "osd_recovery_sleep_hdd": "0",
}
POOL_PGS = 32
# Per host of the rack, 3 OSDs each. Measured on a 3 x 1 x 3 sandbox: at 880 MiB all at once fits (0 kills);
# at 760 MiB the controlled start could not fit its third OSD (it held it, as it should); at 800 MiB four
# fresh runs each showed OOM kills all at once and a controlled start with none (docs/restart.md).
DEFAULT_BUDGET = "800MiB"


def _rack(t: Target) -> str:
    return os.environ.get("DRILL_RACK") or t.racks[-1].name


def make_fault(t: Target) -> RackPowerCut:
    """The fault of both rounds (also what `drill run --dry-run` shows)."""
    return RackPowerCut(t, _rack(t))


def plan_notes(t: Target) -> list[str]:
    rack = _rack(t)
    notes = [f"two rounds on rack {rack}: all its OSDs started at once, then one at a time (drills.restart), "
             f"under {os.environ.get('DRILL_OOM_BUDGET', DEFAULT_BUDGET)} per host; {os.environ.get('DRILL_OOM_OBJECTS', '100000')} "
             "small objects written while it is down; verifying writer (RADOS, 20 writes/s) throughout"]
    if t.cluster.deployment != "sandbox":
        notes.append("will be SKIPPED: needs the sandbox's memory cgroups")
    elif any(len(h.osd_ids) < 2 for h in t.rack(rack).hosts):
        notes.append("will be SKIPPED: needs 2+ OSDs per host (drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 3)")
    return notes


@dataclass
class RoundResult:
    name: str
    oom_kills: list = field(default_factory=list)
    time_to_health_ok: float | None = None  # None = never within the bound
    peak_used: dict[str, int] = field(default_factory=dict)  # host -> peak anonymous memory (the daemons' heaps)
    peak_usage: dict[str, int] = field(default_factory=dict)  # host -> the kernel's peak charge (heaps + page cache)
    peak_rss: dict[str, int] = field(default_factory=dict)
    restart: RestartResult | None = None


def _rss(spec, daemon: str) -> int | None:
    pid = hostctl.daemon_pid(spec, daemon)
    try:
        return psutil.Process(pid).memory_info().rss if pid else None
    except psutil.Error:
        return None


def _write_objects(cluster: CephCluster, pool: str, n: int, tag: str) -> None:
    payload = os.urandom(512)
    with cluster.open_ioctx(pool) as io:
        pending = []
        for i in range(n):
            pending.append(io.aio_write_full(f"oom-{tag}-{i}", payload))
            if len(pending) >= 128:
                for c in pending:
                    c.wait_for_complete()
                pending = []
        for c in pending:
            c.wait_for_complete()


def _peak_watch(spec, target: Target, hosts: dict[str, HostCgroup], stop: threading.Event, out: RoundResult) -> None:
    while not stop.wait(0.25):
        for name, cg in hosts.items():
            try:
                m = cg.read()
            except Exception:  # noqa: BLE001
                continue
            out.peak_used[name] = max(out.peak_used.get(name, 0), m.anon)
            if m.peak is not None:  # a kernel without the peak counter: not measured, never 0
                out.peak_usage[name] = max(out.peak_usage.get(name, 0), m.peak)
            for d in target.host(name).daemons:
                r = _rss(spec, d)
                if r:
                    out.peak_rss[d] = max(out.peak_rss.get(d, 0), r)


@pytest.mark.timeout(5400)  # two rounds, each bounded by DRILL_OOM_BOUND plus recovery: well past the 900 s default
def test_oom_chain_reaction(drill, drill_cluster, drill_target, drill_faults):
    t = drill_target
    if t.cluster.deployment != "sandbox":
        pytest.skip("the OOM chain reaction needs the sandbox's memory cgroups (a real cluster's OOM killer is not ours to pull)")
    spec = spec_of_target(t)
    rack = _rack(t)
    rack_hosts = [h for h in t.rack(rack).hosts]
    if any(len(h.osd_ids) < 2 for h in rack_hosts):
        # One OSD per host starts alone either way: the budget decides, not the order of starts.
        pytest.skip(f"the chain reaction needs hosts with 2 or more OSDs in rack {rack}; start such a sandbox with "
                    "`drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 3`")
    objects = int(os.environ.get("DRILL_OOM_OBJECTS", "100000"))
    budget = parse_bytes(os.environ.get("DRILL_OOM_BUDGET", DEFAULT_BUDGET))
    survivor_budget = parse_bytes(os.environ.get("DRILL_OOM_SURVIVOR_BUDGET", "3GiB"))
    bound = float(os.environ.get("DRILL_OOM_BOUND", "600"))
    ops = SandboxHostOps(t, drill_faults.host_access)
    osd_hosts = [h for h in t.hosts if h.osd_ids]
    cgroups = {h.name: HostCgroup.of(spec.prefix, h.name).create(survivor_budget) for h in osd_hosts}
    for h in osd_hosts:  # running daemons move into their host's cgroup, memory and all
        for d in h.daemons:
            pid = hostctl.daemon_pid(spec, d)
            if pid:
                cgroups[h.name].add(pid)
    for k, v in PG_LOG_SETTINGS.items():
        drill_cluster.config_set("osd", k, v)
    rack_osds = [d for h in rack_hosts for d in h.daemons if d.startswith("osd.")]
    budgets = {h.name: budget for h in rack_hosts}
    drill.note(f"rack {rack} ({', '.join(rack_osds)}); budget per host of the rack {budget // MiB} MiB "
               f"(the other hosts {survivor_budget // MiB} MiB); {objects} small objects written while it is down")
    drill_cluster.wait_for_clean(timeout=600)
    rss_before = {d: _rss(spec, d) for d in rack_osds}
    drill.phase("baseline")
    rounds: list[RoundResult] = []
    try:
        with drill_cluster.open_ioctx(t.cluster.rados_pool) as io:
            writer = VerifyingWriter(RadosObjectBackend(io, prefix=f"drill-{DRILL}-{uuid.uuid4().hex[:6]}"),
                                     drill.run_dir / f"{DRILL}-verifier.jsonl", drill.timeline,
                                     VerifierConfig(num_keys=64, rate_per_s=20, write_timeout_s=180))
            with writer:
                writer.start()
                try:
                    for name in ("uncontrolled", "controlled"):
                        rounds.append(_round(name, drill, drill_cluster, t, spec, drill_faults, ops, rack, rack_hosts, cgroups,
                                             budgets, survivor_budget, objects, bound))
                finally:
                    writer.stop()
                report = writer.check()
        lost = drill.lost_writes(writer, report, report.method)
    finally:
        for k in PG_LOG_SETTINGS:
            drill_cluster.config_rm("osd", k)
        for cg in cgroups.values():
            cg.set_limit(survivor_budget)

    unc, con = rounds
    drill_cluster.wait_for_clean(timeout=900)
    rss_clean = {d: _rss(spec, d) for d in rack_osds}
    released_ok, why_not = drill_cluster.release_heaps(rack_osds)
    if released_ok:
        time.sleep(3)  # the allocator returns pages to the kernel asynchronously
    else:
        drill.note(f"heap release refused: {why_not}")
    rss_released = {d: _rss(spec, d) if released_ok else None for d in rack_osds}
    drill.phase("after")

    fmt = lambda v: "never" if v is None else f"{v:.0f} s"  # noqa: E731
    mib = lambda v: f"{(v or 0) // MiB} MiB"  # noqa: E731

    def per_host(r: RoundResult) -> str:
        return ", ".join(f"{h} heaps {mib(r.peak_used.get(h))} (kernel's charge incl. page cache {mib(r.peak_usage.get(h))}) "
                         f"of {mib(b)}" for h, b in sorted(budgets.items()))

    drill.note(f"uncontrolled start: {len(unc.oom_kills)} OOM kill(s) ({', '.join(k.daemon or '?' for k in unc.oom_kills) or 'none'}), "
               f"HEALTH_OK after {fmt(unc.time_to_health_ok)} (bound {bound:.0f} s); peak per host: {per_host(unc)}")
    drill.note(f"controlled start: {len(con.oom_kills)} OOM kill(s), HEALTH_OK after {fmt(con.time_to_health_ok)}; "
               f"peak per host: {per_host(con)}" + (f"; {con.restart.summary().splitlines()[0]}" if con.restart else ""))
    for d in rack_osds:
        released = mib(rss_released[d]) if released_ok else "refused (no tcmalloc)"
        drill.note(f"{d} RSS: before {mib(rss_before[d])}, peak {mib(con.peak_rss.get(d))} (controlled) / "
                   f"{mib(unc.peak_rss.get(d))} (uncontrolled), after clean {mib(rss_clean[d])}, after heap release {released}")
    drill.measure("recovery", "oom_kills", len(con.oom_kills))
    drill.measure("recovery", "held_osds", None if con.restart is None else len(con.restart.held))
    drill.measure("recovery", "memory_budget_ratio", {h: con.peak_used.get(h, 0) / b for h, b in budgets.items()})
    drill.measure("recovery", "time_to_clean", con.time_to_health_ok)
    drill.measure("recovery", "uncontrolled_oom_kills", len(unc.oom_kills))
    drill.measure("recovery", "uncontrolled_time_to_health_ok", unc.time_to_health_ok)
    drill.measure("recovery", "rss_peak", {d: con.peak_rss.get(d) for d in rack_osds})
    drill.measure("after", "rss_after_recovery_ratio",
                  {d: (rss_clean[d] / rss_before[d]) if rss_clean[d] and rss_before[d] else None for d in rack_osds})
    drill.measure("after", "rss_after_heap_release_ratio",
                  {d: (rss_released[d] / rss_before[d]) if rss_released[d] and rss_before[d] else None for d in rack_osds})
    result = drill.finish(lost_writes=lost)
    drill.assert_passed(result)


def _round(name: str, drill, cluster: CephCluster, t: Target, spec, faults: FaultSession, ops: SandboxHostOps, rack: str,
           rack_hosts, cgroups: dict[str, HostCgroup], budgets: dict[str, int], survivor_budget: int, objects: int,
           bound: float) -> RoundResult:
    out = RoundResult(name)
    # Each round writes into a pool of its own, deleted after it: both rounds (and every run) start from
    # the same logs, and no shared pool grows by 100,000 objects a round.
    pool = f"drills-oom-{name}-{uuid.uuid4().hex[:6]}"
    cluster.create_pool(pool, POOL_PGS, "drills")
    try:
        return _round_in(out, pool, name, drill, cluster, t, spec, faults, ops, rack_hosts, cgroups, budgets,
                         survivor_budget, objects, bound)
    finally:
        try:
            cluster.delete_pool(pool)
        except ClusterError as e:  # e.g. mon_allow_pool_delete false: say so, keep going
            drill.note(f"pool {pool} not deleted: {e}; delete it by hand")


def _round_in(out: RoundResult, pool: str, name: str, drill, cluster: CephCluster, t: Target, spec, faults: FaultSession,
              ops: SandboxHostOps, rack_hosts, cgroups: dict[str, HostCgroup], budgets: dict[str, int],
              survivor_budget: int, objects: int, bound: float) -> RoundResult:
    rack_osds = [(h, d) for h in rack_hosts for d in h.daemons if d.startswith("osd.")]
    flags = faults.inject(ClusterFlags(t, already_set=sorted(cluster.flags() & {"noout", "nodeep-scrub", "noautoscale"}), cluster=cluster))
    cut = faults.inject(make_fault(t))
    drill.phase("degraded", round=name)
    cluster.wait_for_osds(down={int(d.split(".")[1]) for _, d in rack_osds}, timeout=120)
    _write_objects(cluster, pool, objects, f"{name}-{uuid.uuid4().hex[:6]}")
    for h in rack_hosts:
        cgroups[h.name].set_limit(budgets[h.name])
        cgroups[h.name].reset_peak()
    backend = ops._backend
    for h in rack_hosts:
        backend.power_on(h, start_daemons=False)  # held: the round decides how they start
    watch = OomWatch({h.name: cgroups[h.name] for h in rack_hosts}, {h.name: list(h.daemons) for h in rack_hosts},
                     lambda d: hostctl.daemon_pid(spec, d), lambda pid: psutil.Process(pid).memory_info().rss)
    stop = threading.Event()
    peaks = threading.Thread(target=_peak_watch, args=(spec, t, {h.name: cgroups[h.name] for h in rack_hosts}, stop, out), daemon=True)
    peaks.start()
    drill.phase("recovery", round=name)
    t0 = time.monotonic()
    ev = lambda kind, label, data: drill.event(kind, label, round=name, **data)  # noqa: E731
    supervisor = None
    try:
        if name == "uncontrolled":
            supervisor = SystemdLikeSupervisor(ops, rack_osds, on_event=ev).start_all()
        else:
            # Waiting for clean, not peered: a peered OSD keeps growing while it recovers (measured: 167 ->
            # 474 MiB in the minute after peering), so the next start would be decided on memory not yet used.
            cfg = RestartConfig(budgets, start_need=150 * MiB, wait=os.environ.get("DRILL_OOM_WAIT", "clean"),
                                step_timeout_s=300, settle_s=15,
                                need_margin=float(os.environ.get("DRILL_OOM_NEED_MARGIN", "1.1")))
            restart = ControlledRestart(ops, CephClusterOps(cluster), cfg,
                                        rack_osds, on_event=ev, on_sample=lambda m, v, labels: drill.timeline.sample(m, v, **labels))
            out.restart = restart.run()
        deadline = t0 + bound
        while time.monotonic() < deadline:
            for k in watch.poll():
                drill.event("oom.kill", f"OOM kill {k.daemon or '?'} on {k.host}", round=name, host=k.host, daemon=k.daemon,
                            pid=k.pid, signal="SIGKILL", rss_before=k.rss_before)
            try:
                if cluster.health_status() == "HEALTH_OK" or _ok_but_flags(cluster):
                    out.time_to_health_ok = time.monotonic() - t0
                    break
            except Exception:  # noqa: BLE001
                pass
            if out.restart is not None and not out.restart.ok:
                break  # the controlled start stopped: held OSDs never come back by themselves
            time.sleep(1)
        for k in watch.poll():
            drill.event("oom.kill", f"OOM kill {k.daemon or '?'} on {k.host}", round=name, host=k.host, daemon=k.daemon, pid=k.pid, signal="SIGKILL")
        out.oom_kills = list(watch.kills)
    finally:
        if supervisor is not None:
            supervisor.stop()
        stop.set()
        peaks.join(timeout=5)
        for h in rack_hosts:
            cgroups[h.name].set_limit(survivor_budget)
        faults.heal(cut)  # starts whatever is still down
        faults.heal(flags)
        try:
            cluster.wait_for_osds(up={int(d.split(".")[1]) for _, d in rack_osds}, timeout=120)
            cluster.wait_for_clean(timeout=900)
        except WaitTimeout as e:
            drill.event("abort", f"{name}: cluster did not get clean after the round: {e}")
            raise
    return out


def _ok_but_flags(cluster: CephCluster) -> bool:
    """HEALTH_WARN only for the flags this drill set (noout etc.) counts as healthy: the data is all there."""
    h = cluster.health()
    return h["status"] == "HEALTH_WARN" and set(h.get("checks", {})) <= {"OSDMAP_FLAGS"}
