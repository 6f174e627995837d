"""Cluster log as evidence: parsing, seq-gap detection, judging against an allow-list, and the pure
helpers of the evidence readers (scrub detail, inconsistency)."""

from __future__ import annotations

import time
import json
from datetime import datetime, timezone

import pytest

from drills.telemetry.clusterlog import (
    ClusterLogReading,
    ClusterLogWatch,
    LogEntry,
    entry_from_json,
    parse_health,
    record_on_timeline,
    seq_gaps,
    unexpected,
)
from drills.telemetry.evidence import describe_inconsistent, image_object_name, is_inconsistent
from drills.timeline import Timeline, read_events


def e(msg: str, level: str = "INF", name: str = "mon.a", seq: int = 1, stamp: float = 1000.0, channel: str = "cluster") -> LogEntry:
    return LogEntry(stamp, name, seq, channel, level, msg)


def reading(*entries: LogEntry, error: str | None = None) -> ClusterLogReading:
    return ClusterLogReading(0.0, 100.0, tuple(entries), error)


# --- parsing (messages as Ceph 16.2.15 wrote them on the sandbox) ------------------------------------


def test_health_lines_are_parsed_into_action_code_and_summary():
    h = parse_health("Health check failed: Reduced data availability: 4 pgs inactive, 5 pgs peering (PG_AVAILABILITY)")
    assert (h.action, h.code, h.summary) == ("failed", "PG_AVAILABILITY", "Reduced data availability: 4 pgs inactive, 5 pgs peering")
    h = parse_health("Health check update: Degraded data redundancy: 94/771 objects degraded (12.192%), 15 pgs degraded (PG_DEGRADED)")
    assert (h.action, h.code) == ("update", "PG_DEGRADED")
    assert "(12.192%)" in h.summary  # a parenthesis inside the summary is not the code
    h = parse_health("Health check cleared: OSD_RACK_DOWN (was: 1 rack (2 osds) down)")
    assert (h.action, h.code, h.summary) == ("cleared", "OSD_RACK_DOWN", "1 rack (2 osds) down")
    assert parse_health("osd.3 [v2:10.213.22.14:6800/1,v1:10.213.22.14:6801/1] boot") is None
    assert parse_health("Cluster is now healthy") is None


def test_log_last_json_entry():
    d = {"name": "mon.a", "rank": "mon.0", "stamp": "2026-11-30T04:07:28.932594+0000", "seq": 68, "channel": "cluster",
         "priority": "[WRN]", "message": "Health check failed: 1 osds down (OSD_DOWN)"}
    got = entry_from_json(d)
    assert (got.name, got.seq, got.level, got.channel) == ("mon.a", 68, "WRN", "cluster")
    assert got.stamp == pytest.approx(datetime(2026, 11, 30, 4, 7, 28, 932594, tzinfo=timezone.utc).timestamp())
    assert got.health.code == "OSD_DOWN"


# --- completeness --------------------------------------------------------------------------------


def test_seq_gaps_per_daemon_and_restarts_are_not_gaps():
    entries = [e("a", seq=10), e("b", name="osd.3", seq=1), e("c", seq=11), e("d", name="osd.3", seq=2),
               e("e", seq=14),  # mon.a 12-13 missing
               e("f", name="osd.3", seq=1),  # osd.3 restarted: numbering starts again
               e("g", name="osd.3", seq=2), e("h", seq=14)]  # duplicate delivery is not a gap
    assert seq_gaps(entries) == [("mon.a", 12, 13)]
    assert seq_gaps([e("x", seq=5), e("y", seq=6)]) == []


def test_a_gap_is_filled_or_never_committed_or_a_hole_in_the_evidence():
    from drills.telemetry.clusterlog import fill_gaps

    received = [e("a", name="mgr.x", seq=147), e("b", name="mgr.x", seq=150), e("c", seq=40), e("d", seq=44)]
    gaps = seq_gaps(received)
    assert gaps == [("mgr.x", 148, 149), ("mon.a", 41, 43)]
    # the monitor keeps mgr.x from seq 1 but has no 148 (never committed) and does have 149 (filled);
    # it keeps mon.a only from seq 43 on: 41 and 42 are lost to the watch for good
    kept = [e("k", name="mgr.x", seq=s) for s in (1, 2, 147, 149, 150)] + [e("m", seq=s) for s in (43, 44)]
    found, never, lost = fill_gaps(received, gaps, kept)
    assert [(x.name, x.seq) for x in found] == [("mgr.x", 149), ("mon.a", 43)]
    assert never == (("mgr.x", 148),) and lost == [("mon.a", 41), ("mon.a", 42)]
    # a daemon the monitor keeps nothing of: every missing entry is lost
    assert fill_gaps(received, gaps, [])[2] == [("mgr.x", 148), ("mgr.x", 149), ("mon.a", 41), ("mon.a", 42), ("mon.a", 43)]


