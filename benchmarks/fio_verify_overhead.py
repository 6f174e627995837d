"""What fio's verify headers cost the drill's measured IOPS, and how long the read-back takes.

    .venv/bin/python benchmarks/fio_verify_overhead.py --dir /var/lib/ceph-drills/h-wl --prefix hwl \
        --subnet 10.213.21.0/24 --rounds 3 --seconds 20

The drill's fio job (4k random writes, iodepth 16, rbd engine, 256 MiB) on one prefilled image, for
`--seconds` per run, alternating plain and verify=crc32c `--rounds` times (plain, verify, plain, ...) so
that drift on the machine hits both alike. After each verify run, `verify_written` reads back what the
run wrote; its time and block count are shown. Reported: IOPS and p99 per run, each mode's mean IOPS and
the ratio verify/plain next to the spread of the plain runs, and fio's own CPU per 1000 writes in each mode
(getrusage of the child processes: less sensitive to other load on the machine than IOPS). First, with
fio's null engine and no cluster, fio's CPU per write with and without the headers: their cost alone.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.cluster import CephCluster  # noqa: E402
from drills.target import Target, load_target  # noqa: E402
from drills.workloads.fio import FioJob, run_job, verify_written  # noqa: E402


@dataclass
class Run:
    mode: str
    iops: float
    p99_ms: float | None
    cpu_ms_per_1k_ios: float  # fio's own CPU (user+sys, from getrusage of children) per 1000 writes
    verify_s: float | None = None
    verified_blocks: int | None = None
    verify_errors: int | None = None


def job(target: Target, image: str, seconds: int, verify: str | None) -> FioJob:
    return FioJob(name="verify-overhead", rw="randwrite", bs="4k", iodepth=16, runtime=seconds, size="256M",
                  ioengine="rbd", pool=target.cluster.rbd_pool, rbdname=image, conf=target.cluster.conf,
                  clientname=target.cluster.client.removeprefix("client."), verify=verify)


def null_engine_cpu_us_per_write(verify: bool, ios: int = 200_000) -> float:
    """fio's CPU per 4k write with the null engine (no cluster): what the verify headers alone cost."""
    cmd = ["fio", "--name=null", "--ioengine=null", "--rw=randwrite", "--bs=4k", "--size=1g", f"--number_ios={ios}",
           "--iodepth=16", "--output-format=terse"]
    if verify:
        cmd += ["--verify=crc32c", "--do_verify=0", "--verify_state_save=0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1e6 / ios


def ensure_sandbox(directory: str, prefix: str, subnet: str) -> Path:
    from drills.sandbox import bootstrap
    from drills.sandbox.spec import SandboxSpec

    spec = SandboxSpec(dir=directory, prefix=prefix, subnet=subnet)
    bootstrap.up(spec, log=lambda m: print(f"  sandbox: {m}", flush=True))
    return Path(spec.target_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="target file (default: the sandbox at --dir, brought up if needed)")
    ap.add_argument("--dir", default="/var/lib/ceph-drills/sandbox")
    ap.add_argument("--prefix", default="cd")
    ap.add_argument("--subnet", default="10.213.7.0/24")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    args = ap.parse_args(argv)
    null = {mode: statistics.median(null_engine_cpu_us_per_write(mode == "verify") for _ in range(3))
            for mode in ("plain", "verify")}
    print(f"null engine, fio CPU per 4k write (median of 3 x 200k writes): plain {null['plain']:.1f} us, "
          f"verify=crc32c {null['verify']:.1f} us: the headers cost {null['verify'] - null['plain']:.1f} us a write",
          flush=True)
    target = load_target(args.target or ensure_sandbox(args.dir, args.prefix, args.subnet))
    runs: list[Run] = []
    with CephCluster(target) as cluster, cluster.scratch_image(target.cluster.rbd_pool, 256 << 20, "bench-verify") as image:
        prefill = FioJob(name="prefill", rw="write", bs="4M", iodepth=4, runtime=600, time_based=False, size="256M",
                         ioengine="rbd", pool=target.cluster.rbd_pool, rbdname=image, conf=target.cluster.conf,
                         clientname=target.cluster.client.removeprefix("client."))
        run_job(prefill)
        for r in range(args.rounds):
            for mode in ("plain", "verify"):
                j = job(target, image, args.seconds, "crc32c" if mode == "verify" else None)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                res = run_job(j)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                ios = res.totals["write"].ios
                run = Run(mode, res.totals["write"].iops, res.totals["write"].lat_p99_ms, cpu * 1e6 / max(ios, 1))
                if mode == "verify":
                    check = verify_written(j, res)
                    run.verify_s, run.verified_blocks, run.verify_errors = check.seconds, check.verified_blocks, check.errors
                runs.append(run)
                print(f"  round {r + 1} {mode}: {run.iops:.0f} IOPS", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (other agents share the 2 cores)")
    print(f"{'mode':8} {'IOPS':>7} {'p99 ms':>8} {'fio CPU ms/1k IO':>17} {'verify s':>9} {'blocks':>7} {'errors':>6}")
    for run in runs:
        print(f"{run.mode:8} {run.iops:7.0f} {run.p99_ms or float('nan'):8.1f} {run.cpu_ms_per_1k_ios:17.0f} "
              f"{'' if run.verify_s is None else f'{run.verify_s:.1f}':>9} {run.verified_blocks or '':>7} "
              f"{'' if run.verify_errors is None else run.verify_errors:>6}")
    plain = [r.iops for r in runs if r.mode == "plain"]
    verify = [r.iops for r in runs if r.mode == "verify"]
    spread = (max(plain) - min(plain)) / statistics.mean(plain) if len(plain) > 1 else float("nan")
    print(f"\nmean IOPS plain {statistics.mean(plain):.0f}, verify {statistics.mean(verify):.0f}: ratio "
          f"verify/plain {statistics.mean(verify) / statistics.mean(plain):.3f}; spread of the plain runs "
          f"{spread * 100:.0f}% of their mean; fio CPU per 1000 writes plain "
          f"{statistics.mean(r.cpu_ms_per_1k_ios for r in runs if r.mode == 'plain'):.0f} ms, verify "
          f"{statistics.mean(r.cpu_ms_per_1k_ios for r in runs if r.mode == 'verify'):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
