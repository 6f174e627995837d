"""Power returns to a rack with its OSDs held, and they start one at a time under per-host memory budgets:
the controlled-restart drill's recovery step (FaultDrill's `restore` hook), and the host memory it watches.

Holding the OSDs at power-on: before the cut every OSD of the rack is held (a ledgered DaemonHold: its systemd
unit masked on a host behind a BMC, which then boots without it and refuses a late activation's start; on the
sandbox a file its power-on reads). The controlled start lifts each hold when that OSD's turn comes; whatever it
leaves held starts when the holds heal (docs/restart.md).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from drills.cluster import CephCluster, ClusterError
from drills.drill import DrillRecorder
from drills.faults.errors import FaultError
from drills.faults.fault import Fault
from drills.faults.kinds import DaemonHold, DaemonStop
from drills.faults.session import FaultSession
from drills.restart.flags import ClusterFlags
from drills.restart.hostops import CephClusterOps, host_ops_for
from drills.restart.orchestrator import ControlledRestart, HostOps, RestartConfig, RestartResult, order_daemons, select_osds
from drills.restart.runbook import run_with_flags
from drills.target import Host, Target

# A host behind a BMC: how long it may take to boot until SSH answers.
BOOT_TIMEOUT_S = 900.0


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
    holds: dict[str, Fault] = field(default_factory=dict)  # osd -> its DaemonHold, armed in before_cut

    def __post_init__(self) -> None:
        self.host_ops = host_ops_for(self.target, self.session.host_access)
        self.hosts = list(self.target.rack(self.rack).hosts)

    def before_cut(self) -> None:
        """RSS before the cut, then every OSD of the rack held at power-on (ledgered `DaemonHold`s: units
        masked on a host behind a BMC, so it boots without them; the sandbox's power-on skips them)."""
        self.rss_before = osd_rss(self.host_ops, self.hosts, self.budgets)
        self.drill.event("note", "RSS of the rack's OSDs before the cut", rss=self.rss_before)
        self.holds = {osd: self.session.inject(DaemonHold(self.target, osd)) for _, osd in osds_of(self.hosts)}
        self.drill.event("note", "the rack's OSDs held at power-on", osds=sorted(self.holds))

    def restore_power(self, cut: Fault) -> None:
        d = self.drill
        for h in cut.hosts():
            cut.backend(h).power_on(h, start_daemons=True)  # the held OSDs stay down; the rest start
        d.event("note", f"power back on rack {self.rack}, OSDs held", hosts=[h.name for h in cut.hosts()])
        stops: list[Fault] = []
        try:
            if any(h.power.kind != "sandbox" for h in self.hosts):
                stops = self._check_held_after_boot()
            pairs = order_daemons(select_osds(self.target, rack=self.rack), "id")
            config = RestartConfig(budgets=self.budgets, start_need=self.start_need, wait="peered")
            restart = ControlledRestart(
                HeldUntilStarted(self.host_ops, self.session, self.holds), CephClusterOps(self.cluster), config, pairs,
                on_event=lambda kind, label, data: d.event(kind, label, **data),
                on_sample=lambda metric, value, labels: d.timeline.sample(metric, value, **labels))
            self.result, self.flags = run_with_flags(self.session, self.target, self.cluster, restart)
        except Exception as e:  # re-raised: the cut's heal still starts what is held, the runbook stops
            d.event("restart.stopped", "controlled start failed", error=f"{type(e).__name__}: {e}")
            raise
        finally:
            # Watched from here on: an uncontrolled start of what is still held counts against the budget too.
            self.watch = HostMemoryWatch(host_ops_for(self.target, self.session.host_access), self.hosts, self.budgets, d).start()
            for stop in reversed(stops):
                self.session.heal(stop)
            for osd in sorted(self.holds, reverse=True):  # what the controlled start left held starts here
                self.session.heal(self.holds[osd])
        if not self.result.ok:
            held = (f"{', '.join(self.result.held)} held, started by the power cut's heal (uncontrolled)"
                    if self.result.held else "no OSD left held")
            d.note(f"controlled start STOPPED: {self.result.error}; {held}")

    def _check_held_after_boot(self) -> list[Fault]:
        """A host behind a BMC boots with its OSD units masked: wait until it answers, then check that none
        of them runs. One that does (a hold that did not hold) is stopped, ledgered, and said."""
        d = self.drill
        pairs = osds_of(self.hosts)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        running: list[str] = []
        for h, osd in pairs:
            while True:
                try:
                    if self.host_ops.running(h, osd):
                        running.append(osd)
                    break
                except FaultError as e:
                    if time.monotonic() > deadline:
                        raise FaultError(f"host {h.name} did not answer within {BOOT_TIMEOUT_S:.0f} s of power-on: {e}") from None
                    time.sleep(5)
        if not running:
            d.note(f"hosts booted with their OSD units masked: {', '.join(osd for _, osd in pairs)} held")
            return []
        d.note(f"HOLD DID NOT HOLD: {', '.join(running)} started at boot although masked; stopped")
        return [self.session.inject(DaemonStop(self.target, osd)) for osd in running]


@dataclass
class HeldUntilStarted:
    """The host ops the controlled start uses, with the rack's holds lifted one OSD at a time: starting a held
    OSD heals its `DaemonHold` (unmask, start) through the fault session, so the ledger follows each start."""

    inner: HostOps
    session: FaultSession
    holds: dict[str, Fault]

    def start(self, host: Host, daemon: str) -> None:
        hold = self.holds.get(daemon)
        if hold is not None and hold in self.session.active:
            self.session.heal(hold)
        else:
            self.inner.start(host, daemon)

    def __getattr__(self, name: str):  # probe, restart, stop, running, memory: as the inner host ops
        return getattr(self.inner, name)
