"""Local plumbing for sandbox hosts: network namespaces on a bridge, daemons with pid files.

Each logical host is a network namespace with one veth link on the sandbox bridge and
its own address, so a fault can silence one host (nftables drop inside its namespace)
and leave the others alone. Daemons are real Ceph binaries started with
`ip netns exec`, daemonised, tracked by pid files under <dir>/run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from drills.sandbox.spec import SandboxError, SandboxHost, SandboxSpec


def sh(*args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(list(args), capture_output=True, text=True, input=input, timeout=timeout)
    except FileNotFoundError:
        raise SandboxError(f"{args[0]} not found; run scripts/setup.sh to install the sandbox's Debian packages") from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise SandboxError(f"{' '.join(a for a in args[:6] if not a.startswith('--secret'))} failed (exit {p.returncode}): {msg[-1] if msg else 'no output'}")
    return p


# --- network -----------------------------------------------------------------


def list_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def create_network(spec: SandboxSpec) -> None:
    prefixlen = spec.network.prefixlen
    if not link_exists(spec.bridge):
        sh("ip", "link", "add", spec.bridge, "type", "bridge")
    sh("ip", "addr", "replace", f"{spec.bridge_address}/{prefixlen}", "dev", spec.bridge)
    sh("ip", "link", "set", spec.bridge, "up")
    for h in spec.hosts:
        create_host_netns(spec, h)


def create_host_netns(spec: SandboxSpec, h: SandboxHost) -> None:
    if h.netns not in list_netns():
        sh("ip", "netns", "add", h.netns)
    if not link_exists(h.veth_bridge):
        sh("ip", "link", "add", h.veth_bridge, "type", "veth", "peer", "name", h.veth_host, "netns", h.netns)
    sh("ip", "link", "set", h.veth_bridge, "master", spec.bridge, "up")
    ns = ("ip", "netns", "exec", h.netns)
    sh(*ns, "ip", "link", "set", "lo", "up")
    sh(*ns, "ip", "addr", "replace", f"{h.address}/{spec.network.prefixlen}", "dev", h.veth_host)
    sh(*ns, "ip", "link", "set", h.veth_host, "up")


def delete_network(spec: SandboxSpec) -> list[str]:
    """Remove every namespace and link with the sandbox's prefix, including ones an older,
    differently sized sandbox left behind."""
    removed = []
    for ns in list_netns():
        if ns.startswith(f"{spec.prefix}-"):
            for pid in netns_pids(ns):
                _kill_pid(pid, signal.SIGKILL)
            sh("ip", "netns", "delete", ns, check=False)
            removed.append(ns)
    for link in os.listdir("/sys/class/net"):
        if link == spec.bridge or (link.startswith(spec.prefix) and link[len(spec.prefix) :][:1] in ("b", "h") and link[len(spec.prefix) + 1 :].isdigit()):
            sh("ip", "link", "delete", link, check=False)
            removed.append(link)
    return removed


def netns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


# --- daemons -----------------------------------------------------------------

DAEMON_BINARIES = {"mon": "ceph-mon", "mgr": "ceph-mgr", "osd": "ceph-osd", "client": "radosgw"}


def pid_file(spec: SandboxSpec, daemon: str) -> Path:
    return spec.path / "run" / f"{daemon}.pid"


def daemon_pid(spec: SandboxSpec, daemon: str) -> int | None:
    """The live pid of a sandbox daemon, or None. A stale pid file (dead or reused pid) reads as None."""
    try:
        pid = int(pid_file(spec, daemon).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return None
    return pid if str(spec.conf_path) in cmd else None


def daemon_command(spec: SandboxSpec, daemon: str) -> list[str]:
    kind, ident = daemon.split(".", 1)
    binary = DAEMON_BINARIES[kind]
    if kind == "client":
        return [binary, "-c", str(spec.conf_path), "-n", daemon]
    return [binary, "-c", str(spec.conf_path), "-i", ident]


def start_daemon(spec: SandboxSpec, host: SandboxHost, daemon: str, cgroup_procs: Path | None = None) -> int:
    """Start a daemon in its host's namespace; returns its pid once the pid file names a live process.

    Ceph daemons fork into the background themselves and write `pid_file`.
    """
    if (pid := daemon_pid(spec, daemon)) is not None:
        return pid
    pid_file(spec, daemon).unlink(missing_ok=True)
    cmd = ["ip", "netns", "exec", host.netns, *daemon_command(spec, daemon)]
    log = open(spec.path / "log" / f"{daemon}.stderr", "ab")
    pre = None
    if cgroup_procs is not None:
        def pre() -> None:  # join the host's memory cgroup before exec, so children inherit it
            cgroup_procs.write_text(str(os.getpid()))
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=pre, start_new_session=True)
    rc = p.wait(timeout=120)  # returns when the daemon has forked
    log.close()
    if rc != 0:
        raise SandboxError(f"{daemon} failed to start (exit {rc}); see {spec.path / 'log' / (daemon + '.stderr')} and {daemon}.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (pid := daemon_pid(spec, daemon)) is not None:
            return pid
        time.sleep(0.1)
    raise SandboxError(f"{daemon} did not write its pid file within 30 s; see {spec.path / 'log' / (daemon + '.log')}")


def signal_daemon(spec: SandboxSpec, daemon: str, sig: int) -> int | None:
    pid = daemon_pid(spec, daemon)
    if pid is not None:
        _kill_pid(pid, sig)
    return pid


def stop_daemon(spec: SandboxSpec, daemon: str, timeout: float = 20) -> None:
    """Graceful stop: SIGTERM, then SIGKILL if it lingers."""
    pid = daemon_pid(spec, daemon)
    if pid is None:
        return
    _kill_pid(pid, signal.SIGCONT)  # a hung (SIGSTOPped) daemon cannot act on SIGTERM
    _kill_pid(pid, signal.SIGTERM)
    if not wait_gone(pid, timeout):
        _kill_pid(pid, signal.SIGKILL)
        wait_gone(pid, 10)


def _kill_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pid: int, timeout: float) -> bool:
    """True once the process has exited (also when it was never there), False after ``timeout`` seconds."""
    try:
        psutil.Process(pid).wait(timeout)
        return True
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False


def sandbox_processes(spec: SandboxSpec) -> list[psutil.Process]:
    """Every process of this sandbox, found by its config path on the command line."""
    conf = str(spec.conf_path)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if conf in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid():
                found.append(p)
        except psutil.Error:
            continue
    return found


def kill_all(spec: SandboxSpec) -> int:
    procs = sandbox_processes(spec)
    for p in procs:
        try:
            p.send_signal(signal.SIGCONT)
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=15)
    return len(procs)
