"""`drill`: the command line. Each room adds its subcommand here; errors are one line and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from drills import __version__
from drills.cluster import ClusterError
from drills.faults import cli as faults_cli
from drills.faults.base import FaultError
from drills.faults.guard import GuardRefused
from drills.preflight import cli as preflight_cli
from drills.restart import cli as restart_cli
from drills.restore import cli as restore_cli
from drills.sandbox.spec import DEFAULT_DIR, DEFAULT_PREFIX, DEFAULT_SUBNET, GiB, SandboxError, SandboxSpec
from drills.target import TargetError
from drills.thresholds import ThresholdsError

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2

DEFAULT_TARGET_ENV = "DRILL_TARGET"


def default_target_path() -> str:
    return os.environ.get(DEFAULT_TARGET_ENV) or str(Path(DEFAULT_DIR) / "target.toml")


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> int:
    from drills.units import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


# --- sandbox -------------------------------------------------------------------


def _spec_from_args(a: argparse.Namespace) -> SandboxSpec:
    return SandboxSpec(
        dir=a.dir,
        racks=a.racks,
        hosts_per_rack=a.hosts_per_rack,
        osds_per_host=a.osds_per_host,
        subnet=a.subnet,
        prefix=a.prefix,
        osd_size=a.osd_size,
        osd_memory_target=a.osd_memory_target,
        rgw=not a.no_rgw,
        host_memory=a.host_memory,
    )


def _existing_spec(a: argparse.Namespace) -> SandboxSpec:
    from drills.sandbox.bootstrap import load_spec

    return load_spec(a.dir) or SandboxSpec(dir=a.dir, prefix=a.prefix)


def cmd_sandbox_up(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    r = bootstrap.up(_spec_from_args(a), timeout=a.timeout)
    print(f"sandbox up in {r.seconds:.1f} s: {len(r.target.osd_ids)} OSDs in {len(r.target.racks)} racks; target file {r.target.path or _spec_from_args(a).target_path}")
    return EXIT_OK


def cmd_sandbox_down(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    spec = _existing_spec(a)
    r = bootstrap.down(spec, log=lambda m: None)
    left = bootstrap.leftovers(spec)
    print(f"sandbox down in {r.seconds:.1f} s: {r.processes_killed} processes stopped, {len(r.removed)} items removed")
    if left:
        print(f"drill: error: still present after down: {', '.join(left)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_sandbox_status(a: argparse.Namespace) -> int:
    from drills.sandbox import bootstrap

    spec = _existing_spec(a)
    if not spec.path.exists():
        print(f"no sandbox in {spec.dir} (start one with: drill sandbox up)")
        return EXIT_FAILED
    st = bootstrap.status(spec)
    if a.json:
        print(json.dumps(st, indent=2))
    else:
        print(f"sandbox {st['dir']}: {st['health']}")
        for name, d in st["daemons"].items():
            rss = f"{d['rss'] / 2**20:7.1f} MiB" if d["rss"] else "      -"
            print(f"  {name:22s} host {d['host']:5s} pid {d['pid'] or '-':>8}  rss {rss}")
    return EXIT_OK if st["health"] == "HEALTH_OK" else EXIT_FAILED


def cmd_sandbox_logs(a: argparse.Namespace) -> int:
    spec = _existing_spec(a)
    logdir = spec.path / "log"
    if not logdir.is_dir():
        raise SandboxError(f"no sandbox logs in {logdir}; is the sandbox up? (drill sandbox status)")
    files = sorted(logdir.glob(f"{a.daemon}.log" if a.daemon else "*.log"))
    if not files:
        raise SandboxError(f"no log for {a.daemon!r} in {logdir}; daemons: {', '.join(p.stem for p in sorted(logdir.glob('*.log')))}")
    for f in files:
        lines = f.read_text(errors="replace").splitlines()[-a.lines :]
        print(f"==> {f} <==")
        print("\n".join(lines))
    return EXIT_OK


def cmd_sandbox_power(a: argparse.Namespace) -> int:
    """Cut or restore one sandbox host's power (what a BMC emulator's power action calls)."""
    from drills.faults.backends.sandbox import SandboxBackend
    from drills.target import load_target

    spec = _existing_spec(a)
    target = load_target(spec.target_path)
    host = target.host(a.host)
    backend = SandboxBackend(target)
    if a.state == "off":
        backend.power_off(host)
    else:
        backend.power_on(host, start_daemons=not a.hold)
    print(f"host {host.name}: power {a.state}{' (daemons held)' if a.hold and a.state == 'on' else ''}")
    return EXIT_OK


# --- target --------------------------------------------------------------------


def cmd_target_check(a: argparse.Namespace) -> int:
    from drills.cluster import CephCluster
    from drills.target import load_target

    t = load_target(a.target)
    print(f"target {t.path}: cluster {t.cluster.name}, {len(t.racks)} racks, {len(t.hosts)} hosts, {len(t.osd_ids)} OSDs, destructive={t.destructive}")
    if a.connect:
        with CephCluster(t) as c:
            topo = c.topology()
            print(f"connected: fsid {c.fsid()}, {c.health_status()}, live CRUSH racks: {', '.join(sorted(topo.racks))}")
    return EXIT_OK


# --- run -------------------------------------------------------------------------


def cmd_run(a: argparse.Namespace) -> int:
    from drills.runner import run_suite

    return run_suite(
        target=a.target,
        suite=a.suite,
        thresholds=a.thresholds,
        report_dir=a.report_dir,
        dry_run=a.dry_run,
        extra=a.pytest_args,
    )


def cmd_report(a: argparse.Namespace) -> int:
    """Re-render a run's report (and the runs index beside it) from its timeline and results."""
    from drills.report import render_index, render_run, write_prom, write_summary_json

    run_dir = Path(a.run_dir)
    if not (run_dir / "run.json").is_file() and not (run_dir / "events.jsonl").is_file():
        raise TargetError(f"{run_dir} is not a run directory (no run.json or events.jsonl); pass reports/<run-id>")
    write_summary_json(run_dir)
    write_prom(run_dir)
    page = render_run(run_dir)
    index = render_index(run_dir.resolve().parent)
    print(f"report {page}; runs index {index}")
    return EXIT_OK


