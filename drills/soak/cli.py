"""`drill soak`: a seeded chaos soak (docs/soak.md).

    drill soak --duration 1h [--seed S] [--faults KIND,...] [--hold 20s..60s] [--quiet 10s..30s]
               [--settle 10min] [--max-concurrent 1] [--target FILE] [--thresholds FILE] [--report-dir DIR]
               [--dry-run [--json]]

The schedule is drawn first (drills/soak/schedule.py: the seed, the kinds, the target's topology and the live
cluster's pools) and printed; `--dry-run` stops there and touches nothing (it reads the pools). Otherwise the
soak runs as the drill `soak` through `drill run`'s machinery (admission, fault session, samplers, verdict,
report), with the parameters in DRILL_SOAK_*, so the drill draws the same schedule again.

Exit statuses: `drill run`'s (0 passed, 1 a check failed, 2 refused or broken input, 130/143 interrupted,
faults healed); bad input (an unknown fault kind, a duration shorter than one step, a bad seed) is one line
and exit 2 before anything is read or touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_ERROR = 2
# Pace of the warm-up, baseline and after phases (drills/scenario.py): short soaks keep them short.
LONG_SOAK_S = 30 * 60


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    from drills.soak.schedule import DEFAULT_HOLD, DEFAULT_QUIET, DEFAULT_SETTLE

    p = sub.add_parser("soak", help="a seeded chaos soak: faults drawn at random while clients run and are verified")
    p.add_argument("--target", default=default_target)
    p.add_argument("--duration", required=True, help="length of the fault schedule, e.g. 1h, 20min (warm-up, baseline "
                                                     "and the final read-back come on top)")
    p.add_argument("--seed", default=None, help="seed of the draw (0 .. 2**63-1); the same seed with the same other "
                                                "arguments replays the same schedule (default: a fresh one, printed)")
    p.add_argument("--faults", default=None, help="fault kinds to draw from, comma-separated (default: "
                                                  "rack_power_cut, power_cut, daemon_kill, daemon_hang, network_partition, "
                                                  "slow_disk, slow_link, flapping)")
    p.add_argument("--hold", default=DEFAULT_HOLD, help=f"how long a fault is held, a range (default {DEFAULT_HOLD})")
    p.add_argument("--quiet", default=DEFAULT_QUIET, help=f"calm before each fault, a range (default {DEFAULT_QUIET})")
    p.add_argument("--settle", default=DEFAULT_SETTLE,
                   help=f"bound on heal -> active+clean; past it the soak stops (default {DEFAULT_SETTLE})")
    p.add_argument("--max-concurrent", default="1",
                   help="faults in force at once (default 1: one at a time); the guard weighs them together")
    p.add_argument("--thresholds", default=None, help="thresholds TOML laid over the shipped one")
    p.add_argument("--report-dir", default="reports")
    p.add_argument("--dry-run", action="store_true", help="print the schedule and touch nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: the schedule as JSON (as soak-schedule.json)")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    p.set_defaults(func=run)


def _error(message: str) -> int:
    print(f"drill soak: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    from drills.soak.schedule import SoakError, SoakParams, draw_schedule

    try:
        params = SoakParams.build(seed=args.seed, duration=args.duration, kinds=args.faults, hold=args.hold,
                                  quiet=args.quiet, settle=args.settle, max_concurrent=args.max_concurrent)
    except SoakError as e:
        return _error(str(e))
    if args.json and not args.dry_run:
        return _error("--json goes with --dry-run; a soak's schedule is in its run directory (soak-schedule.json)")

    from drills.cluster import CephCluster
    from drills.faults.guard import guard_from_cluster
    from drills.target import load_target

    target = load_target(args.target)
    with CephCluster(target) as cluster:  # read only: the pools the guard weighs the draw against
        pools = guard_from_cluster(target, cluster).pools
    try:
        schedule = draw_schedule(params, target, pools)
    except SoakError as e:
        return _error(str(e))
    if args.dry_run:
        if args.json:
            print(json.dumps(schedule.record(), indent=2))
        else:
            print("\n".join(schedule.lines(target)))
            print(f"replay: {params.command()}")
            print("nothing was touched")
        return 0
    print("\n".join(schedule.lines(target)), flush=True)
    print(f"replay: {params.command()}", flush=True)
    from drills import runner

    os.environ.update(params.to_env())
    os.environ.setdefault("DRILL_PACE", "smoke" if params.duration_s < LONG_SOAK_S else "nightly")
    # a hang is stopped, a slow soak is not: each step may take its settle bound, and the clients' read-back follows
    timeout = int(2 * params.duration_s + params.settle_s + 1800)
    return runner.run_suite(target.path, "soak", args.thresholds, args.report_dir, False, args.pytest_args,
                            timeout_s=timeout)
