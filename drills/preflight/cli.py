"""`drill preflight --target FILE`: a table of per-host checks; exit 0 passed, 1 a check failed.
`drill target [--connect] [--schema-only]`: the target file itself, its credentials, and the live cluster."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    p = sub.add_parser("preflight", help="check the target's hosts (swap, memory per OSD, overcommit, daemons, clock, MTU)")
    p.add_argument("--target", default=default_target)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drills.preflight.checks import preflight
    from drills.target import load_target

    report = preflight(load_target(args.target))
    if args.json:
        print(json.dumps({"ok": report.ok, "checks": [asdict(c) for c in report.checks]}, indent=2))
    else:
        print(report.table())
    return 0 if report.ok else 1


def add_target_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    tg = sub.add_parser("target", help="check a target file")
    tg.add_argument("--target", default=default_target)
    tg.add_argument("--connect", action="store_true", help="also connect and compare the live cluster")
    tg.add_argument("--schema-only", action="store_true",
                    help="check the file alone, not the credentials it names (e.g. linting a target on another machine)")
    tg.set_defaults(func=check_target)


def check_target(a: argparse.Namespace) -> int:
    """Validate a target file, the credentials it names (unless --schema-only) and, with --connect, the live cluster."""
    from drills.cluster import CephCluster
    from drills.target import credential_problems, load_target

    t = load_target(a.target)
    print(f"target {t.path}: cluster {t.cluster.name}, {len(t.racks)} racks, {len(t.hosts)} hosts, {len(t.osd_ids)} OSDs, destructive={t.destructive}")
    if not a.schema_only:
        problems = credential_problems(t)
        if problems:
            sys.stdout.flush()
            for line in problems:  # all of them: this command is where a person fixes a target file
                print(f"drill: error: {line}", file=sys.stderr)
            return 2
    if a.connect:
        with CephCluster(t) as c:
            topo = c.topology()
            print(f"connected: fsid {c.fsid()}, {c.health_status()}, live CRUSH racks: {', '.join(sorted(topo.racks))}")
    return 0
