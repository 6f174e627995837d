"""reports/index.html from the history: trends by date, baseline band, regressions, version changes."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zlib
import struct
from pathlib import Path

import pytest

from drills.history.regression import parse_regression_rules, regression_checks
from drills.history.store import history_path, import_runs
from drills.history.synthetic import FSID, make_run, rack_measurements
from drills.report.trends import render_trends_index

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_760_000_000.0
DAY = 86400.0
RULES = parse_regression_rules({"rack_power_cut": {"recovery": {"p99_latency": 0.5, "iops_ratio": 0.3}}}, "t.toml")


def make_history(reports: Path) -> Path:
    """3 runs on 16.2.14, an upgrade, 4 passing runs, a failed one, an aborted one, then a regression."""
    day = 0
    for i in range(3):
        make_run(reports, f"a{i}", T0 + day * DAY, {"rack_power_cut": rack_measurements(scale=1 + 0.03 * i)},
                 ceph_version="16.2.14 pacific")
        day += 1
    for i in range(4):
        make_run(reports, f"b{i}", T0 + day * DAY, {"rack_power_cut": rack_measurements(scale=0.9 + 0.03 * i)})
        day += 1
    make_run(reports, "failed", T0 + day * DAY, {"rack_power_cut": rack_measurements(detection=80.0)})
    day += 1
    make_run(reports, "aborted", T0 + day * DAY, {"rack_power_cut": rack_measurements(scale=0.2)},
             outcome={"rack_power_cut": "error"})
    day += 1
    import_runs(reports)
    slow = rack_measurements(scale=0.45, p99=1.5)
    checks = regression_checks(history_path(reports), "rack_power_cut", slow, FSID, "16.2.15 pacific", RULES)
    assert any(not c.passed and c.measured is not None for c in checks)
    make_run(reports, "slow", T0 + day * DAY, {"rack_power_cut": slow}, extra_checks={"rack_power_cut": checks})
    make_run(reports, "other", T0 + 2 * DAY, {"rack_power_cut": rack_measurements()}, fsid="ffff-other")
    return reports


def test_index_lists_runs_and_draws_trends(tmp_path: Path) -> None:
    reports = make_history(tmp_path / "reports")
    page = render_trends_index(reports, RULES, render_missing=False)
    html = page.read_text()
    rows = re.findall(r'<tbody data-target="[^"]+"><tr class="(pass|fail)">\s*<td><a href="([\w-]+)/index.html', html)
    assert ("fail", "failed") in rows and ("pass", "b0") in rows and ("fail", "slow") in rows
    assert "Trends across runs" in html and "recovery.p99_latency" in html and "detection.detection_time" in html
    # the regression run is ringed on the two figures that regressed, and counted in the runs table
    assert html.count('class="point failed regression"') == 2 or html.count("regression\"><title>slow") >= 2
    assert re.search(r'<a href="slow/index.html">slow</a>.*?<td class="num reg">2</td>', html)
    assert "Ceph 16.2.14 pacific -&gt; 16.2.15 pacific" in html  # the upgrade is marked
    assert 'class="baseline-band"' in html and "runs b3, b2, b1, b0" in html  # last passing runs on 16.2.15
    assert 'class="point error"' in html  # the aborted run
    # two targets, each with its own section and filter option
    assert html.count("<option value=") == 3 and 'data-target="ffff-other"' in html
    assert "<script" in html and "http" not in re.sub(r'href="[^"]*"', "", html).replace("http://www.w3.org", "")


def test_a_run_without_figures_still_lists(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    make_run(reports, "only", T0, {"smoke": {"baseline": {"iops": 500.0}}})
    html = render_trends_index(reports, render_missing=False).read_text()
    assert 'href="only/index.html"' in html and "baseline.iops" in html and "baseline-band" not in html


CHROMIUM = Path("/usr/bin/chromium")


def _png_pixels(data: bytes) -> tuple[int, int, int]:
    """(distinct colours, non-white pixels, all pixels) of an 8-bit RGB(A) PNG."""
    pos, chunks = 8, []
    width = height = 0
    color_type = 2
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, _, color_type = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    bpp = 4 if color_type == 6 else 3
    stride = width * bpp
    prev = bytearray(stride)
    colours, non_white = set(), 0
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
        prev = line
        if y % 4 == 0:
            for x in range(0, width, 4):
                px = bytes(line[x * bpp:x * bpp + 3])
                colours.add(px)
                non_white += px not in (b"\xff\xff\xff", b"\xfa\xfa\xfa")
    return len(colours), non_white, (height // 4 + 1) * (width // 4 + 1)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package: chromium)")
def test_trends_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    reports = make_history(tmp_path / "reports")
    page = render_trends_index(reports, RULES, render_missing=False)
    shot = tmp_path / "trends.png"
    with tempfile.TemporaryDirectory(prefix="drills-chromium-") as profile:
        proc = subprocess.run(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1100,2400",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"no screenshot; chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    distinct, non_white, total = _png_pixels(shot.read_bytes())
    assert distinct > 30 and 0.03 < non_white / total < 0.9, (distinct, non_white, total)
    shutil.copyfile(shot, "/tmp/ceph-drills-trends-screenshot.png")  # for a person to look at
