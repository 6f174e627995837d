"""The controlled start: held OSDs one at a time, each only when its host's memory budget allows.

    for each held OSD, in the chosen order:
        read the host's memory (every daemon's RSS, the budget's use, the machine's available memory)
        decide:  start   the budget has room for one OSD's start-up need
                 wait    not yet, but memory may still settle (up to settle_s)
                 restart the daemon with the largest RSS on that host (a short restart comes back small:
                         little history, no missing set), then look again
                 stop    the budget cannot be met: say why and which OSDs stay held
        after a start: wait until the OSD is up and its PGs have peered (active; clean only with
        wait="clean"), sampling memory and watching for OOM kills all the while

Flags (noout, nodeep-scrub, noautoscale) are set through the fault ledger (`ClusterFlags`) so they are
restored whatever happens, including a kill -9 of the runner (`drill heal`).

`decide` is pure; `ControlledRestart` drives it through two small interfaces (`HostOps`, `ClusterOps`) so
that the same code runs on the sandbox (local processes in memory cgroups) and on ssh hosts (systemd).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol, Sequence

from drills.faults.errors import FaultError
from drills.target import Host, Target, TargetError
from drills.units import MiB


class RestartError(Exception):
    """A controlled restart that cannot start or cannot finish; the message says why and what is held."""


# --- readings and decisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostMemory:
    """One look at a host's memory."""

    host: str
    budget: int  # bytes the host's Ceph daemons may use
    used: int  # bytes they use now (cgroup working set on the sandbox, summed RSS elsewhere)
    daemons: dict[str, int]  # running daemon -> RSS bytes
    machine_available: int | None = None  # the host's MemAvailable (None: unknown)

    @property
    def available(self) -> int:
        """What one more daemon may still take: the budget's room, never more than the machine has."""
        room = self.budget - self.used
        return room if self.machine_available is None else min(room, self.machine_available)

    def biggest(self, exclude: Sequence[str] = ()) -> tuple[str, int] | None:
        rest = [(d, r) for d, r in self.daemons.items() if d not in exclude]
        return max(rest, key=lambda dr: (dr[1], dr[0])) if rest else None


class Action(str, Enum):
    START = "start"
    WAIT = "wait"
    RELEASE = "heap-release"
    RESTART = "restart"
    STOP = "stop"


@dataclass(frozen=True)
class Decision:
    action: Action
    daemon: str  # the OSD to start, the daemon to restart, or the OSD that stays held
    reason: str


def decide(next_osd: str, need: int, mem: HostMemory, *, waited_s: float, settle_s: float,
           restarted: Sequence[str], max_restarts: int, released: Sequence[str] = ("*",)) -> Decision:
    """Pure: what to do about ``next_osd`` given the host's memory now.

    need        bytes one OSD takes while it starts (the larger of the given estimate and the peaks seen)
    waited_s    how long we have waited for memory to settle since the last action
    restarted   daemons of this host already restarted while this OSD waited (each at most once)
    released    daemons already asked to give freed heap back (`heap release`) in this wait; "*" = never ask
    """
    mib = lambda n: f"{n / MiB:.0f} MiB"  # noqa: E731
    if need > mem.budget:
        return Decision(Action.STOP, next_osd,
                        f"host {mem.host}: budget {mib(mem.budget)} is below one OSD's start-up need (~{mib(need)}); "
                        "no order of starts can fit it: raise the budget or lower osd_memory_target / the PG log")
    if mem.available >= need:
        return Decision(Action.START, next_osd,
                        f"host {mem.host}: {mib(mem.used)} used of {mib(mem.budget)}, {mib(mem.available)} free >= need {mib(need)}")
    if waited_s < settle_s:
        return Decision(Action.WAIT, next_osd,
                        f"host {mem.host}: {mib(mem.available)} free < need {mib(need)}; waiting for memory to settle "
                        f"({waited_s:.0f}/{settle_s:.0f} s)")
    biggest = mem.biggest(exclude=restarted)
    if biggest is not None and "*" not in released and biggest[0] not in released and biggest[0].startswith("osd."):
        return Decision(Action.RELEASE, biggest[0],
                        f"host {mem.host}: {mib(mem.available)} free < need {mib(need)}; asking {biggest[0]} ({mib(biggest[1])} RSS) "
                        "to return freed heap first (heap release: no restart)")
    if biggest is not None and len(restarted) < max_restarts:
        d, rss = biggest
        return Decision(Action.RESTART, d,
                        f"host {mem.host}: {mib(mem.available)} free < need {mib(need)} after {waited_s:.0f} s; "
                        f"restarting the biggest daemon {d} ({mib(rss)} RSS): a short restart comes back small")
    tried = f" after restarting {', '.join(restarted)}" if restarted else ""
    return Decision(Action.STOP, next_osd,
                    f"host {mem.host}: only {mib(mem.available)} of the {mib(mem.budget)} budget free{tried}, "
                    f"but {next_osd} needs ~{mib(need)} to start")


