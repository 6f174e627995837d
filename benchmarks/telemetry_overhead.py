"""What the 1 Hz samplers cost: their CPU per sample, and fio's IOPS with telemetry on and off.

    .venv/bin/python benchmarks/telemetry_overhead.py --target /var/lib/ceph-drills/sandbox/target.toml
    .venv/bin/python benchmarks/telemetry_overhead.py --target FILE --rounds 4 --seconds 20 --iodepth 16

One RBD image (prefilled so that no run pays for creating objects), then fio 4k random writes through
the rbd engine for `--seconds` per run, alternating off/on `--rounds` times in the same run (off, on,
off, on, ...) so that drift in the cluster (compaction, other load on the machine) hits both alike.
"on" runs the drill's default samplers (cluster + memory) at 1 Hz beside fio.

Reported: IOPS and p99 per run, the mean IOPS of each mode and their ratio (goal: within 3 %), each
sampler's thread CPU per sample (Sampler.cpu_seconds / samples: the Python side only; the mon commands
themselves run in librados' threads and in ceph-mon), and the harness process's whole CPU per second
(all its threads, librados' included) in each mode: the difference is the samplers' full client cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.cluster import CephCluster  # noqa: E402
from drills.target import Target, load_target  # noqa: E402
from drills.telemetry.samplers import default_samplers  # noqa: E402
from drills.timeline import Timeline  # noqa: E402
from drills.workloads.fio import FioJob, run_job  # noqa: E402


@dataclass(frozen=True)
class RunFigures:
    round: int
    telemetry: bool
    iops: float
    p99_ms: float | None
    process_cpu_per_s: float  # harness process CPU seconds per wall second
    sampler_ms_per_sample: dict[str, float]  # sampler name -> thread CPU ms per sample
    samples: dict[str, int]


def fio_job(target: Target, image: str, seconds: int, iodepth: int, size_mib: int) -> FioJob:
    return FioJob(name="overhead", rw="randwrite", bs="4k", iodepth=iodepth, runtime=seconds,
                  size=f"{size_mib}M", pool=target.cluster.rbd_pool, rbdname=image,
                  clientname=target.cluster.client.removeprefix("client."), conf=target.cluster.conf)


def one_run(target: Target, cluster: CephCluster, job: FioJob, run_dir: Path, round_no: int,
            telemetry: bool) -> RunFigures:
    timeline = Timeline(run_dir / f"r{round_no}-{'on' if telemetry else 'off'}")
    samplers = [s.start() for s in default_samplers(timeline, target, cluster)] if telemetry else []
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        result = run_job(job, timeline)
    finally:
        for s in samplers:
            s.stop()
        timeline.close()
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    totals = result.totals["write"]
    return RunFigures(round_no, telemetry, totals.iops, totals.lat_p99_ms, cpu,
                      {s.name: s.cpu_seconds / max(1, s.samples_taken) * 1000.0 for s in samplers},
                      {s.name: s.samples_taken for s in samplers})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="/var/lib/ceph-drills/sandbox/target.toml")
    ap.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    ap.add_argument("--seconds", type=int, default=15, help="fio run time per run")
    ap.add_argument("--iodepth", type=int, default=16)
    ap.add_argument("--size-mib", type=int, default=256, help="image size (prefilled)")
    args = ap.parse_args(argv)

    import rbd

    target = load_target(args.target)
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
                    for telemetry in (False, True):
                        fig = one_run(target, cluster, job, run_dir, r, telemetry)
                        runs.append(fig)
                        print(f"  round {r} telemetry {'on ' if telemetry else 'off'}: {fig.iops:7.0f} IOPS, "
                              f"p99 {fig.p99_ms or 0:.1f} ms", flush=True)
            finally:
                rbd.RBD().remove(io, image)
    print_table(runs, args)
    return 0


def print_table(runs: list[RunFigures], args: argparse.Namespace) -> None:
    print(f"\nfio rbd 4k randwrite, iodepth {args.iodepth}, {args.seconds} s per run, {args.rounds} off/on pairs\n")
    print("| round | telemetry | IOPS | p99 ms | harness CPU s/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for f in runs:
        p99 = f"{f.p99_ms:.1f}" if f.p99_ms is not None else "—"
        print(f"| {f.round} | {'on' if f.telemetry else 'off'} | {f.iops:.0f} | {p99} | {f.process_cpu_per_s:.3f} |")
    off = [f for f in runs if not f.telemetry]
    on = [f for f in runs if f.telemetry]
    mean_off, mean_on = statistics.mean(f.iops for f in off), statistics.mean(f.iops for f in on)
    ratios = [b.iops / a.iops for a, b in zip(off, on)]
    print(f"\nmean IOPS off {mean_off:.0f}, on {mean_on:.0f}: on/off = {mean_on / mean_off:.3f} "
          f"(per pair: {', '.join(f'{r:.3f}' for r in ratios)}; goal within 3 %: "
          f"{'yes' if abs(mean_on / mean_off - 1) <= 0.03 else 'NO'})")
    spread = statistics.pstdev(f.iops for f in off) / mean_off if len(off) > 1 else 0.0
    print(f"run-to-run spread of the 'off' runs: {spread * 100:.1f} % (stdev / mean)")
    print("\n| sampler | samples/run | thread CPU ms/sample |")
    print("| --- | ---: | ---: |")
    for name in sorted({n for f in on for n in f.sampler_ms_per_sample}):
        per = [f.sampler_ms_per_sample[name] for f in on]
        n = [f.samples[name] for f in on]
        print(f"| {name} | {statistics.mean(n):.0f} | {statistics.mean(per):.2f} |")
    cpu_off = statistics.mean(f.process_cpu_per_s for f in off)
    cpu_on = statistics.mean(f.process_cpu_per_s for f in on)
    print(f"\nharness process CPU: off {cpu_off * 1000:.1f} ms/s, on {cpu_on * 1000:.1f} ms/s: "
          f"samplers cost {(cpu_on - cpu_off) * 1000:.1f} ms CPU per second (all threads)")


if __name__ == "__main__":
    sys.exit(main())
