"""The drill record: what a drill set out to show, how far it reached, how it is stopped and undone,
and what happened — generated from data, never written by hand.

In the manner of a DiRT drill record or an AWS FIS experiment report, each drill's section of the run
page opens with:

* hypothesis — what should happen, in numbers, one sentence per limit the drill was judged against
  (from the checks stored in its results file, so the record says what was *actually* held to);
* blast radius — the hosts and OSDs the fault takes down (fault.inject / phase events, the target's
  racks in run.json) and the share of PGs it touched (cluster.pgs samples; "not measured" without them);
* stop conditions — the runbook's abort lines (drills/scenario.py AbortWatch, its timeouts and the pace);
* rollback — how each fault is undone (its heal), and `drill heal` after a crash;

then what happened: the phases with the cluster event that bounded each one, when and how each fault
was healed, the verdict, and findings — one per failed or warned check, stop condition or harness error —
each with a recommended action.

`build_record` is a pure function of a `DrillResult`, the run's events and samples, run.json and
config.json (drills/runconfig.py); it reads no file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from drills.report import analysis as an
from drills.report.results import DrillResult
from drills.report.svg import format_clock
from drills.thresholds import DURATION, INVARIANT, PHASES, REGRESSION, Check, format_value
from drills.timeline import Event, Sample

# Drills that follow drills/scenario.py's FaultDrill runbook (and so its stop conditions).
FAULT_RUNBOOK_DRILLS = ("rack_power_cut", "host_power_cut", "osd_kill", "rack_partition", "hung_osd",
                        "controlled_restart")
# Drills that follow drills/gray_runbook.py (the fault held for a fixed time; the same abort watch, no detection).
GRAY_RUNBOOK_DRILLS = ("slow_osd", "slow_link", "flapping_host")


@dataclass(frozen=True)
class Hypothesis:
    """One sentence of the hypothesis and whether the run bore it out."""

    text: str
    outcome: str  # held | broken | warned | not measured
    severity: str = "fail"  # a "warn" limit only warns


@dataclass(frozen=True)
class BlastRadius:
    faults: tuple[str, ...]  # what was done ("cut power to host3, host4 (all of rack rack2)")
    racks: tuple[str, ...]  # racks taken down whole
    hosts: tuple[str, ...]
    osds: tuple[str, ...]  # planned: the OSDs the fault takes down
    osds_marked_down: tuple[str, ...]  # what the cluster marked down while the fault was in force
    pgs_total: int | None  # PGs in the cluster at the worst moment
    pgs_affected: int | None  # PGs not active+clean at the worst moment while the fault was in force
    degraded_peak: float | None  # peak cluster.degraded_ratio (degraded copies / all copies) in that time
    pg_text: str  # for people; "not measured (...)" when no PG-state samples cover the fault

    @property
    def pg_share(self) -> float | None:
        if self.pgs_total is None or self.pgs_affected is None or not self.pgs_total:
            return None
        return self.pgs_affected / self.pgs_total

    @property
    def subject(self) -> str:
        """'rack2's 2 OSDs', 'host3's OSD', 'osd.3', or 'the lost OSDs' when nothing says which."""
        n = len(self.osds)
        if not n:
            return "the lost OSDs"
        count = "OSD" if n == 1 else f"{n} OSDs"
        if len(self.racks) == 1:
            return f"{self.racks[0]}'s {count}"
        if len(self.hosts) == 1 and n > 1:
            return f"{self.hosts[0]}'s {count}"
        return ", ".join(self.osds) if n <= 3 else f"the {n} OSDs of {', '.join(self.hosts) or 'the fault'}"


@dataclass(frozen=True)
class PhaseRow:
    phase: str
    start: str  # "T+1:00" since the drill started
    duration: str
    began: str  # the cluster event that opened the phase
    ended: str  # what closed it (the next phase's event, the drill's end, a stop condition)


@dataclass(frozen=True)
class FaultRow:
    label: str
    kind: str
    injected: str  # "T+1:00", or "inject failed: ..."
    healed: str  # "T+3:20", or "not healed in this run's timeline"
    in_force: str
    how: str  # how it was undone, and by whom


@dataclass(frozen=True)
class Finding:
    severity: str  # fail | warn | stop | error
    what: str
    action: str


@dataclass(frozen=True)
class DrillRecord:
    drill: str
    verdict: str
    verdict_text: str
    hypothesis: tuple[Hypothesis, ...]
    blast_radius: BlastRadius
    stop_conditions: tuple[str, ...]
    rollback: tuple[str, ...]
    phases: tuple[PhaseRow, ...]
    faults: tuple[FaultRow, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)  # where the record itself lacks data, said once


def read_run_config(run_dir: Any) -> dict[str, Any] | None:
    """The run's config.json (drills/runconfig.py), or None when it has none or it cannot be read: the
    record then takes the pace from run.json and says so."""
    from drills.runconfig import RunConfigError, read_config

    try:
        return read_config(run_dir)
    except RunConfigError:
        return None


# --- building the record ----------------------------------------------------------------------


def build_record(result: DrillResult, events: Iterable[Event], samples: Iterable[Sample],
                 meta: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> DrillRecord:
    """The record of one drill from its result, the run's events and samples, run.json and config.json."""
    events = sorted(events, key=lambda e: e.t)
    samples = list(samples)
    window = an.Window(result.started, result.ended)
    evs = an.events_in(events, window, result.drill)
    spans = an.phase_spans(evs, window)
    injects = [e for e in evs if e.kind == "fault.inject"]
    blast = blast_radius(evs, events, samples, meta, window)
    kinds = tuple(dict.fromkeys(str(e.data.get("fault", "")) for e in injects if e.data.get("fault")))
    notes = []
    if not any(e.kind == "phase" for e in evs) and result.verdict != "skipped":
        notes.append("no phase event of this drill is on the timeline, so the phase table is empty")
    from drills.verdict import drill_verdict

    return DrillRecord(
        drill=result.drill,
        verdict=result.verdict,
        verdict_text=drill_verdict(result).summary,
        hypothesis=tuple(hypothesis(result, blast, kinds, has_fault=bool(injects) or result.drill in FAULT_RUNBOOK_DRILLS + GRAY_RUNBOOK_DRILLS)),
        blast_radius=blast,
        stop_conditions=tuple(stop_conditions(result.drill, blast, meta, config, has_fault=bool(injects))),
        rollback=tuple(rollback(result.drill, injects, meta)),
        phases=tuple(phase_rows(result, evs, spans, window)),
        faults=tuple(fault_rows(injects, events, evs, window)),
        findings=tuple(findings(result, meta)),
        notes=tuple(notes),
    )


