"""What the 1 Hz samplers cost: their CPU per sample, and fio's IOPS with telemetry on and off.

    .venv/bin/python benchmarks/telemetry_overhead.py --dir /var/lib/ceph-drills/h-tc --prefix htc \
        --subnet 10.213.24.0/24 --rounds 3 --seconds 20
    .venv/bin/python benchmarks/telemetry_overhead.py --target FILE --rounds 4 --seconds 20 --iodepth 16

With --dir, the sandbox there is used, brought up first (`drill sandbox up`, idempotent) with --prefix and
--subnet if it is not running; --target names any other target file. One RBD image (prefilled so that
no run pays for creating objects), then fio 4k random writes through the rbd engine for `--seconds` per
run, alternating off/on `--rounds` times in the same run (off, on, off, on, ...) so that drift in the
cluster (compaction, other load on the machine) hits both alike. "on" runs the drill's default samplers
(cluster + memory) at 1 Hz beside fio.

Reported: IOPS and p99 per run, the mean IOPS of each mode and their ratio (goal: on/off >= 0.99, or
within the spread of the "off" runs), each sampler's thread CPU per sample (Sampler.cpu_seconds / samples:
the Python side and the kernel time of its /proc reads; the mon commands themselves run in librados'
threads and in ceph-mon), the harness process's whole CPU per second (all its threads, librados' included)
in each mode: the difference is the samplers' full client cost (goal: <= 10 ms/s), and, on a sandbox, the
CPU of ceph-mon and ceph-mgr per second in each mode (what answering the samplers costs the cluster).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.cluster import CephCluster  # noqa: E402
from drills.sandbox.spec import DEFAULT_PREFIX, DEFAULT_SUBNET  # noqa: E402
from drills.target import Target, load_target  # noqa: E402
from drills.telemetry.samplers import default_samplers  # noqa: E402
from drills.timeline import Timeline  # noqa: E402
from drills.workloads.fio import FioJob, run_job  # noqa: E402

IOPS_RATIO_GOAL = 0.99
SAMPLER_CPU_GOAL_MS_PER_S = 10.0


@dataclass(frozen=True)
class RunFigures:
    round: int
    telemetry: bool
    iops: float
    p99_ms: float | None
    process_cpu_per_s: float  # harness process CPU seconds per wall second
    sampler_ms_per_sample: dict[str, float]  # sampler name -> thread CPU ms per sample
    samples: dict[str, int]
    cluster_cpu_per_s: float | None  # ceph-mon + ceph-mgr CPU seconds per wall second (None: not local)


def fio_job(target: Target, image: str, seconds: int, iodepth: int, size_mib: int) -> FioJob:
    return FioJob(name="overhead", rw="randwrite", bs="4k", iodepth=iodepth, runtime=seconds,
                  size=f"{size_mib}M", pool=target.cluster.rbd_pool, rbdname=image,
                  clientname=target.cluster.client.removeprefix("client."), conf=target.cluster.conf)


def service_processes(target: Target) -> list[psutil.Process]:
    """The sandbox's ceph-mon and ceph-mgr (local processes naming its ceph.conf); [] for other targets."""
    if target.cluster.deployment != "sandbox":
        return []
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("ceph-mon", "ceph-mgr") and target.cluster.conf in " ".join(p.info["cmdline"] or ()):
            found.append(p)
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float | None:
    try:
        return sum(sum(p.cpu_times()[:2]) for p in procs) if procs else None
    except psutil.Error:
        return None


def one_run(target: Target, cluster: CephCluster, job: FioJob, run_dir: Path, round_no: int,
            telemetry: bool) -> RunFigures:
    timeline = Timeline(run_dir / f"r{round_no}-{'on' if telemetry else 'off'}")
    services = service_processes(target)
    samplers = [s.start() for s in default_samplers(timeline, target, cluster)] if telemetry else []
    cpu0, wall0, svc0 = time.process_time(), time.monotonic(), cpu_seconds(services)
    try:
        result = run_job(job, timeline)
    finally:
        for s in samplers:
            s.stop()
        timeline.close()
    wall = time.monotonic() - wall0
    cpu = (time.process_time() - cpu0) / wall
    svc1 = cpu_seconds(services)
    svc = (svc1 - svc0) / wall if svc0 is not None and svc1 is not None else None
    totals = result.totals["write"]
    return RunFigures(round_no, telemetry, totals.iops, totals.lat_p99_ms, cpu,
                      {s.name: s.cpu_seconds / max(1, s.samples_taken) * 1000.0 for s in samplers},
                      {s.name: s.samples_taken for s in samplers}, svc)


@dataclass(frozen=True)
class ReadCosts:
    daemons: int
    rss_all_ms: float  # thread CPU to read every daemon's RSS once (open statm files)
    rollup_each_ms: float  # thread CPU to read one daemon's PSS/USS (smaps_rollup), mean over the daemons