def test_a_watch_that_cannot_subscribe_is_not_measured(tmp_path):
    from drills.target import Cluster, Target

    t = Target(Cluster("c", "", str(tmp_path / "missing.conf"), str(tmp_path / "missing.keyring")), str(tmp_path))
    w = ClusterLogWatch(t, settle_s=0).start()
    r = w.stop()
    assert not r.measured and "cannot subscribe" in r.error and "missing.conf" in r.error
    assert "not measured" in r.summary()


# --- judging -------------------------------------------------------------------------------------

RACK_CUT = [
    e("Health check failed: 1 osds down (OSD_DOWN)", "WRN", seq=1),
    e("Health check failed: 1 rack (2 osds) down (OSD_RACK_DOWN)", "WRN", seq=2),
    e("Health check failed: Degraded data redundancy: 111/771 objects degraded (14.397%), 5 pgs degraded (PG_DEGRADED)", "WRN", seq=3),
    e("Health check cleared: OSD_RACK_DOWN (was: 1 rack (2 osds) down)", seq=4),
]


def test_expected_health_checks_pass_and_one_outside_the_allow_list_fails():
    r = reading(*RACK_CUT)
    assert r.raised == {"OSD_DOWN", "OSD_RACK_DOWN", "PG_DEGRADED"} and r.cleared == {"OSD_RACK_DOWN"}
    assert r.still_raised == {"OSD_DOWN", "PG_DEGRADED"}
    assert unexpected(r, {"OSD_DOWN", "OSD_RACK_DOWN", "PG_DEGRADED"}) == []
    out = unexpected(r, {"OSD_DOWN", "PG_DEGRADED"})
    assert len(out) == 1 and "OSD_RACK_DOWN" in out[0] and "allow-list" in out[0]


def test_a_health_check_updated_in_the_window_counts_as_raised():
    r = reading(e("Health check update: 2 osds down (OSD_DOWN)", "WRN"))
    assert unexpected(r, set()) and unexpected(r, {"OSD_DOWN"}) == []


def test_err_lines_fail_unless_an_allowed_health_check_and_scrub_errors_never_pass():
    scrub = e("3.6 shard 3 soid 3:6f1d...:::ev-load-7:head : candidate had a read error", "ERR", name="osd.2")
    assert unexpected(reading(scrub), {"OSD_DOWN"}) == [f"[ERR] from osd.2 at {unexpected(reading(scrub), set())[0].split(' at ')[1]}"]
    assert "candidate had a read error" in unexpected(reading(scrub), {"OSD_DOWN"})[0]
    damaged = e("Health check failed: Possible data damage: 1 pg inconsistent (PG_DAMAGED)", "ERR")
    errors = e("Health check failed: 1 scrub errors (OSD_SCRUB_ERRORS)", "ERR")
    # listed in the allow-list by mistake: still unexpected
    out = unexpected(reading(damaged, errors), {"PG_DAMAGED", "OSD_SCRUB_ERRORS"})
    assert [x.split()[2] for x in out] == ["PG_DAMAGED", "OSD_SCRUB_ERRORS"]
    # an ERR-level health check that is allowed passes (e.g. PG_AVAILABILITY escalated)
    assert unexpected(reading(e("Health check update: Reduced data availability: 1 pg inactive (PG_AVAILABILITY)", "ERR")),
                      {"PG_AVAILABILITY"}) == []


def test_the_periodic_overall_health_line_is_not_judged_on_its_own():
    overall = e("overall HEALTH_ERR 1 scrub errors; Possible data damage: 1 pg inconsistent", "ERR")
    assert unexpected(reading(overall), set()) == []
    assert unexpected(reading(overall, e("Health check failed: 1 scrub errors (OSD_SCRUB_ERRORS)", "ERR")), set())


def test_warning_lines_are_recorded_not_judged_and_each_code_is_listed_once():
    wrn = e("Monitor daemon marked osd.3 down, but it is still running", "WRN", name="osd.3")
    assert unexpected(reading(wrn), set()) == []
    twice = reading(e("Health check failed: 1 slow ops (SLOW_OPS)", "WRN"), e("Health check update: 3 slow ops (SLOW_OPS)", "WRN"))
    assert len(unexpected(twice, set())) == 1


