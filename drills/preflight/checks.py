"""Preflight: is every host of the target fit for a destructive drill?

Per host, through drills.hostaccess (local hosts: a subprocess, in the host's netns; ssh hosts:
pytest-testinfra's paramiko backend over the run's shared connection):

  swap          SwapTotal > 0 in /proc/meminfo. The seed's advice: keep swap; without it a start-up
                peak goes straight to the OOM killer. A sandbox host (local, sharing this machine)
                only warns: its budget is its memory cgroup, not the machine's swap.
  memory        the host's memory for Ceph (memory_budget when set, else MemTotal; local hosts
                without a budget share the machine, so all their OSDs count against it) is at least
                osd_memory_target x OSDs + headroom (max(512 MiB, 25 %)).
  overcommit    vm.overcommit_memory: 0 (heuristic) passes; 1 (always) warns (the OOM killer is the
                only brake); 2 (strict, no overcommit) fails unless CommitLimit covers the OSDs
                (Ceph daemons abort on a failed allocation).
  daemons       every daemon the target lists for the host runs (sandbox: a process with its
                -c <ceph.conf> -i <id>; ssh: its systemd unit is active).
  clock         chronyc tracking: leap status Normal and |offset| < mon_clock_drift_allowed (0.05 s);
                without chrony, timedatectl NTPSynchronized=yes; with neither (e.g. no systemd) the
                check is unknown (a warning), never a pass.
  mtu           the MTU of the interface holding the host's cluster address (inside the sandbox
                host's netns); across hosts every MTU must be the same (the "mtu" row on host *).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from drills.cluster import ClusterError
from drills.hostaccess import HostAccess
from drills.target import Host, Target
from drills.units import MiB

PASS, WARN, FAIL = "pass", "warn", "FAIL"
CLOCK_DRIFT_ALLOWED_S = 0.05  # mon_clock_drift_allowed's default


@dataclass(frozen=True)
class PreflightCheck:
    host: str
    check: str
    status: str  # pass | warn | FAIL
    detail: str


@dataclass(frozen=True)
class PreflightReport:
    checks: tuple[PreflightCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def failures(self) -> list[PreflightCheck]:
        return [c for c in self.checks if c.status == FAIL]

    def table(self) -> str:
        rows = [("host", "check", "status", "detail")] + [(c.host, c.check, c.status, c.detail) for c in self.checks]
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
        lines.insert(1, "-" * (sum(w) + 6 + 20))
        verdict = "preflight passed" if self.ok else f"preflight FAILED: {len(self.failures)} check(s)"
        return "\n".join(lines + ["", verdict + f" ({sum(c.status == WARN for c in self.checks)} warning(s))"])


# Runs a shell command on a host; returns (rc, stdout). testinfra-backed in production, a dict in tests.
Runner = Callable[[Host, str], "tuple[int, str]"]


def host_runner(access: HostAccess) -> Runner:
    """Commands through the run's HostAccess: a subprocess (in the host's netns) for local (sandbox)
    hosts, testinfra's paramiko backend on the shared connection for ssh hosts. An unreachable host
    raises HostUnreachable naming it."""

    def run(host: Host, command: str) -> tuple[int, str]:
        r = access.run(host, command, check=False)
        return r.rc, r.stdout

    return run


def meminfo(text: str) -> dict[str, int]:
    """Pure: /proc/meminfo -> bytes per field."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        parts = v.split()
        if parts and parts[0].isdigit():
            out[k.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def check_swap(host: Host, mem: dict[str, int]) -> PreflightCheck:
    swap = mem.get("SwapTotal", 0)
    if swap > 0:
        return PreflightCheck(host.name, "swap", PASS, f"{swap / MiB:.0f} MiB of swap")
    if host.access.kind == "local":
        return PreflightCheck(host.name, "swap", WARN, "no swap on this machine (sandbox host: its memory cgroup is the budget)")
    return PreflightCheck(host.name, "swap", FAIL, "no swap: a start-up memory peak goes straight to the OOM killer (keep some swap)")


def required_memory(osds: int, osd_memory_target: int) -> int:
    base = osds * osd_memory_target
    return base + max(512 * MiB, base // 4)


def check_memory(host: Host, mem: dict[str, int], osd_memory_target: int, osds_sharing: int) -> PreflightCheck:
    osds = len(host.osd_ids)
    if osds == 0:
        return PreflightCheck(host.name, "memory", PASS, "no OSDs on this host")
    if host.memory_budget:
        have, what, count = host.memory_budget, "memory_budget", osds
    else:
        have, what, count = mem.get("MemTotal", 0), "MemTotal", osds_sharing
    need = required_memory(count, osd_memory_target)
    status = PASS if have >= need else FAIL
    return PreflightCheck(host.name, "memory", status,
                          f"{what} {have / MiB:.0f} MiB {'>=' if status == PASS else '<'} {count} OSD(s) x osd_memory_target "
                          f"{osd_memory_target / MiB:.0f} MiB + headroom = {need / MiB:.0f} MiB")


def check_overcommit(host: Host, mode: str, ratio: str, mem: dict[str, int], osd_memory_target: int) -> PreflightCheck:
    if mode == "0":
        return PreflightCheck(host.name, "overcommit", PASS, f"vm.overcommit_memory=0 (heuristic), ratio {ratio}")
    if mode == "1":
        return PreflightCheck(host.name, "overcommit", WARN, "vm.overcommit_memory=1 (always): allocations never fail, the OOM killer decides")
    if mode == "2":
        limit = mem.get("CommitLimit", 0)
        need = len(host.osd_ids) * osd_memory_target
        st = PASS if limit >= need else FAIL
        return PreflightCheck(host.name, "overcommit", st, f"vm.overcommit_memory=2 (strict), CommitLimit {limit / MiB:.0f} MiB vs OSDs' {need / MiB:.0f} MiB")
    return PreflightCheck(host.name, "overcommit", FAIL, f"cannot read vm.overcommit_memory ({mode!r})")


def parse_chrony(text: str) -> tuple[bool, str]:
    """Pure: `chronyc tracking` -> (in sync, detail)."""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}
    leap = fields.get("Leap status", "?")
    off = fields.get("System time", "")
    try:
        seconds = float(off.split()[0])
    except (IndexError, ValueError):
        return False, f"chronyc tracking unreadable (leap status {leap})"
    ok = leap == "Normal" and seconds < CLOCK_DRIFT_ALLOWED_S
    return ok, f"chrony: leap status {leap}, offset {seconds * 1000:.1f} ms (allowed {CLOCK_DRIFT_ALLOWED_S * 1000:.0f} ms)"


def check_clock(host: Host, run: Runner) -> PreflightCheck:
    rc, out = run(host, "command -v chronyc >/dev/null && chronyc -n tracking")
    if rc == 0 and out.strip():
        ok, detail = parse_chrony(out)
        return PreflightCheck(host.name, "clock", PASS if ok else FAIL, detail)
    rc, out = run(host, "timedatectl show -p NTPSynchronized --value 2>/dev/null")
    if rc == 0 and out.strip() in ("yes", "no"):
        return PreflightCheck(host.name, "clock", PASS if out.strip() == "yes" else FAIL, f"timedatectl NTPSynchronized={out.strip()}")
    return PreflightCheck(host.name, "clock", WARN, "no chronyc and no working timedatectl: sync unknown")


def daemon_running_command(target: Target, daemon: str) -> str:
    kind, _, ident = daemon.partition(".")
    if target.cluster.deployment == "sandbox":
        # The sandbox's pid file names the process; its command line must name this sandbox's ceph.conf
        # (a pgrep -f would match the checking shell itself).
        from pathlib import Path

        conf = target.cluster.conf
        pidfile = Path(conf).parent / "run" / f"{daemon}.pid"
        return (f"p=$(cat {shlex.quote(str(pidfile))} 2>/dev/null) && [ -n \"$p\" ] && "
                f"tr '\\0' ' ' < /proc/$p/cmdline | grep -qF -- {shlex.quote(conf)}")
    from drills.faults.backends.ssh import unit_name

    return f"systemctl is-active --quiet {shlex.quote(unit_name(daemon, target.cluster.deployment, target.cluster.fsid))}"


def check_daemons(target: Target, host: Host, run: Runner) -> PreflightCheck:
    down = [d for d in host.daemons if run(host, daemon_running_command(target, d))[0] != 0]
    if down:
        return PreflightCheck(host.name, "daemons", FAIL, f"not running: {', '.join(down)}")
    return PreflightCheck(host.name, "daemons", PASS, f"{len(host.daemons)} running: {', '.join(host.daemons)}")


def mtu_command(address: str) -> str:
    return (f"dev=$(ip -o addr show to {shlex.quote(address)} | awk '{{print $2}}' | head -n1); "
            "[ -n \"$dev\" ] && echo \"$dev $(cat /sys/class/net/$dev/mtu)\"")


def check_mtus(mtus: dict[str, tuple[str, int] | None]) -> PreflightCheck:
    """Pure: host -> (interface, mtu) or None; every known MTU must be the same."""
    unknown = sorted(h for h, v in mtus.items() if v is None)
    values = {v[1] for v in mtus.values() if v is not None}
    listed = ", ".join(f"{h} {v[0]}={v[1]}" for h, v in sorted(mtus.items()) if v is not None)
    if unknown:
        return PreflightCheck("*", "mtu", FAIL, f"no interface holds the cluster address on {', '.join(unknown)}; {listed}")
    if len(values) > 1:
        return PreflightCheck("*", "mtu", FAIL, f"MTUs differ on the cluster network: {listed}")
    return PreflightCheck("*", "mtu", PASS, f"all {len(mtus)} hosts MTU {values.pop() if values else '?'}")


def run_preflight(target: Target, run: Runner, osd_memory_target: int | None, unread: str = "") -> PreflightReport:
    """``osd_memory_target`` None: not measured (``unread`` says why); every check that needs it fails."""
    checks: list[PreflightCheck] = []
    local_osds = sum(len(h.osd_ids) for h in target.hosts if h.access.kind == "local" and not h.memory_budget)
    mtus: dict[str, tuple[str, int] | None] = {}
    for host in target.hosts:
        rc, out = run(host, "cat /proc/meminfo")
        if rc != 0:
            checks.append(PreflightCheck(host.name, "reach", FAIL, "cannot read /proc/meminfo (host unreachable?)"))
            continue
        mem = meminfo(out)
        checks.append(check_swap(host, mem))
        rc, out = run(host, "cat /proc/sys/vm/overcommit_memory /proc/sys/vm/overcommit_ratio")
        vals = out.split() + ["?", "?"]
        if osd_memory_target is not None:
            checks.append(check_memory(host, mem, osd_memory_target, local_osds if host.access.kind == "local" else len(host.osd_ids)))
            checks.append(check_overcommit(host, vals[0], vals[1], mem, osd_memory_target))
        else:
            why = unread or "osd_memory_target not read"
            if host.osd_ids:
                checks.append(PreflightCheck(host.name, "memory", FAIL, f"cannot judge: {why}"))
            else:
                checks.append(PreflightCheck(host.name, "memory", PASS, "no OSDs on this host"))
            checks.append(check_overcommit(host, vals[0], vals[1], mem, 0) if vals[0] != "2" or not host.osd_ids else
                          PreflightCheck(host.name, "overcommit", FAIL, f"vm.overcommit_memory=2 (strict): cannot judge: {why}"))
        checks.append(check_daemons(target, host, run))
        checks.append(check_clock(host, run))
        if host.address:
            rc, out = run(host, mtu_command(host.address))
            parts = out.split()
            mtus[host.name] = (parts[0], int(parts[1])) if rc == 0 and len(parts) == 2 and parts[1].isdigit() else None
    if mtus:
        checks.append(check_mtus(mtus))
    return PreflightReport(tuple(checks))


class NotMeasured(ClusterError):
    """A value that could not be read from the cluster; the message says why. Never replaced by a default."""


def osd_memory_target_of(target: Target) -> int:
    """osd_memory_target as a running OSD has it (ceph.conf or config db). Raises NotMeasured when the
    cluster cannot be reached or no up OSD answers: a guessed 4 GiB would size budgets for memory
    nobody measured."""
    from drills.cluster import CephCluster

    try:
        with CephCluster(target, connect_timeout=10) as c:
            return running_osd_memory_target(c)
    except NotMeasured:
        raise
    except ClusterError as e:
        raise NotMeasured(f"osd_memory_target not read: {e}") from None


def running_osd_memory_target(cluster: Any) -> int:
    """The first up OSD's running osd_memory_target (`ceph tell osd.N config get`); NotMeasured when none answers."""
    tried: list[str] = []
    try:
        up = sorted(cluster.osds_up())
    except Exception as e:  # noqa: BLE001
        raise NotMeasured(f"osd_memory_target not read: the OSD map is unreadable ({e})") from None
    for osd in up:
        try:
            out = cluster.osd_command(osd, "config get", var="osd_memory_target")
            return int(float(out["osd_memory_target"] if isinstance(out, dict) else out))
        except Exception as e:  # noqa: BLE001 - try the next OSD
            tried.append(f"osd.{osd}: {type(e).__name__}: {e}"[:160])
            continue
    if not up:
        raise NotMeasured("osd_memory_target not read: no OSD is up to ask")
    raise NotMeasured(f"osd_memory_target not read: no up OSD answered ({'; '.join(tried[:3])})")


def preflight(target: Target, run: Runner | None = None, osd_memory_target: int | None = None,
              access: HostAccess | None = None) -> PreflightReport:
    """Every check on every host. An osd_memory_target that cannot be read fails the memory checks
    (with why) instead of assuming Ceph's default. Commands go through ``run``, else ``access`` (the
    run's HostAccess), else a HostAccess of this call's own, closed at the end."""
    if run is None and access is None:
        with HostAccess(target) as own:
            return preflight(target, None, osd_memory_target, own)
    unread = ""
    if osd_memory_target is None:
        try:
            osd_memory_target = osd_memory_target_of(target)
        except NotMeasured as e:
            unread = str(e)
    return run_preflight(target, run or host_runner(access), osd_memory_target, unread)  # type: ignore[arg-type]


__all__: Sequence[str] = ("PreflightCheck", "PreflightReport", "preflight", "run_preflight", "NotMeasured", "osd_memory_target_of",
                          "running_osd_memory_target", "PASS", "WARN", "FAIL")
