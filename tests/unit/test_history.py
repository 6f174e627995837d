"""The history database: run directories in, one row per figure out; idempotent; rebuildable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from drills.history.store import HistoryError, connect, history_path, import_runs, record_run, runs
from drills.history.synthetic import FSID, make_run, rack_measurements

pytestmark = pytest.mark.usefixtures("fixed_defaults")  # synthetic figures against pinned limits

T0 = 1_760_000_000.0


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_record_run_writes_runs_drills_figures_and_checks(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", T0, {"rack_power_cut": rack_measurements()})
    rec = record_run(run)
    assert rec.run_id == "r1" and rec.fsid == FSID and rec.ceph_version == "16.2.15 pacific"
    assert rec.suite == "smoke" and rec.verdict == "passed"
    db = history_path(tmp_path)
    with connect(db) as c:
        row = c.execute("SELECT value, unit, verdict, severity FROM figures WHERE drill='rack_power_cut' "
                        "AND phase='detection' AND metric='detection_time'").fetchone()
        assert tuple(row) == (25.0, "s", "passed", "fail")
        # per-daemon figures keep their subject
        subjects = {r[0] for r in c.execute("SELECT subject FROM figures WHERE metric='rss_peak'")}
        assert subjects == {"osd.0", "osd.1"}
        assert c.execute("SELECT verdict FROM drills WHERE run_id='r1'").fetchone()[0] == "passed"
    assert _count(db, "checks") > 10


def test_a_breached_limit_marks_the_figure_failed(tmp_path: Path) -> None:
    m = rack_measurements(detection=300.0)  # past detection_time_max = 45s
    record_run(make_run(tmp_path, "r1", T0, {"rack_power_cut": m}))
    with connect(history_path(tmp_path)) as c:
        assert c.execute("SELECT verdict FROM figures WHERE metric='detection_time'").fetchone()[0] == "failed"
        assert c.execute("SELECT verdict FROM runs").fetchone()[0] == "failed"


def test_recording_twice_is_the_same_as_once(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", T0, {"rack_power_cut": rack_measurements()})
    record_run(run)
    db = history_path(tmp_path)
    before = (_count(db, "runs"), _count(db, "figures"), _count(db, "checks"))
    record_run(run)
    assert (_count(db, "runs"), _count(db, "figures"), _count(db, "checks")) == before


def test_import_rebuilds_from_directories_and_drops_vanished_runs(tmp_path: Path) -> None:
    for i in range(3):
        make_run(tmp_path, f"r{i}", T0 + i * 86400, {"rack_power_cut": rack_measurements()})
    (tmp_path / "latest").symlink_to("r2")  # the symlink is not a second copy of r2
    (tmp_path / "junk").mkdir()  # not a run directory: ignored
    report = import_runs(tmp_path)
    assert report.recorded == ("r0", "r1", "r2") and not report.skipped
    db = history_path(tmp_path)
    db_rows = _count(db, "figures")
    import shutil
    shutil.rmtree(tmp_path / "r0")
    report = import_runs(tmp_path, rebuild=True)
    assert report.removed == ("r0",)
    with connect(db) as c:
        assert [r.run_id for r in runs(c)] == ["r1", "r2"]
    assert _count(db, "figures") == db_rows * 2 // 3  # r0's figures went with it (cascade)


def test_a_broken_results_file_is_recorded_as_an_error_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", T0, {"rack_power_cut": rack_measurements()})
    (run / "summary.json").unlink()
    (run / "drills" / "rack_power_cut.json").write_text("{not json")
    rec = record_run(run)
    assert rec.verdict == "error"


def test_not_a_run_directory_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(HistoryError, match="not a run directory"):
        record_run(tmp_path / "empty")
    with pytest.raises(HistoryError, match="does not exist"):
        import_runs(tmp_path / "nope")


def test_a_database_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(HistoryError, match="rebuild"):
        connect(db)


def test_after_run_records_and_never_raises(tmp_path: Path) -> None:
    from drills.history.session import after_run

    run = make_run(tmp_path, "r1", T0, {"rack_power_cut": rack_measurements()})
    assert after_run(run) == []
    assert _count(history_path(tmp_path), "runs") == 1
    history_path(tmp_path).write_bytes(b"not a database" * 100)  # corrupt: noted, not raised
    notes = after_run(run)
    assert len(notes) == 1 and notes[0].startswith("history: the run was not recorded")
    assert "history" in (run / "notifications.jsonl").read_text()
