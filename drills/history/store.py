"""The history database: every run's figures, one row per drill x phase x metric (x subject).

One SQLite file beside the reports (``reports/history.sqlite``), written with Python's
sqlite3: no server.  Run directories are the source of truth: `record_run` reads one run
directory and replaces everything the database held for that run id (so it is idempotent),
and `import_runs` rebuilds the database from every run directory under a reports directory.
The schema is documented in docs/history.md.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from drills.report.results import DrillResult, ResultsError, read_drill_results
from drills.thresholds import SPECS
from drills.timeline import read_meta

HISTORY_FILE = "history.sqlite"
SCHEMA_VERSION = 1

# Measurement name -> base unit, from the threshold keys that limit it ("p99_latency" -> "s").
MEASUREMENT_UNITS: dict[str, str] = {s.measurement: s.unit for s in SPECS.values()}


def unit_of(metric: str) -> str | None:
    """The base unit of a measurement; a drill's own figure without a limit key is guessed from its name."""
    if metric in MEASUREMENT_UNITS:
        return MEASUREMENT_UNITS[metric]
    if metric.endswith(("_time", "_seconds")) or metric.startswith("time_to_"):
        return "s"
    if metric.endswith(("_ratio", "_fraction")):
        return "ratio"
    return None

SCHEMA = f"""
PRAGMA user_version = {SCHEMA_VERSION};
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    started         REAL,            -- unix seconds (run.json started, else the first drill's start)
    finished        REAL,
    fsid            TEXT,            -- the target cluster's fsid (run.json target.fsid)
    target_path     TEXT,
    cluster         TEXT,            -- the target's cluster name
    ceph_version    TEXT,            -- '16.2.15 pacific'
    harness_version TEXT,
    suite           TEXT,            -- smoke | nightly | full; NULL when run.json does not say
    pace            TEXT,
    verdict         TEXT,            -- summary.json verdict, else derived from the drills
    run_dir         TEXT,            -- where the run directory was when it was recorded
    recorded        REAL             -- when this row was written
);
CREATE TABLE IF NOT EXISTS drills (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    drill    TEXT NOT NULL,
    verdict  TEXT NOT NULL,          -- passed | failed | error | skipped | unchecked
    started  REAL,
    ended    REAL,
    error    TEXT,
    lost_writes INTEGER,             -- NULL: not checked
    PRIMARY KEY (run_id, drill)
);
CREATE TABLE IF NOT EXISTS figures (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    drill    TEXT NOT NULL,
    phase    TEXT NOT NULL,
    metric   TEXT NOT NULL,          -- measurement name, e.g. 'p99_latency'
    subject  TEXT NOT NULL DEFAULT '', -- '' for one number; 'osd.3' / 'host-a' for per-daemon figures
    value    REAL,                   -- base units (s, B, ratio, count); NULL = not measured
    unit     TEXT,
    verdict  TEXT,                   -- passed | failed | warned: the worst check on this figure; NULL = no check
    severity TEXT,                   -- of that check: fail | warn
    PRIMARY KEY (run_id, drill, phase, metric, subject)
);
CREATE TABLE IF NOT EXISTS checks (
    run_id   TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    drill    TEXT NOT NULL,
    phase    TEXT NOT NULL,
    name     TEXT NOT NULL,          -- threshold key, or '<metric>_regression_max|min'
    measured REAL,
    limit_value REAL,
    unit     TEXT,
    passed   INTEGER NOT NULL,
    severity TEXT,
    source   TEXT,                   -- file path, 'shipped defaults', 'invariant', 'regression'
    detail   TEXT
);
CREATE INDEX IF NOT EXISTS figures_by_metric ON figures (drill, phase, metric);
CREATE INDEX IF NOT EXISTS checks_by_run ON checks (run_id, drill);
CREATE INDEX IF NOT EXISTS runs_by_target ON runs (fsid, ceph_version, started);
"""


class HistoryError(Exception):
    """A run directory or database that cannot be used; one line naming it and what to do."""


@dataclass(frozen=True)
class RunRecord:
    """One row of `runs`."""

    run_id: str
    started: float | None
    finished: float | None
    fsid: str
    target_path: str
    cluster: str
    ceph_version: str
    harness_version: str
    suite: str | None
    pace: str | None
    verdict: str
    run_dir: str


