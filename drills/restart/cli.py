"""`drill restart`: a controlled start of a rack's or a host's OSDs under a per-host memory budget.

Exit 0: every OSD started; 1: stopped because the budget cannot be met (flags restored, held OSDs
listed); 2: bad input or an unreachable cluster.

`drill restart --plan` starts nothing: it reads the cluster and the hosts and prints the restart plan
(drills/restart/plan.py): exit 0 with a plan for every host, 2 when a reading is missing (the plan is
printed first, the missing readings named) or the input is bad.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drills.restart.plan import RestartPlan

EXIT_OK, EXIT_STOPPED, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    from drills.units import size_arg as _size

    p = sub.add_parser("restart", help="controlled OSD start under a per-host memory budget (one OSD at a time)")
    p.add_argument("--target", default=default_target)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--rack", help="start the held OSDs of this rack")
    where.add_argument("--host", help="start the held OSDs of this host")
    p.add_argument("--memory-budget", type=_size, default=None,
                   help="bytes each host's Ceph daemons may use, e.g. 1536MiB (default: memory_budget of each host in the target)")
    p.add_argument("--order", default="id", help="id | reverse | host (round-robin) | osd.5,osd.4,... (default id)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per OSD to come up and peer (default 300)")
    p.add_argument("--wait", choices=("peered", "clean"), default="peered", help="after each start wait until its PGs are active (peered) or active+clean")
    p.add_argument("--start-need", type=_size, default=None, help="memory one OSD needs to start (default: half of osd_memory_target; raised to the largest peak seen)")
    p.add_argument("--need-margin", type=float, default=1.2,
                   help="the learned start-up need is an OSD's measured peak times this (default 1.2)")
    p.add_argument("--settle", type=float, default=20, help="seconds to let memory settle before restarting the biggest daemon (default 20)")
    p.add_argument("--stop-first", action="store_true", help="stop the selected OSDs first (a rolling restart); otherwise running ones are skipped")
    p.add_argument("--report-dir", default="reports", help="the run's timeline goes to REPORT_DIR/restart-<utc time> (default reports)")
    p.add_argument("--plan", action="store_true",
                   help="start nothing: predict each host's peak for an all-at-once start and print the safe order, "
                        "how many OSDs may start at once and each step's budget (read-only)")
    p.add_argument("--history", default=None,
                   help="with --plan: the history database with earlier start-up peaks (default REPORT_DIR/history.sqlite)")
    p.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return run_plan(args)
    if args.json:
        print("drill restart: error: --json goes with --plan; the restart itself prints its decisions as it goes", file=sys.stderr)
        return EXIT_ERROR
    from drills.cluster import CephCluster
    from drills.faults.kinds import DaemonStop
    from drills.faults.session import FaultSession
    from drills.faults.guard import guard_from_cluster
    from drills.hostaccess import HostAccess
    from drills.restart.hostops import CephClusterOps, host_ops_for
    from drills.restart.orchestrator import ControlledRestart, RestartConfig, RestartError, order_daemons, select_osds
    from drills.restart.runbook import run_with_flags, start_need_default
    from drills.target import load_target
    from drills.timeline import Timeline

    target = load_target(args.target)
    try:
        pairs = order_daemons(select_osds(target, args.rack, args.host), args.order)
    except RestartError as e:
        print(f"drill restart: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    budgets = {h.name: args.memory_budget or h.memory_budget for h, _ in pairs}
    missing = sorted(h for h, b in budgets.items() if not b)
    if missing:
        print(f"drill restart: error: no memory budget for host(s) {', '.join(missing)}: pass --memory-budget SIZE "
              "or set memory_budget in the target", file=sys.stderr)
        return EXIT_ERROR
    run_dir = Path(args.report_dir) / f"restart-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    with CephCluster(target) as cluster, Timeline(run_dir) as tl, HostAccess(target) as access:
        hosts = host_ops_for(target, access)  # one connection per host for the host ops and the fault session
        config = RestartConfig(budgets=budgets, start_need=args.start_need or start_need_default(cluster), wait=args.wait,
                               step_timeout_s=args.timeout, settle_s=args.settle, need_margin=args.need_margin)

        def on_event(kind: str, label: str, data: dict) -> None:
            tl.event(kind, label, **data)
            if kind in ("restart.decision", "oom.kill", "restart.stopped", "restart.ready"):
                print(f"{dt.datetime.now().strftime('%H:%M:%S')} {label}: {data.get('reason') or data.get('error') or data.get('state') or ''}", flush=True)

        restart = ControlledRestart(hosts, CephClusterOps(cluster), config, pairs, on_event=on_event,
                                    on_sample=lambda m, v, labels: tl.sample(m, v, **labels))
        for h in {h.name: h for h, _ in pairs}.values():  # unreachable: say so before any flag is set
            hosts.probe(h)
        with FaultSession(target, guard=guard_from_cluster(target, cluster), timeline=tl, run_id=run_dir.name,
                          host_access=access) as session:
            # Stopped by us, so ledgered: a kill -9 of this command leaves them for `drill heal` to start.
            stops = [session.inject(DaemonStop(target, d)) for _, d in pairs] if args.stop_first else []
            result, flags = run_with_flags(session, target, cluster, restart)
            for fault in stops:
                if fault.daemon in result.held:  # the budget said no: they stay held, and the summary says so
                    session.release(fault, f"{fault.daemon} held: {result.error}")
                else:
                    session.heal(fault)  # running already: a no-op start that clears the record
    print(result.summary())
    if flags.unsupported:
        print(f"(flags not known to this Ceph release, skipped: {', '.join(flags.unsupported)})")
    if result.held:
        print(f"left held (not running): {', '.join(result.held)}; start them with a larger --memory-budget, "
              "or one by one by hand once memory allows")
    print(f"flags restored: {', '.join(f for f in flags.flags if f not in flags.unsupported and f not in flags.already_set) or 'none set'}; timeline in {run_dir}")
    return EXIT_OK if result.ok else EXIT_STOPPED


def run_plan(args: argparse.Namespace) -> int:
    """`drill restart --plan`: read-only; the plan on stdout (table or JSON), missing readings as one error line."""
    import json

    from drills.cluster import CephCluster
    from drills.restart.orchestrator import RestartError, select_osds
    from drills.restart.plan import make_plan
    from drills.restart.plan_gather import gather_plan_inputs
    from drills.target import load_target

    target = load_target(args.target)
    try:
        pairs = select_osds(target, args.rack, args.host)
    except RestartError as e:
        print(f"drill restart: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    selection = f"rack {args.rack}" if args.rack else f"host {args.host}"
    history = Path(args.history) if args.history else Path(args.report_dir) / "history.sqlite"
    with CephCluster(target) as cluster:
        inputs = gather_plan_inputs(target, cluster, pairs, selection, budget=args.memory_budget,
                                    history_db=history, margin=args.need_margin)
    plan = make_plan(inputs)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print_plan(plan, args.rack)
    if not plan.complete:
        missing = plan.missing
        more = f" (and {len(missing) - 1} more, listed above)" if len(missing) > 1 else ""
        print(f"drill restart: error: plan incomplete: {missing[0]}{more}; make the host reachable "
              "(drill target --connect) and run --plan again", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _mib(v: int | None) -> str:
    return "not measured" if v is None else f"{v / (1 << 20):,.0f} MiB"


def print_plan(plan: "RestartPlan", rack: str | None) -> None:
    """The plan as two tables (hosts, then steps), where each figure came from, and the order."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    c = plan.cost
    console.print(f"Restart plan for {plan.selection} (read-only: nothing was changed)")
    console.print(f"start-up cost per OSD: {c.per_osd / (1 << 20):.0f} MiB + {c.per_pg / (1 << 20):.1f} MiB per PG; "
                  f"need = peak x {c.margin:g} (the controlled start's margin), at least half of osd_memory_target")
    console.print(f"  per PG: {c.per_pg_source}")
    console.print(f"  per OSD: {c.per_osd_source}")

    hosts = Table(title="All at once: predicted peak per host", title_justify="left")
    for col in ("host", "OSDs (PGs)", "memory", "in use by others", "predicted peak", "verdict", "margin", "max at once"):
        hosts.add_column(col, justify="right" if col in ("memory", "in use by others", "predicted peak", "margin", "max at once") else "left")
    for h in plan.hosts:
        margin = "not measured" if h.margin is None else (f"{_mib(h.margin)} to spare" if h.margin >= 0 else f"short {_mib(-h.margin)}")
        verdict = h.verdict.upper() if h.verdict != "fits" else h.verdict
        hosts.add_row(h.host, ", ".join(f"{o.osd} ({o.pgs})" for o in h.osds) or "-", _mib(h.memory.value),
                      _mib(h.used_by_others.value), _mib(h.predicted_peak), verdict, margin,
                      "not measured" if h.max_concurrent is None else str(h.max_concurrent))
    console.print(hosts)

    steps = Table(title="Steps per host (biggest first; hosts may go side by side)", title_justify="left")
    for col in ("host", "step", "start", "predicted peak", "need", "budget for the step", "fits"):
        steps.add_column(col, justify="right" if col in ("step", "predicted peak", "need", "budget for the step") else "left")
    for h in plan.hosts:
        if not h.steps:
            steps.add_row(h.host, "-", "not measured", "", "", "", "")
        for s in h.steps:
            steps.add_row(h.host, str(s.index), ", ".join(f"{o.osd} ({o.pgs} PGs)" for o in s.osds),
                          " + ".join(_mib(o.peak) for o in s.osds), " + ".join(_mib(o.need) for o in s.osds),
                          _mib(s.budget), "yes" if s.fits else "NO")
    console.print(steps)

    for h in plan.hosts:
        console.print(f"host {h.host}: memory from {h.memory.source}; in use from {h.used_by_others.source}")
        for line in (*h.missing, *h.notes):
            console.print(f"  {line}")
    if plan.order:
        where = f"--rack {rack}" if rack else f"--{plan.selection}"
        console.print(f"safe order: {', '.join(plan.order)}  (drill restart {where} --order {','.join(plan.order)})")
