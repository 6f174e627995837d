"""Invariants: checks no thresholds file can drop, judged at the end of every drill.

    acked_writes_lost_max      no acknowledged write lost, stale or corrupt (the verifying writer's read-back)
    fio_verify_errors_max      fio's own blocks read back and verified (fio verify headers)
    unfound_objects_max        no unfound objects, now or at any moment the drill looked
    inconsistent_pgs_max       a deep scrub, at the end, of the PGs that hold the drill's own objects and
                               images finds nothing inconsistent (never repaired: reported)
    new_crashes_max            no new crash reports (the mgr crash module) during the drill
    faults_left_max            no fault of this run left armed in the ledger when the drill ends
    flags_changed_max          cluster flags as they were before the drill
    unexpected_log_entries_max the cluster log holds no health check or [ERR] line outside the drill's
                               allow-list ([<drill>.health] allow = [...] in the thresholds file), but for the
                               [ERR] lines the drill's fault names as its own (`expected_errors`)

OOM kills are counted per host that runs Ceph daemons (`DrillEvidence.oom_kills`) for the drills'
oom_kills_max limits: not an invariant, since the OOM chain-reaction drill causes them on purpose.

Each is a Check with limit 0, source "invariant", severity "fail".  A reading that could not be
taken is "not measured", which fails: an invariant that could not be checked did not hold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from drills.thresholds import COUNT, INVARIANT, Check

if TYPE_CHECKING:
    from drills.cluster import CephCluster
    from drills.report.results import LostWrites
    from drills.target import Target

PHASE = "after"
INVARIANT_NAMES = ("acked_writes_lost_max", "fio_verify_errors_max", "unfound_objects_max", "inconsistent_pgs_max",
                   "new_crashes_max", "faults_left_max", "flags_changed_max", "unexpected_log_entries_max")


def invariant(name: str, measured: float | int | None, detail: str = "", limit: float = 0) -> Check:
    """One invariant: measured <= limit (0), or failed as not measured with why."""
    if measured is None:
        return Check(name, PHASE, None, limit, COUNT, False, None, detail or "not measured", "fail", INVARIANT)
    margin = limit - float(measured)
    return Check(name, PHASE, float(measured), limit, COUNT, margin >= 0, margin, detail, "fail", INVARIANT)


@dataclass
class FioVerification:
    """fio's own data, read back after the drill (filled by the drill from drills/workloads/fio.py)."""

    errors: int | None  # None: could not verify (then `why`)
    method: str
    why: str = ""


