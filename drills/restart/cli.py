"""`drill restart`: a controlled start of a rack's or a host's OSDs under a per-host memory budget.

Exit 0: every OSD started; 1: stopped because the budget cannot be met (flags restored, held OSDs
listed); 2: bad input or an unreachable cluster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

EXIT_OK, EXIT_STOPPED, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    from drills.cli import _size

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drills.cluster import CephCluster
    from drills.faults.base import DaemonStop, FaultSession
    from drills.faults.guard import guard_from_cluster
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
    with CephCluster(target) as cluster, Timeline(run_dir) as tl:
        hosts = host_ops_for(target)
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
        with FaultSession(target, guard=guard_from_cluster(target, cluster), timeline=tl, run_id=run_dir.name) as session:
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
