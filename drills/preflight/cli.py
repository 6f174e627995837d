"""`drill preflight --target FILE`: a table of per-host checks; exit 0 passed, 1 a check failed."""

from __future__ import annotations

import argparse
import json
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
