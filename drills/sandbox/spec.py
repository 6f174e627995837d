"""What a sandbox looks like: topology, directory, addresses, names."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from drills.units import GiB, MiB


DEFAULT_DIR = "/var/lib/ceph-drills/sandbox"
DEFAULT_TARGET_ENV = "DRILL_TARGET"  # overrides the default target file
DEFAULT_SUBNET = "10.213.0.0/24"  # lives only on the sandbox's own bridge and namespaces
DEFAULT_PREFIX = "cd0"


def default_target_path() -> str:
    """The target file `drill` and pytest use when none is given: $DRILL_TARGET, else the sandbox's."""
    return os.environ.get(DEFAULT_TARGET_ENV) or str(Path(DEFAULT_DIR) / "target.toml")

# Memory a sandbox needs besides its OSDs (mon + mgr + radosgw + headroom), and the
# allowance per OSD: osd_memory_target plus slack for start-up peaks.
BASE_MEMORY = 2 * GiB
OSD_MEMORY_SLACK = 256 * MiB


class SandboxError(Exception):
    """A sandbox request that cannot be carried out; the message says what to do."""


@dataclass(frozen=True)
class SandboxHost:
    name: str  # CRUSH host name, e.g. r1h1
    rack: str  # CRUSH rack name, "" for the service host
    index: int  # 0 = service host (mon, mgr, rgw); 1.. = OSD hosts
    address: str
    netns: str
    osd_ids: tuple[int, ...] = ()

    @property
    def veth_host(self) -> str:  # end inside the namespace
        return f"{self.netns.split('-')[0]}h{self.index}"

    @property
    def veth_bridge(self) -> str:  # end on the bridge
        return f"{self.netns.split('-')[0]}b{self.index}"


@dataclass(frozen=True)
class SandboxSpec:
    dir: str = DEFAULT_DIR
    racks: int = 3
    hosts_per_rack: int = 2
    osds_per_host: int = 1
    subnet: str = DEFAULT_SUBNET
    prefix: str = DEFAULT_PREFIX  # short tag for namespaces, links, cgroups, nft tables
    osd_size: int = 8 * GiB  # sparse BlueStore file per OSD (its size when full)
    osd_memory_target: int = 1 * GiB
    rgw: bool = True
    # Memory budget of each OSD host (bytes): its daemons run in a memory cgroup with this limit
    # (drills/sandbox/cgroups.py), so the kernel OOM-kills them as on a real host. 0 = no limit.
    host_memory: int = 0
    extra_conf: dict[str, str] = field(default_factory=dict)
    # The daemons' malloc: "glibc" (Debian's ceph as built) or "tcmalloc" (Debian's libtcmalloc preloaded,
    # as upstream Ceph builds link it); drills/sandbox/host.py ALLOCATORS.
    allocator: str = "glibc"
    # PGs of each of the rbd and drills pools. Fewer PGs peer, recover and deep-scrub sooner (the test
    # sandbox takes 16 for CI time); the shipped limits were calibrated with 32.
    pool_pgs: int = 32

    # --- derived names -----------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def conf_path(self) -> Path:
        return self.path / "ceph.conf"

    @property
    def admin_keyring(self) -> Path:
        return self.path / "keyring" / "ceph.client.admin.keyring"

    @property
    def target_path(self) -> Path:
        return self.path / "target.toml"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def bridge_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def service_host(self) -> SandboxHost:
        return SandboxHost("svc", "", 0, str(self.network.network_address + 2), f"{self.prefix}-svc")

    @property
    def osd_hosts(self) -> list[SandboxHost]:
        hosts = []
        osd = 0
        for r in range(1, self.racks + 1):
            for h in range(1, self.hosts_per_rack + 1):
                index = (r - 1) * self.hosts_per_rack + h
                name = f"r{r}h{h}"
                ids = tuple(range(osd, osd + self.osds_per_host))
                osd += self.osds_per_host
                hosts.append(
                    SandboxHost(name, f"rack{r}", index, str(self.network.network_address + 10 + index), f"{self.prefix}-{name}", ids)
                )
        return hosts

    @property
    def hosts(self) -> list[SandboxHost]:
        return [self.service_host] + self.osd_hosts

    @property
    def osd_count(self) -> int:
        return self.racks * self.hosts_per_rack * self.osds_per_host

    @property
    def pool_size(self) -> int:
        # Failure domain is the rack: a pool cannot hold more copies than there are racks.
        return min(3, self.racks)

    @property
    def pool_min_size(self) -> int:
        return max(1, self.pool_size - 1)

    @property
    def memory_needed(self) -> int:
        return BASE_MEMORY + self.osd_count * (self.osd_memory_target + OSD_MEMORY_SLACK)

    def host_of_osd(self, osd_id: int) -> SandboxHost:
        for h in self.osd_hosts:
            if osd_id in h.osd_ids:
                return h
        raise SandboxError(f"the sandbox has no osd.{osd_id}")

    def host(self, name: str) -> SandboxHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise SandboxError(f"the sandbox has no host {name!r}")

    @property
    def disk_needed(self) -> int:
        """Disk the sandbox may take: every sparse OSD file full, plus mon/mgr/logs."""
        return self.osd_count * self.osd_size + 2 * GiB

    def validate(self, mem_available: int | None = None, disk_free: int | None = None) -> None:
        for what, n in (("racks", self.racks), ("hosts per rack", self.hosts_per_rack), ("OSDs per host", self.osds_per_host)):
            if n < 1:
                raise SandboxError(f"{what} must be at least 1 (got {n})")
        if self.pool_pgs not in (8, 16, 32, 64, 128, 256):
            raise SandboxError(f"PGs per pool must be a power of two from 8 to 256 (got {self.pool_pgs})")
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.prefix):
            raise SandboxError(f"prefix {self.prefix!r} must be 1-6 lowercase letters/digits starting with a letter (it names links)")
        try:
            net = self.network
        except ValueError as e:
            raise SandboxError(f"subnet {self.subnet!r} is not an IPv4 network: {e}") from None
        if net.num_addresses - 12 < self.racks * self.hosts_per_rack:
            raise SandboxError(f"subnet {self.subnet} is too small for {self.racks * self.hosts_per_rack} hosts; use a /24")
        if not Path(self.dir).is_absolute():
            raise SandboxError(f"sandbox directory {self.dir!r} must be an absolute path")
        if disk_free is not None and self.disk_needed > disk_free:
            raise SandboxError(
                f"{self.osd_count} OSD files of {self.osd_size / GiB:.0f} GiB need up to {self.disk_needed / GiB:.0f} GiB when full "
                f"but {disk_free / GiB:.0f} GiB is free under {self.dir}; pass a smaller --osd-size or fewer OSDs"
            )
        if self.host_memory < 0:
            raise SandboxError(f"host memory budget must be positive or 0 for none (got {self.host_memory})")
        if mem_available is not None and self.memory_needed > mem_available:
            raise SandboxError(
                f"{self.osd_count} OSDs at osd_memory_target {self.osd_memory_target // MiB} MiB need about "
                f"{self.memory_needed / GiB:.1f} GiB but {mem_available / GiB:.1f} GiB is available; use fewer OSDs"
            )
