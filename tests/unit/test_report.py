"""The report: a synthetic rack-power-cut run rendered to one self-contained page."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from drills.report import (
    DrillResult,
    LostWrites,
    ModelInputs,
    ResultsError,
    build_summary,
    finish_drill,
    read_drill_results,
    render_index,
    render_run,
    write_drill_result,
    write_prom,
    write_summary_json,
)
from drills.report import analysis as an
from drills.report.svg import Band, Line, Marker, line_chart
from drills.thresholds import load_thresholds
from drills.timeline import Timeline, read_events, read_series

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_700_000_000.0
DURATION = 400
OSDS = {"rack1": {"host1": ["osd.0", "osd.1"]}, "rack2": {"host2": ["osd.2", "osd.3"]},
        "rack3": {"host3": ["osd.4", "osd.5"]}}
LOST_RACK = "rack2"


def _phase_at(s: int) -> str:
    return "baseline" if s < 60 else "detection" if s < 85 else "degraded" if s < 200 else \
        "recovery" if s < 330 else "after"


def make_run(run_dir: Path, run_id: str = "run-1", bigger_osd4: bool = True, seed: int = 1) -> Path:
    """A 400 s rack power cut at 1 Hz: the article's shape, with gaps where samplers failed."""
    rnd = random.Random(seed)
    with Timeline(run_dir) as tl:
        tl.write_meta(run_id=run_id, started=T0, ceph_version="18.2.4 (reef)", harness_version="0.1.0",
                      target={"name": "sandbox", "path": "/var/lib/ceph-drills/target.toml"},
                      topology={"pool_size": 3, "racks": [
                          {"name": r, "hosts": [{"name": h, "daemons": d} for h, d in hosts.items()]}
                          for r, hosts in OSDS.items()]},
                      settings={"osd_heartbeat_grace": 20, "mon_osd_down_out_interval": 600},
                      pool={"name": "rbd", "size": 3, "object_size": 4 * 2**20})
        for name, t in (("baseline", 0), ("detection", 60), ("degraded", 85), ("recovery", 200), ("after", 330)):
            tl.event("phase", name, t=T0 + t, drill="rack_power_cut")
        tl.event("fault.inject", f"power off {LOST_RACK}", t=T0 + 60, hosts=["host2"])
        tl.event("fault.heal", f"power on {LOST_RACK}", t=T0 + 200, hosts=["host2"])
        tl.event("note", "all PGs active+clean", t=T0 + 320)
        for s in range(DURATION):
            t = T0 + s
            phase = _phase_at(s)
            # Fraction of writes landing on degraded objects once the rack is back: decays over recovery.
            f = max(0.0, 1.0 - (s - 200) / 110) if phase == "recovery" else 0.0
            degraded_ratio = {"detection": 0.0, "degraded": 1 / 3}.get(phase, f / 3)
            lat_mean = {"baseline": 1.5, "detection": None, "degraded": 1.2}.get(phase, 1.5 + f * 40.0)
            if lat_mean is not None:
                lat_mean *= rnd.uniform(0.9, 1.1)
            iops = 0.0 if phase == "detection" else (1000.0 / lat_mean) * 1.0
            tl.sample("fio.write.iops", iops, t=t)
            tl.sample("fio.write.lat_mean_ms", lat_mean, t=t)
            tl.sample("fio.write.lat_p50_ms", None if lat_mean is None else lat_mean * 0.8, t=t)
            tl.sample("fio.write.lat_p99_ms", None if lat_mean is None else lat_mean * 4 + 3, t=t)
            # The status sampler times out for 10 s while the mons re-elect: a gap, not a zero.
            tl.sample("cluster.degraded_ratio", None if 62 <= s < 72 else degraded_ratio, t=t)
            if phase == "detection":
                pgs = {"active+clean": 88.0, "peering": 40.0}
            elif phase == "degraded":
                pgs = {"active+undersized+degraded": 128.0}
            elif phase == "recovery":
                clean = min(128.0, round(128 * (1 - f)))
                pgs = {"active+clean": clean, "active+recovering+degraded": 128.0 - clean}
            else:
                pgs = {"active+clean": 128.0}
            for state in ("active+clean", "peering", "active+undersized+degraded", "active+recovering+degraded"):
                tl.sample("cluster.pgs", pgs.get(state, 0.0), t=t, state=state)
            for rack, hosts in OSDS.items():
                for daemons in hosts.values():
                    for d in daemons:
                        down = rack == LOST_RACK and 60 <= s < 200
                        rss = 600 * 2**20 * rnd.uniform(0.98, 1.02)
                        if phase == "recovery":
                            rss *= 1.0 + 0.6 * math.sin(math.pi * (s - 200) / 130)
                        if d == "osd.4" and bigger_osd4 and s >= 200:
                            rss *= 4.0 if phase == "recovery" else 1.7  # balloons, then stays fragmented
                        tl.sample("rss.bytes", None if down else rss, t=t, daemon=d)
    events, samples = read_events(run_dir), read_series(run_dir)
    window = an.Window(T0, T0 + DURATION)
    measurements = an.measure_phases(samples, events, window)
    measurements["detection"].update(detection_time=24.0, io_errors=0)
    measurements["degraded"].update(time_to_active=31.0, io_errors=0)
    measurements["recovery"].update(time_to_active=12.0, time_to_clean=120.0, oom_kills=0, io_errors=0)
    measurements["after"].update(osd_flaps=0)
    result = finish_drill("rack_power_cut", T0, T0 + DURATION, measurements, load_thresholds(),
                          lost_writes=LostWrites(written=52000, acknowledged=51990, verified=51990, lost=0,
                                                 method="rados sequence numbers"),
                          model=ModelInputs(small_write_ms=None, object_recovery_ms=40.0, pool_size=3,
                                            object_size=4 * 2**20))
    write_drill_result(run_dir, result)
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run-1")


