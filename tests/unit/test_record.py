"""The drill record: hypothesis, blast radius, stop conditions, rollback, phases, faults, findings.

A rack power cut written the way drills/scenario.py writes it (drills/timeline.py Timeline, results
through finish_drill with the shipped thresholds) and read back into a DrillRecord; then the run page.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from drills.report.record import DrillRecord, build_record, read_run_config
from drills.report.render import render_run
from drills.report.results import DrillResult, LostWrites, finish_drill, read_drill_results, write_drill_result
from drills.runconfig import write_resolved_config
from drills.thresholds import Check, load_thresholds
from drills.timeline import Timeline, read_events, read_meta, read_series

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_800_000_000.0
DRILL_NAME = "rack_power_cut"
RACKS = {"rack1": {"host1": ["osd.0", "mon.a"], "host2": ["osd.1"]},
         "rack2": {"host3": ["osd.2"], "host4": ["osd.3"]},
         "rack3": {"host5": ["osd.4"], "host6": ["osd.5"]}}
PGS = 128


def _write_run(run_dir: Path, *, pg_samples: bool = True, time_to_clean: float = 700.0, rss_ratio: float = 1.8,
               heal_ok: bool = True, stop_condition: str = "", thresholds_path: str | None = None) -> DrillResult:
    """A 900 s rack power cut: baseline 0-60, detection 60-84, degraded 90-200, recovery 200-900 (or a stop)."""
    with Timeline(run_dir) as tl:
        tl.write_meta(run_id=run_dir.name, started=T0, pace="smoke", suite="smoke",
                      target={"path": "/etc/ceph-drills/staging.toml", "racks": RACKS})
        ev = lambda kind, label, t, **data: tl.event(kind, label, t=T0 + t, **data)  # noqa: E731
        ev("note", "warm-up", 0, drill=DRILL_NAME, seconds=20)
        ev("phase", "baseline", 20, drill=DRILL_NAME, rss_settled=True)
        ev("phase", "detection", 60, drill=DRILL_NAME, fault="rack power cut rack2", takes_down=[2, 3])
        ev("fault.inject", "rack power cut rack2", 60.2, fault_id="rackpowercut-1", fault="rack_power_cut", ok=True,
           description="cut power to host3, host4 (all of rack rack2)")
        ev("cluster.osd_down", "osd.2", 83, osd=2)
        ev("cluster.osd_down", "osd.3", 83, osd=3)
        ev("note", "OSDs marked down", 84, drill=DRILL_NAME, osds=[2, 3])
        ev("note", "PGs degraded", 85, drill=DRILL_NAME, degraded_objects=400)
        ev("note", "all PGs active", 88, drill=DRILL_NAME)
        ev("phase", "degraded", 90, drill=DRILL_NAME, osds_down=[2, 3])
        end = 900.0
        if stop_condition:
            ev("abort", stop_condition, 150, drill=DRILL_NAME)
            ev("fault.heal", "rack power cut rack2", 151, fault_id="rackpowercut-1", fault="rack_power_cut", ok=True)
            end = 155.0
        else:
            ev("phase", "recovery", 200, drill=DRILL_NAME, restored="rack power cut rack2")
            if heal_ok:
                ev("fault.heal", "rack power cut rack2", 200.5, fault_id="rackpowercut-1", fault="rack_power_cut", ok=True)
            else:
                ev("fault.heal", "rack power cut rack2", 201, fault_id="rackpowercut-1", fault="rack_power_cut",
                   ok=False, error="BMC timed out", manual="ipmitool -H bmc3 chassis power on")
            ev("note", "OSDs back up", 230, drill=DRILL_NAME, osds=[2, 3])
            ev("phase", "after", 200 + time_to_clean, drill=DRILL_NAME, clean_after=time_to_clean)
        ev("phase", "end", end, drill=DRILL_NAME)
        for s in range(0, int(end), 2):
            t = T0 + s
            if pg_samples:
                bad = 38 if 85 <= s < 200 else 12 if 200 <= s < 600 else 0
                tl.sample("cluster.pgs", PGS - bad, t=t, state="active+clean")
                tl.sample("cluster.pgs", bad, t=t, state="active+undersized+degraded")
            tl.sample("cluster.degraded_ratio", 0.31 if 85 <= s < 200 else 0.0, t=t)
            tl.sample("fio.write.iops", 0.0 if 60 <= s < 88 else 800.0, t=t)
    measurements = {
        "detection": {"detection_time": 24.0, "stall_time": 28.0, "io_errors": 0},
        "degraded": {"iops_ratio": 0.9, "p99_latency": 0.4, "time_to_active": 4.0, "io_errors": 0},
        "recovery": {"iops_ratio": 0.3, "p99_latency": 2.0, "stall_time": 0.0, "time_to_active": 3.0,
                     "time_to_clean": time_to_clean, "rss_peak": {"osd.2": 1.2e9, "osd.3": 1.1e9},
                     "oom_kills": 0, "io_errors": 0},
        "baseline": {"iops": 800.0, "p99_latency": 0.02},
        "after": {"iops_ratio": 0.95, "p99_latency": 0.03, "rss_after_recovery_ratio": {"osd.2": rss_ratio, "osd.3": 1.1},
                  "osd_flaps": 0},
    }
    notes = []
    if rss_ratio > 1.5:  # what DrillRecorder._rss_remedy writes
        notes = [f"RSS after recovery: osd.2 on host3 holds {rss_ratio:.2f}x its warm-baseline RSS (1144 MiB)",
                 "to return it (restart the OSDs one at a time under the host's budget): drill restart --target "
                 "/etc/ceph-drills/staging.toml --host host3 --stop-first   # osd.2"]
    lost = LostWrites(written=5000, acknowledged=4990, verified=4990, lost=0, method="rados sequence numbers")
    invariant = Check("acked_writes_lost_max", "after", 0.0, 0.0, "count", True, 0.0, "4990 of 4990", "fail", "invariant")
    result = finish_drill(DRILL_NAME, T0, T0 + end, measurements, load_thresholds(thresholds_path), lost_writes=lost,
                          notes=tuple(notes), extra_checks=(invariant,), stop_condition=stop_condition,
                          phase="degraded" if stop_condition else "after")
    write_drill_result(run_dir, result)
    return result


def _record(run_dir: Path, config: dict | None = None) -> DrillRecord:
    (result,) = read_drill_results(run_dir)
    return build_record(result, read_events(run_dir), read_series(run_dir), read_meta(run_dir),
                        config if config is not None else read_run_config(run_dir))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run-1"
    _write_run(d)
    return d


def test_hypothesis_is_the_drills_limits_in_numbers(run_dir: Path) -> None:
    texts = [h.text for h in _record(run_dir).hypothesis]
    assert "the cluster marks rack2's 2 OSDs down within 45 s of the fault" in texts
    assert "client IOPS stay above 20 % of baseline while degraded" in texts
    assert "every PG is active+clean within 10 min of power returning" in texts
    assert "no acknowledged write lost" in texts
    # the invariant says the same as lost_writes_max: said once, not twice
    assert sum("no acknowledged write lost" in t for t in texts) == 1
    # io_errors_max = 0 in four phases with one limit: one sentence
    assert sum("I/O error" in t for t in texts) == 1
    by_text = {h.text: h for h in _record(run_dir).hypothesis}
    assert by_text["every PG is active+clean within 10 min of power returning"].outcome == "broken"
    assert by_text["the cluster marks rack2's 2 OSDs down within 45 s of the fault"].outcome == "held"
    rss = next(h for h in by_text.values() if "warm baseline" in h.text)
    assert (rss.outcome, rss.severity) == ("warned", "warn")


def test_hypothesis_follows_the_thresholds_file(tmp_path: Path) -> None:
    mine = tmp_path / "staging.toml"
    mine.write_text('[rack_power_cut.detection]\ndetection_time_max = "30s"\n'
                    '[rack_power_cut.degraded]\niops_ratio_min = 0.5\n')
    d = tmp_path / "run-2"
    _write_run(d, thresholds_path=str(mine))
    texts = [h.text for h in _record(d).hypothesis]
    assert "the cluster marks rack2's 2 OSDs down within 30 s of the fault" in texts
    assert "client IOPS stay above 50 % of baseline while degraded and after recovery" in texts
    assert not any("45 s" in t for t in texts)


def test_blast_radius_hosts_osds_and_share_of_pgs(run_dir: Path) -> None:
    b = _record(run_dir).blast_radius
    assert b.racks == ("rack2",)
    assert b.hosts == ("host3", "host4")
    assert b.osds == ("osd.2", "osd.3")
    assert b.osds_marked_down == ("osd.2", "osd.3")
    assert (b.pgs_affected, b.pgs_total) == (38, 128)
    assert b.pg_share == pytest.approx(38 / 128)
    assert "38 of 128 PGs (30 %)" in b.pg_text and "31.0 %" in b.pg_text
    assert b.faults == ("cut power to host3, host4 (all of rack rack2)",)


def test_share_of_pgs_not_recorded_is_not_measured(tmp_path: Path) -> None:
    d = tmp_path / "run-nopgs"
    _write_run(d, pg_samples=False)
    b = _record(d).blast_radius
    assert b.pg_share is None and b.pgs_total is None
    assert b.pg_text.startswith("not measured")
    assert b.hosts == ("host3", "host4")  # the rest of the radius does not depend on PG samples


def test_stop_conditions_use_the_resolved_pace(run_dir: Path) -> None:
    from drills.scenario import Pace

    named = _record(run_dir, config={}).stop_conditions
    assert any("more than 90 s" in s for s in named)  # smoke pace, from run.json
    assert any("overrides, if any, not recorded" in s for s in named)
    pace = dataclasses.replace(Pace.named("smoke"), max_inactive=5, detection_timeout=7)
    write_resolved_config(run_dir, load_thresholds(), "smoke", pace,
                          {"DRILL_PACE": "smoke", "DRILL_PACE_OVERRIDES": "max_inactive=5,detection_timeout=7"}, {})
    resolved = _record(run_dir).stop_conditions
    assert any("more than 5 s while the fault is in force" in s for s in resolved)
    assert any("rack2's 2 OSDs down within 7 s" in s for s in resolved)
    assert any("outside the blast radius (osd.2, osd.3)" in s for s in resolved)
    assert any("config.json" in s for s in resolved)


def test_rollback_names_the_heal_and_drill_heal(run_dir: Path) -> None:
    rb = _record(run_dir).rollback
    assert rb[0] == "rack power cut rack2: power the rack's hosts back on; their daemons start (an uncontrolled start)"
    assert any("drill heal --target /etc/ceph-drills/staging.toml" in s for s in rb)


def test_phase_table_carries_the_bounding_cluster_events(run_dir: Path) -> None:
    rows = {p.phase: p for p in _record(run_dir).phases}
    assert list(rows) == ["baseline", "detection", "degraded", "recovery", "after"]
    assert rows["baseline"].began.startswith("warm-up done")
    assert rows["detection"].began == "fault injected: rack power cut rack2 (takes down osd.2, osd.3)"
    assert rows["detection"].start == "T+1:00"
    assert rows["degraded"].began == "osd.2, osd.3 marked down at T+1:24; all PGs active at T+1:28"
    assert rows["recovery"].began == "fault healed: rack power cut rack2"
    assert rows["after"].began == "every PG active+clean 11 min 40 s after the heal"
    assert rows["detection"].ended == "degraded began" and rows["after"].ended == "the drill ended"


def test_fault_rows_say_when_and_how_each_fault_was_healed(run_dir: Path, tmp_path: Path) -> None:
    (row,) = _record(run_dir).faults
    assert (row.injected, row.healed) == ("T+1:00", "T+3:20")
    assert row.how.endswith("by the runbook, at the end of the degraded plateau")
    failed = tmp_path / "run-heal-failed"
    _write_run(failed, heal_ok=False)
    (row,) = _record(failed).faults
    assert "heal FAILED: BMC timed out" in row.how and "ipmitool -H bmc3 chassis power on" in row.how
    stopped = tmp_path / "run-stopped"
    _write_run(stopped, stop_condition="12 PGs inactive for more than 90 s")
    (row,) = _record(stopped).faults
    assert "at once, on the stop condition (12 PGs inactive for more than 90 s)" in row.how


def test_findings_have_recommended_actions(run_dir: Path) -> None:
    r = _record(run_dir)
    assert r.verdict == "failed"
    by_check = {f.what.split(":", 1)[0]: f for f in r.findings}
    clean = by_check["FAIL recovery time_to_clean_max"]
    assert clean.severity == "fail"
    assert "osd_max_backfills" in clean.action and "osd_recovery_max_active" in clean.action
    rss = by_check["WARN after rss_after_recovery_ratio_max"]
    assert rss.severity == "warn"
    assert "drill restart --target /etc/ceph-drills/staging.toml --host host3 --stop-first" in rss.action
    assert [f.severity for f in r.findings] == ["fail", "warn"]  # failures first


def test_a_passing_drill_has_no_findings_and_a_stop_condition_is_one(tmp_path: Path) -> None:
    ok = tmp_path / "run-ok"
    _write_run(ok, time_to_clean=120.0, rss_ratio=1.1)
    r = _record(ok)
    assert r.verdict == "passed" and r.findings == ()
    assert all(h.outcome == "held" for h in r.hypothesis)
    stopped = tmp_path / "run-stop"
    _write_run(stopped, stop_condition="12 PGs inactive for more than 90 s")
    r = _record(stopped)
    stop = r.findings[0]
    assert stop.severity == "stop" and "in phase degraded" in stop.what
    assert "min_size" in stop.action
    assert r.phases[-1].ended == "stopped: 12 PGs inactive for more than 90 s"


def test_harness_error_and_skipped_drill(tmp_path: Path) -> None:
    err = DrillResult("osd_kill", T0, T0 + 5, error="setup: ClusterError: no mon reachable", outcome="error")
    r = build_record(err, [], [], {}, None)
    assert r.verdict == "error"
    assert r.findings[0].severity == "error" and "harness-errors.log" in r.findings[0].action
    assert r.blast_radius.pg_text == "no fault was injected in this drill's window"
    assert r.rollback == ("nothing to roll back: no fault was injected in this drill's window",)
    judged_nothing = build_record(DrillResult("smoke", T0, T0 + 5), [], [], {}, None)
    assert judged_nothing.verdict == "error"
    assert [f.what for f in judged_nothing.findings] == ["the drill left no check: nothing was judged"]
    assert judged_nothing.stop_conditions == ("none needed: no fault was injected in this drill's window",)
    skipped = DrillResult("oom_chain_reaction", T0, T0, outcome="skipped", error="needs 2+ OSDs per host")
    assert build_record(skipped, [], [], {}, None).findings == ()


def test_run_page_opens_each_drill_with_its_record(run_dir: Path) -> None:
    write_resolved_config(run_dir, load_thresholds(), "smoke", "smoke", {"DRILL_PACE": "smoke"}, {"ceph": "16.2.15"})
    html = render_run(run_dir).read_text()
    section = html[html.index(f'id="drill-{DRILL_NAME}"'):]
    assert section.index("Drill record") < section.index("<svg")  # the record opens the section
    for text in ("the cluster marks rack2&#39;s 2 OSDs down within 45 s of the fault", "Blast radius",
                 "38 of 128 PGs (30 %)", "Stop conditions", "Rollback", "What happened",
                 "osd.2, osd.3 marked down at T+1:24", "osd_max_backfills", "--host host3 --stop-first"):
        assert text in html, text
    assert "None" not in html


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package: chromium)")
def test_record_renders_in_headless_chromium(run_dir: Path) -> None:
    write_resolved_config(run_dir, load_thresholds(), "smoke", "smoke", {"DRILL_PACE": "smoke"}, {"ceph": "16.2.15"})
    page = render_run(run_dir)
    shot = run_dir / "screenshot.png"
    with tempfile.TemporaryDirectory(prefix="drills-chromium-") as profile:
        proc = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1100,2300",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert shot.stat().st_size > 20_000  # a page with text and tables, not a blank frame
    shutil.copyfile(shot, Path("/tmp/ceph-drills-record-screenshot.png"))  # for a person to look at


def test_a_skipped_drill_gets_a_one_line_record(tmp_path: Path) -> None:
    run = tmp_path / "run-skip"
    with Timeline(run) as tl:
        tl.write_meta(run_id="run-skip", started=T0)
    write_drill_result(run, DrillResult("oom_chain_reaction", T0, T0 + 1, outcome="skipped",
                                        error="needs 2+ OSDs per host"))
    html = render_run(run).read_text()
    assert "The drill was skipped: nothing was injected and nothing was judged (needs 2+ OSDs per host)." in html
    assert "Blast radius" not in html and "None" not in html


def test_blast_radius_from_the_fault_events_own_data() -> None:
    """A drill with its own runbook has no detection phase event: the fault.inject data names what it takes down."""
    from drills.timeline import Event

    result = DrillResult("oom_chain_reaction", T0, T0 + 100, outcome="passed")
    events = [Event(T0 + 10, "fault.inject", "power cut host3,host4", {
                  "fault_id": "powercut-9", "fault": "power_cut", "ok": True, "hosts": ["host3", "host4"],
                  "daemons": ["osd.2", "osd.3", "mon.c"], "description": "cut power to host3, host4"}),
              Event(T0 + 40, "fault.heal", "power cut host3,host4", {"fault_id": "powercut-9", "fault": "power_cut",
                                                                     "ok": True})]
    r = build_record(result, events, [], {"target": {"racks": RACKS}}, None)
    assert (r.blast_radius.hosts, r.blast_radius.osds, r.blast_radius.racks) == (("host3", "host4"), ("osd.2", "osd.3"),
                                                                                ("rack2",))
    assert r.blast_radius.pg_text.startswith("not measured")
    assert r.faults[0].in_force == "30 s" and r.faults[0].how.endswith("by the drill")
    assert r.stop_conditions[0].startswith("a failed step of the drill's own runbook heals its faults at once")
