"""benchmarks/ci_time.py reads pytest's durations table and summary line, and compares two runs."""

from __future__ import annotations

import pytest

from benchmarks import ci_time

BEFORE = """tests/unit/test_a.py ....
============================= slowest 3 durations =============================
489.71s call     tests/integration/test_v.py::test_quartet
14.80s setup    tests/integration/test_b.py::test_fsid
2.00s teardown tests/integration/test_b.py::test_fsid
=========== 816 passed, 1 skipped, 6 warnings in 1815.18s (0:30:15) ============
"""
AFTER = """============================= slowest 1 durations =============================
300.00s call     tests/integration/test_v.py::test_quartet
======================== 817 passed in 1500.00s (0:25:00) ========================
"""


def test_two_logs_side_by_side_with_the_ratio_and_the_limit(tmp_path):
    (tmp_path / "before.log").write_text(BEFORE)
    (tmp_path / "after.log").write_text(AFTER)
    logs = [ci_time.read_log(tmp_path / "before.log"), ci_time.read_log(tmp_path / "after.log")]
    assert logs[0].tests["tests/integration/test_b.py::test_fsid"] == pytest.approx(16.8)  # setup + teardown
    text = ci_time.table(logs, top=5)
    quartet = next(line for line in text.splitlines() if "test_quartet" in line)
    assert "489.7s" in quartet and "300.0s" in quartet and quartet.endswith("0.61")
    fsid = next(line for line in text.splitlines() if "test_fsid" in line)
    assert fsid.split()[-2:] == ["-", "-"]  # not in the second run's table: not shown as 0
    assert "30.3 min" in text and "OVER THE LIMIT" in text and "25.0 min" in text and "over the goal" in text


def test_a_log_without_a_summary_line_is_refused(tmp_path):
    (tmp_path / "cut.log").write_text(BEFORE.rsplit("=====", 1)[0].rsplit("\n", 2)[0])
    with pytest.raises(SystemExit, match="no pytest summary line"):
        ci_time.read_log(tmp_path / "cut.log")
