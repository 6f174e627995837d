"""Power returns to a rack with its OSDs held, and they start one at a time under per-host memory budgets:
the controlled-restart drill's recovery step (FaultDrill's `restore` hook), and the host memory it watches.

Holding the OSDs at power-on: the sandbox powers a host on without starting its daemons. A host behind a BMC
(ipmi, redfish) boots and its init system starts the OSD units; there each OSD unit is stopped as soon as the
host answers over SSH (a ledgered DaemonStop) and stopped again if a late activation starts it (docs/restart.md).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from drills.cluster import CephCluster, ClusterError
from drills.drill import DrillRecorder
from drills.faults.errors import FaultError
from drills.faults.fault import Fault
from drills.faults.kinds import DaemonStop
from drills.faults.session import FaultSession
from drills.restart.flags import ClusterFlags
from drills.restart.hostops import CephClusterOps, host_ops_for
from drills.restart.orchestrator import ControlledRestart, HostOps, RestartConfig, RestartResult, order_daemons, select_osds
from drills.restart.runbook import run_with_flags
from drills.target import Host, Target

# A host behind a BMC: how long it may take to boot until SSH answers, and how long after the first stop
# a late activation (ceph-volume) may still start an OSD unit that must stay held.
BOOT_TIMEOUT_S = 900.0
HOLD_CHECK_S = 60.0


# --- host memory -------------------------------------------------------------------------------------


def osds_of(hosts: list[Host]) -> list[tuple[Host, str]]:
    return [(h, d) for h in hosts for d in h.daemons if d.startswith("osd.")]


def osd_rss(host_ops: HostOps, hosts: list[Host], budgets: dict[str, int]) -> dict[str, int | None]:
    """RSS of every OSD of these hosts now (None: not running or not readable)."""
    out: dict[str, int | None] = {}
    for h in hosts:
        try:
            running = host_ops.memory(h, budgets.get(h.name, 0)).daemons
        except (FaultError, ClusterError, OSError):
            running = {}
        for _, d in osds_of([h]):
            out[d] = running.get(d)
    return out


@dataclass
class HostMemoryWatch:
    """The rack's host memory each second once the controlled start is done (the start samples itself before):
    series for the timeline, and peaks while the drill is in its recovery phase (power-on to active+clean)."""

    host_ops: HostOps  # its own instance: an SSH connection is not shared with the orchestrator's thread
    hosts: list[Host]
    budgets: dict[str, int]
    drill: DrillRecorder
    interval_s: float = 1.0
    peak_used: dict[str, int] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "HostMemoryWatch":
        self._thread = threading.Thread(target=self._run, name="restart-memory", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for h in self.hosts:
                try:
                    mem = self.host_ops.memory(h, self.budgets[h.name])
                except Exception:  # noqa: BLE001 - a missed look is a gap, never the end of the drill
                    self.drill.timeline.sample("restart.host_used.bytes", None, host=h.name)
                    continue
                self.drill.timeline.sample("restart.host_used.bytes", mem.used, host=h.name)
                self.drill.timeline.sample("restart.host_budget.bytes", mem.budget, host=h.name)
                if self.drill.current_phase == "recovery":
                    self.peak_used[h.name] = max(self.peak_used.get(h.name, 0), mem.used)
                    for d, rss in mem.daemons.items():
                        self.peak_rss[d] = max(self.peak_rss.get(d, 0), rss)


# --- the "restore power" step ------------------------------------------------------------------------


@dataclass
class ControlledPowerReturn:
    """Power returns to the rack with its OSDs held; they start one at a time under the budgets."""

    drill: DrillRecorder
    cluster: CephCluster
    target: Target
    session: FaultSession
    rack: str
    budgets: dict[str, int]  # host -> bytes it may use
    start_need: int
    host_ops: HostOps = field(init=False)
    hosts: list[Host] = field(init=False)  # the rack's
    rss_before: dict[str, int | None] = field(default_factory=dict)
    result: RestartResult | None = None
    flags: ClusterFlags | None = None
    watch: HostMemoryWatch | None = None

    def __post_init__(self) -> None:
        self.host_ops = host_ops_for(self.target, self.session.host_access)
        self.hosts = list(self.target.rack(self.rack).hosts)

    def before_cut(self) -> None:
        self.rss_before = osd_rss(self.host_ops, self.hosts, self.budgets)
        self.drill.event("note", "RSS of the rack's OSDs before the cut", rss=self.rss_before)

    def restore_power(self, cut: Fault) -> None:
        d = self.drill
        for h in cut.hosts():
            cut.backend(h).power_on(h, start_daemons=False)  # the sandbox holds them; a BMC'd host boots
        d.event("note", f"power back on rack {self.rack}, OSDs held", hosts=[h.name for h in cut.hosts()])
        stops: list[Fault] = []
        try:
            if any(h.power.kind != "sandbox" for h in self.hosts):
                stops = self._hold_booted_osds()
            else:
                self._start_other_daemons()
            pairs = order_daemons(select_osds(self.target, rack=self.rack), "id")
            config = RestartConfig(budgets=self.budgets, start_need=self.start_need, wait="peered")
            restart = ControlledRestart(
                self.host_ops, CephClusterOps(self.cluster), config, pairs,
                on_event=lambda kind, label, data: d.event(kind, label, **data),
                on_sample=lambda metric, value, labels: d.timeline.sample(metric, value, **labels))
            self.result, self.flags = run_with_flags(self.session, self.target, self.cluster, restart)
        except Exception as e:  # re-raised: the cut's heal still starts what is held, the runbook stops
            d.event("restart.stopped", "controlled start failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            # Watched from here on: an uncontrolled start of what is still held counts against the budget too.
            self.watch = HostMemoryWatch(host_ops_for(self.target, self.session.host_access), self.hosts, self.budgets, d).start()
            for stop in reversed(stops):  # held units of a booted host start here if the controlled start stopped
                self.session.heal(stop)
        if not self.result.ok:
            held = (f"{', '.join(self.result.held)} held, started by the power cut's heal (uncontrolled)"
                    if self.result.held else "no OSD left held")
            d.note(f"controlled start STOPPED: {self.result.error}; {held}")

    def _start_other_daemons(self) -> None:
        """A host that boots starts everything; only its OSDs are held."""
        for h in self.hosts:
            for daemon in h.daemons:
                if not daemon.startswith("osd."):
                    self.host_ops.start(h, daemon)

    def _hold_booted_osds(self) -> list[Fault]:
        """A host behind a BMC boots and starts its OSD units: stop them (ledgered) as soon as it answers."""
        d = self.drill
        pairs = osds_of(self.hosts)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        for h, osd in pairs:
            while True:
                try:
                    self.host_ops.running(h, osd)
                    break
                except FaultError as e:
                    if time.monotonic() > deadline:
                        raise FaultError(f"host {h.name} did not answer within {BOOT_TIMEOUT_S:.0f} s of power-on: {e}") from None
                    time.sleep(5)
        stops = [self.session.inject(DaemonStop(self.target, osd)) for _, osd in pairs]
        d.event("note", "booted OSD units stopped (held)", osds=[osd for _, osd in pairs])
        end = time.monotonic() + HOLD_CHECK_S
        while time.monotonic() < end:  # a late activation (ceph-volume) starts a unit again
            for h, osd in pairs:
                if self.host_ops.running(h, osd):
                    self.host_ops.stop(h, osd)
                    d.event("note", f"{osd} started by the boot again; stopped", daemon=osd)
            time.sleep(2)
        d.note("hosts behind a BMC boot and start their OSDs: the drill stopped them once SSH answered "
               "(a hold after the fact; see docs/restart.md)")
        return stops