def _failed(run_dir: Path) -> dict[tuple[str, str], object]:
    (result,) = read_drill_results(run_dir)
    return {(c.phase, c.name): c for c in result.failed_checks}


def test_synthetic_run_fails_exactly_the_memory_checks(run_dir: Path) -> None:
    failed = _failed(run_dir)
    assert set(failed) == {("recovery", "rss_peak_max")}
    assert "osd.4" in failed[("recovery", "rss_peak_max")].detail  # type: ignore[attr-defined]
    # RSS kept after recovery is a warning in the shipped defaults: shown and counted, not a failure
    (result,) = read_drill_results(run_dir)
    assert {(c.phase, c.name) for c in result.warnings} == {("after", "rss_after_recovery_ratio_max")}


def test_results_file_round_trips(run_dir: Path) -> None:
    (result,) = read_drill_results(run_dir)
    raw = json.loads((run_dir / "drills" / "rack_power_cut.json").read_text())
    assert raw["schema_version"] == 1 and raw["outcome"] == "failed"
    assert DrillResult.from_dict(result.to_dict()) == result
    assert result.measurements["after"]["lost_writes"] == 0


def test_bad_results_file_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "drills").mkdir()
    (tmp_path / "drills" / "smoke.json").write_text('{"drill": "smoke"}')
    with pytest.raises(ResultsError, match=r"smoke\.json: malformed drill results"):
        read_drill_results(tmp_path)