def test_timeline_gets_health_and_err_wrn_events_at_the_entrys_stamp(tmp_path):
    with Timeline(tmp_path) as tl:
        for x in RACK_CUT + [e("osd.3 boot"), e("slow request", "WRN", stamp=1001.5), e("Cluster is now healthy")]:
            record_on_timeline(tl, x, drill="rack_power_cut")
    events = read_events(tmp_path)
    assert [(ev.kind, ev.label) for ev in events] == [
        ("health.raised", "OSD_DOWN"), ("health.raised", "OSD_RACK_DOWN"), ("health.raised", "PG_DEGRADED"),
        ("health.cleared", "OSD_RACK_DOWN"), ("cluster.log", "[WRN] slow request")]
    assert events[-1].t == 1001.5 and events[0].data["drill"] == "rack_power_cut"


# --- evidence helpers ----------------------------------------------------------------------------


def test_image_object_names_are_prefix_and_16_hex_digits():
    from drills.telemetry.evidence import image_metadata_objects

    assert image_object_name("rbd_data.10a26b8b4567", 255) == "rbd_data.10a26b8b4567.00000000000000ff"
    assert image_metadata_objects("vol", "rbd_data.10a26b8b4567") == [
        "rbd_id.vol", "rbd_header.10a26b8b4567", "rbd_object_map.10a26b8b4567"]


def test_inconsistency_is_the_state_or_a_scrub_error_count():
    assert is_inconsistent({"state": "active+clean+inconsistent", "stat_sum": {"num_scrub_errors": 1}})
    assert is_inconsistent({"state": "active+clean", "stat_sum": {"num_scrub_errors": 2}})
    assert not is_inconsistent({"state": "active+clean", "stat_sum": {"num_scrub_errors": 0}})
    assert not is_inconsistent({"state": "active+clean+scrubbing+deep"})


def test_list_inconsistent_obj_detail():
    text = json.dumps({"epoch": 40, "inconsistents": [{
        "object": {"name": "ev-scrub-1", "nspace": "", "snap": "head"}, "errors": [], "union_shard_errors": ["read_error"],
        "shards": [{"osd": 0, "primary": False, "errors": []}, {"osd": 3, "primary": False, "errors": ["read_error"]}]}]})
    assert describe_inconsistent(text) == "object ev-scrub-1: [] ['read_error'] [osd.3 ['read_error']]"
    assert "no object detail" in describe_inconsistent(json.dumps({"epoch": 1, "inconsistents": []}))
    assert "not JSON" in describe_inconsistent("No scrub information available for pg 3.6")


def test_crash_dir_ids_and_the_sandbox_crash_dir(tmp_path):
    from drills.telemetry.evidence import crash_dir_ids, sandbox_crash_dir

    crash = tmp_path / "crash"
    (crash / "2026-11-30T04:00:00.000000Z_aaaa").mkdir(parents=True)
    (crash / "posted" / "2026-11-29T04:00:00.000000Z_bbbb").mkdir(parents=True)
    assert crash_dir_ids(crash) == {"2026-11-30T04:00:00.000000Z_aaaa", "2026-11-29T04:00:00.000000Z_bbbb"}
    assert crash_dir_ids(tmp_path / "missing") is None
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\n\tfsid = x\n\tcrash_dir = {crash}\n")
    assert sandbox_crash_dir(conf) == crash
    conf.write_text("[global]\n\tfsid = x\n")
    assert sandbox_crash_dir(conf) is None


class FakeScrubCluster:
    """PG stats whose deep-scrub stamp advances for some PGs only (the rest never get scrubbed)."""

    def __init__(self, scrubbing: set[str], inconsistent: set[str] = frozenset()):
        from drills.target import Cluster, Target

        self.target = Target(Cluster("c", "", "/nonexistent.conf", "/nonexistent.keyring"), "/tmp")
        self.scrubbing, self.inconsistent, self.requested = scrubbing, inconsistent, []

    def pools(self):
        return [{"pool_id": 3, "pool_name": "drills"}]

    def mgr_command(self, prefix, **kw):
        if prefix == "pg deep-scrub":
            self.requested.append(kw["pgid"])
            return ""
        stats = []
        for pg in ("3.0", "3.1", "3.a"):
            done = pg in self.scrubbing and pg in self.requested
            stats.append({"pgid": pg, "state": "active+clean" + ("+inconsistent" if done and pg in self.inconsistent else ""),
                          "last_deep_scrub_stamp": "2026-11-30T04:00:0" + ("5" if done else "0") + ".000000+0000",
                          "stat_sum": {"num_scrub_errors": 1 if done and pg in self.inconsistent else 0}})
        return {"pg_stats": stats}