# --- parser --------------------------------------------------------------------


def build_parser() -> ArgParser:
    p = ArgParser(prog="drill", description="Chaos drills for Ceph clusters.")
    p.add_argument("--version", action="version", version=f"ceph-drills {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgParser)

    sb = sub.add_parser("sandbox", help="a real Ceph cluster on this machine")
    sbs = sb.add_subparsers(dest="action", required=True, parser_class=ArgParser)

    def dir_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory (default {DEFAULT_DIR})")
        q.add_argument("--prefix", default=DEFAULT_PREFIX, help="tag for namespaces, links and cgroups (default %(default)s)")

    up = sbs.add_parser("up", help="start the sandbox (idempotent; replaces a crashed one) and write its target file")
    dir_opts(up)
    up.add_argument("--racks", type=int, default=3)
    up.add_argument("--hosts-per-rack", type=int, default=2)
    up.add_argument("--osds-per-host", type=int, default=1)
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="addresses of the sandbox's bridge and hosts (default %(default)s)")
    up.add_argument("--osd-size", type=_size, default=8 * GiB, help="sparse BlueStore file per OSD; all of them must fit the disk when full (default 8GiB)")
    up.add_argument("--osd-memory-target", type=_size, default=1 * GiB, help="osd_memory_target (default 1GiB)")
    up.add_argument("--no-rgw", action="store_true", help="do not start radosgw")
    up.add_argument("--host-memory", type=_size, default=0, help="memory cgroup limit per OSD host, e.g. 1536MiB (default 0: none)")
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for HEALTH_OK")
    up.set_defaults(func=cmd_sandbox_up)

    for name, fn, helptext in (("down", cmd_sandbox_down, "stop the sandbox and remove everything it made"), ("status", cmd_sandbox_status, "daemons, pids, RSS and health")):
        q = sbs.add_parser(name, help=helptext)
        dir_opts(q)
        if name == "status":
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=fn)
    pw = sbs.add_parser("power", help="cut or restore one sandbox host's power (silent: its network drops, its daemons die)")
    dir_opts(pw)
    pw.add_argument("host", help="sandbox host, e.g. r1h1")
    pw.add_argument("state", choices=("on", "off"))
    pw.add_argument("--hold", action="store_true", help="with on: keep its daemons stopped for a controlled start")
    pw.set_defaults(func=cmd_sandbox_power)
    lg = sbs.add_parser("logs", help="the tail of the daemons' logs")
    dir_opts(lg)
    lg.add_argument("daemon", nargs="?", help="e.g. osd.3, mon.a (default: all)")
    lg.add_argument("-n", "--lines", type=_positive, default=20)
    lg.set_defaults(func=cmd_sandbox_logs)

    tg = sub.add_parser("target", help="check a target file")
    tg.add_argument("--target", default=default_target_path())
    tg.add_argument("--connect", action="store_true", help="also connect and compare the live cluster")
    tg.set_defaults(func=cmd_target_check)

    run = sub.add_parser("run", help="run a drill suite against a target and write the report")
    run.add_argument("--target", default=default_target_path())
    run.add_argument("--suite", default="smoke", help="smoke | nightly | full (default smoke)")
    run.add_argument("--thresholds", default=None, help="thresholds TOML (default: the shipped one)")
    run.add_argument("--report-dir", default="reports")
    run.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    run.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="re-render a run's HTML report from its run directory")
    rp.add_argument("run_dir", help="reports/<run-id>")
    rp.set_defaults(func=cmd_report)

    restore_cli.add_parser(sub)
    faults_cli.add_parser(sub, default_target_path())
    restart_cli.add_parser(sub, default_target_path())
    preflight_cli.add_parser(sub, default_target_path())
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SandboxError, TargetError, ClusterError, FaultError, GuardRefused, ThresholdsError) as e:
        print(f"drill: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("drill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