# --- hypothesis -------------------------------------------------------------------------------

_PHASE_WORDS_FAULT = {"baseline": "before the fault", "detection": "until the cluster notices the fault",
                      "degraded": "while degraded", "recovery": "during recovery", "after": "after recovery"}
_HEAL_WORDS = {"power_cut": "power returning", "rack_power_cut": "power returning",
               "daemon_kill": "the OSD starting again", "daemon_stop": "the OSD starting again",
               "daemon_hang": "the OSD resuming", "daemon_hold": "the held OSD starting",
               "network_partition": "the network healing",
               "blackhole": "the network healing", "packet_loss": "the packet loss ending",
               "slow_disk": "the disk throttle lifting", "cpu_starvation": "the CPU limit lifting",
               "slow_link": "the link limit lifting", "flapping": "the flapping ending",
               "read_errors": "the read errors clearing"}
# Invariant checks (drills/invariants.py) as the clause they promise.
_INVARIANT_WORDS = {
    "acked_writes_lost_max": "no acknowledged write lost",
    "fio_verify_errors_max": "every fio block reads back verified",
    "unfound_objects_max": "no unfound objects",
    "inconsistent_pgs_max": "a deep scrub finds no inconsistent PG",
    "new_crashes_max": "no daemon crashes",
    "faults_left_max": "no fault left armed",
    "flags_changed_max": "cluster flags as they were",
    "unexpected_log_entries_max": "nothing in the cluster log beyond the fault's expected health checks",
    "oom_kills_max": "no OOM kill on a Ceph host",
}


def _phases_text(phases: list[str], has_fault: bool) -> str:
    if has_fault and len(phases) == 1:
        return _PHASE_WORDS_FAULT.get(phases[0], f"in the {phases[0]} phase")
    if has_fault and set(phases) == {"detection", "degraded", "recovery", "after"}:
        return "from the fault on"
    if has_fault and set(phases) >= {"detection", "degraded", "recovery"} and set(phases) <= set(_PHASE_WORDS_FAULT):
        return "while the fault is in force and during recovery" + (" and after" if "after" in phases else "")
    names = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
    if has_fault and all(p in _PHASE_WORDS_FAULT for p in names):
        words = [_PHASE_WORDS_FAULT[p] for p in names]
        return ", ".join(words[:-1]) + " and " + words[-1]
    return "in the " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]) + \
        (" phase" if len(names) == 1 else " phases")


def _pct(x: float) -> str:
    return f"{x * 100:.3g} %"


def _count_clause(limit: float, none: str, some: str) -> str:
    return none if limit == 0 else some.format(n=f"{limit:.0f}")


