"""Where a many-restore run spends its time, beside the two rates that bound it, in one run.

Prints, measured back to back on the same backups:
* decode+verify rate: this machine decoding the backup's objects and checking md5 and the
  sha256 of every 32 KiB block on COUNT threads (as many as the engine runs: on a shared
  machine the scheduler's share grows with the thread count), no writes: the ceiling of any
  restore of this codec mix;
* raw write rate: COUNT writers, 4 MiB sequential pwrites into COUNT files, fsync'd (file
  sink only; for RBD, `restore_bench.py --sink rbd` and the drill print raw vs engine);
* the engine: COUNT restores under py-spy (all threads, non-blocking sampling, idle samples
  dropped; Python frames: C work such as inflate or sha256 shows as the Python line calling it), its
  aggregate rate and the ratio to min(raw, decode+verify); then the profile by activity
  (leaf function) and by the engine function that called it.

    .venv/bin/python benchmarks/restore_profile.py --count 41 --volume-mib 32 --chunk-mib 16 --codec zlib
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.restore_bench import MIX, decode_verify_rate, make_volume_file  # noqa: E402
from drills.restore.budget import parse_size  # noqa: E402
from drills.restore.format import cinder_prefix, write_backup  # noqa: E402
from drills.restore.store import PosixBackupStore  # noqa: E402

MiB = 1 << 20


def raw_file_rate(outdir: Path, count: int, size: int) -> float:
    payload = os.urandom(4 * MiB)

    def writer(i: int) -> None:
        fd = os.open(outdir / f"raw{i}.img", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for offset in range(0, size, len(payload)):
                os.pwrite(fd, payload[:min(len(payload), size - offset)], offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    started = time.monotonic()
    pool = [threading.Thread(target=writer, args=(i,)) for i in range(count)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.monotonic() - started
    for i in range(count):
        (outdir / f"raw{i}.img").unlink(missing_ok=True)
    return count * size / seconds


def engine_child(args: argparse.Namespace) -> int:
    from drills.restore.engine import EngineConfig, RestoreEngine, file_job
    from drills.restore.memory import prepare_process_allocator

    prepare_process_allocator()
    store = PosixBackupStore(args.container)
    engine = RestoreEngine(EngineConfig(memory_budget_bytes=args.budget, concurrency=args.count))
    report = engine.run([file_job(store, args.prefix, str(Path(args.outdir) / f"out{i}.img"), name=f"r{i}")
                         for i in range(args.count)])
    print(json.dumps({"ok": report.ok, "bytes": report.bytes_restored, "seconds": report.seconds,
                      "errors": [r.error for r in report.results if r.error][:3]}), flush=True)
    return 0


def summarize(raw_profile: Path, top: int = 14) -> list[str]:
    """py-spy --format raw: 'frame;frame;... count' lines, root first. Leaf and engine-caller tables."""
    leaf: collections.Counter[str] = collections.Counter()
    caller: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf[_short(frames[-1])] += count
        engine_frames = [f for f in frames if "drills/restore/" in f or "drills.restore" in f]
        caller[_short(engine_frames[-1]) if engine_frames else "(outside the engine: " + _short(frames[-1]) + ")"] += count
    lines = [f"{total} non-idle samples (all threads)", "", "by activity (leaf frame):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in leaf.most_common(top)]
    lines += ["", "by the engine function on the stack (innermost):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in caller.most_common(top)]
    return lines


def _short(frame: str) -> str:
    # py-spy raw frames: "function (path/file.py:line)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    return f"{name} ({Path(path).name or where})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "_child"))
    parser.add_argument("--count", type=int, default=41)
    parser.add_argument("--volume-mib", type=int, default=32)
    parser.add_argument("--chunk-mib", type=int, default=16)
    parser.add_argument("--codec", default="zlib", help="zlib | zstd | bz2 | none | mix (per object)")
    parser.add_argument("--budget", type=parse_size, default=parse_size("256MiB"))
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true",
                        help="run the engine once more under py-spy --gil: the share of the run some thread held the GIL")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--container")
    parser.add_argument("--prefix")
    parser.add_argument("--outdir")
    args = parser.parse_args(argv)
    if args.mode == "_child":
        return engine_child(args)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="restore-profile-"))
    outdir = workdir / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        volume = workdir / "volume.img"
        make_volume_file(volume, args.volume_mib * MiB)
        store = PosixBackupStore(workdir / "backup")
        prefix = cinder_prefix("profile-volume", "profile")
        write_backup(volume, store, prefix, args.chunk_mib * MiB, MIX if args.codec == "mix" else args.codec)
        load = os.getloadavg()[0]
        cores = os.cpu_count() or 1
        # The machine is shared: decode+verify is measured before and after the engine, and the
        # higher (the stricter ceiling) is used.
        dv_before = decode_verify_rate(store, prefix, copies=args.count, threads=args.count)
        raw_rate = raw_file_rate(outdir, args.count, args.volume_mib * MiB)
        profile = workdir / "profile.raw"
        cmd = [spy, "record", "--threads", "--nonblocking", "--rate", str(args.rate), "--format", "raw",
               "-o", str(profile), "--", sys.executable, __file__, "_child", "--count", str(args.count),
               "--budget", str(args.budget), "--container", str(store.root), "--prefix", prefix, "--outdir",
               str(outdir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"engine under py-spy failed ({proc.returncode}): {proc.stderr[-800:]}")
        result = json.loads(lines[-1])
        if not result["ok"]:
            raise SystemExit(f"restores failed: {result['errors']}")
        engine_rate = result["bytes"] / result["seconds"]
        dv_after = decode_verify_rate(store, prefix, copies=args.count, threads=args.count)
        dv_rate = max(dv_before, dv_after)
        bound = min(raw_rate, dv_rate)
        print(f"{args.count} restores x {args.volume_mib} MiB, {args.chunk_mib} MiB {args.codec} chunks, file sink, "
              f"{cores} cores, load {load:.1f} before the run")
        print(f"  decode+verify ({args.count} threads) {dv_rate / 1e6:6.0f} MB/s (before {dv_before / 1e6:.0f}, after "
              f"{dv_after / 1e6:.0f}; load {os.getloadavg()[0]:.1f} now)")
        print(f"  raw writes ({args.count} writers)   {raw_rate / 1e6:8.0f} MB/s")
        print(f"  engine (under py-spy)      {engine_rate / 1e6:8.0f} MB/s = {engine_rate / bound:.2f} x "
              f"min(raw, decode+verify) (goal >= 0.90)")
        if args.gil:
            gil_profile = workdir / "gil.raw"
            gil_cmd = [c if c != str(profile) else str(gil_profile) for c in cmd]
            gil_cmd.insert(gil_cmd.index("--threads"), "--gil")
            for image in outdir.glob("out*.img"):
                image.unlink()
            gil_proc = subprocess.run(gil_cmd, capture_output=True, text=True)
            gil_lines = [line for line in gil_proc.stdout.splitlines() if line.startswith("{")]
            if gil_proc.returncode == 0 and gil_lines:
                gil_result = json.loads(gil_lines[-1])
                held = sum(int(line.rpartition(" ")[2]) for line in gil_profile.read_text().splitlines()
                           if line.rpartition(" ")[2].isdigit())
                # py-spy --gil keeps only the samples in which a thread held the GIL; the child's
                # start-up (imports) is in them too, so this slightly overstates the restore's share.
                share = held / (gil_result["seconds"] * args.rate)
                print(f"  GIL held in {100 * min(share, 1.0):.0f} % of the engine's run (py-spy --gil, "
                      f"{held} samples in {gil_result['seconds']:.1f} s at {args.rate} Hz; second run "
                      f"{gil_result['bytes'] / gil_result['seconds'] / 1e6:.0f} MB/s)")
            else:
                print(f"  GIL share not measured: py-spy --gil run failed ({gil_proc.returncode})")
        print()
        print("\n".join(summarize(profile)))
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
