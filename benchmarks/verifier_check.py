"""How long the verifying writer's final check takes, and what it holds in memory, for a long drill's writes.

    .venv/bin/python benchmarks/verifier_check.py --dir /var/lib/ceph-drills/h-wl --prefix hwl \
        --subnet 10.213.21.0/24 --writes 25600

A drill at 20 writes/s for 2 hours issues 144k writes. Writing that many through the cluster one at a time
would take the drill's own time, so the records are made in memory (the writer over MemoryBackend: the
same records, ledger and journal) and then stored as the 64 RADOS objects the writer would have grown;
the check then reads them back from the cluster exactly as after a drill (whole objects in 1 MiB aio
reads, 8 in flight). Reported: writes, MB read, seconds, MB/s, the ledger's bytes per write, the
process's peak RSS growth during the check, and the verdict (every write must be `ok`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.cluster import CephCluster  # noqa: E402
from drills.target import load_target  # noqa: E402
from drills.workloads.verifier import (MemoryBackend, RadosObjectBackend, VerifierConfig, VerifyingWriter,  # noqa: E402
                                       check_backend)


def ensure_sandbox(directory: str, prefix: str, subnet: str) -> Path:
    from drills.sandbox import bootstrap
    from drills.sandbox.spec import SandboxSpec

    spec = SandboxSpec(dir=directory, prefix=prefix, subnet=subnet)
    bootstrap.up(spec, log=lambda m: print(f"  sandbox: {m}", flush=True))
    return Path(spec.target_path)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the kernel's peak RSS of this process (VmHWM, `echo 5 > /proc/self/clear_refs`); RSS now, KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", help="target file (default: the sandbox at --dir, brought up if needed)")
    ap.add_argument("--dir", default="/var/lib/ceph-drills/sandbox")
    ap.add_argument("--prefix", default="cd")
    ap.add_argument("--subnet", default="10.213.7.0/24")
    ap.add_argument("--writes", type=int, default=25_600)
    ap.add_argument("--keys", type=int, default=64)
    args = ap.parse_args(argv)
    target = load_target(args.target or ensure_sandbox(args.dir, args.prefix, args.subnet))
    memory = MemoryBackend()
    with tempfile.TemporaryDirectory() as tmp:
        writer = VerifyingWriter(memory, Path(tmp) / "j.jsonl", config=VerifierConfig(num_keys=args.keys))
        t0 = time.monotonic()
        for _ in range(args.writes):
            writer.write_one()
        made = time.monotonic() - t0
        writer.close()
        journal_mb = (Path(tmp) / "j.jsonl").stat().st_size / 1e6
    prefix = f"bench-verify-{uuid.uuid4().hex[:8]}"
    with CephCluster(target) as cluster, cluster.open_ioctx(target.cluster.rados_pool) as io:
        backend = RadosObjectBackend(io, prefix)
        try:
            for index, obj in memory.objects.items():
                io.write_full(backend.name(index), bytes(obj))
            memory.objects.clear()  # the check must not lean on the in-memory copy
            rss_before = reset_peak_rss()
            report = check_backend(backend, writer.ledger)
            rss_growth = (_status_kib("VmHWM") - rss_before) / 1024.0
        finally:
            for index in range(args.keys):
                backend.remove(index)
    mb = report.bytes_read / 1e6
    print(f"load average {os.getloadavg()[0]:.1f} (other agents share the 2 cores)")
    print(f"{'writes':>7} {'keys':>5} {'MB read':>8} {'check s':>8} {'MB/s':>6} {'ledger B/write':>15} "
          f"{'peak RSS +MiB':>14} {'journal MB':>11} {'verdict':>8}")
    print(f"{report.written:7d} {report.keys:5d} {mb:8.1f} {report.seconds:8.1f} {mb / report.seconds:6.1f} "
          f"{len(writer.ledger.states) / report.written:15.2f} {rss_growth:14.1f} {journal_mb:11.1f} "
          f"{'passed' if report.passed else 'FAILED':>8}")
    print(f"(records made in memory in {made:.1f} s; {report.verified} of {report.acknowledged} verified)")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
