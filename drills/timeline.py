"""One timeline per run: time series and an event log, on one clock.

Format (docs/timeline.md): a run directory holds
  run.json       run id, start time, harness and Ceph versions, target description
  events.jsonl   one JSON object a line: {"t": unix seconds, "kind": str, "label": str, "data": {...}}
  series.jsonl   one JSON object a line: {"t": unix seconds, "metric": str, "value": float|null,
                                          "labels": {...}}
  histograms.jsonl  one JSON object a line: {"t": unix seconds, "metric": str, "bins": {value: count},
                                          "labels": {...}} - what completed in the interval ending at t
                    (fio's latency histogram), so a phase's percentiles are those of all its IOs
A failed sample is written with "value": null (a gap), never as zero.
Workloads and samplers write; thresholds and the report read.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class Event:
    t: float
    kind: str  # fault.inject, fault.heal, phase, note, workload.start, abort, ...
    label: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    t: float
    metric: str  # e.g. "fio.write.iops", "cluster.degraded_objects", "rss.bytes"
    value: float | None  # None = the sample failed (a gap)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Histogram:
    t: float
    metric: str  # e.g. "fio.write.lat_ns"
    bins: dict[int, int]  # value -> count, for the interval that ended at t
    labels: dict[str, str] = field(default_factory=dict)


class Timeline:
    """Append-only, thread-safe writer (and reader) of a run directory's timeline."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._events = open(self.dir / "events.jsonl", "a", buffering=1)
        self._series = open(self.dir / "series.jsonl", "a", buffering=1)
        self._histograms = open(self.dir / "histograms.jsonl", "a", buffering=1)

    def event(self, kind: str, label: str, t: float | None = None, **data: Any) -> Event:
        e = Event(time.time() if t is None else t, kind, label, data)
        line = json.dumps({"t": e.t, "kind": kind, "label": label, "data": data}, default=str)
        with self._lock:
            self._events.write(line + "\n")
        return e

    def sample(self, metric: str, value: float | None, t: float | None = None, **labels: str) -> None:
        line = json.dumps({"t": time.time() if t is None else t, "metric": metric, "value": value, "labels": labels})
        with self._lock:
            self._series.write(line + "\n")

    def histogram(self, metric: str, bins: dict[int, int], t: float | None = None, **labels: str) -> None:
        line = json.dumps({"t": time.time() if t is None else t, "metric": metric,
                           "bins": {str(k): v for k, v in bins.items()}, "labels": labels})
        with self._lock:
            self._histograms.write(line + "\n")

    def write_meta(self, **meta: Any) -> None:
        path = self.dir / "run.json"
        current = json.loads(path.read_text()) if path.exists() else {}
        current.update(meta)
        path.write_text(json.dumps(current, indent=2, default=str))

    def close(self) -> None:
        with self._lock:
            self._events.close()
            self._series.close()
            self._histograms.close()

    def __enter__(self) -> "Timeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(run_dir: str | Path) -> list[Event]:
    p = Path(run_dir) / "events.jsonl"
    if not p.exists():
        return []
    return [Event(d["t"], d["kind"], d["label"], d.get("data", {})) for d in _lines(p)]


def read_series(run_dir: str | Path) -> list[Sample]:
    p = Path(run_dir) / "series.jsonl"
    if not p.exists():
        return []
    return [Sample(d["t"], d["metric"], d["value"], d.get("labels", {})) for d in _lines(p)]


def read_histograms(run_dir: str | Path) -> list[Histogram]:
    """The run's interval histograms; [] for a run recorded before they were written."""
    p = Path(run_dir) / "histograms.jsonl"
    if not p.exists():
        return []
    return [Histogram(d["t"], d["metric"], {int(k): int(v) for k, v in d["bins"].items()}, d.get("labels", {}))
            for d in _lines(p)]


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "run.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _lines(p: Path) -> Iterator[dict[str, Any]]:
    with open(p) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line after a crash is skipped, not fatal