def _sentence(key: str, limit: float, unit: str, phases: list[str], blast: BlastRadius, heal: str,
              has_fault: bool) -> str:
    """One limit as a promise about the cluster, in numbers."""
    when = _phases_text(phases, has_fault)
    v = format_value(limit, unit)
    if key == "detection_time_max":
        return f"the cluster marks {blast.subject} down within {v} of the fault"
    if key == "stall_time_max":
        return f"client writes never stop for more than {v} {when}"
    if key == "iops_min":
        return f"clients keep at least {v} write IOPS (median) {when}"
    if key == "iops_ratio_min":
        return f"client IOPS stay above {_pct(limit)} of baseline {when}"
    if key == "p50_latency_max":
        return f"median write latency stays under {v} {when}"
    if key == "p99_latency_max":
        return f"p99 write latency stays under {v} {when}"
    if key == "p99_latency_ratio_max":
        return f"p99 write latency stays under {limit:.3g}× its baseline {when}"
    if key == "degraded_ratio_max":
        return f"at most {_pct(limit)} of object copies are degraded {when}"
    if key == "time_to_active_max":
        if phases == ["degraded"]:
            return f"every PG is active again within {v} of the OSDs being marked down"
        if phases == ["recovery"]:
            return f"every PG is active within {v} of {heal}"
        return f"every PG is active within {v} ({when})"
    if key == "time_to_clean_max":
        return f"every PG is active+clean within {v} of {heal}"
    if key == "rss_peak_max":
        return f"no Ceph daemon's RSS goes above {v} {when}"
    if key == "rss_after_recovery_ratio_max":
        return f"each daemon's RSS after recovery is at most {limit:.3g}× its warm baseline"
    if key == "rss_after_heap_release_ratio_max":
        return f"each OSD's RSS after `heap release` is at most {limit:.3g}× its warm baseline"
    if key == "memory_budget_ratio_max":
        return f"no host's Ceph daemons together use more than {_pct(limit)} of its memory budget {when}"
    if key == "oom_kills_max":
        return _count_clause(limit, "no Ceph daemon is OOM-killed", "at most {n} Ceph daemons are OOM-killed") + f" {when}"
    if key == "uncontrolled_oom_kills_min":
        return f"starting the rack all at once OOM-kills at least {limit:.0f} daemon(s) (the chain reaction is reproduced)"
    if key == "uncontrolled_repeat_kills_min":
        return "starting the rack all at once OOM-kills an OSD again after its restart (the cascade)"
    if key == "uncontrolled_health_ok_max":
        return "the rack started all at once does not reach HEALTH_OK by itself within the bound"
    if key == "budget_window_ratio_min":
        return (f"the probe finds a budget where the all-at-once start cascades and the controlled one fits "
                f"(cascade ceiling at least {limit:.3g}× the controlled start's need)")
    if key == "held_osds_max":
        return _count_clause(limit, "the controlled start leaves no OSD held", "the controlled start leaves at most {n} OSDs held")
    if key == "slow_ops_time_max":
        return f"the cluster raises SLOW_OPS within {v} of the fault"
    if key == "slow_ops_raised_min":
        return "the cluster raises SLOW_OPS while the fault is in force"
    if key == "slow_ops_raised_max":
        return "the cluster never raises SLOW_OPS while the fault is in force"
    if key == "eio_reads_ok_min":
        return f"at least {limit:.0f} client reads of the objects with read errors return their data"
    if key == "eio_reads_failed_max":
        return _count_clause(limit, "no client read of an object with a read error fails",
                             "at most {n} client reads of objects with read errors fail")
    if key == "eio_read_time_max":
        return f"a client read of an object whose primary copy cannot be read returns within {v}"
    if key == "shards_repaired_min":
        return f"the OSD repairs at least {limit:.0f} read(s) from replicas while the fault is in force"
    if key == "shards_repaired_max":
        return f"the OSD repairs at most {limit:.0f} read(s) from replicas while the fault is in force"
    if key == "markdowns_max":
        return _count_clause(limit, "no OSD is marked down", "at most {n} OSD mark-downs") + f" {when}"
    if key == "osd_flaps_max":
        return _count_clause(limit, "no OSD flaps", "at most {n} OSD flaps") + f" {when}"
    if key == "io_errors_max":
        return _count_clause(limit, "clients see no I/O error", "clients see at most {n} I/O errors") + f" {when}"
    if key == "lost_writes_max":
        return _count_clause(limit, "no acknowledged write lost", "at most {n} acknowledged writes lost")
    if key == "restore_rss_peak_max":
        return f"the restore process stays under {v} RSS"
    if key == "restore_rss_overhead_max":
        return f"the restore process stays within {v} over its memory budget"
    if key == "restore_throughput_ratio_min":
        return f"restores run at {_pct(limit)} or more of the raw RBD write rate"
    if key == "restores_failed_max":
        return _count_clause(limit, "every restore finishes", "at most {n} restores fail") + f" {when}"
    if key == "model_error_ratio_max":
        return f"the degraded-write model predicts the mean write latency within {_pct(limit)}"
    bound = "at least" if key.endswith("_min") else "at most"
    return f"{key.rsplit('_', 1)[0].replace('_', ' ')} is {bound} {v} {when}"


def _outcome(checks: list[Check]) -> str:
    if any(c.measured is None and not c.passed for c in checks):
        return "not measured"
    if any(c.fails_drill for c in checks):
        return "broken"
    if any(c.warned for c in checks):
        return "warned"
    return "held"


def hypothesis(result: DrillResult, blast: BlastRadius, fault_kinds: tuple[str, ...] = (),
               has_fault: bool = True) -> list[Hypothesis]:
    """One sentence per limit (the same key and limit in several phases is one sentence), in phase order;
    the invariants as one closing sentence; regression rules as one more."""
    heal = next((_HEAL_WORDS[k] for k in fault_kinds if k in _HEAL_WORDS), "the fault healing")
    limits: dict[tuple[str, float, str, str], list[Check]] = {}
    invariants: list[Check] = []
    regressions: list[Check] = []
    for c in sorted(result.checks, key=lambda c: an.phase_order(c.phase)):
        if c.source == INVARIANT:
            invariants.append(c)
        elif c.source == REGRESSION:
            regressions.append(c)
        else:
            # time_to_active means a different start in each phase: never merged across phases
            group = c.phase if c.name == "time_to_active_max" else ""
            limits.setdefault((c.name, c.limit, c.severity, group), []).append(c)
    out: list[Hypothesis] = []
    said: set[str] = set()
    for (key, limit, severity, _), checks in limits.items():
        phases = list(dict.fromkeys(c.phase for c in checks))
        text = _sentence(key, limit, checks[0].unit, phases, blast, heal, has_fault).strip()
        said.add(text)
        out.append(Hypothesis(text, _outcome(checks), severity))
    if invariants:
        clauses = list(dict.fromkeys(_INVARIANT_WORDS.get(c.name, c.name.removesuffix("_max").replace("_", " "))
                                     for c in invariants))
        clauses = [c for c in clauses if c not in said]  # "no acknowledged write lost" said once
        if clauses:
            out.append(Hypothesis("and always: " + "; ".join(clauses), _outcome(invariants)))
    if regressions:
        out.append(Hypothesis(f"no figure gets worse than this cluster's last passing runs allow "
                              f"({len(regressions)} regression rule{'s' if len(regressions) != 1 else ''})",
                              _outcome([c for c in regressions if not _no_baseline(c)]) if any(
                                  not _no_baseline(c) for c in regressions) else "not measured", "warn"))
    return out