def fake_clock():
    now = [0.0]
    return (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))


def test_deep_scrub_names_pgs_it_could_not_scrub_and_reports_inconsistent_ones(monkeypatch):
    import drills.telemetry.evidence as ev

    monkeypatch.setattr(ev, "list_inconsistent_obj", lambda *a, **k: "object x: read_error")
    clock, sleep = fake_clock()
    r = ev.deep_scrub(FakeScrubCluster({"3.0", "3.a"}, {"3.a"}), {"3.0", "3.1", "3.a"}, timeout=30, clock=clock, sleep=sleep)
    assert r.pgs_asked == ("3.0", "3.1", "3.a") and r.pgs_scrubbed == ("3.0", "3.a")
    assert not r.measured and "3.1" in r.error and "1 of 3" in r.error
    assert [p.pgid for p in r.inconsistent] == ["3.a"] and r.inconsistent[0].scrub_errors == 1
    clock, sleep = fake_clock()
    ok = ev.deep_scrub(FakeScrubCluster({"3.0", "3.1"}), {"3.0", "3.1"}, timeout=30, clock=clock, sleep=sleep)
    assert ok.ok and ok.pgs_scrubbed == ("3.0", "3.1")
    empty = ev.deep_scrub(FakeScrubCluster(set()), set())
    assert not empty.measured and "no PGs" in empty.error


def test_a_stopped_deep_scrub_ends_at_once_naming_what_it_did_not_scrub():
    import threading

    import drills.telemetry.evidence as ev

    stop = threading.Event()
    stop.set()
    t0 = time.monotonic()
    r = ev.deep_scrub(FakeScrubCluster(set()), {"3.0", "3.1"}, timeout=30, stop=stop)
    assert time.monotonic() - t0 < 5 and not r.measured and "2 of 2" in r.error


class CountingScrubs:
    """scrub_drill_pgs stand-in: records what each call was asked to scrub and from which thread."""

    def __init__(self):
        self.calls = []

    def __call__(self, cluster, objects, images, timeout=None, stop=None):
        import threading

        import drills.telemetry.evidence as ev

        names = tuple(n for _, ns in objects for n in ns)
        self.calls.append((names, tuple(images), threading.current_thread().name))
        return ev.ScrubResult(("3.0",), ("3.0",), (), None, 0.1)


def _evidence():
    from drills.invariants import DrillEvidence

    return DrillEvidence(cluster=None, target=None, run_id="r")


def test_an_early_scrub_is_taken_by_the_checks_when_nothing_was_tracked_since(monkeypatch):
    import drills.telemetry.evidence as ev

    scrubs = CountingScrubs()
    monkeypatch.setattr(ev, "scrub_drill_pgs", scrubs)
    e = _evidence()
    e.track_objects("p", ["a", "b"])
    e.track_image("rbd", "img")
    e.start_scrub()
    check = e._scrub(aborted=False)
    assert check.measured == 0 and check.passed
    assert scrubs.calls == [(("a", "b"), (("rbd", "img"),), "drill-deep-scrub")]  # once, in the background


def test_what_is_tracked_after_an_early_scrub_is_scrubbed_again_whole(monkeypatch):
    import drills.telemetry.evidence as ev

    scrubs = CountingScrubs()
    monkeypatch.setattr(ev, "scrub_drill_pgs", scrubs)
    e = _evidence()
    e.track_objects("p", ["a"])
    e.start_scrub()
    e.track_objects("p", ["late"])
    check = e._scrub(aborted=False)
    assert check.measured == 0
    assert [c[0] for c in scrubs.calls] == [("a",), ("a", "late")] and scrubs.calls[1][2] != "drill-deep-scrub"


def test_an_aborted_drill_cancels_its_early_scrub_and_is_not_measured(monkeypatch):
    import drills.telemetry.evidence as ev

    monkeypatch.setattr(ev, "scrub_drill_pgs", CountingScrubs())
    e = _evidence()
    e.track_objects("p", ["a"])
    e.start_scrub()
    check = e._scrub(aborted=True)
    assert check.measured is None and "stopped before" in check.detail and e._scrub_run is None