def history_path(reports_dir: str | Path) -> Path:
    return Path(reports_dir) / HISTORY_FILE


def connect(db_path: str | Path) -> sqlite3.Connection:
    """Open (and create) the database; the schema is made if missing."""
    path = Path(db_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30)
    except (OSError, sqlite3.Error) as e:
        raise HistoryError(f"{path}: cannot open the history database: {e}") from None
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            conn.close()
            raise HistoryError(f"{path}: history schema {version} is not {SCHEMA_VERSION}; delete the file and run "
                               f"`drill history import` to rebuild it from the run directories")
        conn.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        conn.close()
        raise HistoryError(f"{path}: not a usable SQLite database ({e}); delete it and rebuild it with "
                           f"`drill history import`") from None
    return conn


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _run_verdict(run_dir: Path, results: list[DrillResult], error: str) -> str:
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            verdict = json.loads(summary.read_text()).get("verdict")
            if isinstance(verdict, str) and verdict:
                return verdict
        except (OSError, json.JSONDecodeError):
            pass  # a torn summary: derive the verdict from the drills instead
    if error:
        return "error"
    if not results:
        return "unchecked"
    verdicts = {r.verdict for r in results}
    for v in ("error", "failed"):
        if v in verdicts:
            return v
    return "passed"


def read_run_record(run_dir: str | Path) -> tuple[RunRecord, list[DrillResult]]:
    """The runs row and drill results of one run directory (nothing written)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HistoryError(f"{run_dir}: not a run directory (it does not exist)")
    try:
        meta = read_meta(run_dir)
    except (OSError, json.JSONDecodeError) as e:
        raise HistoryError(f"{run_dir}/run.json: cannot read: {e}") from None
    try:
        results, error = read_drill_results(run_dir), ""
    except ResultsError as e:
        results, error = [], str(e)
    if not meta and not results:
        raise HistoryError(f"{run_dir}: not a run directory (no run.json and no drills/*.json)")
    target = meta.get("target") if isinstance(meta.get("target"), dict) else {}
    started = _num(meta.get("started"))
    if started is None:
        started = min((r.started for r in results), default=None)
    finished = _num(meta.get("finished"))
    if finished is None:
        finished = max((r.ended for r in results), default=None)
    record = RunRecord(
        run_id=str(meta.get("run_id") or run_dir.name),
        started=started, finished=finished,
        fsid=str(target.get("fsid") or ""), target_path=str(target.get("path") or ""),
        cluster=str(target.get("cluster") or target.get("name") or ""),
        ceph_version=str(meta.get("ceph_version") or ""), harness_version=str(meta.get("harness_version") or ""),
        suite=None if meta.get("suite") is None else str(meta["suite"]),
        pace=None if meta.get("pace") is None else str(meta["pace"]),
        verdict=_run_verdict(run_dir, results, error), run_dir=str(run_dir.resolve()),
    )
    return record, results


def _figure_rows(run_id: str, r: DrillResult) -> Iterator[tuple[Any, ...]]:
    # The worst check on each (phase, measurement) gives the figure its verdict.
    worst: dict[tuple[str, str], tuple[str, str]] = {}
    rank = {"passed": 0, "warned": 1, "failed": 2}
    for c in r.checks:
        if getattr(c, "source", "") == "regression":
            continue  # a regression is a verdict on the trend, kept in `checks`; figures carry the limits' verdict
        measurement = SPECS[c.name].measurement if c.name in SPECS else c.name.rsplit("_", 1)[0]
        severity = getattr(c, "severity", "fail")
        verdict = "passed" if c.passed else "warned" if severity == "warn" else "failed"
        key = (c.phase, measurement)
        if key not in worst or rank[verdict] > rank[worst[key][0]]:
            worst[key] = (verdict, severity)
    for phase, values in r.measurements.items():
        for metric, value in values.items():
            verdict, severity = worst.get((phase, metric), (None, None))
            unit = unit_of(metric)
            if isinstance(value, dict):
                for subject, v in value.items():
                    yield (run_id, r.drill, phase, metric, str(subject), _num(v), unit, verdict, severity)
            elif value is None or _num(value) is not None:
                yield (run_id, r.drill, phase, metric, "", _num(value), unit, verdict, severity)
            # anything else (a string, a list) is not a figure: left out


def record_run(run_dir: str | Path, db_path: str | Path | None = None) -> RunRecord:
    """Put one run directory into the history (default: <run_dir>/../history.sqlite).

    Everything held for the run id is replaced in one transaction: recording a run twice
    leaves the same rows as recording it once.
    """
    run_dir = Path(run_dir)
    record, results = read_run_record(run_dir)
    db = Path(db_path) if db_path is not None else history_path(run_dir.resolve().parent)
    with closing(connect(db)) as conn, conn:
        _write(conn, record, results)
    return record


def _write(conn: sqlite3.Connection, record: RunRecord, results: Iterable[DrillResult]) -> None:
    conn.execute("DELETE FROM runs WHERE run_id = ?", (record.run_id,))  # cascades to drills, figures, checks
    conn.execute(
        "INSERT INTO runs (run_id, started, finished, fsid, target_path, cluster, ceph_version, harness_version, "
        "suite, pace, verdict, run_dir, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (record.run_id, record.started, record.finished, record.fsid, record.target_path, record.cluster,
         record.ceph_version, record.harness_version, record.suite, record.pace, record.verdict, record.run_dir,
         time.time()))
    for r in results:
        conn.execute("INSERT OR REPLACE INTO drills VALUES (?,?,?,?,?,?,?)",
                     (record.run_id, r.drill, r.verdict, r.started, r.ended, r.error,
                      None if r.lost_writes is None else r.lost_writes.lost))
        conn.executemany("INSERT OR REPLACE INTO figures VALUES (?,?,?,?,?,?,?,?,?)", list(_figure_rows(record.run_id, r)))
        conn.executemany(
            "INSERT INTO checks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(record.run_id, r.drill, c.phase, c.name, c.measured, _num(c.limit), c.unit, int(c.passed),
              getattr(c, "severity", "fail"), getattr(c, "source", ""), c.detail) for c in r.checks])


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink() and any((p / n).exists() for n in ("run.json", "drills"))


@dataclass(frozen=True)
class ImportReport:
    recorded: tuple[str, ...]
    skipped: tuple[str, ...]  # one line each: the directory and why
    removed: tuple[str, ...]  # run ids whose directory is gone (only with rebuild)


def import_runs(reports_dir: str | Path, db_path: str | Path | None = None, rebuild: bool = False) -> ImportReport:
    """Record every run directory under `reports_dir` (idempotent).

    With rebuild, runs whose directory is no longer there are removed too, so the
    database holds exactly what the directories say.
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise HistoryError(f"{reports_dir}: reports directory does not exist; pass the --report-dir of your runs")
    db = Path(db_path) if db_path is not None else history_path(reports_dir)
    recorded, skipped, seen = [], [], set()
    with closing(connect(db)) as conn:
        for d in sorted(p for p in reports_dir.iterdir() if is_run_dir(p)):
            try:
                record, results = read_run_record(d)
            except HistoryError as e:
                skipped.append(str(e))
                continue
            with conn:
                _write(conn, record, results)
            recorded.append(record.run_id)
            seen.add(record.run_id)
        removed: list[str] = []
        if rebuild:
            with conn:
                for row in conn.execute("SELECT run_id FROM runs").fetchall():
                    if row["run_id"] not in seen:
                        conn.execute("DELETE FROM runs WHERE run_id = ?", (row["run_id"],))
                        removed.append(row["run_id"])
    return ImportReport(tuple(recorded), tuple(skipped), tuple(removed))


def runs(conn: sqlite3.Connection, fsid: str | None = None) -> list[RunRecord]:
    """Every recorded run (of one target when fsid is given), oldest first."""
    sql = "SELECT * FROM runs" + (" WHERE fsid = ?" if fsid is not None else "") + " ORDER BY started, run_id"
    rows = conn.execute(sql, (fsid,) if fsid is not None else ()).fetchall()
    return [RunRecord(**{k: row[k] for k in RunRecord.__dataclass_fields__}) for row in rows]