def local_read_costs(target: Target, repeats: int = 20) -> ReadCosts | None:
    """What the sandbox memory sampler's two kinds of read cost, measured apart (None: not a sandbox, or a
    samplers module without the split)."""
    if target.cluster.deployment != "sandbox":
        return None
    from drills.telemetry import samplers

    if not hasattr(samplers, "parse_smaps_rollup"):
        return None
    daemons = [d for h in target.hosts for d in h.daemons]
    reader = samplers.LocalMemoryReader(samplers.sandbox_pid_lookup(target))
    try:
        reader.read(daemons)  # pid lookups and opens: once per daemon, not per sample
        c0 = time.thread_time()
        for _ in range(repeats):
            reader.read(daemons)
        rss = (time.thread_time() - c0) / repeats
        c0 = time.thread_time()
        for _ in range(repeats):
            reader.read(daemons, rollup_of=set(daemons))
        both = (time.thread_time() - c0) / repeats
    finally:
        reader.close()
    return ReadCosts(len(daemons), rss * 1000, max(0.0, both - rss) / len(daemons) * 1000)


def run_order(round_no: int) -> tuple[bool, bool]:
    """Telemetry off/on in round 1, on/off in round 2, ...: ABBA order cancels a linear drift."""
    return (False, True) if round_no % 2 else (True, False)


