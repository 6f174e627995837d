"""Drill oom_chain_reaction: a rack comes back after writes; started all at once under a memory budget
the kernel OOM-kills OSDs, the killed ones are started again and killed again, and the rack does not heal;
started one at a time (drills/restart) under the same budget it heals with no kill.

Sandbox only, with 2 or more OSDs per host, best 4 (`drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 4`):
each OSD host's daemons run in a memory cgroup (drills/sandbox/cgroups.py), so the kernel's real OOM killer
enforces the budget. Runbook: three rounds with the same fault and the same writes:

  set-up      osd_max_pg_log_entries raised (and osd_min_pg_log_entries left low) so every write while the
              rack is down is a PG log entry and a missing object the returning OSDs take into memory, and a
              recovered OSD restarted comes back small; recovery sleep 0 so recovery ends in minutes
  each round  rack power cut (silent); noout etc. set through the fault ledger; the verifying writer (20/s,
              read back at the end) throughout and N small objects while the rack is down; power on with
              the rack's OSDs held; then:
  probe       every OSD at once under no limit, until HEALTH_OK: each OSD's peak and its RSS once clean
              (held), the host's peak; then each OSD restarted, its peak until clean again (restarted).
              drills/restart/window.py turns them into the window: the controlled start's need (floor)
              and the cascade ceiling; the budget goes between them (DRILL_OOM_BUDGET skips the probe)
  uncontrolled every OSD at once under the budget, each OOM-killed one started again after 10 s, at most
              3 starts (ceph-osd@.service's Restart/StartLimit) -> OOM kills, repeats, time to HEALTH_OK
              or never within the bound (an OSD at its start limit stays down: the round ends a minute later)
  controlled  drills.restart.ControlledRestart under the same budget -> OOM kills, peak per host vs its
              budget, time to HEALTH_OK, every decision with the memory behind it
  heal        limits lifted, everything started, until active+clean; RSS per OSD after clean and after
              `heap release` (refused where ceph-osd is not built with tcmalloc: said, not hidden)

Knobs: DRILL_RACK (default the last rack), DRILL_OOM_OBJECTS (default 100000), DRILL_OOM_BUDGET (a size: run
both rounds there, no probe; default: picked from the probe), DRILL_OOM_ALONE_FACTOR (default 1.15) and
DRILL_OOM_WINDOW_POSITION (0..1, default 0.4) for the pick, DRILL_OOM_SURVIVOR_BUDGET (the other hosts'
and the probe's limit, default 3GiB), DRILL_OOM_BOUND (seconds from power-on to wait for HEALTH_OK, default 600; half of it, at least 300 s, is what
the controlled start gives one OSD to come up and recover),
DRILL_OOM_LINGER (seconds the all-at-once round goes on once an OSD is at its start limit, default 60),
DRILL_OOM_WAIT (what the controlled start waits for before the next OSD: clean, the article's "wait until it
has synchronised", or peered), DRILL_OOM_NEED_MARGIN (the controlled start's margin on a learned start-up
need per PG, default 1.1).
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
from drills.restart.window import HostProbe, OsdProbe, Window, WindowConfig, pick_window
from drills.sandbox import host as hostctl
from drills.sandbox.bootstrap import spec_of_target
from drills.sandbox.cgroups import HostCgroup
from drills.target import Target
from drills.units import MiB, parse_bytes
from drills.workloads.verifier import RadosObjectBackend, VerifierConfig, VerifyingWriter

DRILL = "oom_chain_reaction"
OWN_RUNBOOK = True  # not the FaultDrill phases: three rounds, see plan_notes

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
POOL_PGS = 64  # spreads the pool more evenly over a host's OSDs than 32: the window is set by the biggest OSD
RESTART_SETTLE_S = 15  # the probe's restarted OSDs are watched this long after clean (they grow back under IO)


def _rack(t: Target) -> str:
    return os.environ.get("DRILL_RACK") or t.racks[-1].name


def make_fault(t: Target) -> RackPowerCut:
    """The fault of every round (also what `drill run --dry-run` shows)."""
    return RackPowerCut(t, _rack(t))


def plan_notes(t: Target) -> list[str]:
    rack = _rack(t)
    given = os.environ.get("DRILL_OOM_BUDGET")
    notes = [f"three rounds on rack {rack}: a probe (all its OSDs at once, no limit) that picks the budget per host"
             + (f" (skipped: DRILL_OOM_BUDGET={given})" if given else "")
             + ", then all at once and one at a time (drills.restart) under that budget; "
             f"{os.environ.get('DRILL_OOM_OBJECTS', '100000')} small objects written while it is down each round; "
             "verifying writer (RADOS, 20 writes/s) throughout"]
    if t.cluster.deployment != "sandbox":
        notes.append("will be SKIPPED: needs the sandbox's memory cgroups")
    elif any(len(h.osd_ids) < 2 for h in t.rack(rack).hosts):
        notes.append("will be SKIPPED: needs 2+ OSDs per host (drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 4)")
    return notes


@dataclass
class RoundResult:
    name: str
    oom_kills: list = field(default_factory=list)
    time_to_health_ok: float | None = None  # None = never within the bound
    ended_because: str = ""
    peak_used: dict[str, int] = field(default_factory=dict)  # host -> peak anonymous memory (the daemons' heaps)
    peak_usage: dict[str, int] = field(default_factory=dict)  # host -> the kernel's peak charge (heaps + page cache)
    peak_rss: dict[str, int] = field(default_factory=dict)
    held_rss: dict[str, int] = field(default_factory=dict)  # probe: RSS once clean, before the restart
    restarted_rss: dict[str, int] | None = None  # probe: peak RSS after the restart (None until it starts)
    held_anon: dict[str, int] = field(default_factory=dict)  # the same two without file-backed pages
    restarted_anon: dict[str, int] = field(default_factory=dict)
    restart: RestartResult | None = None
    start_limit: list[str] = field(default_factory=list)  # OSDs the supervisor left down at the start limit


def repeat_kills(kills) -> int:
    """Kills of an OSD already killed before in the same round: killed again after its restart."""
    seen: set[str] = set()
    n = 0
    for k in kills:
        d = getattr(k, "daemon", None)
        if d in seen:
            n += 1
        if d:
            seen.add(d)
    return n


def _rss(spec, daemon: str) -> int | None:
    pid = hostctl.daemon_pid(spec, daemon)
    try:
        return psutil.Process(pid).memory_info().rss if pid else None
    except psutil.Error:
        return None


def _anon(spec, daemon: str) -> int | None:
    """RSS less its file-backed and shared pages (statm's shared): the daemon's heap, as the cgroup charges it."""
    pid = hostctl.daemon_pid(spec, daemon)
    try:
        m = psutil.Process(pid).memory_info() if pid else None
    except psutil.Error:
        return None
    return None if m is None else max(0, m.rss - m.shared)


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


def _watch(spec, target: Target, cluster: CephCluster, timeline, round_name: str, hosts: dict[str, HostCgroup],
           stop: threading.Event, out: RoundResult) -> None:
    """Peaks every 0.25 s; every second a sample per host (anonymous memory) and per OSD (RSS, a gap while
    it is not running, and whether the cluster has it up) for the report's per-host timeline."""
    last = 0.0
    while not stop.wait(0.25):
        now = time.monotonic()
        tick = now - last >= 1.0
        if tick:
            last = now
            try:
                up = cluster.osds_up()
            except Exception:  # noqa: BLE001 - no reading this second: a gap, never "down"
                up = None
        for name, cg in hosts.items():
            try:
                m = cg.read()
            except Exception:  # noqa: BLE001
                continue
            restarting = out.restarted_rss is not None  # the probe's restarts: their own peaks, not the start's
            if not restarting:
                out.peak_used[name] = max(out.peak_used.get(name, 0), m.anon)
                if m.peak is not None:  # a kernel without the peak counter: not measured, never 0
                    out.peak_usage[name] = max(out.peak_usage.get(name, 0), m.peak)
            if tick:
                timeline.sample("oom.host_anon.bytes", m.anon, host=name, round=round_name)
                if m.limit:
                    timeline.sample("oom.host_limit.bytes", m.limit, host=name, round=round_name)
            for d in target.host(name).daemons:
                r = _rss(spec, d)
                if r and restarting:
                    out.restarted_rss[d] = max(out.restarted_rss.get(d, 0), r)
                    a = _anon(spec, d)
                    if a:
                        out.restarted_anon[d] = max(out.restarted_anon.get(d, 0), a)
                elif r:
                    out.peak_rss[d] = max(out.peak_rss.get(d, 0), r)
                if tick and d.startswith("osd."):
                    timeline.sample("oom.rss.bytes", r, daemon=d, host=name, round=round_name)
                    if up is not None:
                        timeline.sample("oom.osd_up", 1 if int(d.split(".")[1]) in up else 0, daemon=d, host=name,
                                        round=round_name)


def _env_float(name: str, default: str) -> float:
    return float(os.environ.get(name, default))


@pytest.mark.timeout(7200)  # three rounds, each bounded by DRILL_OOM_BOUND plus recovery: well past the 900 s default
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
                    "`drill sandbox up --racks 3 --hosts-per-rack 1 --osds-per-host 4`")
    objects = int(os.environ.get("DRILL_OOM_OBJECTS", "100000"))
    given_budget = os.environ.get("DRILL_OOM_BUDGET")
    survivor_budget = parse_bytes(os.environ.get("DRILL_OOM_SURVIVOR_BUDGET", "3GiB"))
    bound = _env_float("DRILL_OOM_BOUND", "600")
    linger = _env_float("DRILL_OOM_LINGER", "60")
    need_margin = _env_float("DRILL_OOM_NEED_MARGIN", "1.1")
    wcfg = WindowConfig(need_margin=need_margin, alone_factor=_env_float("DRILL_OOM_ALONE_FACTOR", "1.15"),
                        position=_env_float("DRILL_OOM_WINDOW_POSITION", "0.4"))
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
    drill.note(f"rack {rack} ({', '.join(rack_osds)}); the other hosts {survivor_budget // MiB} MiB each; "
               f"{objects} small objects written while it is down, each round")
    drill_cluster.wait_for_clean(timeout=600)
    rss_before = {d: _rss(spec, d) for d in rack_osds}
    drill.phase("baseline")
    rounds: dict[str, RoundResult] = {}
    windows: dict[str, Window] = {}
    budgets: dict[str, int] = {}

    def run_round(name: str, round_budgets: dict[str, int]) -> RoundResult:
        r = _round(name, drill, drill_cluster, t, spec, drill_faults, ops, rack_hosts, cgroups, round_budgets,
                   survivor_budget, objects, bound, linger, need_margin)
        rounds[name] = r
        return r

    try:
        with drill_cluster.open_ioctx(t.cluster.rados_pool) as io:
            writer = VerifyingWriter(RadosObjectBackend(io, prefix=f"drill-{DRILL}-{uuid.uuid4().hex[:6]}"),
                                     drill.run_dir / f"{DRILL}-verifier.jsonl", drill.timeline,
                                     VerifierConfig(num_keys=64, rate_per_s=20, write_timeout_s=180))
            with writer:
                writer.start()
                try:
                    if given_budget:
                        budgets = {h.name: parse_bytes(given_budget) for h in rack_hosts}
                        drill.note(f"budget given (DRILL_OOM_BUDGET={given_budget}): no probe, no window picked")
                    else:
                        probe = run_round("probe", {h.name: survivor_budget for h in rack_hosts})
                        for h in rack_hosts:
                            w = pick_window(_host_probe(h, probe), wcfg)
                            windows[h.name] = w
                            budgets[h.name] = w.budget
                            drill.event("oom.window", w.describe(), host=h.name, floor=w.floor, ceiling=w.ceiling,
                                        budget=w.budget, found=w.found, ratio=w.ratio, ceiling_from=w.ceiling_from,
                                        steps=[s.__dict__ for s in w.steps])
                            drill.note(w.describe())
                    for name in ("uncontrolled", "controlled"):
                        run_round(name, budgets)
                finally:
                    writer.stop()
                report = writer.check()
        lost = drill.lost_writes(writer, report, report.method)
    finally:
        for k in PG_LOG_SETTINGS:
            drill_cluster.config_rm("osd", k)
        for cg in cgroups.values():
            cg.set_limit(survivor_budget)

    unc, con = rounds["uncontrolled"], rounds["controlled"]
    drill_cluster.wait_for_clean(timeout=900)
    rss_clean = {d: _rss(spec, d) for d in rack_osds}
    released_ok, why_not = drill_cluster.release_heaps(rack_osds)
    if released_ok:
        time.sleep(3)  # the allocator returns pages to the kernel asynchronously
    else:
        drill.note(f"heap release refused: {why_not}")
    rss_released = {d: _rss(spec, d) if released_ok else None for d in rack_osds}
    drill.phase("after")

    mib = lambda v: f"{(v or 0) // MiB} MiB"  # noqa: E731

    def health_text(r: RoundResult) -> str:
        if r.time_to_health_ok is not None:
            return f"HEALTH_OK after {r.time_to_health_ok:.0f} s"
        return f"never HEALTH_OK within {bound:.0f} s" if not r.ended_because else f"never HEALTH_OK ({r.ended_because})"

    def per_host(r: RoundResult) -> str:
        return ", ".join(f"{h} heaps {mib(r.peak_used.get(h))} (kernel's charge incl. page cache {mib(r.peak_usage.get(h))}) "
                         f"of {mib(b)}" for h, b in sorted(budgets.items()))

    def kills_text(r: RoundResult) -> str:
        return ", ".join(k.daemon or "?" for k in r.oom_kills) or "none"

    if "probe" in rounds:
        p = rounds["probe"]
        drill.note(f"probe (all at once, no limit): {len(p.oom_kills)} OOM kill(s), {health_text(p)}; host peak "
                   + ", ".join(f"{h} {mib(v)}" for h, v in sorted(p.peak_used.items()))
                   + "; per OSD RSS peak / held once clean / restarted (heap: held / restarted): "
                   + ", ".join(f"{d} {mib(p.peak_rss.get(d))} / {mib(p.held_rss.get(d))} / {mib((p.restarted_rss or {}).get(d))} "
                               f"({mib(p.held_anon.get(d))} / {mib(p.restarted_anon.get(d))})" for d in rack_osds))
    drill.note(f"uncontrolled start: {len(unc.oom_kills)} OOM kill(s) ({kills_text(unc)}; {repeat_kills(unc.oom_kills)} of an OSD "
               f"killed before), {health_text(unc)}"
               + (f"; start limit hit: {', '.join(unc.start_limit)}" if unc.start_limit else "")
               + f"; peak per host: {per_host(unc)}")
    drill.note(f"controlled start: {len(con.oom_kills)} OOM kill(s), {health_text(con)}; "
               f"peak per host: {per_host(con)}" + (f"; {con.restart.summary().splitlines()[0]}" if con.restart else ""))
    for d in rack_osds:
        released = mib(rss_released[d]) if released_ok else "refused (no tcmalloc)"
        drill.note(f"{d} RSS: before {mib(rss_before[d])}, peak {mib(con.peak_rss.get(d))} (controlled) / "
                   f"{mib(unc.peak_rss.get(d))} (uncontrolled), after clean {mib(rss_clean[d])}, after heap release {released}")
    if windows:
        drill.measure("recovery", "budget_window_ratio", {h: w.ratio for h, w in windows.items()})
    else:
        drill.measure("recovery", "budget_window_ratio", None, why="budget given (DRILL_OOM_BUDGET): no probe, no window")
    drill.measure("recovery", "oom_budget", {h: b for h, b in budgets.items()})
    drill.measure("recovery", "oom_kills", len(con.oom_kills))
    drill.measure("recovery", "held_osds", None if con.restart is None else len(con.restart.held))
    drill.measure("recovery", "memory_budget_ratio", {h: con.peak_used.get(h, 0) / b for h, b in budgets.items()})
    drill.measure("recovery", "time_to_clean", con.time_to_health_ok,
                  why="" if con.time_to_health_ok is not None else f"controlled start: {health_text(con)}")
    drill.measure("recovery", "uncontrolled_oom_kills", len(unc.oom_kills))
    drill.measure("recovery", "uncontrolled_repeat_kills", repeat_kills(unc.oom_kills))
    drill.measure("recovery", "uncontrolled_health_ok", 0 if unc.time_to_health_ok is None else 1)
    drill.measure("recovery", "uncontrolled_time_to_health_ok", unc.time_to_health_ok)
    drill.measure("recovery", "rss_peak", {d: con.peak_rss.get(d) for d in rack_osds})
    drill.measure("after", "rss_after_recovery_ratio",
                  {d: (rss_clean[d] / rss_before[d]) if rss_clean[d] and rss_before[d] else None for d in rack_osds})
    drill.measure("after", "rss_after_heap_release_ratio",
                  {d: (rss_released[d] / rss_before[d]) if rss_released[d] and rss_before[d] else None for d in rack_osds})
    result = drill.finish(lost_writes=lost)
    drill.assert_passed(result)