def start_need_from_target(osd_memory_target: int) -> int:
    """The flat start-up need before any peak is learned: half of osd_memory_target (an OSD grows towards
    the target once running), never below 128 MiB."""
    return max(128 * MiB, osd_memory_target // 2)


def need_from_per_pg(need_per_pg: float, pgs: int, floor: int) -> int:
    """An OSD's start-up need scaled by its PG count (``need_per_pg`` has the margin in it), never below
    the flat estimate ``floor``."""
    return max(floor, int(need_per_pg * pgs))


# --- what the orchestrator needs from hosts and the cluster ------------------------------------


class HostOps(Protocol):
    def probe(self, host: Host) -> None:
        """Raise (FaultError) when the host cannot be reached or lacks the tools to start daemons."""

    def start(self, host: Host, daemon: str) -> None: ...

    def restart(self, host: Host, daemon: str) -> None: ...

    def stop(self, host: Host, daemon: str) -> None: ...

    def running(self, host: Host, daemon: str) -> bool: ...

    def memory(self, host: Host, budget: int) -> HostMemory: ...

    def oom_kills(self, host: Host) -> int:
        """The host's cumulative OOM-kill count (cgroup counter on the sandbox, /proc/vmstat over ssh)."""


class ClusterOps(Protocol):
    def osd_up(self, osd: int) -> bool: ...

    def osd_ready(self, osd: int, wait: str) -> tuple[bool, str]:
        """(its PGs have peered / are clean, a description of the state)."""

    def heap_release(self, osd: int) -> None:
        """`ceph tell osd.N heap release`: tcmalloc returns freed pages to the kernel."""

    def osd_pg_count(self, osd: int) -> int | None:
        """PGs the OSD holds once up, also while it is held down (None when the cluster cannot say)."""


EventSink = Callable[[str, str, dict[str, Any]], None]  # (kind, label, data)
SampleSink = Callable[[str, float, dict[str, str]], None]  # (metric, value, labels)


@dataclass(frozen=True)
class RestartConfig:
    budgets: dict[str, int]  # host -> bytes
    start_need: int  # bytes one OSD needs to start (an estimate; raised to the largest peak seen)
    wait: str = "peered"  # peered | clean
    step_timeout_s: float = 300.0  # per OSD: up + peered
    settle_s: float = 20.0  # how long to wait for memory to settle before restarting the biggest
    max_restarts_per_step: int = 2
    heap_release: bool = True  # before restarting the biggest daemon, ask it to return freed heap
    # A learned need is the peak one OSD reached, times this: the next OSD may have more PGs or missed
    # more writes, and a restarted neighbour grows back while it starts (measured: +10 % and +100 MiB).
    need_margin: float = 1.2
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.wait not in ("peered", "clean"):
            raise RestartError(f"wait must be 'peered' or 'clean' (got {self.wait!r})")
        if self.need_margin < 1.0:
            raise RestartError(f"need margin must be at least 1.0 (got {self.need_margin:g})")


@dataclass
class RestartResult:
    ok: bool
    started: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # never started (the operator must start them)
    restarted: list[str] = field(default_factory=list)
    oom_kills: list[dict[str, Any]] = field(default_factory=list)
    peak_used: dict[str, int] = field(default_factory=dict)  # host -> peak bytes seen
    peak_rss: dict[str, int] = field(default_factory=dict)  # daemon -> peak RSS seen
    budgets: dict[str, int] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"controlled restart {'finished' if self.ok else 'STOPPED'} in {self.seconds:.0f} s: "
                 f"started {', '.join(self.started) or 'none'}; restarted {', '.join(self.restarted) or 'none'}; "
                 f"OOM kills {len(self.oom_kills)}"]
        for h, b in sorted(self.budgets.items()):
            lines.append(f"  host {h}: peak {self.peak_used.get(h, 0) / MiB:.0f} MiB of budget {b / MiB:.0f} MiB")
        if not self.ok:
            lines.append(f"  error: {self.error}")
            lines.append(f"  held (not started): {', '.join(self.held) or 'none'}")
        return "\n".join(lines)


