#!/usr/bin/env python3
"""Where CI's time goes, and how two CI runs compare.

Reads pytest logs that end with a `--durations=N` table and the summary line (`./run-tests` prints
both), and prints, for the slowest tests, their time in each log side by side with the ratio, then the
totals against the goal (issue 20: CI <= 15 min; the brief's hard limit: 30 min).

    benchmarks/ci_time.py BEFORE.log [AFTER.log] [--top 25]

To make a log: `./run-tests 2>&1 | tee ci.log` (or CI's own output). Tests not in a log's durations
table show as "-" (below that run's N slowest), never as 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

GOAL_S = 15 * 60
LIMIT_S = 30 * 60
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(call|setup|teardown)\s+(\S+)")
_SUMMARY = re.compile(r"=+ (.*?) in (\d+(?:\.\d+)?)s(?: \([0-9:]+\))? =+")


@dataclass
class CiLog:
    path: Path
    tests: dict[str, float] = field(default_factory=dict)  # nodeid -> seconds (call + setup + teardown)
    total_s: float | None = None
    outcome: str = ""


def read_log(path: Path) -> CiLog:
    log = CiLog(path)
    for line in path.read_text(errors="replace").splitlines():
        m = _DURATION.match(line)
        if m:
            log.tests[m.group(3)] = log.tests.get(m.group(3), 0.0) + float(m.group(1))
            continue
        m = _SUMMARY.search(line)
        if m and ("passed" in m.group(1) or "failed" in m.group(1) or "error" in m.group(1)):
            log.outcome, log.total_s = m.group(1), float(m.group(2))
    if log.total_s is None:
        raise SystemExit(f"ci_time: {path}: no pytest summary line (did the run finish?)")
    if not log.tests:
        raise SystemExit(f"ci_time: {path}: no durations table; run pytest with --durations=N (./run-tests does)")
    return log


def _short(nodeid: str, width: int = 78) -> str:
    nodeid = nodeid.replace("tests/integration/", "i/").replace("tests/unit/", "u/")
    return nodeid if len(nodeid) <= width else nodeid[: width - 1] + "…"


def table(logs: list[CiLog], top: int) -> str:
    first = logs[0]
    order = sorted(set().union(*(log.tests for log in logs)), key=lambda t: -max(log.tests.get(t, 0) for log in logs))
    head = f"{'test':78s} " + " ".join(f"{log.path.name[:12]:>12s}" for log in logs)
    if len(logs) == 2:
        head += f" {'after/before':>12s}"
    out = [head]
    for t in order[:top]:
        cells = [log.tests.get(t) for log in logs]
        row = f"{_short(t):78s} " + " ".join(f"{c:11.1f}s" if c is not None else f"{'-':>12s}" for c in cells)
        if len(logs) == 2:
            a, b = cells
            row += f" {b / a:12.2f}" if a and b is not None else f" {'-':>12s}"
        out.append(row)
    shown = [sum(log.tests.get(t, 0.0) for t in order[:top]) for log in logs]
    out.append(f"{'(these ' + str(min(top, len(order))) + ' tests)':78s} " + " ".join(f"{s:11.1f}s" for s in shown))
    out.append(f"{'pytest total':78s} " + " ".join(f"{log.total_s:11.1f}s" for log in logs)
               + (f" {logs[1].total_s / first.total_s:12.2f}" if len(logs) == 2 else ""))
    for log in logs:
        verdict = "met" if log.total_s <= GOAL_S else ("over the goal" if log.total_s <= LIMIT_S else "OVER THE LIMIT")
        out.append(f"{log.path.name}: {log.outcome}; {log.total_s / 60:.1f} min against the goal {GOAL_S // 60} min "
                   f"and the limit {LIMIT_S // 60} min: {verdict}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path, help="one or two pytest logs (before, after)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    if len(a.logs) > 2:
        ap.error("give one log, or two to compare")
    for p in a.logs:
        if not p.is_file():
            ap.error(f"{p}: no such file")
    print(table([read_log(p) for p in a.logs], a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
