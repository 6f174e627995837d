"""The drill catalogue: every drill as data, and the runbook drills built from it.

A runbook drill is one `RunbookDrill` entry below and one section of the thresholds file. It follows
one of two runbooks (`runbook`): "fail-stop" (drills/scenario.py: warm-up, baseline, inject, detection
until the cluster marks the OSDs down, degraded plateau, heal, recovery, after, every acknowledged write
read back) or "gray" (drills/gray_runbook.py: warm-up, baseline, inject and hold the fault for a fixed
time while SLOW_OPS, mark-downs, p99 and IOPS are recorded, heal, recovery, after, read back). Its pytest
module (`drills/test_<name>.py`) is three lines that take its test from here, so node ids
(`-k test_osd_kill`, `--rerun-failed` of older runs) stay as they were.
Suites, the dry-run plan and admission read the catalogue, never a list typed elsewhere.
Drills with their own runbook (smoke, controlled_restart, concurrent_restore, oom_chain_reaction, soak) are
listed in `SUITES` by module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from drills.faults.fault import Fault
from drills.faults.gray import Flapping, ReadErrors, SlowDisk, SlowLink
from drills.faults.kinds import DaemonHang, DaemonKill, NetworkPartition, PowerCut, RackPowerCut
from drills.faults.throttle import KiB, DiskLimit, LinkLimit
from drills.target import Target

FAIL_STOP, GRAY = "fail-stop", "gray"
RUNBOOKS = (FAIL_STOP, GRAY)


@dataclass(frozen=True)
class RunbookDrill:
    name: str  # the drill's name: results, reports, history and its thresholds section
    what: str  # one sentence: the fault and why the drill exists
    aim: str  # where the fault lands by default, and the variable that moves it
    make_fault: Callable[[Target], Fault]
    suites: tuple[str, ...]
    runbook: str = FAIL_STOP  # FAIL_STOP (drills/scenario.py) or GRAY (drills/gray_runbook.py)
    # after(drill, cluster, target, faults): runs once the drill is judged (also when it stopped early), outside
    # its judged window, to leave the cluster ready for the next run of the same drill
    after: Callable[[Any, Any, Target, Any], None] | None = None

    def __post_init__(self) -> None:
        if self.runbook not in RUNBOOKS:
            raise ValueError(f"drill {self.name}: runbook {self.runbook!r} is not one of {', '.join(RUNBOOKS)}")

    @property
    def module(self) -> str:
        return f"drills.test_{self.name}"

    @property
    def doc(self) -> str:
        if self.runbook == GRAY:
            runbook = ("Gray runbook (drills/gray_runbook.py), with fio 4k random writes and the verifying writer running throughout:\n"
                       " baseline -> inject -> degraded (the fault held for a fixed time: SLOW_OPS, mark-downs, p99, IOPS)\n"
                       " -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.\n")
        else:
            runbook = ("Runbook (drills/scenario.py), with fio 4k random writes and the verifying writer running throughout:\n"
                       " baseline -> inject -> detection (until the cluster marks the OSDs down) -> degraded plateau\n"
                       " -> heal -> recovery (until active+clean) -> after -> every acknowledged write read back.\n")
        return (f"Drill {self.name}: {self.what}\n\nAimed at {self.aim}.\n{runbook}"
                f"Limits: the `{self.name}` section of the thresholds file. Phase lengths: DRILL_PACE=smoke|nightly|full.\n")


def _second_rack(t: Target) -> str:
    return os.environ.get("DRILL_RACK") or t.racks[1 % len(t.racks)].name


def _last_rack(t: Target) -> str:
    return os.environ.get("DRILL_RACK") or t.racks[-1].name


def _host(t: Target) -> str:
    return os.environ.get("DRILL_HOST") or t.racks[0].hosts[-1].name


def _osd_second_rack(t: Target) -> str:
    return os.environ.get("DRILL_OSD") or f"osd.{t.racks[1 % len(t.racks)].hosts[-1].osd_ids[0]}"


def _osd_first_rack(t: Target) -> str:
    return os.environ.get("DRILL_OSD") or f"osd.{t.racks[0].hosts[-1].osd_ids[0]}"


# Gray faults' sizes (measured on the sandbox: docs/faults.md, "Gray drills").
# 4 KiB/s of writes: a client 4 KiB write costs BlueStore about 8 KiB (data and WAL) plus metadata, and the
# 17 writes in flight (fio iodepth 16, the verifier's 1) then wait longer than osd_op_complaint_time.
SLOW_OSD_LIMIT = DiskLimit(write_bps=4 * KiB)
SLOW_LINK_LIMIT = LinkLimit(2_000_000)  # 2 Mbit/s each way: below the host's replication traffic at full speed
FLAP_DOWN_S, FLAP_UP_S = 5.0, 10.0
# Objects marked with a read error per run: each read of one costs its OSD a repaired read, and Pacific keeps that
# count until the OSD restarts (OSD_TOO_MANY_REPAIRS above mon_osd_warn_num_repaired, 10): three runs stay under it.
EIO_OBJECTS = 3


def keep_repair_allowance(drill: Any, cluster: Any, target: Target, faults: Any, osd: str) -> bool:
    """After eio_read, outside its judged window: when the OSD's repaired-read count leaves no room below
    mon_osd_warn_num_repaired for two more runs' marked objects (the mgr's count can lag one run), restart
    the OSD (a ledgered stop and start) to reset it, so that a later run is not failed by an
    OSD_TOO_MANY_REPAIRS the harness itself caused. True when it restarted the OSD."""
    from drills.cluster import ClusterError
    from drills.faults.gray import DEFAULT_WARN_REPAIRS, WARN_REPAIRS_OPTION, shards_repaired
    from drills.faults.kinds import DaemonStop

    osd_id = int(osd.split(".", 1)[1])
    try:
        count = shards_repaired(cluster.mgr_command("pg dump", dumpcontents=["osds"]), osd_id)
    except ClusterError as e:
        drill.event("note", f"{osd}'s repaired-read count could not be read ({e}); not reset")
        return False
    try:
        warn = int(float(cluster.config_get("mgr", WARN_REPAIRS_OPTION)))
    except (ClusterError, ValueError):
        warn = DEFAULT_WARN_REPAIRS
    if count is None or count + 2 * EIO_OBJECTS <= warn:
        return False
    drill.event("note", f"{osd} has repaired {count} reads since it started; two more runs would pass "
                        f"{WARN_REPAIRS_OPTION} ({warn}) and raise OSD_TOO_MANY_REPAIRS: restarted it after the drill "
                        "to reset the count", osd=osd, repaired=count)
    faults.heal(faults.inject(DaemonStop(target, osd)))
    cluster.wait_for_osds(up={osd_id}, timeout=120)
    cluster.wait_for_clean(timeout=300)
    return True


def _flap_duration() -> float:
    """The flapping schedule's own end: past the longest hold of the pace (the heal ends it at the phase's end)."""
    from drills.gray_runbook import DEFAULT_COMPLAINT_S, hold_seconds  # lazy: the runbook imports the cluster client
    from drills.scenario import current_pace

    return hold_seconds(current_pace().gray_hold, DEFAULT_COMPLAINT_S) + 60


RUNBOOK_DRILLS: tuple[RunbookDrill, ...] = (
    RunbookDrill("rack_power_cut",
                 "every host of one rack loses power at the same instant: its OSDs die and its network falls "
                 "silent (the article's drill).",
                 "the second rack (rack2 on the default sandbox); DRILL_RACK",
                 lambda t: RackPowerCut(t, _second_rack(t)), ("smoke", "nightly", "full")),
    RunbookDrill("osd_kill",
                 "one OSD is killed (SIGKILL) on a live host: peers are refused at once, so detection is "
                 "near-immediate.",
                 "the first OSD of the second rack's last host (osd.3 on the default sandbox); DRILL_OSD",
                 lambda t: DaemonKill(t, _osd_second_rack(t)), ("nightly", "full")),
    RunbookDrill("hung_osd",
                 "one OSD is frozen (SIGSTOP): alive to the kernel, silent to its peers, so only the heartbeat "
                 "grace notices it.",
                 "the first OSD of the first rack's last host (osd.1 on the default sandbox); DRILL_OSD",
                 lambda t: DaemonHang(t, _osd_first_rack(t)), ("nightly", "full")),
    RunbookDrill("host_power_cut",
                 "one host loses power: a smaller blast radius than a rack, the same silence.",
                 "the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST",
                 lambda t: PowerCut(t, [_host(t)]), ("nightly", "full")),
    RunbookDrill("rack_partition",
                 "one rack is cut off from the rest of the network in both directions; its daemons keep running.",
                 "the last rack (rack3 on the default sandbox); DRILL_RACK",
                 lambda t: NetworkPartition(t, [h.name for h in t.rack(_last_rack(t)).hosts]), ("nightly", "full")),
    # --- gray drills: slow or unreliable, maybe never marked down (docs/faults.md, "Gray drills") ---
    RunbookDrill("slow_osd",
                 f"one OSD's disk is throttled to {SLOW_OSD_LIMIT.write_bps // KiB} KiB/s of writes (a dying disk): "
                 "it keeps heartbeating, so it is not marked down, while every client write that needs it waits "
                 "until SLOW_OPS is raised.",
                 "the first OSD of the first rack's last host (osd.1 on the default sandbox); DRILL_OSD",
                 lambda t: SlowDisk(t, _osd_first_rack(t), SLOW_OSD_LIMIT), ("nightly", "full"), GRAY),
    RunbookDrill("slow_link",
                 f"one host's link is rate-limited to {SLOW_LINK_LIMIT.describe()} both ways (a bad NIC or "
                 "cable): replication through it slows, heartbeats arrive late but arrive.",
                 "the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST",
                 lambda t: SlowLink(t, _host(t), SLOW_LINK_LIMIT), ("nightly", "full"), GRAY),
    RunbookDrill("flapping_host",
                 f"one host's network drops for {FLAP_DOWN_S:g} s every {FLAP_DOWN_S + FLAP_UP_S:g} s for the "
                 "whole phase: each silence is shorter than osd_heartbeat_grace, so client IO stalls and "
                 "resumes without the host being marked down.",
                 "the last host of the first rack (r1h2 on the default sandbox); DRILL_HOST",
                 lambda t: Flapping(t, _host(t), down_s=FLAP_DOWN_S, up_s=FLAP_UP_S, duration_s=_flap_duration()),
                 ("nightly", "full"), GRAY),
    RunbookDrill("eio_read",
                 f"reads of {EIO_OBJECTS} objects whose primary is one OSD fail on that OSD with EIO (BlueStore's "
                 "read-error injection, a bad sector): the primary should read them from a replica and rewrite its "
                 "own copy, so the client reads succeed and the OSD stays up.",
                 "the first OSD of the first rack's last host (osd.1 on the default sandbox); DRILL_OSD",
                 lambda t: ReadErrors(t, _osd_first_rack(t), pool=t.cluster.rados_pool, objects=EIO_OBJECTS),
                 ("nightly", "full"), GRAY, after=lambda d, c, t, f: keep_repair_allowance(d, c, t, f, _osd_first_rack(t))),
)
BY_NAME = {d.name: d for d in RUNBOOK_DRILLS}

SMOKE, RESTORE = "drills.test_smoke", "drills.test_concurrent_restore"
CONTROLLED_RESTART, OOM_CHAIN = "drills.test_controlled_restart", "drills.test_oom_chain_reaction"
SOAK = "drills.test_soak"  # the seeded chaos soak (drills/soak/): `drill soak`, and 20 minutes of it in the full suite


def _runbook(suite: str, *names: str) -> list[str]:
    return [BY_NAME[n].module for n in names if suite in BY_NAME[n].suites]


# Suites name drill modules, in the order they run.
SUITES: dict[str, list[str]] = {
    "smoke": [SMOKE, *_runbook("smoke", "rack_power_cut"), RESTORE],
    "nightly": [SMOKE, *_runbook("nightly", "rack_power_cut"), CONTROLLED_RESTART,
                *_runbook("nightly", "osd_kill", "hung_osd", "host_power_cut", "rack_partition"),
                *_runbook("nightly", "slow_osd", "slow_link", "flapping_host", "eio_read"), RESTORE],
    "full": [SMOKE, *_runbook("full", "rack_power_cut"), CONTROLLED_RESTART,
             *_runbook("full", "osd_kill", "hung_osd", "host_power_cut", "rack_partition"),
             *_runbook("full", "slow_osd", "slow_link", "flapping_host", "eio_read"), RESTORE, OOM_CHAIN, SOAK],
    "soak": [SOAK],  # what `drill soak` runs (its length and seed from DRILL_SOAK_*)
}


def runbook_test(name: str) -> tuple[str, Callable[[Target], Fault], Callable[..., Any]]:
    """(DRILL, make_fault, the pytest test function) of a runbook drill, for its three-line module."""
    spec = BY_NAME[name]

    def test(drill, drill_cluster, drill_target, drill_faults, drill_image) -> None:  # type: ignore[no-untyped-def]
        # the runbooks import the cluster client and the workloads; keep this module light
        if spec.runbook == GRAY:
            from drills.gray_runbook import GrayDrill as Runbook
        else:
            from drills.scenario import FaultDrill as Runbook

        try:
            outcome = Runbook(drill, drill_cluster, drill_target, drill_faults, spec.make_fault, drill_image).run()
            result = drill.finish(lost_writes=outcome.lost_writes, model=outcome.model)
        finally:
            if spec.after is not None:
                spec.after(drill, drill_cluster, drill_target, drill_faults)
        drill.assert_passed(result)

    test.__name__ = test.__qualname__ = f"test_{name}"
    test.__doc__ = spec.what
    return spec.name, spec.make_fault, test
