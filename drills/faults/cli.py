"""`drill heal`: undo every fault an earlier run left armed in the target's ledger."""

from __future__ import annotations

import argparse
import sys

from drills.faults.session import heal_pending
from drills.faults.ledger import FaultLedger
from drills.hostaccess import HostAccess
from drills.target import load_target
from drills.workloads.reaper import WorkloadProcesses


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    p = sub.add_parser("heal", help="undo every fault left armed by an earlier (crashed) run")
    p.add_argument("--target", default=default_target)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = load_target(args.target)
    ledger = FaultLedger(target.state_dir)
    pending = ledger.pending()
    ok = True
    if not pending:
        print(f"nothing to heal: no armed faults in {ledger.path}")
    else:
        print(f"healing {len(pending)} armed fault(s) from {ledger.path}: {', '.join(e.label for e in pending)}")
        with HostAccess(target) as access:
            report = heal_pending(target, ledger=ledger, host_access=access)
        print(report.summary())
        if not report.ok:
            print("drill: error: some faults could not be undone; do the manual steps above", file=sys.stderr)
            ok = False
    # a crashed run's clients (fio, locust) keep loading the cluster until stopped
    reaped = WorkloadProcesses(target.state_dir).reap()
    print(reaped.summary())
    if not reaped.ok:
        print("drill: error: some workload processes could not be stopped; stop them by hand as shown above",
              file=sys.stderr)
        ok = False
    return 0 if ok else 2
