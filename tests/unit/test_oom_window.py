"""The chain-reaction drill's budget window (drills/restart/window.py) and its report view (drills/report/oom.py)."""

from __future__ import annotations

import pytest

from drills.report.oom import build_oom_view
from drills.restart.window import HostProbe, OsdProbe, WindowConfig, controlled_steps, pick_window
from drills.timeline import Event, Sample

M = 1 << 20


def _probe(peaks, held, restarted, host_peak):
    return HostProbe("r3h1", tuple(OsdProbe(f"osd.{9 + i}", p * M, h * M, r * M)
                                   for i, (p, h, r) in enumerate(zip(peaks, held, restarted))), host_peak * M)


def test_controlled_steps_hold_earlier_osds_at_their_restarted_size():
    steps = controlled_steps(_probe([300, 400, 320], [300, 400, 320], [140, 150, 160], 1000).osds,
                             WindowConfig(need_margin=1.1, alone_factor=1.0))
    assert [s.held_before // M for s in steps] == [0, 140, 290]
    # step 2 asks for the learned need (400 x 1.1), not its own smaller peak
    assert [round(s.need / M) for s in steps] == [300, 400, 440]
    assert max(s.requirement for s in steps) // M == 730


def test_window_from_the_kill_that_gives_back_most():
    # sum(held) 1020, the biggest gives back 400 - 150 = 250 -> ceiling 770; floor 730
    w = pick_window(_probe([300, 400, 320], [300, 400, 320], [140, 150, 160], 1000),
                    WindowConfig(need_margin=1.1, alone_factor=1.0, position=0.5))
    assert (w.floor // M, w.ceiling // M) == (730, 770)
    assert w.found and w.ceiling_from == "held" and w.killed_gives_back == "osd.10"
    assert w.budget == 750 * M  # the middle, whole MiB
    assert w.ratio == pytest.approx(770 / 730, rel=1e-3)
    assert "window 730 MiB" in w.describe() and "budget 750 MiB" in w.describe()


def test_ceiling_never_above_the_all_at_once_peak():
    w = pick_window(_probe([300, 300, 300, 300], [300, 300, 300, 300], [100, 100, 100, 100], 900),
                    WindowConfig(need_margin=1.0, alone_factor=1.0))
    assert w.ceiling == 900 * M and w.ceiling_from == "all-at-once peak"


def test_no_window_when_the_alone_peaks_outgrow_the_held_heaps():
    # The docs' 3 x 1 x 3 figures at 100,000 objects: alone 1.1x, peaks 310/432/322, restarted ~150
    w = pick_window(_probe([310, 432, 322], [310, 432, 322], [150, 150, 150], 964),
                    WindowConfig(need_margin=1.1, alone_factor=1.1))
    assert not w.found and w.ratio < 1
    assert w.floor // M > 760 and w.ceiling // M < 800  # where the runs found neither half alone enough
    assert "NO window" in w.describe()
    assert w.ceiling <= w.budget <= w.floor  # placed between them all the same, for the rounds to show it


def test_four_osds_per_host_open_a_window():
    w = pick_window(_probe([280, 370, 290, 300], [280, 370, 290, 300], [140, 140, 140, 140], 1240),
                    WindowConfig(need_margin=1.1, alone_factor=1.15))
    assert w.found and w.floor < w.budget < w.ceiling


def test_position_moves_the_budget_and_is_checked():
    p = _probe([300, 400, 320], [300, 400, 320], [140, 150, 160], 1000)
    lo = pick_window(p, WindowConfig(need_margin=1.1, alone_factor=1.0, position=0.0))
    hi = pick_window(p, WindowConfig(need_margin=1.1, alone_factor=1.0, position=1.0))
    assert lo.budget // M == 730 and hi.budget // M == 770
    with pytest.raises(ValueError):
        WindowConfig(position=1.5)
    with pytest.raises(ValueError):
        WindowConfig(alone_factor=0.9)
    with pytest.raises(ValueError):
        pick_window(HostProbe("h", (), 1))


def _ev(t, kind, label, **data):
    return Event(t, kind, label, {"drill": "oom_chain_reaction", **data})


def test_report_view_puts_the_rounds_side_by_side():
    budgets = {"r3h1": 800 * M}
    events = [
        _ev(100, "oom.power_on", "p", round="uncontrolled", budgets=budgets),
        _ev(130, "oom.kill", "k", round="uncontrolled", host="r3h1", daemon="osd.10", pid=7),
        _ev(150, "supervisor.start", "s", round="uncontrolled", daemon="osd.10"),
        _ev(170, "oom.kill", "k", round="uncontrolled", host="r3h1", daemon="osd.10", pid=7),
        _ev(200, "oom.kill", "k", round="uncontrolled", host="r3h1", daemon="osd.10", pid=7),
        _ev(201, "supervisor.start_limit", "l", round="uncontrolled", daemon="osd.10"),
        _ev(262, "oom.never", "n", round="uncontrolled", bound=600, seconds=162, reason="osd.10 left down at the start limit"),
        _ev(263, "oom.round_end", "e", round="uncontrolled"),
        _ev(1000, "oom.power_on", "p", round="controlled", budgets=budgets),
        _ev(1001, "restart.decision", "start osd.9", round="controlled", action="start", daemon="osd.9", host="r3h1",
            used=10 * M, budget=800 * M, available=790 * M, need=150 * M, reason="fits"),
        _ev(1060, "restart.ready", "osd.9 clean", round="controlled", daemon="osd.9", peak_rss=400 * M),
        _ev(1061, "restart.decision", "wait osd.10", round="controlled", action="wait", daemon="osd.10", host="r3h1",
            used=420 * M, budget=800 * M, available=380 * M, need=440 * M, reason="w1"),
        _ev(1063, "restart.decision", "wait osd.10", round="controlled", action="wait", daemon="osd.10", host="r3h1",
            used=415 * M, budget=800 * M, available=385 * M, need=440 * M, reason="w2"),
        _ev(1077, "restart.decision", "restart osd.9", round="controlled", action="restart", daemon="osd.9", host="r3h1",
            used=415 * M, budget=800 * M, available=385 * M, need=440 * M, reason="biggest"),
        _ev(1100, "oom.kill", "OOM kill on r3h1", round="controlled", host="r3h1"),  # the orchestrator's count: no pid
        _ev(1300, "oom.health_ok", "ok", round="controlled", seconds=300),
        _ev(1301, "oom.round_end", "e", round="controlled"),
    ]
    samples = []
    for r, t0 in (("uncontrolled", 100), ("controlled", 1000)):
        for i in range(0, 200, 1):
            samples.append(Sample(t0 + i, "oom.host_anon.bytes", float((300 + i) * M), {"host": "r3h1", "round": r}))
            running = not (r == "uncontrolled" and 30 <= i < 50)
            samples.append(Sample(t0 + i, "oom.rss.bytes", float(200 * M) if running else None,
                                  {"daemon": "osd.10", "host": "r3h1", "round": r}))
            samples.append(Sample(t0 + i, "oom.osd_up", 1.0 if i > 20 else 0.0, {"daemon": "osd.10", "host": "r3h1", "round": r}))
    view = build_oom_view(events, samples)
    assert view is not None
    unc, con = view.rounds
    assert (unc.words, unc.kill_count, unc.repeats, unc.kills) == ("all at once", 3, 2, "osd.10, osd.10, osd.10")
    assert unc.health == "never: osd.10 left down at the start limit"
    assert con.health == "HEALTH_OK after 300 s" and con.kill_count == 0
    assert "r3h1 499 MiB of 800 MiB (0.62)" in con.peaks
    host, memory, states = view.hosts[0]
    assert host == "r3h1" and "budget 800 MiB" in memory and "✕ osd.10" in memory and "never HEALTH_OK" in memory
    assert "down after an OOM kill" in states and "one at a time · osd.10" in states
    actions = [(d.action, d.daemon) for d in view.decisions]
    assert actions == [("started", "osd.9"), ("ready", "osd.9"), ("waited", "osd.10"), ("restarted the biggest", "osd.9")]
    wait = view.decisions[2]
    assert wait.t == "T+1:01–1:03" and wait.free == "385 MiB" and wait.need == "440 MiB"


def test_report_view_absent_without_rounds():
    assert build_oom_view([_ev(1, "phase", "baseline")], []) is None


def test_ceiling_counts_heaps_when_the_probe_has_them():
    # RSS counts each OSD's mapped binary; the host's cgroup charges it once: the ceiling takes the heaps
    osds = tuple(OsdProbe(f"osd.{i}", 330 * M, 330 * M, 150 * M, held_anon=300 * M, restarted_anon=120 * M) for i in range(4))
    w = pick_window(HostProbe("r3h1", osds, 2000 * M), WindowConfig(need_margin=1.0, alone_factor=1.0))
    assert w.ceiling == (4 * 300 - 180) * M  # heaps: 1200 held, a kill gives back 300 - 120
    assert w.floor == (3 * 150 + 330) * M  # the controlled start's need stays in RSS, as it reckons it
