"""`drill sandbox up|down|status|power|logs`: the sandbox room's commands."""

from __future__ import annotations

import argparse
import json
import sys

from drills.sandbox.spec import DEFAULT_DIR, DEFAULT_PREFIX, DEFAULT_SUBNET, SandboxError, SandboxSpec
from drills.units import GiB, size_arg

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    sb = sub.add_parser("sandbox", help="a real Ceph cluster on this machine")
    sbs = sb.add_subparsers(dest="action", required=True)  # the parent's class: one-line errors

    def dir_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dir", default=DEFAULT_DIR, help=f"sandbox directory (default {DEFAULT_DIR})")
        q.add_argument("--prefix", default=DEFAULT_PREFIX, help="tag for namespaces, links and cgroups (default %(default)s)")

    up = sbs.add_parser("up", help="start the sandbox (idempotent; replaces a crashed one) and write its target file")
    dir_opts(up)
    up.add_argument("--racks", type=int, default=3)
    up.add_argument("--hosts-per-rack", type=int, default=2)
    up.add_argument("--osds-per-host", type=int, default=1)
    up.add_argument("--subnet", default=DEFAULT_SUBNET, help="addresses of the sandbox's bridge and hosts (default %(default)s)")
    up.add_argument("--osd-size", type=size_arg, default=8 * GiB, help="sparse BlueStore file per OSD; all of them must fit the disk when full (default 8GiB)")
    up.add_argument("--osd-memory-target", type=size_arg, default=1 * GiB, help="osd_memory_target (default 1GiB)")
    up.add_argument("--no-rgw", action="store_true", help="do not start radosgw")
    up.add_argument("--pgs-per-pool", type=int, default=32,
                    help="PGs of the rbd and drills pools: 8 to 256, a power of two (default %(default)s; the "
                         "shipped limits were calibrated with it)")
    up.add_argument("--allocator", choices=("glibc", "tcmalloc"), default="glibc",
                    help="the daemons' malloc: glibc (Debian's build) or tcmalloc (Debian's libtcmalloc preloaded, "
                         "as upstream builds link it) (default %(default)s)")
    up.add_argument("--host-memory", type=size_arg, default=0, help="memory cgroup limit per OSD host, e.g. 1536MiB (default 0: none)")
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


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {n})")
    return n


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
        allocator=a.allocator,
        pool_pgs=a.pgs_per_pool,
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
