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
from concurrent.futures import ThreadPoolExecutor
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
    existing = set(list_netns())
    # Hosts are independent: their `ip` commands (a few ms of waiting each) run side by side.
    with ThreadPoolExecutor(max_workers=len(spec.hosts)) as ex:
        list(ex.map(lambda h: create_host_netns(spec, h, existing), spec.hosts))


def create_host_netns(spec: SandboxSpec, h: SandboxHost, existing_netns: set[str] | None = None) -> None:
    if h.netns not in (existing_netns if existing_netns is not None else set(list_netns())):
        sh("ip", "netns", "add", h.netns)
    if not link_exists(h.veth_bridge):
        sh("ip", "link", "add", h.veth_bridge, "type", "veth", "peer", "name", h.veth_host, "netns", h.netns)
    sh("ip", "link", "set", h.veth_bridge, "master", spec.bridge, "up")
    # One `ip -batch` inside the namespace instead of three `ip netns exec` (each a fork and a setns).
    sh("ip", "-n", h.netns, "-batch", "-", input=(
        "link set lo up\n"
        f"addr replace {h.address}/{spec.network.prefixlen} dev {h.veth_host}\n"
        f"link set {h.veth_host} up\n"))


def delete_network(spec: SandboxSpec) -> list[str]:
    """Remove every namespace and link with the sandbox's prefix, including ones an older,
    differently sized sandbox left behind."""
    namespaces = [ns for ns in list_netns() if ns.startswith(f"{spec.prefix}-")]

    def delete_netns(ns: str) -> None:
        for pid in netns_pids(ns):
            _kill_pid(pid, signal.SIGKILL)
        sh("ip", "netns", "delete", ns, check=False)

    with ThreadPoolExecutor(max_workers=max(1, len(namespaces))) as ex:
        list(ex.map(delete_netns, namespaces))
    removed = list(namespaces)
    links = [link for link in os.listdir("/sys/class/net")
             if link == spec.bridge or (link.startswith(spec.prefix) and link[len(spec.prefix) :][:1] in ("b", "h") and link[len(spec.prefix) + 1 :].isdigit())]
    if links:
        # Deleting a namespace deleted its veth pair; what is left goes in one `ip -batch`, which goes
        # on past a link that vanished meanwhile (-force) instead of stopping.
        sh("ip", "-force", "-batch", "-", check=False, input="".join(f"link delete {link}\n" for link in links))
        removed += links
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


# The allocator the sandbox's daemons run with, kept in the sandbox directory so that every start (up,
# a power-on, a controlled restart) uses the same one. "tcmalloc" preloads Debian's libtcmalloc, as upstream
# Ceph builds link it; "glibc" (the default) is what Debian's ceph-osd uses on its own.
ALLOCATOR_FILE = "allocator"
ALLOCATORS = {"glibc": "", "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"}


def allocator_of(spec: SandboxSpec) -> str:
    try:
        name = (spec.path / ALLOCATOR_FILE).read_text().strip()
    except OSError:
        return "glibc"
    return name if name in ALLOCATORS else "glibc"


def set_allocator(spec: SandboxSpec, name: str) -> None:
    if name not in ALLOCATORS:
        raise SandboxError(f"allocator {name!r} is not one of {', '.join(ALLOCATORS)}")
    lib = ALLOCATORS[name]
    if lib and not Path(lib).exists():
        raise SandboxError(f"allocator {name}: {lib} is missing; install Debian's libgoogle-perftools4 (scripts/setup.sh does)")
    (spec.path / ALLOCATOR_FILE).write_text(name + "\n")


def daemon_env(spec: SandboxSpec) -> dict[str, str]:
    env = dict(os.environ)
    lib = ALLOCATORS[allocator_of(spec)]
    if lib:
        env["LD_PRELOAD"] = lib
    return env


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
    p = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=pre, start_new_session=True,
                         env=daemon_env(spec))
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


def kill_all(spec: SandboxSpec, timeout: float = 15) -> int:
    procs = sandbox_processes(spec)
    for p in procs:
        try:
            p.send_signal(signal.SIGCONT)
            p.kill()
        except psutil.Error:
            pass
    wait_exited(procs, timeout)
    return len(procs)


def has_exited(p: psutil.Process) -> bool:
    """Gone, or a zombie: dead and waiting for its parent (init, for a daemonised Ceph process) to reap it.
    A zombie holds no memory, files or sockets any more, so nothing of the sandbox waits on the reaping."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def wait_exited(procs: list[psutil.Process], timeout: float, interval: float = 0.02) -> list[psutil.Process]:
    """Wait until every process has exited (see has_exited); returns those still running at `timeout`."""
    deadline = time.monotonic() + timeout
    left = list(procs)
    while left:
        left = [p for p in left if not has_exited(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(interval)
    return left