def order_daemons(daemons: Sequence[tuple[Host, str]], order: str) -> list[tuple[Host, str]]:
    """'id' (by OSD id), 'reverse', 'host' (round-robin over hosts), or an explicit 'osd.5,osd.4,...'."""
    by_id = sorted(daemons, key=lambda hd: int(hd[1].split(".", 1)[1]))
    if order == "id":
        return by_id
    if order == "reverse":
        return list(reversed(by_id))
    if order == "host":
        queues: dict[str, list[tuple[Host, str]]] = {}
        for hd in by_id:
            queues.setdefault(hd[0].name, []).append(hd)
        out = []
        while any(queues.values()):
            for q in queues.values():
                if q:
                    out.append(q.pop(0))
        return out
    wanted = [w.strip() for w in order.split(",") if w.strip()]
    known = {d: hd for hd in daemons for d in [hd[1]]}
    unknown = [w for w in wanted if w not in known]
    if unknown or sorted(wanted) != sorted(known):
        raise RestartError(f"--order {order!r} must be id, reverse, host or a list of exactly these OSDs: "
                           f"{', '.join(sorted(known, key=lambda d: int(d.split('.')[1])))}"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return [known[w] for w in wanted]


def select_osds(target: Target, rack: str | None = None, host: str | None = None) -> list[tuple[Host, str]]:
    """The (host, osd) pairs of a rack or a host of the target; a clear error for unknown names."""
    if bool(rack) == bool(host):
        raise RestartError("name exactly one of --rack or --host")
    try:
        hosts = list(target.rack(rack).hosts) if rack else [target.host(host or "")]
    except TargetError as e:
        raise RestartError(str(e)) from None
    pairs = [(h, d) for h in hosts for d in h.daemons if d.startswith("osd.")]
    if not pairs:
        raise RestartError(f"{'rack ' + rack if rack else 'host ' + str(host)} has no OSDs in the target")
    return pairs


@dataclass
class ControlledRestart:
    """Starts ``daemons`` (held, i.e. not running) one at a time under per-host budgets."""

    hosts: HostOps
    cluster: ClusterOps
    config: RestartConfig
    daemons: list[tuple[Host, str]]  # in start order
    on_event: EventSink = lambda kind, label, data: None
    on_sample: SampleSink = lambda metric, value, labels: None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        self.result = RestartResult(ok=False, budgets=dict(self.config.budgets))
        self._need = self.config.start_need
        # Learned need per PG: an OSD's start-up memory grows with the PGs it peers and recovers
        # (measured: the OSD with 26 % more PG log peaked 37 % higher), so a peak scaled by the next
        # OSD's PG count guards a bigger OSD that a flat learned need would start into an OOM.
        self._need_per_pg = 0.0
        self._oom_base: dict[str, int] = {}
        self._host_by_name = {h.name: h for h, _ in self.daemons}

    # -- bookkeeping --
    def _decision(self, d: Decision, mem: HostMemory | None = None, need: int | None = None, waited_s: float = 0.0) -> None:
        """An event per decision, with the memory that justified it (the report's decision table)."""
        self.result.decisions.append(d)
        data: dict[str, Any] = {"action": d.action.value, "daemon": d.daemon, "reason": d.reason}
        if mem is not None:
            data.update(host=mem.host, used=mem.used, budget=mem.budget, available=mem.available, rss=dict(mem.daemons),
                        waited_s=round(waited_s, 1))
        if need is not None:
            data["need"] = need
        self.on_event("restart.decision", f"{d.action.value} {d.daemon}", data)

    def _look(self, host: Host) -> HostMemory:
        mem = self.hosts.memory(host, self.config.budgets[host.name])
        r = self.result
        r.peak_used[host.name] = max(r.peak_used.get(host.name, 0), mem.used)
        for d, rss in mem.daemons.items():
            r.peak_rss[d] = max(r.peak_rss.get(d, 0), rss)
        self.on_sample("restart.host_used.bytes", mem.used, {"host": host.name})
        self.on_sample("restart.host_budget.bytes", mem.budget, {"host": host.name})
        return mem

    def _check_ooms(self) -> list[str]:
        """OOM kills since the start on every host involved; new ones become events."""
        new = []
        for name, host in self._host_by_name.items():
            count = self.hosts.oom_kills(host)
            base = self._oom_base.setdefault(name, count)
            seen = sum(1 for k in self.result.oom_kills if k["host"] == name)
            for _ in range(count - base - seen):
                kill = {"host": name, "t": time.time()}
                self.result.oom_kills.append(kill)
                self.on_event("oom.kill", f"OOM kill on {name}", kill)
                new.append(name)
        return new

    # -- the run --
    def run(self) -> RestartResult:
        t0 = self.clock()
        r = self.result
        pending = list(self.daemons)
        for host, _ in pending:
            if host.name not in self.config.budgets or self.config.budgets[host.name] <= 0:
                raise RestartError(f"host {host.name} has no memory budget: give --memory-budget or memory_budget in the target")
        self._check_ooms()
        self.on_event("restart.plan", "controlled start", {
            "order": [d for _, d in pending], "budgets": self.config.budgets, "start_need": self._need, "wait": self.config.wait})
        try:
            while pending:
                host, osd = pending[0]
                if self.hosts.running(host, osd):
                    self.on_event("restart.skip", f"{osd} already running", {"daemon": osd})
                    pending.pop(0)
                    continue
                self._start_when_room(host, osd)
                pending.pop(0)
            r.ok = True
        except (RestartError, FaultError) as e:  # FaultError: a host stopped answering, a start failed
            r.error = str(e)
            r.held = [d for _, d in pending if not self._running_or_unknown(_host(pending, d), d)]
            self.on_event("restart.stopped", "controlled start stopped", {"error": r.error, "held": r.held})
        finally:
            r.seconds = self.clock() - t0
        if r.ok:
            self.on_event("restart.done", "controlled start finished", {"started": r.started, "restarted": r.restarted,
                                                                          "peak_used": r.peak_used, "oom_kills": len(r.oom_kills)})
        return r

    def _running_or_unknown(self, host: Host, daemon: str) -> bool:
        """For the held list: a daemon on a host we cannot ask counts as held (never hide one)."""
        try:
            return self.hosts.running(host, daemon)
        except Exception:  # noqa: BLE001
            return False

    def _start_when_room(self, host: Host, osd: str) -> None:
        restarted: list[str] = []
        released: list[str] = [] if self.config.heap_release else ["*"]
        since = self.clock()
        need = self._need_for(osd)  # learning happens only once an OSD is ready, so it holds for this step
        while True:
            killed_on = self._check_ooms()
            if killed_on:
                raise RestartError(f"the kernel OOM-killed a daemon on {', '.join(sorted(set(killed_on)))} while waiting to start {osd}")
            mem = self._look(host)
            waited = self.clock() - since
            d = decide(osd, need, mem, waited_s=waited, settle_s=self.config.settle_s,
                       restarted=restarted, max_restarts=self.config.max_restarts_per_step, released=released)
            self._decision(d, mem, need, waited)
            if d.action is Action.START:
                self.hosts.start(host, osd)
                self.result.started.append(osd)  # issued: a stop later still says it was started
                self._wait_ready(host, osd)
                return
            if d.action is Action.WAIT:
                self.sleep(self.config.poll_s * 2)
                continue
            if d.action is Action.RELEASE:
                released.append(d.daemon)
                try:
                    self.cluster.heap_release(int(d.daemon.split(".", 1)[1]))
                except Exception as e:  # noqa: BLE001 - a refused release only means: restart next
                    self.on_event("restart.note", f"heap release of {d.daemon} failed", {"error": str(e)})
                self.sleep(self.config.poll_s)
                continue
            if d.action is Action.RESTART:
                self.hosts.restart(host, d.daemon)
                restarted.append(d.daemon)
                self.result.restarted.append(d.daemon)
                if d.daemon.startswith("osd."):
                    self._wait_ready(host, d.daemon, learn=False)
                since = self.clock()
                continue
            raise RestartError(d.reason)

    def _wait_ready(self, host: Host, osd: str, learn: bool = True) -> None:
        """Until the OSD is up and its PGs peered (or clean), watching memory and OOM kills."""
        osd_id = int(osd.split(".", 1)[1])
        deadline = self.clock() + self.config.step_timeout_s
        state = "not yet up"
        peak = 0
        while True:
            mem = self._look(host)
            peak = max(peak, mem.daemons.get(osd, 0))
            killed = self._check_ooms()
            if killed or not self.hosts.running(host, osd):
                why = "was OOM-killed by the kernel" if killed else "exited"
                raise RestartError(f"{osd} {why} while starting (host {host.name}: peak {self.result.peak_used.get(host.name, 0) / MiB:.0f} MiB "
                                   f"of budget {self.config.budgets[host.name] / MiB:.0f} MiB); the budget is too small for its start-up")
            if self.cluster.osd_up(osd_id):
                ok, state = self.cluster.osd_ready(osd_id, self.config.wait)
                if ok:
                    break
            if self.clock() > deadline:
                raise RestartError(f"{osd} not {self.config.wait} within {self.config.step_timeout_s:.0f} s (last state: {state})")
            self.sleep(self.config.poll_s)
        need = int(peak * self.config.need_margin)
        pgs = self._pg_count(osd) if learn else None
        if pgs:
            per_pg = need / pgs
            if per_pg > self._need_per_pg:
                self._need_per_pg = per_pg
                self.on_event("restart.need", f"start-up need per PG raised to {per_pg / MiB:.1f} MiB ({osd}: {pgs} PGs, "
                              f"peaked at {peak / MiB:.0f} MiB x {self.config.need_margin:g})",
                              {"daemon": osd, "need_per_pg": int(per_pg), "pgs": pgs, "peak": peak})
        if learn and need > self._need:
            self.on_event("restart.need", f"start-up need raised to {need / MiB:.0f} MiB ({osd} peaked at {peak / MiB:.0f} MiB "
                          f"x {self.config.need_margin:g})", {"daemon": osd, "need": need, "peak": peak})
            self._need = need
        self.on_event("restart.ready", f"{osd} {self.config.wait}", {"daemon": osd, "peak_rss": peak, "state": state})


    def _pg_count(self, osd: str) -> int | None:
        try:
            return self.cluster.osd_pg_count(int(osd.split(".", 1)[1]))
        except Exception:  # noqa: BLE001 - no count: the flat learned need still holds
            return None

    def _need_for(self, osd: str) -> int:
        """The start-up need of this OSD: scaled by its PG count once a peak per PG is known, else the
        largest learned peak (x margin), never below the configured estimate."""
        if self._need_per_pg:
            pgs = self._pg_count(osd)
            if pgs:
                need = need_from_per_pg(self._need_per_pg, pgs, self.config.start_need)
                self.on_event("restart.need", f"{osd} needs ~{need / MiB:.0f} MiB to start "
                              f"({self._need_per_pg / MiB:.1f} MiB per PG x {pgs} PGs)",
                              {"daemon": osd, "need": need, "pgs": pgs, "need_per_pg": int(self._need_per_pg)})
                return need
        return self._need


def _host(pending: list[tuple[Host, str]], daemon: str) -> Host:
    return next(h for h, d in pending if d == daemon)