def test_rendered_page_is_self_contained_and_shows_failures(run_dir: Path) -> None:
    page = render_run(run_dir)
    assert page == run_dir / "index.html"
    html = page.read_text()
    # No fetch of anything: no src/href to the network, no scripts, no @import.
    assert not re.search(r'(?:src|href)\s*=\s*["\']?\s*(?:https?:)?//', html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    assert html.count("<svg") >= 6  # IOPS, latency, degraded, PGs, RSS, model
    for title in ("Client IOPS", "Write latency", "Degraded", "Placement groups by state",
                  "Resident memory per daemon", "model vs measured"):
        assert title in html
    assert "rss_peak_max" in html and "rss_after_recovery_ratio_max" in html
    assert "1 of 22 checks failed" in html and "WARN" in html  # the kept RSS is a warning
    assert "power off rack2" in html and "power on rack2" in html  # fault markers
    assert "No acknowledged write was lost" in html
    assert "18.2.4" in html and "osd_heartbeat_grace" in html  # environment from run.json
    assert "osd.4" in html


def test_gaps_are_gaps_not_zeros() -> None:
    svg = line_chart([Line("x", [(0, 1.0), (1, 2.0), (2, None), (3, None), (4, 3.0), (5, 3.5), (6, None), (7, 1.0)])],
                     title="t", x_is_time=False)
    assert svg.count("<path") == 2  # two segments, broken at the gap
    assert svg.count("<circle") == 1  # the lone last point is still visible


def test_chart_draws_phases_and_markers() -> None:
    svg = line_chart([Line("iops", [(float(i), 10.0) for i in range(100)])], title="IOPS",
                     bands=[Band(0, 50, "baseline", "#eee"), Band(50, 100, "degraded", "#fdd")],
                     markers=[Marker(50, "power off rack2", "#c00")])
    assert svg.count('class="band"') == 2 and "power off rack2" in svg and "baseline" in svg
    assert "no samples" in line_chart([Line("x", [(0, None)])], title="empty")


def test_model_prediction_follows_degraded_fraction(run_dir: Path) -> None:
    events, samples = read_events(run_dir), read_series(run_dir)
    (result,) = read_drill_results(run_dir)
    cmp = an.compare_model(samples, events, an.Window(result.started, result.ended), result.model)
    assert cmp.available, cmp.reason
    assert cmp.span is not None and cmp.span.start == T0 + 200
    # The synthetic latency is 1.5 ms + f * 40 ms, and the model is w + f * r with r = 40 ms.
    assert cmp.error_ratio is not None and cmp.error_ratio < 0.1
    peak = max(v for _, v in cmp.predicted if v is not None)
    assert 38 < peak < 45


def test_model_without_recovery_latency_says_why(run_dir: Path) -> None:
    events, samples = read_events(run_dir), read_series(run_dir)
    cmp = an.compare_model(samples, events, an.Window(T0, T0 + DURATION), ModelInputs())
    assert not cmp.available and "object recovery latency r not measured" in cmp.reason


def test_measure_phases_from_series(run_dir: Path) -> None:
    m = an.measure_phases(read_series(run_dir), read_events(run_dir), an.Window(T0, T0 + DURATION))
    assert m["detection"]["stall_time"] == pytest.approx(25.0)
    assert m["detection"]["p99_latency"] is None  # no completions during the stall: not measured, not 0
    assert m["degraded"]["degraded_ratio"] == pytest.approx(1 / 3)
    assert m["degraded"]["rss_peak"]["osd.2"] is None  # its host was powered off
    assert m["after"]["rss_after_recovery_ratio"]["osd.4"] == pytest.approx(1.7, rel=0.05)


def test_summary_and_prom(run_dir: Path, tmp_path: Path) -> None:
    summary = json.loads(write_summary_json(run_dir).read_text())
    assert summary["verdict"] == "failed"
    (drill,) = summary["drills"]
    assert drill["failed"] == 1 and len(drill["warnings"]) == 1 and drill["lost_writes"] == 0
    assert drill["key_figures"]["detection.detection_time"] == {"value": 24.0, "unit": "s"}
    textfile_dir = tmp_path / "textfile"
    prom = write_prom(run_dir, textfile_dir).read_text()
    assert (textfile_dir / "ceph_drills.prom").read_text() == prom
    assert "ceph_drills_run_passed 0" in prom
    assert ('ceph_drills_check_passed{drill="rack_power_cut",phase="recovery",check="rss_peak_max",'
            'severity="fail",source="shipped defaults"} 0') in prom
    assert 'ceph_drills_lost_writes{drill="rack_power_cut"} 0' in prom
    # Every sample line parses as name{labels} value; every metric has HELP and TYPE once.
    names = set()
    for line in prom.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[2] not in names
            names.add(line.split()[2])
        elif not line.startswith("#"):
            assert re.fullmatch(r'ceph_drills_[a-z_]+(\{[^}]*\})? -?[0-9.e+-]+|.* NaN', line), line


def test_run_without_results_still_renders(tmp_path: Path) -> None:
    with Timeline(tmp_path / "bare") as tl:
        tl.write_meta(run_id="bare")
        for s in range(30):
            tl.sample("fio.write.iops", 100.0 if s % 7 else None, t=T0 + s)
    html = render_run(tmp_path / "bare").read_text()
    # a run whose drills left no result judged nothing: an error, never a pass, on the page and in the summary
    assert "nothing judged" in html and "Client IOPS" in html
    summary = build_summary(tmp_path / "bare")
    assert summary["verdict"] == "error" and summary["exit_code"] == 2


def test_index_lists_runs_and_trends(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    make_run(reports / "run-1", "run-1", bigger_osd4=True, seed=1)
    make_run(reports / "run-2", "run-2", bigger_osd4=False, seed=2)
    page = render_index(reports)
    html = page.read_text()
    assert 'href="run-1/index.html"' in html and 'href="run-2/index.html"' in html
    assert (reports / "run-2" / "index.html").exists()  # rendered because it was missing
    assert "Trends across runs" in html and "recovery.rss_peak" in html
    assert html.count("<svg") >= 5
    rows = re.findall(r'<tr class="(pass|fail)">\s*<td><a href="(run-\d)', html)
    assert ("fail", "run-1") in rows and ("pass", "run-2") in rows


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package: chromium)")
def test_page_renders_in_headless_chromium(run_dir: Path) -> None:
    page = render_run(run_dir)
    shot = run_dir / "screenshot.png"
    with tempfile.TemporaryDirectory(prefix="drills-chromium-") as profile:
        proc = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1280,2000",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    colours = _png_colour_stats(shot.read_bytes())
    # Not blank: many distinct colours, and a good share of pixels that are not background.
    assert colours.distinct > 50, colours
    assert 0.03 < colours.non_background < 0.9, colours
    keep = Path("/tmp/ceph-drills-report-screenshot.png")
    shutil.copyfile(shot, keep)  # for a person to look at after the run


class _Stats:
    def __init__(self, distinct: int, non_background: float) -> None:
        self.distinct, self.non_background = distinct, non_background

    def __repr__(self) -> str:
        return f"distinct colours {self.distinct}, non-background share {self.non_background:.3f}"


def _png_colour_stats(data: bytes) -> _Stats:
    """Decode an 8-bit RGB/RGBA PNG with zlib only (no Pillow) and count colours."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    counts: dict[bytes, int] = {}
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if y % 4 == 0:  # every 4th row is plenty to tell a page from a blank
            for x in range(0, stride, bpp * 2):
                px = bytes(line[x:x + 3])
                counts[px] = counts.get(px, 0) + 1
        prev = line
    total = sum(counts.values())
    background = max(counts.values())
    return _Stats(len(counts), 1 - background / total)


def test_fio_clients_combine_per_second(tmp_path: Path) -> None:
    # drills/workloads/fio.py labels samples job=..., client=...: IOPS add up, latency takes the slowest.
    with Timeline(tmp_path / "multi") as tl:
        for s in range(5):
            tl.sample("fio.write.iops", 100.0, t=T0 + s + 0.02, job="j", client="a")
            tl.sample("fio.write.iops", 50.0, t=T0 + s - 0.03, job="j", client="b")
            tl.sample("fio.write.lat_p99_ms", 3.0 if s else None, t=T0 + s, job="j", client="a")
            tl.sample("fio.write.lat_p99_ms", 7.0 if s != 2 else None, t=T0 + s, job="j", client="b")
    samples = read_series(tmp_path / "multi")
    window = an.Window(T0 - 1, T0 + 10)
    assert [v for _, v in an.single(samples, "fio.write.iops", window)] == [150.0] * 5
    assert [v for _, v in an.single(samples, "fio.write.lat_p99_ms", window)] == [7.0, 7.0, 3.0, 7.0, 7.0]
    html = render_run(tmp_path / "multi").read_text()
    assert "write IOPS client=a job=j" in html and "write IOPS client=b job=j" in html


def test_drill_report_cli_rerenders_and_refuses_a_non_run_dir(tmp_path):
    import subprocess
    import sys

    from drills.timeline import Timeline

    run = tmp_path / "reports" / "r1"
    with Timeline(run) as tl:
        tl.write_meta(run_id="r1", started=1000.0)
        tl.event("phase", "baseline", t=1000.0)
        tl.sample("fio.write.iops", 100.0, t=1001.0)
    ok = subprocess.run([sys.executable, "-m", "drills.cli", "report", str(run)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (run / "index.html").is_file() and (tmp_path / "reports" / "index.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "drills.cli", "report", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


# --- fields a person reads: dates, durations, the thresholds file, never Python's None --------------

EPOCH_LIKE = re.compile(r"\b1[0-9]{9}(?:\.[0-9]+)?\b")  # a raw Unix time such as 1796000358.678248


def _visible_text(html: str) -> str:
    """The page's text without its inline SVG, tags and the style element (the charts carry raw coordinates)."""
    html = re.sub(r"<style>.*?</style>|<svg.*?</svg>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


def make_sparse_run(run_dir: Path) -> Path:
    """A run the way a crash or an old harness leaves it: thresholds None (the shipped defaults), no
    Ceph version, no finish time in run.json, a drill result with no lost-write check and no model."""
    with Timeline(run_dir) as tl:
        tl.write_meta(run_id="sparse", started=T0, thresholds=None, ceph_version=None, runner_host=None,
                      target={"path": "/x/target.toml", "destructive": True, "fsid": None}, ceph_versions={},
                      pool=None, tags=["a", None])
        tl.event("phase", "baseline", t=T0, drill="smoke")
        tl.sample("fio.write.iops", None, t=T0 + 1)
    write_drill_result(run_dir, DrillResult(drill="smoke", started=T0, ended=T0 + 400.5))
    return run_dir


def test_report_dates_are_utc_dates_and_nothing_says_none(tmp_path: Path) -> None:
    run_dir = make_sparse_run(tmp_path / "sparse")
    text = _visible_text(render_run(run_dir).read_text())
    assert "None" not in text and "True" not in text
    assert not EPOCH_LIKE.search(text), EPOCH_LIKE.search(text)
    assert "started 2023-11-14 22:13:20 UTC" in text  # T0 as a date
    assert "finished 2023-11-14 22:20:00 UTC" in text and "took 6 min 40 s" in text  # from the drill's own window
    assert "shipped defaults (drills/default_thresholds.toml)" in text
    index = _visible_text(render_index(tmp_path).read_text())
    assert "None" not in index and not EPOCH_LIKE.search(index)
    assert "2023-11-14 22:13:20 UTC" in index and "6 min 40 s" in index


def test_environment_table_shows_finish_duration_and_thresholds_path(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run-1")
    with Timeline(run_dir) as tl:  # what the plugin writes at the end of a session, with a file given
        tl.write_meta(finished=T0 + 3723.4, thresholds="/etc/ceph-drills/staging-limits.toml")
    text = _visible_text(render_run(run_dir).read_text())
    assert "finished 2023-11-14 23:15:23 UTC" in text and "took 1 h 02 min" in text
    assert re.search(r"duration\s+1 h 02 min", text)  # the environment table's row after `finished`
    assert re.search(r"thresholds\s+/etc/ceph-drills/staging-limits.toml", text)
    assert "None" not in text and not EPOCH_LIKE.search(text)


def test_the_none_check_can_fail(tmp_path: Path) -> None:
    """The control for the two tests above: a raw value in run.json that is not one of the known time
    keys still reaches the page as written, so the checks see what the page shows."""
    run_dir = make_sparse_run(tmp_path / "sparse")
    with Timeline(run_dir) as tl:
        tl.write_meta(odd_stamp=1796000358.678248, odd_text="None")
    text = _visible_text(render_run(run_dir).read_text())
    assert EPOCH_LIKE.search(text) and "None" in text