def _host_probe(h, probe: RoundResult) -> HostProbe:
    osds = []
    for d in (d for d in h.daemons if d.startswith("osd.")):
        peak, held, restarted = probe.peak_rss.get(d), probe.held_rss.get(d), (probe.restarted_rss or {}).get(d)
        if not (peak and held and restarted):
            raise RuntimeError(f"probe: {d} not measured (peak {peak}, held {held}, restarted {restarted})")
        osds.append(OsdProbe(d, peak, held, restarted, probe.held_anon.get(d), probe.restarted_anon.get(d)))
    if not probe.peak_used.get(h.name):
        raise RuntimeError(f"probe: host {h.name}'s memory not measured")
    return HostProbe(h.name, tuple(osds), probe.peak_used[h.name])


def _round(name: str, drill, cluster: CephCluster, t: Target, spec, faults: FaultSession, ops: SandboxHostOps,
           rack_hosts, cgroups: dict[str, HostCgroup], budgets: dict[str, int], survivor_budget: int, objects: int,
           bound: float, linger: float, need_margin: float) -> RoundResult:
    out = RoundResult(name)
    # Each round writes into a pool of its own, deleted after it: every round (and every run) starts from
    # the same logs, and no shared pool grows by 100,000 objects a round.
    pool = f"drills-oom-{name}-{uuid.uuid4().hex[:6]}"
    cluster.create_pool(pool, POOL_PGS, "drills")
    try:
        return _round_in(out, pool, name, drill, cluster, t, spec, faults, ops, rack_hosts, cgroups, budgets,
                         survivor_budget, objects, bound, linger, need_margin)
    finally:
        try:
            cluster.delete_pool(pool)
        except ClusterError as e:  # e.g. mon_allow_pool_delete false: say so, keep going
            drill.note(f"pool {pool} not deleted: {e}; delete it by hand")