@dataclass
class DrillEvidence:
    """What a drill must leave as it found: snapshot at the start, judged by `checks` at the end."""

    cluster: "CephCluster"
    target: "Target"
    run_id: str
    timeline: Any = None  # drills.timeline.Timeline: where cluster-log entries are recorded
    allowed_health: frozenset[str] = frozenset()  # health checks this drill's fault is expected to raise
    expected_errors: list[str] = field(default_factory=list)  # regexes of [ERR] lines a fault causes by design
    started: float = field(default_factory=time.time)
    flags_before: frozenset[str] | None = None
    unfound_seen: int = 0  # the most unfound objects any look during the drill saw
    fio: list[FioVerification] = field(default_factory=list)
    objects: list[tuple[str, list[str]]] = field(default_factory=list)  # (pool, object names)
    images: list[tuple[str, str]] = field(default_factory=list)  # (pool, image)
    extra: list[Callable[[], list[Check]]] = field(default_factory=list)  # more invariant sources
    drill: str = ""
    crashes_before: set[str] | None = None
    oom_before: dict[str, int | None] = field(default_factory=dict)
    log_watch: Any = None  # drills.telemetry.clusterlog.ClusterLogWatch, subscribed for the drill's length
    host_access: Any = None  # drills.hostaccess.HostAccess: the run's, for the OOM counters of ssh hosts
    log_error: str = ""
    # the end-of-drill deep scrub, started early by start_scrub() (it then overlaps fio's read-back)
    _scrub_run: "_BackgroundScrub | None" = field(default=None, repr=False)

    def begin(self) -> "DrillEvidence":
        from drills.hostfacts import oom_kills_by_host
        from drills.telemetry.clusterlog import ClusterLogWatch
        from drills.telemetry.evidence import crash_snapshot, flags_or_none

        flags = flags_or_none(self.cluster)
        self.flags_before = None if flags is None else frozenset(flags)
        self.crashes_before = crash_snapshot(self.cluster)
        self.oom_before = oom_kills_by_host(self.target, access=self.host_access)
        try:
            self.log_watch = ClusterLogWatch(self.target, self.timeline, drill=self.drill).start()
        except Exception as e:  # noqa: BLE001 - not measured: unexpected_log_entries_max says so at the end
            self.log_watch, self.log_error = None, f"cannot subscribe to the cluster log: {e}"
        return self

    def close(self) -> None:
        """Stop the log subscription and an early scrub if the drill never reached `checks` (the plugin
        calls it at teardown)."""
        if self._scrub_run is not None:
            self._scrub_run.cancel()
            self._scrub_run = None
        if self.log_watch is not None:
            try:
                self.log_watch.stop()
            except Exception:  # noqa: BLE001
                pass
            self.log_watch = None

    def saw_unfound(self, n: int) -> None:
        self.unfound_seen = max(self.unfound_seen, n)

    def track_objects(self, pool: str, names: list[str]) -> None:
        self.objects.append((pool, names))

    def track_image(self, pool: str, image: str) -> None:
        self.images.append((pool, image))

    def add_fio(self, v: FioVerification) -> None:
        self.fio.append(v)

    def start_scrub(self) -> None:
        """Start the deep scrub of what the drill tracked so far, in the background, once the drill's
        writes have stopped and the cluster is clean: the read-back of fio's blocks runs meanwhile (both
        only read). checks() takes its result; if more was tracked since, it scrubs again, whole."""
        if self._scrub_run is None and (self.objects or self.images):
            self._scrub_run = _BackgroundScrub(self.cluster, self._scrub_key()).start()

    def _scrub_key(self) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[tuple[str, str], ...]]:
        return tuple((pool, tuple(names)) for pool, names in self.objects), tuple(self.images)

    # --- the checks -------------------------------------------------------------------------------

    def checks(self, lost: "LostWrites | None", aborted: bool = False) -> list[Check]:
        out = [self._lost_writes(lost), *self._fio(), self._unfound(), self._faults_left(), self._flags(),
               self._cluster_log(), self._crashes(), self._scrub(aborted)]
        for source in self.extra:
            out.extend(source())
        return out

    def _cluster_log(self) -> Check:
        from drills.telemetry.clusterlog import excused, unexpected

        name = "unexpected_log_entries_max"
        if self.log_watch is None:
            return invariant(name, None, f"not measured: {self.log_error or 'the cluster log was not watched'}")
        watch, self.log_watch = self.log_watch, None
        try:
            reading = watch.stop()
        except Exception as e:  # noqa: BLE001
            return invariant(name, None, f"not measured: {e}")
        if reading.error:
            return invariant(name, None, f"not measured: {reading.error}")
        bad = unexpected(reading, set(self.allowed_health), self.expected_errors)
        raised = ", ".join(sorted(reading.raised))
        detail = (f"unexpected: {'; '.join(bad[:5])}" + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                  if bad else f"{len(reading.entries)} entries; health checks raised: {raised or 'none'}, all allowed")
        own = excused(reading, self.expected_errors)
        if own:
            detail += f"; {own} [ERR] line(s) the fault names as its own"
        return invariant(name, len(bad), detail)

    def _crashes(self) -> Check:
        from drills.telemetry.evidence import crash_details, crash_snapshot

        if self.crashes_before is None:
            return invariant("new_crashes_max", None, "not measured: crash reports could not be read at the start")
        after = crash_snapshot(self.cluster)
        if after is None:
            return invariant("new_crashes_max", None, "not measured: crash reports could not be read at the end")
        new = sorted(after - self.crashes_before)
        if not new:
            return invariant("new_crashes_max", 0, "no new crash report")
        details = crash_details(self.cluster, new)
        return invariant("new_crashes_max", len(new), "; ".join(f"{i}: {details.get(i, '')}".strip() for i in new[:5]))

    def oom_kills(self) -> dict[str, int | None]:
        """OOM kills per host since the drill began (None: not measured there), recorded on the timeline.
        A measurement for the drill's oom_kills_max limit, not an invariant: the OOM chain-reaction drill
        causes kills on purpose."""
        from drills.hostfacts import oom_kills_between, oom_kills_by_host

        kills = oom_kills_between(self.oom_before, oom_kills_by_host(self.target, access=self.host_access))
        if self.timeline is not None:
            for host, n in kills.items():
                self.timeline.event("host.oom_kills", host, drill=self.drill, kills=n)
        return kills

    def _scrub(self, aborted: bool) -> Check:
        from drills.telemetry.evidence import scrub_drill_pgs

        name = "inconsistent_pgs_max"
        early, self._scrub_run = self._scrub_run, None
        if aborted:
            if early is not None:
                early.cancel()
            return invariant(name, None, "not measured: the drill stopped before the cluster was clean again")
        if not self.objects and not self.images:
            return invariant(name, None, "not measured: the drill tracked no objects or images to scrub")
        try:
            if early is not None and early.key == self._scrub_key():
                r = early.result()
            else:
                if early is not None:
                    early.cancel()
                r = scrub_drill_pgs(self.cluster, self.objects, self.images)
        except Exception as e:  # noqa: BLE001
            return invariant(name, None, f"not measured: {e}")
        if r.error:
            return invariant(name, None, f"not measured: {r.error}")
        return invariant(name, len(r.inconsistent), r.summary())

    def _lost_writes(self, lost: "LostWrites | None") -> Check:
        if lost is None:
            return invariant("acked_writes_lost_max", None, "not measured: the drill read nothing back")
        unverified = lost.acknowledged - lost.verified - lost.lost
        detail = (f"{lost.verified} of {lost.acknowledged} acknowledged writes read back intact "
                  f"({lost.method})")
        if lost.examples:
            detail += "; e.g. " + ", ".join(lost.examples[:3])
        if unverified > 0:
            # an acknowledged write nobody read back is not a write that survived
            return invariant("acked_writes_lost_max", lost.lost + unverified,
                             detail + f"; {unverified} acknowledged write(s) could not be checked")
        return invariant("acked_writes_lost_max", lost.lost, detail)

    def _fio(self) -> list[Check]:
        return [invariant("fio_verify_errors_max", v.errors, v.method if v.errors is not None else f"not measured: {v.why}")
                for v in self.fio]

    def _unfound(self) -> Check:
        try:
            now = self.cluster.pg_summary().unfound_objects
        except Exception as e:  # noqa: BLE001
            return invariant("unfound_objects_max", None, f"not measured: {e}")
        worst = max(now, self.unfound_seen)
        return invariant("unfound_objects_max", worst, f"now {now}, most seen during the drill {self.unfound_seen}")

    def _faults_left(self) -> Check:
        from drills.faults.ledger import FaultLedger

        try:
            pending = [e for e in FaultLedger(self.target.state_dir).pending() if getattr(e, "run_id", self.run_id) == self.run_id]
        except Exception as e:  # noqa: BLE001
            return invariant("faults_left_max", None, f"not measured: ledger unreadable: {e}")
        names = ", ".join(f"{getattr(e, 'kind', '?')} {getattr(e, 'label', '')}".strip() for e in pending)
        return invariant("faults_left_max", len(pending), f"armed: {names}" if pending else "ledger clear")

    def _flags(self) -> Check:
        if self.flags_before is None:
            return invariant("flags_changed_max", None, "not measured: flags could not be read at the start")
        try:
            now = frozenset(self.cluster.flags())
        except Exception as e:  # noqa: BLE001
            return invariant("flags_changed_max", None, f"not measured: {e}")
        added, removed = sorted(now - self.flags_before), sorted(self.flags_before - now)
        parts = ([f"set by the drill and still set: {', '.join(added)}"] if added else []) + (
            [f"cleared by the drill: {', '.join(removed)}"] if removed else [])
        return invariant("flags_changed_max", len(added) + len(removed), "; ".join(parts) or f"as before ({', '.join(sorted(now)) or 'none'})")


def evidence_for(cluster: "CephCluster", target: "Target", run_id: str, **kw: Any) -> DrillEvidence:
    """Snapshot what the drill must leave as it found (flags, crash reports, OOM counters) and start
    watching the cluster log."""
    return DrillEvidence(cluster, target, run_id, **kw).begin()


class _BackgroundScrub:
    """scrub_drill_pgs in a thread of its own; cancel() ends its wait at the next poll."""

    def __init__(self, cluster: "CephCluster", key: tuple[Any, Any]):
        self.cluster, self.key = cluster, key
        self._stop = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="drill-deep-scrub", daemon=True)

    def start(self) -> "_BackgroundScrub":
        self._thread.start()
        return self

    def _run(self) -> None:
        from drills.telemetry.evidence import scrub_drill_pgs

        objects, images = self.key
        try:
            self._result = scrub_drill_pgs(self.cluster, [(p, list(n)) for p, n in objects], list(images),
                                           stop=self._stop)
        except BaseException as e:  # noqa: BLE001 - handed to result()
            self._error = e

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
