"""The gray runbook's pure parts: SLOW_OPS timing from the cluster log's events, mark-down counting from the
osdmap's, the hold, and a None that is an outcome ("never raised") rather than a failed reading."""

from __future__ import annotations

import pytest

from drills.gray_runbook import (
    REPORT_ALLOWANCE_S,
    count_markdowns,
    first_cleared_after,
    hold_seconds,
    phase_bounds,
    slow_ops_outcome,
)
from drills.thresholds import evaluate, loads_thresholds
from drills.timeline import Event

T0 = 1_000.0  # the inject


def health(t: float, kind: str, code: str = "SLOW_OPS") -> Event:
    return Event(T0 + t, kind, code, {"drill": "slow_osd", "summary": "..."})


def osd(t: float, kind: str, n: int) -> Event:
    return Event(T0 + t, f"cluster.osd_{kind}", f"osd.{n}", {"osd": n})


def test_slow_ops_time_is_the_first_raise_while_the_fault_is_in_force() -> None:
    events = [health(38.4, "health.raised"), health(43.0, "health.updated"), health(50.0, "health.cleared"),
              health(-5.0, "health.raised", "OSD_DOWN"), health(12.0, "health.raised", "OSD_SLOW_PING_TIME_BACK")]
    out = slow_ops_outcome(events, T0, T0 + 45, log_read=True)
    assert out.time == pytest.approx(38.4) and out.raised == 1 and out.why == ""
    # an update without a "failed" line in the window (the raise was missed by the log) still counts
    out = slow_ops_outcome([health(40.0, "health.updated")], T0, T0 + 45, log_read=True)
    assert out.time == pytest.approx(40.0) and out.raised == 1


def test_never_raised_is_an_outcome_and_an_unread_log_is_not_measured() -> None:
    late = [health(47.0, "health.raised")]  # after the heal at 45 s: not while the fault was in force
    never = slow_ops_outcome(late, T0, T0 + 45, log_read=True)
    assert never.time is None and never.raised == 0 and never.why == "never raised within the degraded phase (45 s)"
    unread = slow_ops_outcome(late, T0, T0 + 45, log_read=False)
    assert unread.time is None and unread.raised is None and unread.why.startswith("not measured")


def test_slow_ops_already_raised_before_the_inject_is_not_a_time_since_the_inject() -> None:
    events = [health(-20.0, "health.raised"), health(5.0, "health.updated")]
    out = slow_ops_outcome(events, T0, T0 + 45, log_read=True)
    assert out.time is None and out.raised == 1 and "already raised before" in out.why
    # raised and cleared before the inject: the window starts clean
    events = [health(-20.0, "health.raised"), health(-10.0, "health.cleared"), health(33.0, "health.raised")]
    assert slow_ops_outcome(events, T0, T0 + 45, log_read=True).time == pytest.approx(33.0)


def test_cleared_after_the_heal() -> None:
    events = [health(38.0, "health.raised"), health(30.0, "health.cleared"), health(52.5, "health.cleared")]
    assert first_cleared_after(events, T0 + 45) == pytest.approx(7.5)
    assert first_cleared_after(events[:1], T0 + 45) is None


def test_markdowns_count_every_down_and_flaps_count_the_returns() -> None:
    events = [osd(-3, "down", 5),  # before the window
              osd(24.0, "down", 2), osd(31.0, "up", 2), osd(52.0, "down", 2), osd(60.0, "up", 2),
              osd(25.0, "down", 3), osd(33.0, "up", 3),
              osd(90.0, "down", 4)]  # after the window
    md = count_markdowns(events, T0, T0 + 90)
    assert (md.downs, md.ups, md.flaps) == (3, 3, 1)
    assert md.first_down == pytest.approx(24.0)
    assert md.by_osd == {"osd.2": 2, "osd.3": 1}
    assert "3 mark-down(s)" in md.text() and "1 flap(s)" in md.text()
    quiet = count_markdowns(events, T0 + 61, T0 + 89)
    assert (quiet.downs, quiet.ups, quiet.flaps, quiet.first_down) == (0, 0, 0, None)
    assert quiet.text() == "no OSD marked down"


