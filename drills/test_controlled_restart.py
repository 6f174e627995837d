"""Drill controlled_restart: a rack loses power, and when power returns its OSDs are held and started one at a
time under a per-host memory budget (the article's "controlled launch") instead of all at once.

Runbook (drills/scenario.py's FaultDrill, with fio 4k random writes and the verifying writer running throughout):
 baseline (RSS of the rack's OSDs recorded just before the cut) -> rack power cut -> detection -> degraded plateau
 -> power returns with the OSDs held -> drills.restart.ControlledRestart under the budgets (flags noout,
    nodeep-scrub, noautoscale held through the fault ledger; every decision a timeline event; host memory sampled)
 -> recovery until active+clean -> after -> every acknowledged write read back
 -> RSS after clean, then `heap release` per OSD and RSS again (or a note saying why the release was refused).

Holding the OSDs at power-on: the sandbox powers a host on without starting its daemons. A host behind a BMC
(ipmi, redfish) boots and its init system starts the OSD units; there the drill stops each OSD unit as soon as the
host answers over SSH (a ledgered DaemonStop: a stop still queued behind the boot cancels the start) and stops
again any unit a late activation starts. That is a hold after the fact, not a true one: see docs/restart.md.

If the controlled start stops (the budget cannot be met, an OSD is OOM-killed while starting), the held OSDs are
started by the power cut's own heal (an uncontrolled start, so the cluster still gets clean), the reason is a
failed check (`held_osds_max`) and a note, and the drill fails.

Limits: the `controlled_restart` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.
Knobs: DRILL_RACK (default the target's last rack), DRILL_RESTART_BUDGET (bytes per host, e.g. 1536MiB; default
each host's memory_budget in the target, else OSDs on the host x osd_memory_target x 1.5).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from drills.cluster import CephCluster, ClusterError
from drills.drill import DrillRecorder
from drills.faults.errors import FaultError
from drills.faults.kinds import RackPowerCut
from drills.faults.session import FaultSession
from drills.preflight.checks import running_osd_memory_target
from drills.report.analysis import Window, measure_phases
from drills.restart.flags import DEFAULT_RESTART_FLAGS
from drills.restart.orchestrator import order_daemons, select_osds
from drills.restart.plan import RestartPlan, compare_peaks, make_plan
from drills.restart.plan_gather import STARTUP_PGS_METRIC, gather_plan_inputs
from drills.restart.power_return import ControlledPowerReturn, osd_rss, osds_of
from drills.restart.runbook import start_need_default
from drills.scenario import FaultDrill
from drills.target import Target
from drills.timeline import read_events, read_histograms, read_series
from drills.units import MiB, parse_bytes

DRILL = "controlled_restart"

# A derived budget: what the host's OSDs aim for once running, plus half again for what starting and
# recovering costs above the target (PG logs, missing sets, allocator slack).
DERIVED_BUDGET_FACTOR = 1.5
HEAP_RELEASE_SETTLE_S = 3.0


def drill_rack(t: Target) -> str:
    return os.environ.get("DRILL_RACK") or t.racks[-1].name


def make_fault(t: Target) -> RackPowerCut:
    return RackPowerCut(t, drill_rack(t))


# --- budgets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartBudgets:
    """Bytes each OSD host of the rack may use while its OSDs start, and where that figure came from."""

    per_host: dict[str, int]
    source: str  # for the drill's notes and the dry-run plan


def restart_budgets(t: Target, rack: str, osd_memory_target: int | None) -> RestartBudgets:
    """DRILL_RESTART_BUDGET, else each host's memory_budget in the target, else OSDs x osd_memory_target x 1.5.

    ``osd_memory_target`` None (a dry run: no cluster asked) leaves derived budgets at 0, said in the source.
    """
    hosts = [h for h in t.rack(rack).hosts if h.osd_ids]
    given = os.environ.get("DRILL_RESTART_BUDGET")
    if given:
        budget = parse_bytes(given)
        return RestartBudgets({h.name: budget for h in hosts}, f"DRILL_RESTART_BUDGET={given}")
    per_host: dict[str, int] = {}
    from_target, derived = [], []
    for h in hosts:
        if h.memory_budget:
            per_host[h.name] = h.memory_budget
            from_target.append(h.name)
        else:
            per_host[h.name] = int(len(h.osd_ids) * (osd_memory_target or 0) * DERIVED_BUDGET_FACTOR)
            derived.append(h.name)
    parts = []
    if from_target:
        parts.append(f"memory_budget in the target ({', '.join(from_target)})")
    if derived:
        how = (f"osd_memory_target {osd_memory_target // MiB} MiB" if osd_memory_target
               else "osd_memory_target read from the running cluster")
        parts.append(f"derived as OSDs on the host x {how} x {DERIVED_BUDGET_FACTOR} ({', '.join(derived)})")
    return RestartBudgets(per_host, "; ".join(parts))


def plan_notes(t: Target) -> list[str]:
    """Extra lines for `drill run --dry-run`: what the recovery phase does instead of an uncontrolled start."""
    rack = drill_rack(t)
    budgets = restart_budgets(t, rack, None)
    osds = [d for _, d in order_daemons(select_osds(t, rack=rack), "id")]
    known = ", ".join(f"{h} {b // MiB} MiB" for h, b in sorted(budgets.per_host.items()) if b)
    return [f"recovery: power returns with the OSDs held; controlled start of {', '.join(osds)} one at a time, "
            f"each until peered, flags {','.join(DEFAULT_RESTART_FLAGS)} held",
            f"budget per host: {known + '; ' if known else ''}from {budgets.source}",
            "after: RSS per OSD after clean, then `heap release` per OSD"]


# --- measurements --------------------------------------------------------------------------------------


def derived_so_far(drill: DrillRecorder) -> dict[str, dict[str, Any]]:
    """What finish() derives from the timeline, to merge the per-daemon figures the drill measures itself with."""
    events = [e for e in read_events(drill.run_dir) if e.data.get("drill") in (None, drill.name)]
    return measure_phases(read_series(drill.run_dir), events, Window(drill.started, time.time()),
                          read_histograms(drill.run_dir))


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MiB:.0f} MiB"


@dataclass(frozen=True)
class RackMemory:
    """The rack's memory figures across the drill, per host and per OSD (bytes; None: not seen)."""

    budgets: dict[str, int]
    peak_used: dict[str, int]  # host -> peak from power-on to active+clean
    rss_before: dict[str, int | None]  # OSD -> just before the cut
    rss_peak: dict[str, int | None]  # from power-on to active+clean
    rss_clean: dict[str, int | None]  # after clean and the after phase
    rss_released: dict[str, int | None] | None  # after `heap release`; None: refused

    def ratio_to_before(self, now: dict[str, int | None]) -> dict[str, float | None]:
        return {d: (now[d] / b) if now.get(d) and (b := self.rss_before.get(d)) else None for d in self.rss_before}

    def notes(self) -> list[str]:
        lines = [f"host {h}: peak {_mib(self.peak_used.get(h))} of budget {_mib(b)} (power-on to active+clean)"
                 for h, b in sorted(self.budgets.items())]
        for d in self.rss_before:
            after_release = "refused" if self.rss_released is None else _mib(self.rss_released.get(d))
            lines.append(f"{d} RSS: before the cut {_mib(self.rss_before[d])}, peak {_mib(self.rss_peak.get(d))}, "
                         f"after clean {_mib(self.rss_clean.get(d))}, after heap release {after_release}")
        return lines