def _round_in(out: RoundResult, pool: str, name: str, drill, cluster: CephCluster, t: Target, spec, faults: FaultSession,
              ops: SandboxHostOps, rack_hosts, cgroups: dict[str, HostCgroup], budgets: dict[str, int],
              survivor_budget: int, objects: int, bound: float, linger: float, need_margin: float) -> RoundResult:
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
    sampler = threading.Thread(target=_watch, args=(spec, t, cluster, drill.timeline, name,
                                                    {h.name: cgroups[h.name] for h in rack_hosts}, stop, out), daemon=True)
    sampler.start()
    drill.phase("recovery", round=name)
    t0 = time.monotonic()
    drill.event("oom.power_on", f"{name}: power on, rack's OSDs held", round=name, budgets=budgets)
    ev = lambda kind, label, data: drill.event(kind, label, round=name, **data)  # noqa: E731
    supervisor = None
    limit_at = None

    def poll_kills() -> None:
        for k in watch.poll():
            drill.event("oom.kill", f"OOM kill {k.daemon or '?'} on {k.host}", round=name, host=k.host, daemon=k.daemon,
                        pid=k.pid, signal="SIGKILL", rss_before=k.rss_before, t_round=time.monotonic() - t0)

    try:
        if name in ("uncontrolled", "probe"):
            supervisor = SystemdLikeSupervisor(ops, rack_osds, on_event=ev).start_all()
        else:
            # Waiting for clean, not peered: a peered OSD keeps growing while it recovers (measured: 167 ->
            # 474 MiB in the minute after peering), so the next start would be decided on memory not yet used.
            cfg = RestartConfig(budgets, start_need=150 * MiB, wait=os.environ.get("DRILL_OOM_WAIT", "clean"),
                                step_timeout_s=max(300.0, bound / 2), settle_s=15, need_margin=need_margin)
            restart = ControlledRestart(ops, CephClusterOps(cluster), cfg,
                                        rack_osds, on_event=ev, on_sample=lambda m, v, labels: drill.timeline.sample(m, v, round=name, **labels))
            out.restart = restart.run()
        deadline = t0 + bound
        while time.monotonic() < deadline:
            poll_kills()
            try:
                if cluster.health_status() == "HEALTH_OK" or _ok_but_flags(cluster):
                    out.time_to_health_ok = time.monotonic() - t0
                    drill.event("oom.health_ok", f"{name}: HEALTH_OK after {out.time_to_health_ok:.0f} s", round=name,
                                seconds=out.time_to_health_ok)
                    break
            except Exception:  # noqa: BLE001
                pass
            if out.restart is not None and not out.restart.ok:
                out.ended_because = f"the controlled start stopped after {time.monotonic() - t0:.0f} s: {out.restart.error}"
                break  # held OSDs never come back by themselves
            if supervisor is not None and supervisor.failed and limit_at is None:
                limit_at = time.monotonic()
            if limit_at is not None and time.monotonic() - limit_at >= linger:
                # An OSD left down at its start limit never comes back by itself; with noout set its PGs stay
                # degraded, so HEALTH_OK cannot come without an operator. The round ends a minute later.
                out.ended_because = (f"{', '.join(sorted(supervisor.failed))} left down at the start limit "
                                     f"{limit_at - t0:.0f} s after power-on; round ended {linger:.0f} s later")
                break
            time.sleep(1)
        else:
            out.ended_because = ""  # the bound ran out
        poll_kills()
        out.oom_kills = list(watch.kills)
        if supervisor is not None:
            out.start_limit = sorted(supervisor.failed)
        if out.time_to_health_ok is None:
            drill.event("oom.never", f"{name}: no HEALTH_OK" + (f" ({out.ended_because})" if out.ended_because else f" within {bound:.0f} s"),
                        round=name, bound=bound, reason=out.ended_because, seconds=time.monotonic() - t0)
        if name == "probe" and out.time_to_health_ok is not None:
            _probe_restarts(out, drill, cluster, ops, rack_osds, spec, supervisor)
            supervisor = None
    finally:
        if supervisor is not None:
            supervisor.stop()
        stop.set()
        sampler.join(timeout=5)
        drill.event("oom.round_end", f"{name}: round ends", round=name, seconds=time.monotonic() - t0)
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