def test_phase_bounds_are_the_drills_own_phase_events() -> None:
    evs = [Event(10, "phase", "baseline", {"drill": "slow_osd"}), Event(20, "phase", "degraded", {"drill": "slow_osd"}),
           Event(25, "phase", "recovery", {"drill": "other"}), Event(65, "phase", "recovery", {"drill": "slow_osd"}),
           Event(80, "phase", "end", {"drill": "slow_osd"})]
    b = phase_bounds(evs, "slow_osd")
    assert b == {"baseline": (10, 20), "degraded": (20, 65), "recovery": (65, 80)}


def test_the_hold_leaves_room_for_slow_ops_to_be_raised() -> None:
    assert hold_seconds(30, 30.0) == 30 + REPORT_ALLOWANCE_S  # smoke: 30 s would end before SLOW_OPS can show
    assert hold_seconds(90, 30.0) == 90
    assert hold_seconds(180, None) == 180  # unread: the default complaint time
    assert hold_seconds(30, 10.0) == 30


def test_a_never_raised_slow_ops_fails_its_limit_saying_so_not_as_not_measured() -> None:
    th = loads_thresholds('[slow_osd.degraded]\nslow_ops_time_max = "60s"\nslow_ops_raised_min = 1\nmarkdowns_max = 0\n')
    why = {("degraded", "slow_ops_time"): "never raised within the degraded phase (45 s)"}
    checks = {c.name: c for c in evaluate(th, "slow_osd", {"degraded": {"slow_ops_time": None, "slow_ops_raised": 0,
                                                                         "markdowns": 0}}, why)}
    t = checks["slow_ops_time_max"]
    assert not t.passed and t.measured is None and t.detail == "never raised within the degraded phase (45 s)"
    assert "never raised" in t.message() and "not measured" not in t.message()
    assert not checks["slow_ops_raised_min"].passed and checks["slow_ops_raised_min"].measured == 0
    assert checks["markdowns_max"].passed
    # without a reason a None is "not measured", as for every other limit
    plain = evaluate(th, "slow_osd", {"degraded": {"slow_ops_time": None}})
    assert next(c for c in plain if c.name == "slow_ops_time_max").detail == "not measured"
    ok = evaluate(th, "slow_osd", {"degraded": {"slow_ops_time": 38.0, "slow_ops_raised": 1, "markdowns": 0}}, why)
    assert all(c.passed for c in ok) and all(c.detail == "" for c in ok)  # a reason for None never leaks onto a value


def test_one_markdown_fails_a_slow_osd_and_the_recorder_keeps_the_reason(tmp_path) -> None:
    from drills.drill import DrillRecorder
    from drills.thresholds import load_thresholds
    from drills.timeline import Timeline

    th = loads_thresholds('[slow_osd.degraded]\nmarkdowns_max = 0\nslow_ops_time_max = "60s"\n')
    with Timeline(tmp_path) as tl:
        rec = DrillRecorder("slow_osd", tl, th, tmp_path)
        rec.measure("degraded", "markdowns", 1)
        rec.measure("degraded", "slow_ops_time", None, why="never raised within the degraded phase (45 s)")
        result = rec.finish()
    by = {c.name: c for c in result.checks}
    assert not by["markdowns_max"].passed and by["markdowns_max"].measured == 1
    assert by["slow_ops_time_max"].detail == "never raised within the degraded phase (45 s)"
    assert load_thresholds().for_drill("slow_osd")  # the shipped file has the section


def test_gray_drills_are_gray_and_in_the_nightly_and_full_suites() -> None:
    from drills.catalogue import BY_NAME, GRAY, SUITES

    for name in ("slow_osd", "slow_link", "flapping_host", "eio_read"):
        spec = BY_NAME[name]
        assert spec.runbook == GRAY and "Gray runbook" in spec.doc
        assert spec.module in SUITES["nightly"] and spec.module in SUITES["full"] and spec.module not in SUITES["smoke"]
    assert BY_NAME["osd_kill"].runbook == "fail-stop"