def rack_memory(drill: DrillRecorder, cluster: CephCluster, power_return: ControlledPowerReturn,
                sampled_peaks: dict[str, int | None]) -> RackMemory:
    """Read RSS after clean, try `heap release`, and combine the peaks the start, the watch and the samplers saw."""
    ops, hosts, budgets = power_return.host_ops, power_return.hosts, power_return.budgets
    osds = list(power_return.rss_before) or [d for _, d in osds_of(hosts)]
    rss_clean = osd_rss(ops, hosts, budgets)
    released, why_not = cluster.release_heaps(osds)
    rss_released = None
    if released:
        time.sleep(HEAP_RELEASE_SETTLE_S)  # the allocator returns pages to the kernel asynchronously
        rss_released = osd_rss(ops, hosts, budgets)
    else:
        drill.note(f"heap release refused, so no RSS after it: {why_not}")
    seen = [s for s in (power_return.result, power_return.watch) if s is not None]
    peak_used = {h: max((s.peak_used.get(h, 0) for s in seen), default=0) for h in budgets}
    peak_rss = {d: max([s.peak_rss.get(d, 0) for s in seen] + [sampled_peaks.get(d) or 0]) or None for d in osds}
    return RackMemory(budgets, peak_used, {d: power_return.rss_before.get(d) for d in osds}, peak_rss, rss_clean, rss_released)


# --- the restart plan's prediction -------------------------------------------------------------------


