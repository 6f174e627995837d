"""Power through a BMC over IPMI (ipmitool, lanplus): chassis power off / on / status.

The password goes to ipmitool through its environment (``-E`` reads
IPMI_PASSWORD), never on the command line (visible in ``ps``) nor in logs or
errors.  ``power off`` is a hard cut (not ``soft``): the drill is a power loss.

After a power on the host boots and its init system starts the Ceph daemons,
so ``start_daemons`` needs nothing here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from drills.faults.errors import BackendUnavailable, FaultError

from drills.faults.interface import UnsupportedOps, wait_for_power_state
from drills.hostaccess import HostAccess
from drills.target import Host, Target, TargetError, read_secret

HANDLES = {"power": ("ipmi",)}

# ipmitool's stderr (with -v) -> the reason a person can act on.
_DIAGNOSES = (
    ("RAKP 2 HMAC is invalid", "wrong password (the BMC rejected the credentials)"),
    ("unauthorized name", "unknown user name on the BMC"),
    ("insufficient resources for session", "the BMC has no free sessions"),
    ("Get Auth Capabilities error", "no answer from the BMC (unreachable, wrong address/port, or IPMI over LAN disabled)"),
    ("No response from remote controller", "no answer from the BMC"),
    ("Unable to read password from environment", "no password reached ipmitool"),
)


def diagnose(stderr: str) -> str:
    for needle, reason in _DIAGNOSES:
        if needle in stderr:
            return reason
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "IANA" not in ln]
    return lines[-1].strip() if lines else "ipmitool failed without a message"


@dataclass
class IpmiBackend(UnsupportedOps):
    kind = "ipmi"
    cipher_suite: int = 3  # fixed: skips cipher discovery, which some BMCs (and ipmi_sim) answer slowly or not at all
    timeout_s: int = 3  # per-try ipmitool timeout (-N)
    retries: int = 2  # ipmitool retries (-R); at least 1: ipmitool 1.8.19 with -R 0 never gives up
    settle_timeout_s: float = 60.0  # how long power state may take to follow a command
    poll_interval_s: float = 0.5
    ipmitool: str = "ipmitool"

    def _base_argv(self, host: Host) -> list[str]:
        p = host.power
        if not p.address:
            raise BackendUnavailable(host.name, "power.address (the BMC) is not set in the target")
        argv = [self.ipmitool, "-v", "-I", "lanplus", "-C", str(self.cipher_suite), "-H", p.address]
        if p.port:
            argv += ["-p", str(p.port)]
        argv += ["-U", p.username, "-E", "-N", str(self.timeout_s), "-R", str(max(1, self.retries))]
        return argv

    def _run(self, host: Host, *args: str) -> str:
        if shutil.which(self.ipmitool) is None:
            raise BackendUnavailable(host.name, f"{self.ipmitool} is not installed (Debian package ipmitool)")
        try:
            password = read_secret(host.power.password_env, host.power.password_file, f"host {host.name} BMC password")
        except TargetError as e:
            raise BackendUnavailable(host.name, str(e)) from None
        env = {**os.environ, "IPMI_PASSWORD": password}
        argv = self._base_argv(host) + list(args)
        limit = (self.timeout_s + 1) * (max(1, self.retries) + 1) + 10
        try:
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(host.name, f"BMC {host.power.address}: ipmitool did not finish in {limit}s") from None
        if r.returncode != 0:
            # argv and stderr carry no password: it only ever lived in env.
            raise BackendUnavailable(
                host.name, f"BMC {host.power.address}: {' '.join(args)} failed: {diagnose(r.stderr + r.stdout)}"
            )
        return r.stdout

    def power_state(self, host: Host) -> str:
        out = self._run(host, "chassis", "power", "status")
        for line in out.splitlines():
            if line.startswith("Chassis Power is"):
                return line.rsplit(" ", 1)[-1].strip().lower()  # "on" | "off"
        raise FaultError(f"host {host.name}: unexpected ipmitool answer to power status: {out.strip()!r}")

    def _wait_for(self, host: Host, state: str) -> None:
        wait_for_power_state(lambda: self.power_state(host), host, state, self.settle_timeout_s, self.poll_interval_s, "power")

    # -- HostBackend --
    def probe(self, host: Host, role: str) -> None:
        if role != "power":
            super().probe(host, role)
        self.power_state(host)  # a session with the credentials, or BackendUnavailable naming why

    def power_off(self, host: Host) -> None:
        self._run(host, "chassis", "power", "off")
        self._wait_for(host, "off")

    def power_on(self, host: Host, start_daemons: bool = True) -> None:
        # Idempotent: "power on" of a powered host is a no-op on BMCs; skip it anyway to keep logs clean.
        if self.power_state(host) != "on":
            self._run(host, "chassis", "power", "on")
        self._wait_for(host, "on")


def make_backend(target: Target, host_access: HostAccess | None = None) -> IpmiBackend:  # host_access: the BMC is not a host
    return IpmiBackend()