def paired_ratio(pairs: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """(geometric mean of on/off per round, 95 % interval low, high) from (off, on) IOPS pairs; None below 2."""
    logs = [math.log(on / off) for off, on in pairs if off > 0 and on > 0]
    if len(logs) < 2:
        return None
    mean, sd = statistics.mean(logs), statistics.stdev(logs)
    half = T95[min(len(logs) - 1, len(T95)) - 1] * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


# Student's t, two-sided 95 %, for 1..10 degrees of freedom (more rounds use the 10-df value: conservative).
T95 = (12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def ensure_sandbox(directory: str, prefix: str, subnet: str) -> Path:
    """The sandbox at `directory`, brought up if it is not running (up is idempotent); its target file."""
    from drills.sandbox import bootstrap
    from drills.sandbox.spec import SandboxSpec

    spec = bootstrap.load_spec(directory) or SandboxSpec(dir=directory, prefix=prefix, subnet=subnet)
    bootstrap.up(spec, log=lambda m: print(f"  sandbox: {m}", flush=True))
    return spec.target_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="target file of a running cluster (instead of --dir)")
    ap.add_argument("--dir", default="/var/lib/ceph-drills/sandbox", help="sandbox directory (default %(default)s)")
    ap.add_argument("--prefix", default=DEFAULT_PREFIX, help="sandbox prefix, if it must be brought up")
    ap.add_argument("--subnet", default=DEFAULT_SUBNET, help="sandbox subnet, if it must be brought up")
    ap.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    ap.add_argument("--seconds", type=int, default=15, help="fio run time per run")
    ap.add_argument("--iodepth", type=int, default=16)
    ap.add_argument("--size-mib", type=int, default=256, help="image size (prefilled)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1:
        print(f"telemetry_overhead: --rounds and --seconds must be at least 1 (got {args.rounds}, {args.seconds})",
              file=sys.stderr)
        return 2

    import rbd

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    target = load_target(args.target or ensure_sandbox(args.dir, args.prefix, args.subnet))
    with CephCluster(target) as cluster, tempfile.TemporaryDirectory(prefix="telemetry-overhead-") as tmp:
        run_dir = Path(tmp)
        image = f"overhead-{uuid.uuid4().hex[:8]}"
        with cluster.open_ioctx(target.cluster.rbd_pool) as io:
            rbd.RBD().create(io, image, args.size_mib << 20)
            try:
                prefill = FioJob(name="prefill", rw="write", bs="4M", iodepth=4, runtime=600, time_based=False,
                                 size=f"{args.size_mib}M", pool=target.cluster.rbd_pool, rbdname=image,
                                 clientname=target.cluster.client.removeprefix("client."),
                                 conf=target.cluster.conf)
                run_job(prefill)
                job = fio_job(target, image, args.seconds, args.iodepth, args.size_mib)
                runs: list[RunFigures] = []
                for r in range(1, args.rounds + 1):
                    # ABBA: off/on, then on/off, ... so that a drift of the cluster's rate over the run (it
                    # slows as BlueStore's metadata grows) does not land on one mode: paired by round.
                    for telemetry in run_order(r):
                        fig = one_run(target, cluster, job, run_dir, r, telemetry)
                        runs.append(fig)
                        print(f"  round {r} telemetry {'on ' if telemetry else 'off'}: {fig.iops:7.0f} IOPS, "
                              f"p99 {fig.p99_ms or 0:.1f} ms", flush=True)
            finally:
                rbd.RBD().remove(io, image)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_table(runs, args)
    costs = local_read_costs(target)
    if costs is not None:
        print(f"memory sampler reads, measured apart (thread CPU): RSS of all {costs.daemons} daemons "
              f"{costs.rss_all_ms:.2f} ms; PSS/USS (smaps_rollup) {costs.rollup_each_ms:.2f} ms per daemon")
    return 0


def print_table(runs: list[RunFigures], args: argparse.Namespace) -> None:
    print(f"\nfio rbd 4k randwrite, iodepth {args.iodepth}, {args.seconds} s per run, {args.rounds} off/on pairs in ABBA order\n")
    print("| round | telemetry | IOPS | p99 ms | harness CPU ms/s | ceph-mon+mgr CPU ms/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for f in runs:
        p99 = f"{f.p99_ms:.1f}" if f.p99_ms is not None else "—"
        svc = f"{f.cluster_cpu_per_s * 1000:.0f}" if f.cluster_cpu_per_s is not None else "not measured"
        print(f"| {f.round} | {'on' if f.telemetry else 'off'} | {f.iops:.0f} | {p99} | "
              f"{f.process_cpu_per_s * 1000:.1f} | {svc} |")
    off = [f for f in runs if not f.telemetry]
    on = [f for f in runs if f.telemetry]
    mean_off, mean_on = statistics.mean(f.iops for f in off), statistics.mean(f.iops for f in on)
    ratio = mean_on / mean_off
    by_round = {(f.round, f.telemetry): f.iops for f in runs}
    pairs = [(by_round[(r, False)], by_round[(r, True)]) for r in sorted({f.round for f in runs})
             if (r, False) in by_round and (r, True) in by_round]
    ratios = [b / a for a, b in pairs]
    paired = paired_ratio(pairs)
    spread = statistics.pstdev(f.iops for f in off) / mean_off if len(off) > 1 else 0.0
    cpu_off = statistics.mean(f.process_cpu_per_s for f in off) * 1000
    cpu_on = statistics.mean(f.process_cpu_per_s for f in on) * 1000
    thread_ms_per_s = sum(statistics.mean(f.sampler_ms_per_sample[n] * f.samples[n] for f in on)
                          for n in on[0].sampler_ms_per_sample) / args.seconds if on else 0.0

    print("\n| | telemetry off | telemetry on |")
    print("| --- | --- | --- |")
    print(f"| mean IOPS | {mean_off:.0f} | {mean_on:.0f} (on/off {ratio:.3f}; per pair "
          f"{', '.join(f'{r:.3f}' for r in ratios)}) |")
    print(f"| harness CPU | {cpu_off:.1f} ms/s | {cpu_on:.1f} ms/s |")
    svc_off = [f.cluster_cpu_per_s for f in off if f.cluster_cpu_per_s is not None]
    svc_on = [f.cluster_cpu_per_s for f in on if f.cluster_cpu_per_s is not None]
    if svc_off and svc_on:
        print(f"| ceph-mon + ceph-mgr CPU | {statistics.mean(svc_off) * 1000:.0f} ms/s | "
              f"{statistics.mean(svc_on) * 1000:.0f} ms/s |")
    for name in sorted({n for f in on for n in f.sampler_ms_per_sample}):
        per = statistics.mean(f.sampler_ms_per_sample[name] for f in on)
        n = statistics.mean(f.samples[name] for f in on)
        print(f"| {name} sampler | – | {per:.2f} ms CPU per sample ({n:.0f} samples a run) |")

    print(f"\nrun-to-run spread of the 'off' runs: {spread * 100:.1f} % (stdev / mean)")
    if paired is None:
        print(f"goal on/off IOPS >= {IOPS_RATIO_GOAL}: not measured (needs 2 rounds or more)")
    else:
        # Met when the goal lies inside the paired 95 % interval (the difference is within the noise) or
        # the whole interval is above it; a point estimate alone would judge the machine's noise.
        est, low, high = paired
        verdict = ("yes" if low >= IOPS_RATIO_GOAL else
                   "within the noise" if high >= IOPS_RATIO_GOAL else "NO")
        print(f"goal on/off IOPS >= {IOPS_RATIO_GOAL}: {verdict} (paired by round, ABBA order: "
              f"{est:.3f}, 95 % interval {low:.3f}-{high:.3f}; ratio of means {ratio:.3f})")
    cost = cpu_on - cpu_off
    print(f"goal samplers <= {SAMPLER_CPU_GOAL_MS_PER_S:.0f} ms CPU/s: "
          f"{'yes' if cost <= SAMPLER_CPU_GOAL_MS_PER_S else 'NO'} (harness process on - off: {cost:.1f} ms/s, "
          f"all threads; samplers' own threads: {thread_ms_per_s:.1f} ms/s)")


if __name__ == "__main__":
    sys.exit(main())
