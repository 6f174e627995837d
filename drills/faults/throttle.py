"""Gray-fault limits and the commands that apply them, as data and text (like ``nft.py``).

A gray fault slows something down instead of breaking it: a disk (blkio / systemd IO limits),
a CPU (a CFS quota), a link (``tc tbf``).  The limits are small frozen dataclasses that go into
the ledger as JSON; the commands are plain text so that the sandbox and SSH backends run the
same shell, and ``manual_heal`` can print exactly what a heal runs.

Links: ``tbf`` on the host's link shapes what the host sends; what it receives is redirected
(``tc ... ingress`` + ``u32`` + ``mirred``) to an ``ifb`` device with its own ``tbf``, so both
directions are limited (this kernel has no ``act_police`` or ``matchall``, but has ``ifb`` and
``mirred``).  The ifb name is derived from the fault id, so a heal in another process finds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from dataclasses import dataclass
from typing import Any, Sequence

from drills.units import KiB, MiB


def _human_bytes(n: int) -> str:
    if n >= MiB and (n * 10) % MiB == 0:
        return f"{n / MiB:g} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def _human_bits(n: int) -> str:
    for unit, size in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
        if n >= size:
            return f"{n / size:g} {unit}/s"
    return f"{n} bit/s"


# --- limits ------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskLimit:
    """Per-OSD device limits; 0 = that direction unlimited.  At least one must be set."""

    read_bps: int = 0  # bytes/s
    write_bps: int = 0
    read_iops: int = 0
    write_iops: int = 0

    def __post_init__(self) -> None:
        values = dataclasses.astuple(self)
        if any(int(v) < 0 for v in values) or not any(values):
            raise ValueError(f"a disk limit needs at least one positive bytes/s or IOPS value, none negative (got {self})")

    def describe(self) -> str:
        parts = []
        for what, bps, iops in (("r", self.read_bps, self.read_iops), ("w", self.write_bps, self.write_iops)):
            if bps:
                parts.append(f"{what} {_human_bytes(bps)}/s")
            if iops:
                parts.append(f"{what} {iops} IOPS")
        return ", ".join(parts)

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "DiskLimit":
        return cls(**{k: int(v) for k, v in d.items()})

    def blkio_files(self, device: str) -> dict[str, str]:
        """cgroup v1 ``blkio.throttle.*`` file -> "MAJ:MIN value", for the set limits."""
        files = {"read_bps_device": self.read_bps, "write_bps_device": self.write_bps,
                 "read_iops_device": self.read_iops, "write_iops_device": self.write_iops}
        return {f"blkio.throttle.{name}": f"{device} {v}" for name, v in files.items() if v}

    def systemd_properties(self, device_expr: str) -> list[str]:
        """systemd IO*Max= properties; ``device_expr`` is a shell word naming the device (may be ``$(...)``)."""
        props = {"IOReadBandwidthMax": self.read_bps, "IOWriteBandwidthMax": self.write_bps,
                 "IOReadIOPSMax": self.read_iops, "IOWriteIOPSMax": self.write_iops}
        return [f'"{name}={device_expr} {v}"' for name, v in props.items() if v]


SYSTEMD_IO_RESET = ("IOReadBandwidthMax=", "IOWriteBandwidthMax=", "IOReadIOPSMax=", "IOWriteIOPSMax=")


@dataclass(frozen=True)
class CpuLimit:
    """A CFS quota: the daemon gets ``share`` of one CPU per period (0.05 = 5 %)."""

    share: float
    period_us: int = 100_000

    def __post_init__(self) -> None:
        if not 0 < float(self.share) <= 64:
            raise ValueError(f"a CPU share must be above 0 (0.05 = 5 % of one CPU), got {self.share}")
        if not 1_000 <= int(self.period_us) <= 1_000_000:
            raise ValueError(f"cfs_period_us must be 1000..1000000, got {self.period_us}")

    @property
    def quota_us(self) -> int:
        return max(1_000, int(self.period_us * float(self.share)))  # the kernel refuses quotas under 1 ms

    def describe(self) -> str:
        return f"{float(self.share) * 100:g}% CPU"

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "CpuLimit":
        return cls(float(d["share"]), int(d.get("period_us", 100_000)))

    def cgroup_files(self) -> dict[str, str]:
        return {"cpu.cfs_period_us": str(int(self.period_us)), "cpu.cfs_quota_us": str(self.quota_us)}

    def systemd_properties(self) -> list[str]:
        return [f"CPUQuota={float(self.share) * 100:g}%", f"CPUQuotaPeriodSec={int(self.period_us) // 1000}ms"]


SYSTEMD_CPU_RESET = ("CPUQuota=", "CPUQuotaPeriodSec=")


@dataclass(frozen=True)
class LinkLimit:
    """A token bucket on a host's link: ``rate_bit`` bits/s each way (``ingress=False``: only what it sends)."""

    rate_bit: int
    latency_ms: int = 50  # how long a packet may wait in the bucket before it is dropped
    burst_bytes: int = 0  # 0 = derived from the rate
    ingress: bool = True

    def __post_init__(self) -> None:
        if int(self.rate_bit) < 8_000:
            raise ValueError(f"a link rate must be at least 8000 bit/s, got {self.rate_bit}")
        if int(self.latency_ms) <= 0 or int(self.burst_bytes) < 0:
            raise ValueError(f"latency_ms must be positive and burst_bytes not negative (got {self})")

    @property
    def burst(self) -> int:
        # tbf needs burst >= rate / HZ; 1/50 s of traffic (at least 16 KiB) holds for HZ >= 50.
        return self.burst_bytes or max(16 * KiB, self.rate_bit // 8 // 50)

    def describe(self) -> str:
        return _human_bits(int(self.rate_bit)) + ("" if self.ingress else " out")

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> "LinkLimit":
        return cls(int(d["rate_bit"]), int(d.get("latency_ms", 50)), int(d.get("burst_bytes", 0)), bool(d.get("ingress", True)))

    def tbf(self) -> str:
        return f"tbf rate {int(self.rate_bit)}bit burst {self.burst} latency {int(self.latency_ms)}ms"


# --- links: tc text ------------------------------------------------------------------


def ifb_name(fault_id: str, index: int) -> str:
    """The fault's ifb device for its ``index``-th link (at most 15 characters, as Linux needs)."""
    return f"ifb{hashlib.sha1(fault_id.encode()).hexdigest()[:8]}{index}"


def _devices(address: str, interfaces: Sequence[str]) -> list[str]:
    """Shell words for the links to shape: the named ones, else the link carrying the host's address."""
    if interfaces:
        return [shlex.quote(i) for i in interfaces]
    if not address:
        raise ValueError("a link limit needs the host's address or network.interfaces in the target")
    return [f"$(ip -o addr show to {shlex.quote(address)} | awk '{{print $2; exit}}')"]


def link_limit_script(fault_id: str, limit: LinkLimit, *, address: str = "", interfaces: Sequence[str] = ()) -> str:
    """Shell that shapes the links (fails, and leaves a heal-able state, if any step fails)."""
    lines = ["set -e"]
    for i, dev in enumerate(_devices(address, interfaces)):
        ifb = ifb_name(fault_id, i)
        lines += [
            f"dev={dev}",
            f'[ -n "$dev" ] || {{ echo "no link carries {address}" >&2; exit 1; }}',
            f'tc qdisc replace dev "$dev" root {limit.tbf()}',
        ]
        if limit.ingress:
            # The ingress qdisc first: if the host already has one (not ours), this fails before the ifb
            # exists, and the heal (which removes the ingress qdisc only when our ifb exists) leaves it alone.
            lines += [
                'tc qdisc add dev "$dev" handle ffff: ingress',
                f"ip link add {ifb} type ifb",
                f"ip link set {ifb} up",
                f"tc qdisc replace dev {ifb} root {limit.tbf()}",
                f'tc filter add dev "$dev" parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev {ifb}',
            ]
    return "\n".join(lines) + "\n"


def link_unlimit_script(fault_id: str, *, address: str = "", interfaces: Sequence[str] = ()) -> str:
    """Shell that removes the fault's shaping; idempotent, and leaves another root qdisc than tbf alone."""
    lines = []
    devices = _devices(address, interfaces)
    for i, dev in enumerate(devices):
        ifb = ifb_name(fault_id, i)
        lines += [
            f"dev={dev}",
            f'if [ -n "$dev" ]; then tc qdisc show dev "$dev" root | grep -q "^qdisc tbf " && tc qdisc del dev "$dev" root; '
            f'if ip link show {ifb} >/dev/null 2>&1; then tc qdisc del dev "$dev" ingress 2>/dev/null; fi; fi',
            f"ip link del {ifb} 2>/dev/null",
        ]
    lines.append("true")
    return "\n".join(lines) + "\n"


def one_line(script: str) -> str:
    """A script as one line, for a manual step (``set -e`` dropped: a heal goes on past a missing piece)."""
    return "; ".join(line for line in script.strip().splitlines() if line != "set -e")


# --- staging paths ---------------------------------------------------------------------


def osd_block_path(deployment: str, fsid: str, osd_id: int) -> str:
    """Where a real host's OSD keeps the ``block`` symlink to its device."""
    if deployment == "cephadm":
        return f"/var/lib/ceph/{fsid}/osd.{osd_id}/block"
    return f"/var/lib/ceph/osd/ceph-{osd_id}/block"