def test_gray_faults_aim_where_the_catalogue_says_and_only_flapping_counts_as_down(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from emulators.fake import make_target

    from drills.catalogue import BY_NAME

    t = make_target(tmp_path)
    slow = BY_NAME["slow_osd"].make_fault(t)
    assert slow.daemons == [f"osd.{t.racks[0].hosts[-1].osd_ids[0]}"] and not slow.takes_down().osds()
    link = BY_NAME["slow_link"].make_fault(t)
    assert link.host_names() == [t.racks[0].hosts[-1].name] and not link.takes_down().hosts
    flap = BY_NAME["flapping_host"].make_fault(t)
    assert flap.takes_down().hosts == {t.racks[0].hosts[-1].name}
    assert flap.down_s < 20 and flap.duration_s > 45  # shorter than the grace; lasts past the smoke hold


def test_the_gray_phases_against_a_fake_cluster(tmp_path, monkeypatch) -> None:
    """The runbook's order and figures with a fake cluster: inject, hold, heal, recovery, after; SLOW_OPS and a
    mark-down of the fault's own OSD appear on the timeline as the cluster-log watch and the sampler put them."""
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from emulators.fake import make_target

    import drills.scenario as scenario
    from drills.drill import DrillRecorder
    from drills.gray_runbook import GrayDrill
    from drills.scenario import Pace
    from drills.thresholds import load_thresholds
    from drills.timeline import Timeline

    t = make_target(tmp_path)
    victim = t.racks[0].hosts[-1].osd_ids[0]
    monkeypatch.setattr(scenario, "measure_write_costs", lambda *a, **k: (1.0, 40.0))
    monkeypatch.setattr("drills.gray_runbook.REPORT_ALLOWANCE_S", 0.5)
    calls: list[str] = []

    class Cluster:
        def osd_running_config(self, osd: int, key: str) -> str:
            assert key == "osd_op_complaint_time"
            return "0.5"

        def pg_summary(self):
            return SimpleNamespace(inactive=0, unfound_objects=0)

        def osds_up(self):
            return {o for h in t.hosts for o in h.osd_ids}

        osds_in = osds_up

        def wait_for_osds(self, up=None, timeout=0):
            calls.append(f"wait up {sorted(up)}")

        def wait_for_active(self, timeout=0):
            calls.append("wait active")

        def wait_for_clean(self, timeout=0):
            calls.append("wait clean")

    with Timeline(tmp_path / "run") as tl:
        rec = DrillRecorder("slow_osd", tl, load_thresholds(), tmp_path / "run")
        rec.evidence = SimpleNamespace(saw_unfound=lambda n: None, log_watch=SimpleNamespace(subscribed=True))

        class Faults:
            def inject(self, fault, allow_unavailable=False):
                calls.append(f"inject {fault.label}")
                now = __import__("time").time()
                tl.event("health.raised", "SLOW_OPS", t=now + 0.6, drill="slow_osd")  # what the log watch records
                tl.event("cluster.osd_down", f"osd.{victim}", t=now + 0.3, osd=victim)  # what the sampler records

            def heal(self, fault):
                calls.append("heal")

        from drills.catalogue import BY_NAME

        pace = Pace(warmup=0, baseline=0, degraded=0, after=0, max_inactive=5, warmup_max=0, gray_hold=1.0)
        g = GrayDrill(rec, Cluster(), t, Faults(), BY_NAME["slow_osd"].make_fault, "img", pace=pace)
        fault = g.make_fault(t)
        g._phases(fault, set(), pace, None)
        g._measure_flaps()
    assert calls[0].startswith("inject slow disk") and calls[1] == "heal"
    assert calls[2] == f"wait up {sorted(t.racks[0].hosts[-1].osd_ids)}" and calls[3:] == ["wait active", "wait clean"]
    assert g.hold == pytest.approx(1.0)  # max(pace 1.0, complaint 0.5 + allowance 0.5)
    deg = rec.measurements["degraded"]
    assert deg["slow_ops_raised"] == 1 and deg["slow_ops_time"] == pytest.approx(0.6, abs=0.2)
    assert deg["markdowns"] == 1 and deg["osd_flaps"] == 0 and deg["markdown_time"] == pytest.approx(0.3, abs=0.2)
    assert rec.measurements["recovery"]["markdowns"] == 0 and "time_to_clean" in rec.measurements["recovery"]
    assert any(n.startswith("gray: SLOW_OPS raised") for n in rec.notes)
