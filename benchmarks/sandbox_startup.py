"""How long `drill sandbox up` and `down` take, step by step, over several runs.

    .venv/bin/python benchmarks/sandbox_startup.py --dir /var/lib/ceph-drills/h-tc --prefix htc \
        --subnet 10.213.24.0/24 --runs 5

Each run: `down` whatever is there (not timed), `up` from nothing to HEALTH_OK with radosgw serving
(each step's own time from `UpResult.step_seconds`, and when it was done), a check that radosgw answers
HTTP, then a timed `down` and a check that nothing is left behind. The table gives each step's time as
mean, min and max over the runs (steps overlap: the mgr, the OSDs, the pools and radosgw start side by
side), when it was done, then `up` and `down` totals against the goals (up <= 20 s, down <= 5 s).

Timings on a shared machine are noisy: the machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.sandbox import bootstrap  # noqa: E402
from drills.sandbox.spec import DEFAULT_DIR, DEFAULT_PREFIX, DEFAULT_SUBNET, SandboxError, SandboxSpec  # noqa: E402

UP_GOAL_S = 20.0
DOWN_GOAL_S = 5.0


@dataclass(frozen=True)
class RunTimes:
    steps: list[tuple[str, float]]  # (step, seconds the step took)
    done_at: dict[str, float]  # step -> seconds since the start of `up` when it was done
    up_s: float
    down_s: float
    rgw_status: int | None  # HTTP status radosgw answered with right after up (None: no answer)
    leftovers: list[str]


def step_durations(steps: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """(step, seconds since start) -> (step, seconds since the step before)."""
    out, before = [], 0.0
    for name, at in steps:
        out.append((name, at - before))
        before = at
    return out


def rgw_answers(endpoint: str) -> int | None:
    try:
        with urllib.request.urlopen(endpoint, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:  # an S3 error page is an answer too
        return e.code
    except OSError:
        return None


def one_run(spec: SandboxSpec) -> RunTimes:
    bootstrap.down(spec, log=lambda m: None)
    r = bootstrap.up(spec, log=lambda m: None)
    status = rgw_answers(r.target.s3.endpoint) if spec.rgw else None
    d = bootstrap.down(spec, log=lambda m: None)
    # Steps run side by side since the OSD/pool/radosgw rework: each step's own time is in step_seconds;
    # an older UpResult has only the finish times, and its steps ran one after the other.
    took = getattr(r, "step_seconds", None) or step_durations(r.steps)
    took += [(f"down: {n}", secs) for n, secs in getattr(d, "step_seconds", [])]
    return RunTimes(took, {step_key(n): at for n, at in r.steps}, r.seconds, d.seconds, status,
                    bootstrap.leftovers(spec))


def step_key(name: str) -> str:
    """Step names carry figures (addresses, pool lists); the first words name the step."""
    if name.startswith("down: "):
        return name
    return " ".join(name.split(":")[0].split()[:3]).rstrip(",")


def print_table(runs: list[RunTimes]) -> None:
    keys: list[str] = []
    per_key: dict[str, list[float]] = {}
    for r in runs:
        for name, secs in r.steps:
            k = step_key(name)
            if k not in per_key:
                keys.append(k)
                per_key[k] = []
            per_key[k].append(secs)
    print(f"\n{len(runs)} runs\n")
    print("| step | took: mean s | min s | max s | done at: mean s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for k in keys:
        v = per_key[k]
        at = [r.done_at[k] for r in runs if k in r.done_at]
        done = f"{statistics.mean(at):.1f}" if at else ""
        print(f"| {k} | {statistics.mean(v):.1f} | {min(v):.1f} | {max(v):.1f} | {done} |")
    ups = [r.up_s for r in runs]
    downs = [r.down_s for r in runs]
    print(f"| **up total** | {statistics.mean(ups):.1f} | {min(ups):.1f} | {max(ups):.1f} | |")
    print(f"| **down total** | {statistics.mean(downs):.1f} | {min(downs):.1f} | {max(downs):.1f} | |")
    print(f"\nper run up: {', '.join(f'{u:.1f}' for u in ups)} s; down: {', '.join(f'{d:.1f}' for d in downs)} s")
    print(f"goal up <= {UP_GOAL_S:.0f} s: {'yes' if statistics.mean(ups) <= UP_GOAL_S else 'NO'} "
          f"(mean {statistics.mean(ups):.1f} s); goal down <= {DOWN_GOAL_S:.0f} s: "
          f"{'yes' if statistics.mean(downs) <= DOWN_GOAL_S else 'NO'} (mean {statistics.mean(downs):.1f} s)")
    rgw = [r.rgw_status for r in runs]
    print(f"radosgw answered HTTP right after up: {sum(s is not None for s in rgw)}/{len(runs)} runs ({rgw})")
    left = [x for r in runs for x in r.leftovers]
    print(f"left behind after down: {left or 'nothing'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=DEFAULT_DIR)
    ap.add_argument("--prefix", default=DEFAULT_PREFIX)
    ap.add_argument("--subnet", default=DEFAULT_SUBNET)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    if args.runs < 1:
        print(f"sandbox_startup: --runs must be at least 1 (got {args.runs})", file=sys.stderr)
        return 2
    spec = SandboxSpec(dir=args.dir, prefix=args.prefix, subnet=args.subnet)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    runs: list[RunTimes] = []
    try:
        for i in range(1, args.runs + 1):
            r = one_run(spec)
            runs.append(r)
            print(f"  run {i}: up {r.up_s:.1f} s, down {r.down_s:.1f} s, "
                  f"{' | '.join(f'{step_key(n)} {s:.1f}' for n, s in r.steps)}", flush=True)
    except SandboxError as e:
        print(f"sandbox_startup: {e}", file=sys.stderr)
        bootstrap.down(spec, log=lambda m: None)
        return 2
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(runs)
    return 0


if __name__ == "__main__":
    t = time.monotonic()
    rc = main()
    print(f"(benchmark wall time {time.monotonic() - t:.0f} s)")
    sys.exit(rc)