def _probe_restarts(out: RoundResult, drill, cluster: CephCluster, ops: SandboxHostOps, rack_osds, spec,
                    supervisor: SystemdLikeSupervisor | None) -> None:
    """Once clean: each OSD's RSS (held), then every OSD restarted at once and watched until clean again and
    RESTART_SETTLE_S more: its peak is its restarted size."""
    if supervisor is not None:
        supervisor.stop()  # a restart is not a death to answer
    out.held_rss = {d: r for _, d in rack_osds if (r := _rss(spec, d))}
    out.held_anon = {d: a for _, d in rack_osds if (a := _anon(spec, d))}
    for h, d in rack_osds:
        ops.stop(h, d)
    for h, d in rack_osds:
        ops.start(h, d)
        drill.event("oom.probe_restart", f"probe: restart {d} once clean ({(out.held_rss.get(d) or 0) // MiB} MiB)",
                    round="probe", daemon=d, held=out.held_rss.get(d))
    out.restarted_rss = {}  # from here the samples are the restarted OSDs' (the old processes are gone)
    cluster.wait_for_osds(up={int(d.split(".")[1]) for _, d in rack_osds}, timeout=120)
    cluster.wait_for_clean(timeout=300)
    time.sleep(RESTART_SETTLE_S)


def _ok_but_flags(cluster: CephCluster) -> bool:
    """HEALTH_WARN only for the flags this drill set (noout etc.) counts as healthy: the data is all there."""
    h = cluster.health()
    return h["status"] == "HEALTH_WARN" and set(h.get("checks", {})) <= {"OSDMAP_FLAGS"}
