"""Peak memory and throughput of the restore engine against Cinder's pre-fix restore loop.

    .venv/bin/python benchmarks/restore_bench.py                      # small defaults, ~1-2 min
    .venv/bin/python benchmarks/restore_bench.py --concurrency 1,15,41,64 --chunk-mib 16,64,256 \
        --codec zlib,zstd,bz2 --volume-mib 512 --budget 256MiB

The baseline is the restore loop of bug 1865011 before its fix: read the whole object,
decompress it whole, write it synchronously (and fsync), keeping both buffers alive until the
next object.  Both restore the same backup N times at once into files on this machine, or
with `--sink rbd --target FILE` into N new RBD images of the target's cluster (drills.restore.
isolated: the baseline writes with synchronous Image.write, so librbd copies each chunk as in
the bug).  With `--sink rbd` each configuration also measures the cluster's raw RBD write
rate in the same run: N images written with 4 MiB aio_writes by the same kind of child.
Each run is its own subprocess; its peak RSS is the child's own VmHWM (/proc/self/status)
read as it ends.  The engine verifies md5 and sha256 while it streams; the baseline (like
Cinder) does not.  `--malloc-arena-max 2` (default) is given to the engine child only.

    .venv/bin/python benchmarks/restore_bench.py --sink rbd --target /var/lib/ceph-drills/h5/target.toml \
        --concurrency 1,15,41 --chunk-mib 16,64 --codec zlib --volume-mib 128 --budget 256MiB
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drills.restore.compression import decompress_whole, open_decoder  # noqa: E402
from drills.restore.budget import format_size, parse_size  # noqa: E402
from drills.restore.engine import EngineConfig, RestoreEngine, file_job  # noqa: E402
from drills.restore.format import cinder_prefix, read_manifest, write_backup  # noqa: E402
from drills.restore.store import ObjectReader, PosixBackupStore  # noqa: E402

if TYPE_CHECKING:
    from drills.restore.sinks import RbdConnection

MiB = 1 << 20
MIX = ("zlib", "zstd", "bz2", "none")  # codec "mix": one per object, in turn (a backup set written over years)


def make_volume_file(path: Path, size: int, seed: int = 42) -> None:
    """Mixed stretches (random 30%, zeros 30%, repetitive text 40%): compression halves it or so."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            n = min(rng.choice((256 * 1024, MiB, 3 * MiB)), size - written)
            kind = rng.random()
            if kind < 0.3:
                block = rng.randbytes(n)
            elif kind < 0.6:
                block = bytes(n)
            else:
                line = b"rack-%d osd.%d pg %x degraded write 45ms\n" % (rng.randrange(9), rng.randrange(99),
                                                                        rng.randrange(1 << 30))
                block = (line * (n // len(line) + 1))[:n]
            f.write(block)
            written += n


def decode_verify_rate(store: PosixBackupStore, prefix: str, copies: int, threads: int) -> float:
    """Bytes/s of decode + md5 + sha256 per 32 KiB block over `copies` passes of the backup."""
    manifest = read_manifest(store, prefix)
    work = [obj for _ in range(copies) for obj in manifest.objects]
    lock = threading.Lock()
    done = [0]

    def worker() -> None:
        window = bytearray(4 * MiB)
        view = memoryview(window)
        piece = bytearray(1 * MiB)
        while True:
            with lock:
                if not work:
                    return
                obj = work.pop()
            reader = ObjectReader(store, obj.name, store.open_object(obj.name), len(piece), piece)
            decoder = open_decoder(obj.codec, reader)
            md5 = hashlib.md5(usedforsecurity=False)
            left = obj.length
            while left:
                n = decoder.readinto(view[:min(len(view), left)])
                md5.update(view[:n])
                for start in range(0, n, 32768):
                    hashlib.sha256(view[start:min(start + 32768, n)]).digest()
                window.count(0, 0, n)  # the zero check the engine makes
                left -= n
            with lock:
                done[0] += obj.length

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return done[0] / (time.monotonic() - started)


# --- children ----------------------------------------------------------------------------

def _baseline_one(store_dir: Path, prefix: str, out: Path) -> int:
    """Cinder's _restore_v1 before the fix, minus eventlet."""

    meta = json.loads((store_dir / f"{prefix}_metadata").read_bytes())
    written = 0
    with open(out, "wb") as volume_file:
        for metadata_object in meta["objects"]:
            object_name, obj = list(metadata_object.items())[0]
            with open(store_dir / object_name, "rb") as reader:
                body = reader.read()
            decompressed = decompress_whole(body, obj["compression"])
            volume_file.write(decompressed)
            volume_file.flush()
            os.fsync(volume_file.fileno())
            written += len(decompressed)
    return written


def child(args: argparse.Namespace) -> int:
    store_dir, prefix = Path(args.backup).parent, Path(args.backup).name
    outs = [Path(args.outdir) / f"out{i}.img" for i in range(args.concurrency)]
    start = time.monotonic()
    result: dict[str, object] = {}
    if args.mode == "baseline":
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            total = sum(pool.map(lambda o: _baseline_one(store_dir, prefix, o), outs))
        result.update(bytes=total, ok=True, peak_reserved=0)
    else:
        store = PosixBackupStore(store_dir)
        engine = RestoreEngine(EngineConfig(memory_budget_bytes=args.budget, concurrency=args.concurrency,
                                            window_bytes=args.window, read_piece_bytes=args.read_piece))
        report = engine.run([file_job(store, prefix, str(o), name=f"r{i}") for i, o in enumerate(outs)])
        result.update(bytes=report.bytes_restored, ok=report.ok, peak_reserved=report.peak_reserved_bytes,
                      errors=[r.error for r in report.results if r.error][:3])
    result["seconds"] = time.monotonic() - start
    # VmHWM is this process image's own peak RSS: unlike ru_maxrss it does not inherit the
    # parent's RSS from before exec (Linux keeps that in signal->maxrss).
    status = Path("/proc/self/status").read_text()
    result["vm_hwm"] = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) * 1024
    print(json.dumps(result))
    return 0


# --- parent ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    seconds: float
    bytes: int
    peak_rss: int
    peak_reserved: int
    ok: bool


def run_child(mode: str, backup: Path, concurrency: int, outdir: Path, args: argparse.Namespace) -> RunResult:
    outdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "_child", "--mode", mode, "--backup", str(backup), "--concurrency",
           str(concurrency), "--outdir", str(outdir), "--budget", str(args.budget), "--window", str(args.window),
           "--read-piece", str(args.read_piece)]
    env = dict(os.environ)
    if mode == "engine" and args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = args.malloc_arena_max
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(outdir, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} child failed with status {proc.returncode}")
    data = json.loads(out.strip().splitlines()[-1])
    if not data["ok"]:
        raise SystemExit(f"{mode} child reported failures: {data.get('errors')}")
    return RunResult(data["seconds"], data["bytes"], data["vm_hwm"], data["peak_reserved"], data["ok"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode_or_child", nargs="?", default="bench", choices=("bench", "_child"))
    parser.add_argument("--concurrency", default="1,15", help="comma list, e.g. 1,15,41,64 (default 1,15)")
    parser.add_argument("--chunk-mib", default="16", help="backup chunk sizes in MiB, e.g. 16,64,256 (default 16)")
    parser.add_argument("--codec", default="zlib", help="comma list of zlib,zstd,bz2,none,mix (mix: the four in turn per object) (default zlib)")
    parser.add_argument("--volume-mib", type=int, default=64, help="volume size per backup (default 64)")
    parser.add_argument("--budget", type=parse_size, default=parse_size("64MiB"), help="engine budget (default 64MiB)")
    parser.add_argument("--window", type=parse_size, default=parse_size("4MiB"))
    parser.add_argument("--read-piece", type=parse_size, default=parse_size("1MiB"))
    parser.add_argument("--sink", choices=("file", "rbd"), default="file")
    parser.add_argument("--target", default="", help="drills target file (cluster) for --sink rbd")
    parser.add_argument("--pool", default="", help="RBD pool for --sink rbd (default: the target's)")
    parser.add_argument("--malloc-arena-max", default="2", help="MALLOC_ARENA_MAX of the engine child ('' = unset)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive baseline (its RSS is N x chunks)")
    parser.add_argument("--workdir", default="", help="scratch directory (default: a temporary one)")
    # child-only
    parser.add_argument("--mode", choices=("engine", "baseline"))
    parser.add_argument("--backup")
    parser.add_argument("--outdir")
    args = parser.parse_args(argv)
    if args.mode_or_child == "_child":
        args.concurrency = int(args.concurrency)
        return child(args)
    if args.sink == "rbd":
        return bench_rbd(args)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="restore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    volume = workdir / "volume.img"
    make_volume_file(volume, args.volume_mib * MiB)
    header = (f"{'chunk':>7} {'codec':>5} {'conc':>4} | {'baseline RSS':>12} {'engine RSS':>10} {'RSS ratio':>9} "
              f"{'budget':>9} {'peak rsvd':>9} | {'base MB/s':>9} {'eng MB/s':>8} {'speed ratio':>11}")
    rows = [header, "-" * len(header)]
    print(f"volume {args.volume_mib} MiB per restore, window {format_size(args.window)}, "
          f"read piece {format_size(args.read_piece)}, workdir {workdir}", flush=True)
    try:
        for chunk_mib in [int(c) for c in args.chunk_mib.split(",")]:
            for codec in args.codec.split(","):
                store = PosixBackupStore(workdir / f"backup-{chunk_mib}-{codec}")
                prefix = cinder_prefix("bench-volume", f"bench-{chunk_mib}-{codec}")
                write_backup(volume, store, prefix, chunk_mib * MiB, MIX if codec == "mix" else codec)
                backup = store.root / prefix
                for conc in concurrencies:
                    base = None if args.no_baseline else run_child("baseline", backup, conc, workdir / "out", args)
                    eng = run_child("engine", backup, conc, workdir / "out", args)
                    eng_rate = eng.bytes / eng.seconds / 1e6
                    base_rate = base.bytes / base.seconds / 1e6 if base else None
                    row = (f"{chunk_mib:>4}MiB {codec:>5} {conc:>4} | {format_size(base.peak_rss) if base else '-':>12} "
                           f"{format_size(eng.peak_rss):>10} {f'{base.peak_rss / eng.peak_rss:.1f}x' if base else '-':>9} "
                           f"{format_size(args.budget):>9} {format_size(eng.peak_reserved):>9} | "
                           f"{f'{base_rate:.0f}' if base_rate else '-':>9} {eng_rate:>8.0f} "
                           f"{f'{eng_rate / base_rate:.2f}x' if base_rate else '-':>11}")
                    rows.append(row)
                    print(row, flush=True)
                shutil.rmtree(store.root, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("\n".join(rows))
    return 0


# --- RBD sink ----------------------------------------------------------------------------

def _remove_images(connection: "RbdConnection", pool: str, names: list[str]) -> None:
    import rbd

    ioctx = connection.ioctx(pool)
    present = set(rbd.RBD().list(ioctx))
    for name in names:
        if name in present:
            rbd.RBD().remove(ioctx, name)


def bench_rbd(args: argparse.Namespace) -> int:
    from drills.restore.isolated import BackupRef, IsolatedJob, IsolatedRunSpec, run_isolated
    from drills.restore.sinks import RbdConnection
    from drills.target import load_target

    if not args.target:
        raise SystemExit("--sink rbd needs --target FILE (the cluster)")
    pool = args.pool or load_target(args.target).cluster.rbd_pool
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="restore-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    volume = workdir / "volume.img"
    make_volume_file(volume, args.volume_mib * MiB)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    arena = {"MALLOC_ARENA_MAX": args.malloc_arena_max} if args.malloc_arena_max else {}
    header = (f"{'chunk':>7} {'codec':>5} {'conc':>4} | {'baseline RSS':>12} {'engine RSS':>10} {'budget':>9} "
              f"{'eng/budget':>10} {'base/eng':>8} | {'raw MB/s':>8} {'base MB/s':>9} {'eng MB/s':>8} "
              f"{'eng/raw':>7} {'base/raw':>8} | {'dv MB/s':>7} {'eng/min':>7}")
    rows = [header, "-" * len(header)]
    print(f"rbd pool {pool}: volume {args.volume_mib} MiB per restore, budget {format_size(args.budget)}, window "
          f"{format_size(args.window)}, read piece {format_size(args.read_piece)}, engine env {arena or 'default'}; "
          "MB/s = volume bytes restored per second (zero stretches skipped by the engine count)", flush=True)
    connection = RbdConnection.from_target(args.target)
    tag = os.urandom(3).hex()
    try:
        for chunk_mib in [int(c) for c in args.chunk_mib.split(",")]:
            for codec in args.codec.split(","):
                store = PosixBackupStore(workdir / f"backup-{chunk_mib}-{codec}")
                prefix = cinder_prefix("bench-volume", f"bench-{chunk_mib}-{codec}")
                write_backup(volume, store, prefix, chunk_mib * MiB, MIX if codec == "mix" else codec)
                ref = BackupRef("posix", str(store.root), prefix)
                for conc in concurrencies:
                    results = {}
                    for mode in ("raw", "baseline", "engine"):
                        if mode == "baseline" and args.no_baseline:
                            continue
                        names = [f"bench-{tag}-{mode}-{chunk_mib}-{codec}-{conc}-{i}" for i in range(conc)]
                        spec = IsolatedRunSpec(mode, args.target, pool,
                                               tuple(IsolatedJob(None if mode == "raw" else ref, n) for n in names),
                                               budget_bytes=args.budget, concurrency=conc, window_bytes=args.window,
                                               read_piece_bytes=args.read_piece,
                                               raw_bytes_per_image=args.volume_mib * MiB,
                                               malloc_env=arena if mode == "engine" else {})
                        try:
                            result = run_isolated(spec, timeout=3600)
                        finally:
                            _remove_images(connection, pool, names)
                        if result.failed:
                            raise SystemExit(f"{mode} run failed: {result.failed[0].error} {result.stderr_tail[-500:]}")
                        results[mode] = result
                    # The other ceiling, in the same run: this machine decoding and verifying the same
                    # backup on as many threads as restores, no writes (goal: engine >= 0.9 x min(raw, this)).
                    dv_rate = decode_verify_rate(store, prefix, copies=conc, threads=conc) / 1e6
                    raw, eng = results["raw"], results["engine"]
                    base = results.get("baseline")
                    raw_rate, eng_rate = raw.mb_per_s_logical, eng.mb_per_s_logical
                    base_rss = format_size(base.vm_hwm_bytes) if base else "-"
                    base_ratio = f"{base.vm_hwm_bytes / eng.vm_hwm_bytes:>7.1f}x" if base else f"{'-':>8}"
                    base_rate = f"{base.mb_per_s_logical:>9.0f}" if base else f"{'-':>9}"
                    base_raw = f"{base.mb_per_s_logical / raw_rate:>8.2f}" if base else f"{'-':>8}"
                    row = (f"{chunk_mib:>4}MiB {codec:>5} {conc:>4} | {base_rss:>12} {format_size(eng.vm_hwm_bytes):>10} "
                           f"{format_size(args.budget):>9} {eng.vm_hwm_bytes / args.budget:>10.2f} {base_ratio} | "
                           f"{raw_rate:>8.0f} {base_rate} {eng_rate:>8.0f} {eng_rate / raw_rate:>7.2f} {base_raw} | "
                           f"{dv_rate:>7.0f} {eng_rate / min(raw_rate, dv_rate):>7.2f}")
                    rows.append(row)
                    print(row, flush=True)
                shutil.rmtree(store.root, ignore_errors=True)
    finally:
        connection.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