def _no_baseline(c: Check) -> bool:
    return c.measured is None and ("no baseline" in c.detail or "new baseline" in c.detail)


# --- blast radius -----------------------------------------------------------------------------


def _racks(meta: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """rack -> host -> daemons, from run.json's target.racks (the plugin) or topology.racks (the report)."""
    target = meta.get("target")
    if isinstance(target, Mapping) and isinstance(target.get("racks"), Mapping):
        return {str(r): {str(h): [str(d) for d in ds] for h, ds in hosts.items()}
                for r, hosts in target["racks"].items() if isinstance(hosts, Mapping)}
    topo = meta.get("topology")
    out: dict[str, dict[str, list[str]]] = {}
    if isinstance(topo, Mapping) and isinstance(topo.get("racks"), list):
        for rack in topo["racks"]:
            hosts = out.setdefault(str(rack.get("name", "?")), {})
            for h in rack.get("hosts", []):
                ds = h.get("daemons") or [f"osd.{o}" if not str(o).startswith("osd.") else str(o) for o in h.get("osds", [])]
                hosts[str(h.get("name", "?"))] = [str(d) for d in ds]
    return out


def _osd_name(x: Any) -> str:
    s = str(x)
    return s if s.startswith("osd.") else f"osd.{s}"


def _osd_key(name: str) -> tuple[int, str]:
    tail = name.removeprefix("osd.")
    return (int(tail), "") if tail.isdigit() else (1 << 30, name)


def blast_radius(drill_events: list[Event], all_events: list[Event], samples: list[Sample],
                 meta: Mapping[str, Any], window: an.Window) -> BlastRadius:
    """Hosts and OSDs the fault took down and the share of PGs it touched while in force."""
    injects = [e for e in drill_events if e.kind == "fault.inject"]
    faults = tuple(str(e.data.get("description") or e.label) for e in injects)
    osds: set[str] = set()
    hosts: set[str] = set()
    for e in drill_events:
        if e.kind == "phase" and e.label == "detection":
            osds.update(_osd_name(o) for o in e.data.get("takes_down") or ())
    for e in injects:  # a fault event that names what it takes down (hosts, daemons, osds) is taken at its word
        hosts.update(str(h) for h in e.data.get("hosts") or ())
        osds.update(_osd_name(o) for o in e.data.get("osds") or ())
        osds.update(str(d) for d in e.data.get("daemons") or () if str(d).startswith("osd."))
    racks = _racks(meta)
    host_of = {d: h for hs in racks.values() for h, ds in hs.items() for d in ds}
    hosts.update(host_of[o] for o in osds if o in host_of)
    whole_racks = tuple(sorted(r for r, hs in racks.items() if hs and set(hs) <= hosts))
    # While in force: from the first inject to the last heal of those faults (else the drill's end).
    t0 = min((e.t for e in injects), default=None)
    ids = {e.data.get("fault_id") for e in injects}
    heals = [e.t for e in all_events if e.kind == "fault.heal" and e.data.get("fault_id") in ids and t0 is not None and e.t >= t0]
    t1 = max(heals, default=window.end)
    marked: set[str] = set()
    if t0 is not None:
        marked = {_osd_name(e.data.get("osd", e.label)) for e in all_events
                  if e.kind == "cluster.osd_down" and t0 <= e.t <= t1}
    total, affected, degraded = _pg_peak(samples, t0, t1)
    if t0 is None:
        text = "no fault was injected in this drill's window"
    elif total is None or affected is None:
        text = "not measured (no PG-state samples while the fault was in force)"
    else:
        text = (f"{affected} of {total} PGs ({affected / total * 100:.0f} %) not active+clean at the worst moment "
                f"while the fault was in force")
        if degraded is not None:
            text += f"; degraded object copies peaked at {degraded * 100:.1f} %"
    return BlastRadius(faults, whole_racks, tuple(sorted(hosts)), tuple(sorted(osds, key=_osd_key)),
                       tuple(sorted(marked, key=_osd_key)), total, affected, degraded, text)


def _pg_peak(samples: list[Sample], t0: float | None, t1: float) -> tuple[int | None, int | None, float | None]:
    """(total PGs, PGs not active+clean, peak degraded ratio) at the worst sample in [t0, t1]."""
    if t0 is None:
        return None, None, None
    by_t: dict[float, dict[str, float]] = {}
    gap: set[float] = set()
    degraded: list[float] = []
    for s in samples:
        if not t0 <= s.t <= t1:
            continue
        if s.metric == an.PGS:
            if s.value is None:
                gap.add(s.t)
            else:
                by_t.setdefault(s.t, {})[s.labels.get("state", "?")] = s.value
        elif s.metric == an.DEGRADED_RATIO and s.value is not None:
            degraded.append(s.value)
    best: tuple[int, int] | None = None
    for t, states in by_t.items():
        if t in gap:
            continue  # half a reading is not a reading
        total = int(sum(states.values()))
        bad = int(sum(n for st, n in states.items() if st != "active+clean"))
        if total and (best is None or bad / total > best[1] / best[0]):
            best = (total, bad)
    return (best[0] if best else None, best[1] if best else None, max(degraded) if degraded else None)


# --- stop conditions and rollback -------------------------------------------------------------


def _pace(meta: Mapping[str, Any], config: Mapping[str, Any] | None) -> tuple[dict[str, float] | None, str]:
    """The pace's timeouts: config.json's resolved pace, else the named pace of run.json."""
    if config and isinstance(config.get("pace"), Mapping) and "max_inactive" in config["pace"]:
        p = config["pace"]
        return {k: float(v) for k, v in p.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, \
            f"pace {p.get('name', '?')} (resolved, config.json)"
    name = str(meta.get("pace") or "smoke")
    try:
        import dataclasses

        from drills.scenario import Pace

        return dataclasses.asdict(Pace.named(name)), f"pace {name} (run.json; overrides, if any, not recorded)"
    except (ValueError, ImportError):
        return None, f"pace {name!r} unknown"


def stop_conditions(drill: str, blast: BlastRadius, meta: Mapping[str, Any], config: Mapping[str, Any] | None,
                    has_fault: bool) -> list[str]:
    """The lines that abort the drill and heal at once (drills/scenario.py AbortWatch and its waits)."""
    always = "Ctrl-C, SIGTERM or SIGHUP of the runner: every armed fault is healed on the way out"
    if drill in GRAY_RUNBOOK_DRILLS:
        pace, source = _pace(meta, config)
        if pace is None:
            return [f"the gray runbook's abort lines (drills/gray_runbook.py, AbortWatch); timeouts unknown: {source}", always]
        inactive = format_value(pace["max_inactive"], DURATION)
        return [
            f"any PG inactive for more than {inactive} while the fault is held",
            "any unfound object",
            "any OSD outside the fault's hosts marked down (the fault's own OSDs going down is a finding: markdowns_max)",
            f"after the heal: OSDs not up within {format_value(pace['detection_timeout'], DURATION)}, PGs not active "
            f"within {inactive}, or not active+clean within {format_value(pace['clean_timeout'], DURATION)}",
            always,
            f"timeouts from the {source}",
        ]
    if drill not in FAULT_RUNBOOK_DRILLS:
        if not has_fault:
            return ["none needed: no fault was injected in this drill's window"]
        return ["a failed step of the drill's own runbook heals its faults at once (the fault session)", always]
    pace, source = _pace(meta, config)
    if pace is None:
        return [f"the runbook's abort lines (drills/scenario.py AbortWatch); timeouts unknown: {source}", always]
    osds = ", ".join(blast.osds) or "the planned ones"

    def s(key: str, extra: float = 0.0) -> str:
        return format_value(pace[key] + extra, DURATION)

    return [
        f"any PG inactive for more than {s('max_inactive')} while the fault is in force",
        "any unfound object",
        f"any OSD outside the blast radius ({osds}) marked down",
        f"the cluster has not marked {blast.subject} down within {s('detection_timeout')} of the fault",
        f"PGs not all active within {s('max_inactive', 30)} of the OSDs going down",
        f"after the heal: PGs not active within {s('max_inactive')}, or not active+clean within {s('clean_timeout')}",
        always,
        f"timeouts from the {source}",
    ]


_UNDO = {
    "power_cut": "power the hosts back on; their daemons start (an uncontrolled start)",
    "rack_power_cut": "power the rack's hosts back on; their daemons start (an uncontrolled start)",
    "daemon_kill": "start the killed daemon again",
    "daemon_stop": "start the stopped daemon again",
    "daemon_hang": "SIGCONT the frozen daemon",
    "daemon_hold": "unmask the held daemon's unit and start it",
    "network_partition": "delete the partition's nftables table on each host of side A",
    "blackhole": "delete the blackhole's nftables table on each host",
    "packet_loss": "delete the packet-loss nftables table on the host",
    "slow_disk": "lift the disk throttle (the OSD back to the blkio root cgroup, or systemd IO*Max= emptied)",
    "cpu_starvation": "lift the CPU quota (the OSD back to the cpu root cgroup, or systemd CPUQuota= emptied)",
    "slow_link": "delete the host's tbf qdiscs and its ifb",
    "flapping": "stop the schedule and delete the blackhole's nftables table (the network up)",
}


def rollback(drill: str, injects: list[Event], meta: Mapping[str, Any]) -> list[str]:
    """How each fault is undone, and the crash path."""
    target = meta.get("target")
    path = target.get("path") if isinstance(target, Mapping) and target.get("path") else "TARGET"
    if not injects:
        return ["nothing to roll back: no fault was injected in this drill's window"]
    out = []
    for e in injects:
        kind = str(e.data.get("fault", ""))
        how = _UNDO.get(kind, "the fault's own heal")
        out.append(f"{e.label}: {how}")
    if drill == "controlled_restart":
        out.append("power returns with the rack's OSDs held; they start one at a time under each host's memory "
                   "budget, flags noout, nodeep-scrub held through the fault ledger and unset on the way out")
    out.append("every fault is armed in the fault ledger (fsync'd) before it is injected and healed on success, "
               "failure, a stop condition, Ctrl-C, SIGTERM and SIGHUP")
    out.append(f"after a crash or kill -9 of the runner: drill heal --target {path}   "
               "(replays the ledger; prints the manual step for anything it cannot undo)")
    return out


# --- what happened ----------------------------------------------------------------------------


def _rel(t: float, window: an.Window) -> str:
    return "T+" + format_clock(t - window.start)


def _secs(seconds: float) -> str:
    """'4.0 s', '24 s', '11 min 40 s', '2 h 05 min' (as the run page writes durations)."""
    s = max(0.0, float(seconds))
    if s < 10:
        return f"{s:.1f} s"
    h, rest = divmod(int(round(s)), 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def _osds_text(xs: Any) -> str:
    return ", ".join(_osd_name(x) for x in xs) if xs else ""


def _phase_began(span: an.PhaseSpan, event: Event | None, evs: list[Event], prev_start: float | None,
                 window: an.Window) -> str:
    data = event.data if event is not None else {}
    label = span.name
    if label == "baseline":
        if data.get("rss_settled") is True:
            return "warm-up done: every daemon's RSS stopped climbing"
        if data.get("rss_settled") is False:
            return "warm-up budget spent with RSS still climbing (a cold baseline)"
    if label == "detection" and data.get("fault"):
        down = _osds_text(data.get("takes_down"))
        return f"fault injected: {data['fault']}" + (f" (takes down {down})" if down else "")
    if label == "degraded" and "osds_down" in data:
        lo = prev_start if prev_start is not None else window.start
        notes = {e.label: e for e in evs if e.kind == "note" and lo <= e.t <= span.start}
        parts = []
        marked = notes.get("OSDs marked down")
        down = _osds_text(data.get("osds_down"))
        if marked is not None:
            parts.append(f"{_osds_text(marked.data.get('osds')) or down or 'the OSDs'} marked down at {_rel(marked.t, window)}")
        elif down:
            parts.append(f"{down} marked down")
        active = notes.get("all PGs active")
        if active is not None:
            parts.append(f"all PGs active at {_rel(active.t, window)}")
        return "; ".join(parts) or "the cluster marked the OSDs down"
    if label == "recovery" and data.get("restored"):
        return f"fault healed: {data['restored']}"
    if label == "recovery" and "restores" in data:
        budget = data.get("budget")
        return f"{data['restores']} restores started" + (
            f" (memory budget {format_value(float(budget), 'B')})" if isinstance(budget, (int, float)) else "")
    if label == "after" and isinstance(data.get("clean_after"), (int, float)):
        return f"every PG active+clean {_secs(float(data['clean_after']))} after the heal"
    extra = {k: v for k, v in data.items() if k != "drill"}
    if extra:
        return ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in extra.items())
    return "marked by the drill (no cluster event attached)"


def phase_rows(result: DrillResult, evs: list[Event], spans: list[an.PhaseSpan], window: an.Window) -> list[PhaseRow]:
    phase_events = [e for e in evs if e.kind == "phase" and e.label != "end"]
    rows = []
    prev: float | None = None
    for i, span in enumerate(spans):
        event = next((e for e in phase_events if e.t == span.start and e.label == span.name), None)
        began = _phase_began(span, event, evs, prev, window)
        if i + 1 < len(spans):
            ended = f"{spans[i + 1].name} began"
        elif result.stop_condition and (result.phase in ("", span.name)):
            ended = f"stopped: {result.stop_condition}"
        elif result.error and result.verdict == "error":
            ended = f"the harness broke: {result.error}"
        else:
            ended = "the drill ended"
        rows.append(PhaseRow(span.name, _rel(span.start, window), _secs(span.end - span.start), began, ended))
        prev = span.start
    return rows


def fault_rows(injects: list[Event], all_events: list[Event], evs: list[Event], window: an.Window) -> list[FaultRow]:
    """Each fault of the drill: when it went in, when and how it was healed (heals after the drill's end
    are the fault session's, on the way out)."""
    rows = []
    aborts = [e for e in evs if e.kind == "abort"]
    recovery = next((e for e in evs if e.kind == "phase" and e.label == "recovery"), None)
    for inj in injects:
        fid = inj.data.get("fault_id")
        heal = next((e for e in all_events if e.kind == "fault.heal" and e.t >= inj.t
                     and (fid is None or e.data.get("fault_id") == fid) and e.label == inj.label), None)
        kind = str(inj.data.get("fault", ""))
        injected = _rel(inj.t, window)
        if inj.data.get("ok") is False:
            injected += f" — inject failed: {inj.data.get('error', 'no reason recorded')}"
        if heal is None:
            rows.append(FaultRow(inj.label, kind, injected, "no heal recorded", "—",
                                 "if the runner crashed, the ledger still holds it: run drill heal --target <target>"))
            continue
        undo = _UNDO.get(kind, "its own heal")
        abort = next((a for a in aborts if inj.t <= a.t <= heal.t), None)
        if heal.data.get("ok") is False:
            how = (f"heal FAILED: {heal.data.get('error', '?')}; manual step: {heal.data.get('manual', 'see drill heal')}"
                   "; left pending in the ledger for drill heal")
        elif abort is not None:
            how = f"{undo} — at once, on the stop condition ({abort.label})"
        elif heal.t > window.end:
            how = f"{undo} — by the fault session on the way out, after the drill ended"
        elif recovery is not None and abs(recovery.t - heal.t) < 5:
            how = f"{undo} — by the runbook, at the end of the degraded plateau"
        else:
            how = f"{undo} — by the drill"
        rows.append(FaultRow(inj.label, kind, injected, _rel(heal.t, window), _secs(heal.t - inj.t), how))
    return rows


# --- findings ---------------------------------------------------------------------------------

_ACTIONS = {
    "detection_time_max": "the cluster took too long to mark the OSDs down: check osd_heartbeat_grace, "
                          "osd_heartbeat_interval, mon_osd_min_down_reporters and mon_osd_reporter_subtree_level",
    "stall_time_max": "client IO stopped too long: see how long PGs stayed peering/inactive in the PG chart; check "
                      "osd_heartbeat_grace (detection) and min_size against the pool size",
    "iops_min": "clients were slow: check the load on the cluster's hosts and disks and the fio job",
    "iops_ratio_min": "recovery competed with clients: throttle it (osd_recovery_sleep, osd_recovery_max_active, "
                      "osd_max_backfills; on Quincy+ osd_mclock_profile=high_client_ops)",
    "p50_latency_max": "writes were slow: check the surviving OSDs' load and recovery throttles "
                       "(osd_recovery_max_active, osd_recovery_sleep)",
    "p99_latency_max": "tail latency too high: writes to degraded objects wait for a whole-object recovery; throttle "
                       "recovery (osd_recovery_max_active, osd_recovery_sleep) or use smaller objects",
    "p99_latency_ratio_max": "tail latency grew too much against baseline: throttle recovery "
                             "(osd_recovery_max_active, osd_recovery_sleep)",
    "degraded_ratio_max": "more was degraded than one failure domain should degrade: check the CRUSH rule's failure "
                          "domain (ceph osd crush rule dump) and that the fault hit one domain",
    "time_to_active_max": "PGs stayed inactive: check min_size against the pool size and the CRUSH failure domain "
                          "(fewer than min_size copies left blocks IO), and peering time in the OSD logs",
    "time_to_clean_max": "recovery was slow: check recovery settings osd_max_backfills / osd_recovery_max_active "
                         "(and osd_recovery_sleep), and the recovery rate the cluster sampler recorded",
    "rss_peak_max": "a daemon outgrew its memory: check osd_memory_target against the host's memory "
                    "(drill preflight) and start OSDs one at a time (drill restart)",
    "rss_after_recovery_ratio_max": "OSDs kept their recovery memory: restart them one at a time under the host's "
                                    "budget (drill restart --target <target> --host <host> --stop-first)",
    "rss_after_heap_release_ratio_max": "heap release did not return the memory: restart the OSDs one at a time "
                                        "(drill restart)",
    "memory_budget_ratio_max": "a host's daemons exceeded its memory budget: lower osd_memory_target, raise the "
                               "host's memory_budget, or start OSDs one at a time (drill restart)",
    "oom_kills_max": "the OOM killer struck: read dmesg on the host; check osd_memory_target against the host's RAM "
                     "and start OSDs one at a time (drill restart)",
    "uncontrolled_oom_kills_min": "the all-at-once round did not reproduce the chain reaction: lower the per-host "
                                  "memory budget so the comparison shows something",
    "uncontrolled_repeat_kills_min": "the all-at-once round's kills did not repeat: the killed OSDs came back and fit; "
                                     "see the probe's window in the drill's notes (a higher DRILL_OOM_WINDOW_POSITION "
                                     "is nearer the controlled start's need, a lower one nearer the cascade ceiling)",
    "uncontrolled_health_ok_max": "the all-at-once round healed by itself: the budget was above the cascade; see the "
                                  "probe's window in the drill's notes and docs/restart.md",
    "budget_window_ratio_min": "no budget both cascades all at once and fits one at a time on this cluster: more OSDs "
                               "per host, or more objects written while the rack is down (DRILL_OOM_OBJECTS), widens it "
                               "(docs/restart.md)",
    "held_osds_max": "the controlled start stopped with OSDs held: see the drill's notes, then start them with "
                     "drill restart --target <target> --host <host> once the host has memory",
    "osd_flaps_max": "OSDs flapped: check the cluster network (MTU, packet loss) and osd_heartbeat_grace",
    "io_errors_max": "clients got I/O errors: check whether PGs went below min_size and the client's timeouts "
                     "(rados_osd_op_timeout)",
    "lost_writes_max": "DATA LOSS: keep the cluster as it is; collect ceph pg dump, the drill's verifier log "
                       "(<drill>-verifier.jsonl) and the OSD logs; check min_size >= 2 and that no write cache "
                       "acknowledges before it is durable",
    "restore_rss_peak_max": "the restore process outgrew its budget: lower the concurrency or the chunk size "
                            "(DRILL_RESTORE_CHUNK_MIB) and keep MALLOC_ARENA_MAX small",
    "restore_rss_overhead_max": "the restore process went over its budget: lower the concurrency or the chunk size "
                                "and keep MALLOC_ARENA_MAX small",
    "restore_throughput_ratio_min": "restores were slow against raw RBD writes: check CPU (decompression, hashing) "
                                    "on the restore host",
    "restores_failed_max": "restores failed: each failure is in the drill's notes",
    "model_error_ratio_max": "the degraded-write model does not fit: compare w and r (measured under load, in the "
                             "notes) with the latency chart; the penalty may come from elsewhere (peering, throttles)",
    # invariants
    "acked_writes_lost_max": "DATA LOSS: keep the cluster as it is; collect ceph pg dump, the drill's verifier log "
                             "and the OSD logs before anything is repaired",
    "fio_verify_errors_max": "fio read back blocks that do not verify: keep the cluster as it is and collect the "
                             "OSD logs; check that no write cache acknowledges before it is durable",
    "unfound_objects_max": "unfound objects: ceph pg <pgid> list_unfound; bring back every OSD that may hold them "
                           "before any mark_unfound_lost",
    "inconsistent_pgs_max": "inconsistent PGs: rados list-inconsistent-obj <pgid>; read why before ceph pg repair",
    "new_crashes_max": "a daemon crashed: ceph crash ls, then ceph crash info <id>",
    "faults_left_max": "a fault is still armed: drill heal --target <target>",
    "flags_changed_max": "cluster flags differ from before the drill: unset what it left (ceph osd unset <flag>) "
                         "or set back what it cleared",
    "unexpected_log_entries_max": "the cluster log has entries the fault does not explain: read them in the check's "
                                  "detail; a health check this fault is expected to raise goes in "
                                  "[<drill>.health] allow of the thresholds file",
}


def _target_path(meta: Mapping[str, Any]) -> str:
    target = meta.get("target")
    return str(target.get("path")) if isinstance(target, Mapping) and target.get("path") else "<target>"


def _action(c: Check, result: DrillResult, meta: Mapping[str, Any]) -> str:
    if c.source == REGRESSION:
        return ("worse than this cluster's last passing runs (named in the detail): look for what changed since — "
                "Ceph version, settings, hardware, load")
    if c.measured is None:
        base = _ACTIONS.get(c.name, "")
        return ("the reading could not be taken, so the limit failed: see the detail for why "
                "(a sampler or workload that did not report)") + (f"; if it had been: {base}" if base else "")
    if c.name == "rss_after_recovery_ratio_max":
        own = [n for n in result.notes if n.startswith("RSS after recovery") or "drill restart" in n]
        if own:
            return "; ".join(own)
    action = _ACTIONS.get(c.name, "compare the measured value with the limit in the thresholds table")
    return action.replace("<target>", _target_path(meta)).replace("<drill>", result.drill)


def _stop_action(stop: str, meta: Mapping[str, Any]) -> str:
    s = stop.lower()
    if "unfound" in s:
        return _ACTIONS["unfound_objects_max"]
    if "outside the blast radius" in s:
        return ("more went down than the fault should take: check the cluster was healthy before the drill and the "
                "fault's reach (a shared switch, a PDU feeding two racks)")
    if "inactive" in s:
        return _ACTIONS["time_to_active_max"]
    if "marked down" in s or "timed out" in s:
        return _ACTIONS["detection_time_max"] + "; or the cluster could not be reached while the fault was in force"
    if "recovery did not finish" in s or "clean" in s:
        return _ACTIONS["time_to_clean_max"]
    return f"read the timeline's abort and fault.heal events; if a fault is still in force: drill heal --target {_target_path(meta)}"


def findings(result: DrillResult, meta: Mapping[str, Any]) -> list[Finding]:
    """One finding per failed or warned check, the stop condition, or the harness error; each with an action."""
    out: list[Finding] = []
    if result.verdict == "skipped":
        return out
    if result.verdict == "error" and not result.error:
        out.append(Finding("error", "the drill left no check: nothing was judged",
                           "a drill that judges nothing is an error, never a pass: see harness-errors.log in the run "
                           "directory and the drill's notes"))
    if result.error:
        out.append(Finding("error", f"harness error: {result.error}",
                           "not a finding about the cluster: the full traceback is in harness-errors.log in the run "
                           "directory; fix the cause and run drill run --rerun-failed on this run"))
    if result.stop_condition:
        where = f" in phase {result.phase}" if result.phase else ""
        out.append(Finding("stop", f"stop condition{where}: {result.stop_condition}; the fault was healed at once",
                           _stop_action(result.stop_condition, meta)))
    failed = sorted((c for c in result.checks if not c.passed),
                    key=lambda c: (0 if c.fails_drill else 1, an.phase_order(c.phase), c.name))
    for c in failed:
        out.append(Finding("fail" if c.fails_drill else "warn", c.message(), _action(c, result, meta)))
    return out


__all__ = ["BlastRadius", "DrillRecord", "FaultRow", "Finding", "Hypothesis", "PhaseRow", "build_record",
           "blast_radius", "findings", "hypothesis", "read_run_config"]
