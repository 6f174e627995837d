"""Live progress: state read from a growing timeline, plain lines without a terminal, rich on one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from drills.progress import DrillProgress, LiveState, TimelineTail, _drill_name, plain_line
from drills.timeline import Timeline

pytest_plugins = ["pytester"]

T0 = 1_760_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_tail_reads_only_new_lines_and_keeps_a_torn_one(tmp_path: Path) -> None:
    tail = TimelineTail(tmp_path)
    assert tail.read("events.jsonl") == []  # not there yet
    p = tmp_path / "events.jsonl"
    p.write_text('{"t": 1, "kind": "phase", "label": "baseline"}\n{"t": 2, "ki')
    assert [e["t"] for e in tail.read("events.jsonl")] == [1]
    with open(p, "a") as f:
        f.write('nd": "note", "label": "x"}\n')
    assert [e["kind"] for e in tail.read("events.jsonl")] == ["note"]
    assert tail.read("events.jsonl") == []


def test_state_combines_clients_and_tracks_faults_and_pgs() -> None:
    s = LiveState(drill="rack_power_cut")
    for t, client, iops, p99 in ((10.1, "a", 300, 20), (10.2, "b", 200, 45), (11.1, "a", 100, 900)):
        s.apply_sample({"t": t, "metric": "fio.write.iops", "value": iops, "labels": {"client": client}})
        s.apply_sample({"t": t, "metric": "fio.write.lat_p99_ms", "value": p99, "labels": {"client": client}})
    assert (s.iops, s.p99_ms) == (500, 45)  # second 10 is complete: sum of IOPS, slowest p99
    s.apply_sample({"t": 11, "metric": "cluster.pgs", "value": 90, "labels": {"state": "active+clean"}})
    s.apply_sample({"t": 11, "metric": "cluster.pgs", "value": 38, "labels": {"state": "active+undersized+degraded"}})
    s.apply_sample({"t": 11, "metric": "cluster.degraded_ratio", "value": 0.331})
    assert s.pgs_not_clean == 38 and s.degraded_ratio == 0.331
    assert s.apply_event({"t": 5, "kind": "phase", "label": "degraded", "data": {"drill": "rack_power_cut"}})
    assert not s.apply_event({"t": 5, "kind": "phase", "label": "after", "data": {"drill": "other"}})
    s.apply_event({"t": 6, "kind": "fault.inject", "label": "power off rack2", "data": {"fault_id": "f1", "ok": True}})
    s.apply_event({"t": 6, "kind": "fault.inject", "label": "failed inject", "data": {"fault_id": "f2", "ok": False}})
    assert s.faults_armed == {"f1": "power off rack2"}
    line = plain_line(s, 65.0)
    assert "rack_power_cut degraded" in line and "(phase 1:00)" in line and "degraded 33.1%" in line
    assert "pgs-not-clean 38" in line and "faults power off rack2" in line
    s.apply_event({"t": 7, "kind": "fault.heal", "label": "power off rack2", "data": {"fault_id": "f1"}})
    assert s.faults_armed == {} and "faults none" in plain_line(s, 70.0)


def test_unknown_readings_show_as_dash_not_zero() -> None:
    s = LiveState(drill="smoke")
    s.apply_sample({"t": 1.0, "metric": "fio.write.iops", "value": None})
    s.flush()
    assert "iops - p99 -" in plain_line(s, 2.0) and "degraded -" in plain_line(s, 2.0)


def test_plain_lines_on_phase_change_and_every_30_s(tmp_path: Path) -> None:
    clock, out = Clock(), io.StringIO()
    prog = DrillProgress(tmp_path, out, tty=False, clock=clock)
    with Timeline(tmp_path) as tl:
        tl.event("phase", "baseline", t=T0 - 500, drill="smoke")  # an earlier drill: skipped
        prog.state = LiveState(drill="rack_power_cut", drill_started=T0)
        prog.poll()
        prog.state = LiveState(drill="rack_power_cut", drill_started=T0)
        prog._last_plain = T0
        tl.event("phase", "baseline", t=T0, drill="rack_power_cut")
        prog.tick()
        for _ in range(10):  # 10 quiet seconds: nothing printed
            clock.now += 1
            prog.tick()
        clock.now += 25
        prog.tick()  # 36 s since the last line
        tl.event("phase", "detection", t=clock.now, drill="rack_power_cut")
        clock.now += 1
        prog.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "rack_power_cut baseline 0:00" in lines[0] and "baseline 0:35" in lines[1] and "detection" in lines[2]


def test_rich_display_on_a_terminal(tmp_path: Path) -> None:
    from rich.console import Console

    out = io.StringIO()
    prog = DrillProgress(tmp_path, out, tty=True)
    with Timeline(tmp_path) as tl:
        prog.start("rack_power_cut")
        tl.event("phase", "degraded", drill="rack_power_cut")
        tl.event("fault.inject", "power off rack2", fault_id="f1", ok=True)
        tl.sample("cluster.degraded_ratio", 0.25)
        prog.poll()
        frame = io.StringIO()
        Console(file=frame, width=100).print(prog._renderable())
        prog.stop()
    text = frame.getvalue()
    assert "rack_power_cut  degraded" in text and "degraded 25.0%" in text
    assert "faults armed: power off rack2" in text
    assert "\x1b[?25l" in out.getvalue()  # the live display ran on the (fake) terminal and was cleared


def test_drill_name_from_node_id() -> None:
    assert _drill_name("drills/test_rack_power_cut.py::test_rack_power_cut") == "rack_power_cut"
    assert _drill_name("test_smoke.py::test_x[1]") == "smoke"


def test_plugin_prints_phase_lines_in_a_pytest_session(pytester: pytest.Pytester, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pytester.makeconftest(f"""
from pathlib import Path
from drills.progress import register_progress

def pytest_configure(config):
    register_progress(config, Path({str(run)!r}))
""")
    pytester.makepyfile(test_osd_kill=f"""
import time
from drills.timeline import Timeline

def test_osd_kill():
    with Timeline({str(run)!r}) as tl:
        tl.event("phase", "baseline", drill="osd_kill")
        time.sleep(0.2)
        tl.event("phase", "detection", drill="osd_kill")
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "[drill] osd_kill baseline" in out and "[drill] osd_kill detection" in out, out