def predict_restart(drill: DrillRecorder, cluster: CephCluster, t: Target, rack: str, budgets: RestartBudgets) -> RestartPlan | None:
    """`drill restart --plan` for the rack under the drill's budgets, made before the cut (read-only); each
    OSD's PG count is kept (`startup_pgs`) so that later plans learn the per-PG cost from this run's peaks.
    None, with a note, when it cannot be made: the prediction is extra, never the drill's end."""
    try:
        inputs = gather_plan_inputs(t, cluster, select_osds(t, rack=rack), f"rack {rack}", budgets=budgets.per_host,
                                    history_db=drill.run_dir.resolve().parent / "history.sqlite")
    except (ClusterError, FaultError, OSError) as e:
        drill.note(f"restart plan not made: {type(e).__name__}: {e}")
        return None
    drill.measure("recovery", STARTUP_PGS_METRIC, {o.name: o.pgs.value for o in inputs.osds})
    plan = make_plan(inputs)
    drill.event("restart.prediction", f"restart plan for rack {rack}", plan=plan.to_dict())
    return plan


def measure_prediction(drill: DrillRecorder, plan: RestartPlan | None, peak_used: dict[str, int]) -> None:
    """Predicted vs measured peak per host (power-on to active+clean), as `restart_plan_error_ratio`."""
    if plan is None:
        return
    drill.measure("recovery", "restart_plan_peak", {h.host: h.predicted_peak for h in plan.hosts})
    comparisons = compare_peaks(plan, peak_used)
    drill.measure("recovery", "restart_plan_error_ratio", {c.host: c.error_ratio for c in comparisons})
    for c in comparisons:
        drill.note(c.line())


def test_controlled_restart(drill: DrillRecorder, drill_cluster: CephCluster, drill_target: Target, drill_faults: FaultSession,
                            drill_image: str) -> None:
    t = drill_target
    rack = drill_rack(t)
    budgets = restart_budgets(t, rack, None if os.environ.get("DRILL_RESTART_BUDGET") else running_osd_memory_target(drill_cluster))
    start_need = start_need_default(drill_cluster)
    plan = predict_restart(drill, drill_cluster, t, rack, budgets)
    power_return = ControlledPowerReturn(drill, drill_cluster, t, drill_faults, rack, budgets.per_host, start_need)
    drill.note(f"rack {rack} ({', '.join(d for _, d in osds_of(power_return.hosts))}); budget per host "
               + ", ".join(f"{h} {_mib(b)}" for h, b in sorted(budgets.per_host.items()))
               + f" from {budgets.source}; start-up need {_mib(start_need)} (half of osd_memory_target, raised to peaks seen)")

    try:
        # the runbook's recovery step is the controlled power return; the cut's heal follows it and starts
        # whatever is still held (an abort before recovery heals at once)
        outcome = FaultDrill(drill, drill_cluster, t, drill_faults, make_fault, drill_image,
                             before_inject=lambda fault: power_return.before_cut(),
                             restore=power_return.restore_power).run()
    finally:
        if power_return.watch is not None:
            power_return.watch.stop()

    result = power_return.result
    derived = derived_so_far(drill)
    memory = rack_memory(drill, drill_cluster, power_return, derived.get("recovery", {}).get("rss_peak", {}))
    machine_kills = drill.measurements.get("recovery", {}).get("oom_kills")  # FaultDrill's /proc/vmstat delta
    if result is not None:
        drill.note(result.summary().splitlines()[0])
        if machine_kills and machine_kills != len(result.oom_kills):
            drill.note(f"the machine's OOM-kill counter rose by {machine_kills} during the drill (any process on "
                       f"this machine); the controlled start saw {len(result.oom_kills)} on the rack's hosts")
        drill.measure("recovery", "oom_kills", len(result.oom_kills))
        drill.measure("recovery", "restart_time", result.seconds)
    if power_return.flags is not None and power_return.flags.unsupported:
        drill.note(f"flags this Ceph release does not know, skipped: {', '.join(power_return.flags.unsupported)}")
    drill.measure("recovery", "memory_budget_ratio",
                  {h: memory.peak_used[h] / b if b and memory.peak_used[h] else None for h, b in budgets.per_host.items()})
    # Per-daemon figures: the rack's OSDs from the drill's own readings, the other daemons as the samplers saw them.
    drill.measure("recovery", "rss_peak", {**derived.get("recovery", {}).get("rss_peak", {}), **memory.rss_peak})
    drill.measure("after", "rss_after_recovery_ratio", {**derived.get("after", {}).get("rss_after_recovery_ratio", {}),
                                                        **memory.ratio_to_before(memory.rss_clean)})
    if memory.rss_released is not None:
        drill.measure("after", "rss_after_heap_release_ratio", memory.ratio_to_before(memory.rss_released))
    for line in memory.notes():
        drill.note(line)
    measure_prediction(drill, plan, memory.peak_used)

    # The controlled start's own verdict: OSDs it left held (None when it never ran: "not measured" fails).
    drill.measure("recovery", "held_osds", None if result is None else len(result.held))
    finished = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
    # The controlled start's own verdict is not a limit of the file: it is added to the drill's checks.
    drill.assert_passed(finished)
