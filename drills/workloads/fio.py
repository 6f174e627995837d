"""fio workloads: the real fio binary in a subprocess, its json+ stream turned into per-interval figures.

fio is run with ``--output-format=json+ --status-interval=1``. Every status report is a complete JSON
document of *cumulative* statistics since the job started. A background thread reads them as fio prints
them and derives true per-interval figures from the differences between consecutive reports:

* IOPS and bandwidth per direction from the difference of ``total_ios`` / ``io_bytes``, divided by the
  difference of the job's run time (``job_runtime``, milliseconds, summed over the jobs of a group, so it
  is divided by ``numjobs``); the mean latency from the difference of ``mean x N``.
* p50 / p99 / p99.9 latency per direction from the difference of the json+ latency histograms
  (``lat_ns.bins``: submission to completion, which we ask for with ``lat_percentiles=1``; ``clat_ns.bins``
  when ``lat_ns`` has none), using fio's own rule for picking a percentile out of a histogram.

Each interval becomes Timeline samples ``fio.<dir>.<figure>`` for iops, bw_bytes, lat_mean_ms, lat_p50_ms,
lat_p99_ms and lat_p999_ms, labelled ``job=<name>`` (and ``client=<host>`` in client/server mode). An
interval in which no IO completed has iops 0 and latency ``None`` (a gap, not a zero).

Client/server mode (``run_clients``) drives ``fio --client=host,port`` against load generators running
``fio --server``. fio 3.33 sends the servers' interval reports to the client, but the client only prints
them at exit, all in one document's ``client_stats`` array (axboe/fio#712), so in that mode the timeline
is written when fio exits; see docs/workloads.md.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from drills.timeline import Timeline
from drills.workloads.reaper import TAG_ENV, WorkloadProcesses, new_tag
from drills.workloads.spec import workload_fields

DIRECTIONS = ("read", "write", "trim")
PERCENTILES = {"lat_p50_ms": 50.0, "lat_p99_ms": 99.0, "lat_p999_ms": 99.9}
DEFAULT_SERVER_PORT = 8765  # fio's default --server port

# rw= value -> the directions it does IO in; those directions get a sample every interval, even idle ones.
_RW_DIRECTIONS: dict[str, tuple[str, ...]] = {
    "read": ("read",), "randread": ("read",),
    "write": ("write",), "randwrite": ("write",),
    "rw": ("read", "write"), "readwrite": ("read", "write"), "randrw": ("read", "write"),
    "trim": ("trim",), "randtrim": ("trim",),
    "trimwrite": ("trim", "write"), "randtrimwrite": ("trim", "write"),
}
_FILE_ENGINES = ("libaio", "psync", "sync", "pvsync", "pvsync2", "posixaio", "mmap", "io_uring")
_ENGINES = ("rbd", "null") + _FILE_ENGINES
# Options the harness owns: letting `extra` set them would break the parsing or the interval maths.
_RESERVED_OPTIONS = {"output-format", "output_format", "status-interval", "status_interval", "group_reporting",
                     "lat_percentiles", "clat_percentiles", "percentile_list", "name"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# fio verify= checksums that put a header in every block (the pattern kinds do not carry the offset)
VERIFY_ALGORITHMS = ("crc32c", "crc32c-intel", "crc32", "crc64", "md5", "sha1", "sha256", "sha512", "xxhash")
# verify options the `verify` field owns, and options that change the offset sequence the read-back replays
_VERIFY_OPTIONS = {"verify", "do_verify", "verify_only", "verify_state_save", "verify_state_load"}
_VERIFY_BREAKERS = {"norandommap", "randrepeat", "verify_backlog", "experimental_verify", "bssplit", "bsrange",
                    "random_distribution", "offset", "io_size", "number_ios", "nrfiles", "filesize", "zonemode"}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


class FioError(RuntimeError):
    """fio could not be run, failed, or printed something we cannot use."""


class FioConfigError(FioError, ValueError):
    """A workload definition is wrong (unknown field, missing option, bad value)."""


@dataclass(frozen=True)
class FioJob:
    """One fio workload. ``runtime`` is in seconds; ``extra`` holds any further fio job options verbatim."""

    name: str
    rw: str = "randwrite"
    bs: str = "4k"
    iodepth: int = 16
    numjobs: int = 1
    runtime: int = 60
    time_based: bool = True
    size: str | None = None
    ioengine: str = "rbd"
    # rbd engine (fio's own option names); conf is exported as CEPH_CONF for local runs.
    pool: str | None = None
    rbdname: str | None = None
    clientname: str | None = None  # cephx user without the "client." prefix
    clustername: str | None = None
    conf: str | None = None
    # file engines
    filename: str | None = None
    directory: str | None = None
    # fio's verify: a header and checksum (this algorithm) in every block written, and the job's verify
    # state saved when it exits (also on SIGINT), for a read-back pass afterwards (verify_written).
    # The job itself never reads (do_verify=0), so the measured workload stays a pure write workload.
    verify: str | None = None
    verify_only: bool = False  # the read-back pass: replays the offsets from the saved state and reads them
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any], name: str | None = None) -> "FioJob":
        """Build from a config table (e.g. TOML). Unknown keys are an error that names the workload."""
        data = workload_fields(cls, spec, name, "fio", FioConfigError, hint="; put other fio options under 'extra'")
        return cls(**data)

    def validate(self) -> None:
        where = f"fio workload {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise FioConfigError(f"{where}: name must be letters, digits, '_', '.', '-'")
        if self.rw not in _RW_DIRECTIONS:
            raise FioConfigError(f"{where}: rw={self.rw!r} is not one of {', '.join(_RW_DIRECTIONS)}")
        if self.ioengine not in _ENGINES:
            raise FioConfigError(f"{where}: ioengine={self.ioengine!r} is not one of {', '.join(_ENGINES)}")
        for attr in ("iodepth", "numjobs", "runtime"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FioConfigError(f"{where}: {attr} must be a positive integer, got {value!r}")
        if self.ioengine == "rbd":
            missing = [a for a in ("pool", "rbdname") if not getattr(self, a)]
            if missing:
                raise FioConfigError(f"{where}: the rbd engine needs {', '.join(missing)}")
        elif self.ioengine in _FILE_ENGINES:
            if not (self.filename or self.directory):
                raise FioConfigError(f"{where}: ioengine={self.ioengine} needs filename or directory")
            if not self.size:
                raise FioConfigError(f"{where}: ioengine={self.ioengine} needs size")
        elif not self.size:  # null engine: fio refuses to run without a size
            raise FioConfigError(f"{where}: ioengine=null needs size")
        if not isinstance(self.extra, dict):
            raise FioConfigError(f"{where}: extra must be a table of fio options")
        clash = sorted(k for k in self.extra if k in _RESERVED_OPTIONS or k in _VERIFY_OPTIONS
                       or k in {f.name for f in fields(self)})
        if clash:
            raise FioConfigError(f"{where}: extra sets {', '.join(clash)}, which the harness or a field owns")
        if self.verify is not None:
            self._validate_verify(where)
        elif self.verify_only:
            raise FioConfigError(f"{where}: verify_only needs verify (the checksum the job wrote with)")
        for key, value in self._options():
            if any(c in f"{key}{value}" for c in "\n\r[]") or not key:
                raise FioConfigError(f"{where}: option {key}={value!r} contains a newline or bracket")

    def _validate_verify(self, where: str) -> None:
        if self.verify not in VERIFY_ALGORITHMS:
            raise FioConfigError(f"{where}: verify={self.verify!r} is not one of {', '.join(VERIFY_ALGORITHMS)}")
        if self.rw not in ("write", "randwrite"):
            raise FioConfigError(f"{where}: verify needs rw=write or randwrite (a job that only writes), "
                                 f"got rw={self.rw}")
        if not self.size:
            raise FioConfigError(f"{where}: verify needs size (how much the job writes over)")
        parse_fio_size(self.size, f"{where}: size")
        parse_fio_size(self.bs, f"{where}: verify needs one block size; bs")
        breakers = sorted(k for k in self.extra if k in _VERIFY_BREAKERS)
        if breakers:
            raise FioConfigError(f"{where}: extra sets {', '.join(breakers)}, which the verify read-back cannot "
                                 f"replay; drop them or drop verify")

    @property
    def directions(self) -> tuple[str, ...]:
        if self.verify_only:
            return ("read",)  # the read-back pass only reads
        return _RW_DIRECTIONS[self.rw]

    @property
    def block_bytes(self) -> int:
        return parse_fio_size(self.bs, f"fio workload {self.name!r}: bs")

    @property
    def size_bytes(self) -> int | None:
        return None if self.size is None else parse_fio_size(self.size, f"fio workload {self.name!r}: size")

    def _options(self) -> list[tuple[str, str]]:
        opts: list[tuple[str, Any]] = [
            ("ioengine", self.ioengine), ("rw", self.rw), ("bs", self.bs), ("iodepth", self.iodepth),
            ("numjobs", self.numjobs), ("runtime", self.runtime), ("time_based", self.time_based),
            ("size", self.size), ("pool", self.pool), ("rbdname", self.rbdname),
            ("clientname", self.clientname), ("clustername", self.clustername),
            ("filename", self.filename), ("directory", self.directory),
            # one report per group (not per clone) so job_runtime/numjobs is the group's wall time
            ("group_reporting", True),
            # histograms of total latency (submission to completion) in lat_ns.bins
            ("lat_percentiles", True),
        ]
        if self.ioengine == "rbd" and "invalidate" not in self.extra:
            opts.append(("invalidate", False))  # fio's rbd example: the engine cannot invalidate a cache
        if self.verify is not None:
            opts.append(("verify", self.verify))
            if self.verify_only:
                # replay the write job's offsets (same name, options, seeds), read each written block once
                opts += [("verify_only", True), ("do_verify", True), ("verify_state_load", True)]
            else:
                # no read phase inside the job; save how far it got (also when stopped by SIGINT)
                opts += [("do_verify", False), ("verify_state_save", True)]
        opts.extend(self.extra.items())
        return [(k, _render(v)) for k, v in opts if v is not None]

    def job_file_text(self) -> str:
        lines = [f"[{self.name}]"] + [f"{k}={v}" for k, v in self._options()]
        return "\n".join(lines) + "\n"


def parse_fio_size(text: str | int, what: str = "size") -> int:
    """Bytes of a fio size ("4k", "256M", "1GiB", 4096): fio's default kb_base=1024, so k/M/G are powers of 1024."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise FioConfigError(f"{what}={text!r} is not a fio size like 4k or 256M")
    power = "kmgtp".find(m.group(2).lower()) + 1 if m.group(2) else 0
    return int(m.group(1)) * 1024 ** power


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# --------------------------------------------------------------------------------------------------
# Parsing: the document stream, cumulative snapshots, interval differences, histogram percentiles
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionInterval:
    """What one direction did in one interval. Latencies are None when no IO completed (a gap)."""

    ios: int
    bytes: int
    iops: float
    bw_bytes: float
    lat_mean_ms: float | None
    lat_p50_ms: float | None
    lat_p99_ms: float | None
    lat_p999_ms: float | None
    # what completed in the interval (latency ns -> count): a phase's p99 is taken over all its IOs
    bins: Mapping[int, int] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class FioInterval:
    """One status interval of one fio instance (the local one, or one client in client/server mode)."""

    t: float  # unix seconds at the end of the interval
    seconds: float  # interval length, from fio's job run time
    client: str | None
    directions: dict[str, DirectionInterval]


@dataclass(frozen=True)
class DirectionTotals:
    """A direction over the whole run, from the last cumulative report (histograms merged over clients)."""

    ios: int
    bytes: int
    seconds: float
    iops: float
    bw_bytes: float
    lat_mean_ms: float | None
    lat_p50_ms: float | None
    lat_p99_ms: float | None
    lat_p999_ms: float | None


@dataclass
class FioResult:
    job: str
    intervals: list[FioInterval]
    totals: dict[str, DirectionTotals]  # summed over clients in client/server mode
    client_totals: dict[str, dict[str, DirectionTotals]] = field(default_factory=dict)
    returncode: int | None = None
    stopped: bool = False  # stopped early by us (SIGINT) rather than reaching its runtime
    notes: list[str] = field(default_factory=list)  # fio's non-JSON output and skipped documents
    # verify jobs: fio's saved verify state files (name -> bytes), kept for verify_written after the
    # runner's working directory is gone; empty if fio saved none (killed, or client/server mode)
    verify_state: dict[str, bytes] = field(default_factory=dict)

    def series(self, metric: str, direction: str = "write", client: str | None = None
               ) -> list[tuple[float, float | None]]:
        """(t, value) per interval; metric is a DirectionInterval field: iops, bw_bytes, lat_p99_ms, ..."""
        out = []
        for iv in self.intervals:
            if client is not None and iv.client != client:
                continue
            d = iv.directions.get(direction)
            if d is not None:
                out.append((iv.t, getattr(d, metric)))
        return out

    @property
    def clients(self) -> list[str]:
        return sorted({iv.client for iv in self.intervals if iv.client is not None})


@dataclass
class _DirectionCumulative:
    ios: int = 0
    bytes: int = 0
    bins: dict[int, int] = field(default_factory=dict)  # latency ns -> count
    lat_n: int = 0  # latency samples and their sum (mean x N), for exact interval means
    lat_sum_ns: float = 0.0


@dataclass
class _Cumulative:
    """One cumulative report (one client / one group) reduced to what the interval maths needs."""

    runtime_s: float
    directions: dict[str, _DirectionCumulative]


def percentile_from_bins(bins: Mapping[int, int], percentile: float) -> int | None:
    """The latency (ns) at `percentile` of a fio histogram; fio's rule: the value of the first bin at
    which the running count reaches percentile/100 * total. None for an empty histogram."""
    total = sum(bins.values())
    if total <= 0:
        return None
    threshold = percentile / 100.0 * total
    running = 0
    for value in sorted(bins):
        running += bins[value]
        if running >= threshold:
            return value
    return max(bins)


def _latency_source(direction_stats: Mapping[str, Any]) -> Mapping[str, Any]:
    """lat_ns (total latency) when it has a histogram, else clat_ns: means and bins from the same one."""
    for key in ("lat_ns", "clat_ns"):
        stats = direction_stats.get(key)
        if isinstance(stats, Mapping) and stats.get("bins"):
            return stats
    return direction_stats.get("lat_ns") or {}


def _cumulative(entry: Mapping[str, Any], numjobs: int) -> _Cumulative:
    directions = {}
    for d in DIRECTIONS:
        stats = entry.get(d)
        if isinstance(stats, Mapping):
            lat = _latency_source(stats)
            n = int(lat.get("N", 0))
            directions[d] = _DirectionCumulative(
                int(stats.get("total_ios", 0)), int(stats.get("io_bytes", 0)),
                {int(v): int(c) for v, c in (lat.get("bins") or {}).items()}, n, float(lat.get("mean", 0.0)) * n)
    # job_runtime is summed over the clones of a group_reporting group; it keeps running while IO stalls.
    runtime_ms = float(entry.get("job_runtime", 0)) / max(numjobs, 1)
    return _Cumulative(runtime_ms / 1000.0, directions)


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def _latencies(bins: Mapping[int, int]) -> dict[str, float | None]:
    return {name: _ms(percentile_from_bins(bins, p)) for name, p in PERCENTILES.items()}


class IntervalDeriver:
    """Turns successive cumulative reports of one fio instance into per-interval figures."""

    def __init__(self, directions: Sequence[str], numjobs: int = 1, client: str | None = None):
        self.directions = tuple(directions)
        self.numjobs = numjobs
        self.client = client
        self._prev: _Cumulative | None = None
        self.last: _Cumulative | None = None  # the newest report, for totals

    def add(self, entry: Mapping[str, Any], t: float) -> FioInterval | None:
        """Feed the next cumulative report (ending at unix time t). None if it adds no run time."""
        cur = _cumulative(entry, self.numjobs)
        prev = self._prev or _Cumulative(0.0, {})
        if self._is_reset(prev, cur):
            prev = _Cumulative(0.0, {})  # counters went backwards: fio reset its stats (ramp_time)
        seconds = cur.runtime_s - prev.runtime_s
        if seconds <= 0:
            return None  # a repeated report; keep the previous one as the base of the next interval
        per_dir = {}
        for d in self.directions:
            c = cur.directions.get(d, _DirectionCumulative())
            p = prev.directions.get(d, _DirectionCumulative())
            ios = c.ios - p.ios
            nbytes = c.bytes - p.bytes
            diff = {v: n - p.bins.get(v, 0) for v, n in c.bins.items() if n - p.bins.get(v, 0) > 0}
            lat = _latencies(diff) if ios > 0 else dict.fromkeys(PERCENTILES)
            lat_n = c.lat_n - p.lat_n
            mean = (c.lat_sum_ns - p.lat_sum_ns) / lat_n / 1e6 if ios > 0 and lat_n > 0 else None
            per_dir[d] = DirectionInterval(ios, nbytes, ios / seconds, nbytes / seconds, mean, **lat, bins=diff)
        self._prev = cur
        self.last = cur
        return FioInterval(t, seconds, self.client, per_dir)

    @staticmethod
    def _is_reset(prev: _Cumulative, cur: _Cumulative) -> bool:
        for d, c in cur.directions.items():
            p = prev.directions.get(d)
            if p is not None and (c.ios < p.ios or any(n < p.bins.get(v, 0) for v, n in c.bins.items())):
                return True
        return cur.runtime_s < prev.runtime_s


def _totals(cumulatives: Iterable[_Cumulative], directions: Sequence[str]) -> dict[str, DirectionTotals]:
    cums = list(cumulatives)
    seconds = max((c.runtime_s for c in cums), default=0.0)
    out = {}
    for d in directions:
        ios = nbytes = lat_n = 0
        lat_sum = 0.0
        bins: collections.Counter[int] = collections.Counter()
        for c in cums:
            dc = c.directions.get(d)
            if dc:
                ios += dc.ios
                nbytes += dc.bytes
                lat_n += dc.lat_n
                lat_sum += dc.lat_sum_ns
                bins.update(dc.bins)
        lat = _latencies(bins) if ios else dict.fromkeys(PERCENTILES)
        mean = lat_sum / lat_n / 1e6 if ios and lat_n else None
        out[d] = DirectionTotals(ios, nbytes, seconds, ios / seconds if seconds else 0.0,
                                 nbytes / seconds if seconds else 0.0, mean, **lat)
    return out


class JsonDocumentSplitter:
    """Splits fio's stdout into its top-level JSON documents, line by line, as they arrive.

    fio prints each document starting with a line "{" and ending with a line "}"; anything else outside
    a document (client-mode "<host> ..." text, warnings) is returned as noise.
    """

    def __init__(self) -> None:
        self._doc: list[str] | None = None

    def feed_line(self, line: str) -> tuple[str | None, str | None]:
        """Returns (complete document text, noise line); at most one is not None."""
        stripped = line.rstrip("\r\n")
        if self._doc is None:
            if stripped == "{":
                self._doc = [stripped]
                return None, None
            return None, (stripped if stripped.strip() else None)
        self._doc.append(stripped)
        if stripped == "}":
            text, self._doc = "\n".join(self._doc), None
            return text, None
        return None, None


def iter_documents(text: str) -> Iterator[str]:
    splitter = JsonDocumentSplitter()
    for line in text.splitlines():
        doc, _ = splitter.feed_line(line)
        if doc is not None:
            yield doc


def _client_label(host: str, port: int) -> str:
    return host if port == DEFAULT_SERVER_PORT else f"{host}:{port}"


class _ReportProcessor:
    """Routes parsed documents (local `jobs`, or client-mode `client_stats`) into per-client derivers and
    the timeline. Shared by the live runner and `parse_fio_output`."""

    def __init__(self, job_name: str, directions: Sequence[str], numjobs: int, timeline: Timeline | None,
                 client_labels: Mapping[tuple[str, int], str] | None = None):
        self.job_name = job_name
        self.directions = tuple(directions)
        self.numjobs = numjobs
        self.timeline = timeline
        self.client_labels = dict(client_labels or {})
        self.derivers: dict[str | None, IntervalDeriver] = {}
        self.intervals: list[FioInterval] = []
        self.notes: list[str] = []
        self._job_start: float | None = None  # local mode: wall time of the job's start, from the first report
        self._lock = threading.Lock()

    def handle(self, doc_text: str, client_start_time: float | None = None) -> None:
        try:
            doc = json.loads(doc_text)
        except json.JSONDecodeError as e:
            # fio can interleave an error line into a report; skip it, the next one still differences right
            self.notes.append(f"skipped an unparsable fio report: {e}")
            return
        if "client_stats" in doc:
            self._handle_client_stats(doc, client_start_time)
            return
        printed = doc["timestamp_ms"] / 1000.0 if "timestamp_ms" in doc else float(doc.get("timestamp", time.time()))
        for entry in doc.get("jobs", []):
            if entry.get("jobname") == self.job_name or len(doc.get("jobs", [])) == 1:
                self._add(None, entry, self._sampled_at(printed, entry))

    def _sampled_at(self, printed: float, entry: Mapping[str, Any]) -> float:
        """When fio sampled the report: job start + job_runtime. fio samples run time and counters, then
        waits for every job thread to check in before it prints; a job thread blocked in the rbd engine
        (all IOs stuck on a dead OSD) holds the report back, so `timestamp_ms` (print time) can be tens of
        seconds late. The job's start is anchored on the first report (printed without a stall)."""
        runtime_s = float(entry.get("job_runtime", 0)) / 1000.0 / max(self.numjobs, 1)
        if self._job_start is None:
            self._job_start = printed - runtime_s
        sampled = self._job_start + runtime_s
        return sampled if sampled <= printed + 0.5 else printed

    def _handle_client_stats(self, doc: Mapping[str, Any], start: float | None) -> None:
        # Entries are per (host, port), in the order the servers reported them, with no wall-clock time;
        # "All clients" entries are aggregates without histograms and are skipped.
        if start is None:
            start = float(doc.get("timestamp", time.time())) - max(
                (e.get("job_runtime", 0) / 1000.0 / self.numjobs for e in doc["client_stats"]), default=0.0)
        for entry in doc["client_stats"]:
            if entry.get("jobname") == "All clients":
                continue
            host, port = str(entry.get("hostname", "?")), int(entry.get("port", DEFAULT_SERVER_PORT))
            label = self.client_labels.get((host, port), _client_label(host, port))
            t = start + entry.get("job_runtime", 0) / 1000.0 / self.numjobs
            self._add(label, entry, t)

    def _add(self, client: str | None, entry: Mapping[str, Any], t: float) -> None:
        with self._lock:
            deriver = self.derivers.get(client)
            if deriver is None:
                deriver = self.derivers[client] = IntervalDeriver(self.directions, self.numjobs, client)
            interval = deriver.add(entry, t)
            if interval is None:
                return
            self.intervals.append(interval)
        if self.timeline is not None:
            write_interval(self.timeline, self.job_name, interval)

    def result(self, returncode: int | None = None, stopped: bool = False) -> FioResult:
        with self._lock:
            lasts = {c: d.last for c, d in self.derivers.items() if d.last is not None}
            client_totals = {c: _totals([cum], self.directions) for c, cum in lasts.items() if c is not None}
            intervals = sorted(self.intervals, key=lambda iv: (iv.t, iv.client or ""))
            return FioResult(self.job_name, intervals, _totals(lasts.values(), self.directions), client_totals,
                             returncode, stopped, list(self.notes))


STALL_FACTOR = 1.5  # an interval this many times the nominal one means fio could not report


def write_interval(timeline: Timeline, job_name: str, interval: FioInterval, nominal_seconds: float = 1.0) -> None:
    """One interval as timeline samples, per second.

    fio prints nothing while its job thread waits on IO that does not complete (a full
    stall): the next report then covers the whole stall. Its seconds are written as 0 IOPS
    with latency gaps, and the interval's completions (the writes that waited out the stall)
    in its last second, so the stall shows on the time axis as it happened.
    """
    labels = {"job": job_name}
    if interval.client is not None:
        labels["client"] = interval.client
    stalled = interval.seconds > STALL_FACTOR * nominal_seconds
    if stalled:
        start = interval.t - interval.seconds
        for k in range(1, int(interval.seconds / nominal_seconds)):
            t = start + k * nominal_seconds
            for d in interval.directions:
                timeline.sample(f"fio.{d}.iops", 0.0, t=t, **labels)
                timeline.sample(f"fio.{d}.bw_bytes", 0.0, t=t, **labels)
                for metric in ("lat_mean_ms", *PERCENTILES):
                    timeline.sample(f"fio.{d}.{metric}", None, t=t, **labels)
    for d, figures in interval.directions.items():
        for metric in ("iops", "bw_bytes", "lat_mean_ms", *PERCENTILES):
            value = getattr(figures, metric)
            if stalled and metric in ("iops", "bw_bytes") and value is not None:
                value = value * interval.seconds / nominal_seconds  # all of it in the last second
            timeline.sample(f"fio.{d}.{metric}", value, t=interval.t, **labels)
        if figures.bins:
            timeline.histogram(f"fio.{d}.lat_ns", dict(figures.bins), t=interval.t, **labels)


def parse_fio_output(text: str, job_name: str, directions: Sequence[str] = ("read", "write"),
                     numjobs: int = 1, timeline: Timeline | None = None,
                     client_start_time: float | None = None) -> FioResult:
    """Parse recorded `--output-format=json+ --status-interval=N` output (local or client mode)."""
    proc = _ReportProcessor(job_name, directions, numjobs, timeline)
    splitter = JsonDocumentSplitter()
    for line in text.splitlines():
        doc, noise = splitter.feed_line(line)
        if doc is not None:
            proc.handle(doc, client_start_time)
        elif noise is not None:
            proc.notes.append(noise)
    return proc.result()


# --------------------------------------------------------------------------------------------------
# Running fio
# --------------------------------------------------------------------------------------------------


def _split_host(host: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(host, tuple):
        return host[0], int(host[1])
    if host.startswith("["):  # [v6addr]:port
        addr, _, rest = host[1:].partition("]")
        return addr, int(rest.lstrip(":") or DEFAULT_SERVER_PORT)
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, int(port)
    return host, DEFAULT_SERVER_PORT


class FioRunner:
    """One fio process (local, or the client of several `fio --server` hosts) and its reader threads.

    start() returns at once; wait() or stop() give the FioResult. Samples reach the timeline while fio
    runs (local mode) or when it exits (client mode, see the module docstring).
    """

    def __init__(self, job: FioJob, timeline: Timeline | None = None, *,
                 clients: Sequence[str | tuple[str, int]] | None = None, fio_binary: str = "fio",
                 status_interval_s: int = 1, workdir: str | Path | None = None,
                 env: Mapping[str, str] | None = None, processes: WorkloadProcesses | None = None):
        self.job = job
        self.timeline = timeline
        self.processes = processes  # where a crashed runner's fio is found again (drill heal)
        self.fio_binary = fio_binary
        self.status_interval_s = status_interval_s
        self.clients = [_split_host(h) for h in clients] if clients else []
        self._workdir = Path(workdir) if workdir else None
        self._env = dict(env or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._noise_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._first_start_line: float | None = None
        self._stopped = False
        labels = {(h, p): _client_label(h, p) for h, p in self.clients}
        self._processor = _ReportProcessor(job.name, job.directions, job.numjobs, timeline, labels)

    def command(self, job_file: str | Path) -> list[str]:
        cmd = [self.fio_binary, "--output-format=json+", "--eta=never"]
        if not self.clients:
            return cmd + [f"--status-interval={self.status_interval_s}", str(job_file)]
        for host, port in self.clients:
            spec = f"ip6:{host}" if ":" in host else host
            # per-client options must follow their --client= (fio forwards them to that server)
            cmd += [f"--client={spec},{port}", f"--status-interval={self.status_interval_s}", str(job_file)]
        return cmd

    def start(self) -> "FioRunner":
        binary = shutil.which(self.fio_binary)
        if binary is None:
            raise FioError("fio not found; install Debian package fio")
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"fio-{self.job.name}-")
            self._workdir = Path(self._tmp.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        job_file = self._workdir / f"{self.job.name}.fio"
        job_file.write_text(self.job.job_file_text())
        if self.job.verify is not None and not self.job.verify_only:
            for old in self._workdir.glob(_verify_state_glob(self.job.name)):
                old.unlink()  # a state left by an earlier run must not pass for this run's
        env = dict(os.environ)
        if self.job.conf:
            env["CEPH_CONF"] = self.job.conf  # librados reads it; only reaches a local fio, not servers
        env.update(self._env)
        cmd = self.command(job_file)
        cmd[0] = binary
        tag = env[TAG_ENV] = new_tag()  # finds fio's forked jobs again after a crash (drills/workloads/reaper.py)
        self._started_at = time.time()
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          cwd=self._workdir, env=env, bufsize=1)
        except OSError as e:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            raise FioError(f"fio workload {self.job.name!r}: cannot run {binary}: {e}") from e
        if self.processes is not None:
            try:
                self.processes.register(self._proc.pid, f"fio:{self.job.name}", cmd, tag)
            except OSError as e:  # unrecorded, a crash would leave it running: not started at all
                self._proc.kill()
                self._proc.wait()
                raise FioError(f"fio workload {self.job.name!r}: cannot record it in {self.processes.dir}: {e}") from e
        self._threads = [threading.Thread(target=self._read_stdout, name=f"fio-{self.job.name}-out", daemon=True),
                         threading.Thread(target=self._read_stderr, name=f"fio-{self.job.name}-err", daemon=True)]
        for th in self._threads:
            th.start()
        if self.timeline is not None:
            self.timeline.event("workload.start", f"fio:{self.job.name}", rw=self.job.rw, bs=self.job.bs,
                                iodepth=self.job.iodepth, numjobs=self.job.numjobs, ioengine=self.job.ioengine,
                                clients=[_client_label(h, p) for h, p in self.clients])
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        splitter = JsonDocumentSplitter()
        for line in self._proc.stdout:
            doc, noise = splitter.feed_line(line)
            if noise is not None:
                self._noise_tail.append(noise)
                if self._first_start_line is None and "Starting" in noise:
                    # client mode has no wall-clock time in its reports: the servers' jobs start about now
                    self._first_start_line = time.time()
            elif doc is not None:
                self._processor.handle(doc, self._first_start_line or self._started_at)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            if line.strip():
                self._stderr_tail.append(line.rstrip())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def intervals(self) -> list[FioInterval]:
        """The intervals parsed so far (a copy)."""
        return self._processor.result().intervals

    def stop(self, timeout: float = 30.0) -> FioResult:
        """Ask fio to finish early (SIGINT: it stops the jobs and prints its final report), then wait."""
        if self.running:
            assert self._proc is not None
            self._stopped = True
            self._proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> FioResult:
        """Wait for fio to exit. timeout None = the job's runtime plus a minute of grace."""
        if self._proc is None:
            raise FioError(f"fio workload {self.job.name!r} was never started")
        if timeout is None:
            timeout = self.job.runtime + 60.0
        try:
            return self._finish(timeout)
        except BaseException:
            self._abandon()  # interrupted (SIGTERM, Ctrl-C): fio must not outlive the caller, nor its readers
            raise
        finally:
            if self.processes is not None and self._proc.poll() is not None:
                self.processes.forget(self._proc.pid)
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def _abandon(self) -> None:
        """Stop fio without waiting for a report and join the reader threads, which write to the timeline."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._stopped = True
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._join_readers()

    def _finish(self, timeout: float) -> FioResult:
        assert self._proc is not None
        try:
            rc = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            self._join_readers()
            raise FioError(f"fio workload {self.job.name!r} did not finish within {timeout:.0f}s; killed it"
                           f"{self._tail_text()}") from None
        self._join_readers()
        result = self._processor.result(rc, self._stopped)
        result.notes[:0] = list(self._noise_tail)
        if self.job.verify is not None and not self.job.verify_only and self._workdir is not None:
            # fio writes local-<job>-<clone>-verify.state into its working directory when a job exits
            result.verify_state = {p.name: p.read_bytes()
                                   for p in sorted(self._workdir.glob(_verify_state_glob(self.job.name)))}
        if self.clients and self.job.conf:
            result.notes.append("conf is not passed to fio servers: they use their own CEPH_CONF/ceph.conf")
        if self.timeline is not None:
            self.timeline.event("workload.stop", f"fio:{self.job.name}", returncode=rc, stopped=self._stopped,
                                intervals=len(result.intervals))
        # fio exits 128 ("terminating on signal 2") when we stop it with SIGINT
        if rc != 0 and not (self._stopped and rc in (128, 130, -signal.SIGINT) and result.intervals):
            raise FioError(f"fio workload {self.job.name!r} exited with status {rc}{self._tail_text()}")
        if not result.intervals:
            raise FioError(f"fio workload {self.job.name!r} exited with status {rc} but printed no report"
                           f"{self._tail_text()}")
        return result

    def _join_readers(self) -> None:
        for th in self._threads:
            th.join(timeout=10)

    def _tail_text(self) -> str:
        parts = []
        if self._stderr_tail:
            parts.append("stderr:\n  " + "\n  ".join(self._stderr_tail))
        if self._noise_tail:  # in client mode the servers' errors arrive on stdout as "<host> ..." text
            parts.append("stdout (non-JSON):\n  " + "\n  ".join(list(self._noise_tail)[-10:]))
        return (":\n" + "\n".join(parts)) if parts else ""

    def __enter__(self) -> "FioRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            try:
                self.stop()
            except FioError:
                pass  # already unwinding from the caller's error; don't mask it


def start_job(job: FioJob, timeline: Timeline | None = None, **kwargs: Any) -> FioRunner:
    """Start fio in the background (e.g. alongside the verifier); call .wait() or .stop() later."""
    return FioRunner(job, timeline, **kwargs).start()


def run_job(job: FioJob, timeline: Timeline | None = None, **kwargs: Any) -> FioResult:
    """Run fio locally to completion."""
    return FioRunner(job, timeline, **kwargs).start().wait()


def run_clients(job: FioJob, hosts: Sequence[str | tuple[str, int]], timeline: Timeline | None = None,
                **kwargs: Any) -> FioResult:
    """Run `job` on every host (each running `fio --server`; "host", "host:port" or (host, port)) through
    one `fio --client` process; intervals and timeline samples are labelled client=<host[:port]>."""
    if not hosts:
        raise FioConfigError(f"fio workload {job.name!r}: run_clients needs at least one host")
    return FioRunner(job, timeline, clients=hosts, **kwargs).start().wait()


# --------------------------------------------------------------------------------------------------
# Verifying what fio wrote: fio's own verify, read back after the job stopped
# --------------------------------------------------------------------------------------------------

# fio 3.33 verify.h: struct verify_state_hdr {u64 version, size, crc} then struct thread_io_list
# {u64 no_comps; u32 depth; u32 nofiles; u64 numberio; u64 index; ...}. VSTATE_HDR_VERSION is 3.
_VSTATE = struct.Struct("<QQQQIIQQ")
_VSTATE_VERSION = 3


def _verify_state_glob(job_name: str) -> str:
    return f"local-{job_name}-*-verify.state"


@dataclass(frozen=True)
class VerifyState:
    """What fio's saved verify state says about one job clone: writes issued and queue depth."""

    file: str
    numberio: int  # writes the clone issued, over all its passes
    depth: int  # its iodepth: the last `depth` writes may not have completed


def parse_verify_state(name: str, data: bytes) -> VerifyState:
    if len(data) < _VSTATE.size:
        raise FioError(f"fio verify state {name}: {len(data)} bytes, too short")
    version, _size, _crc, _no_comps, depth, _nofiles, numberio, _index = _VSTATE.unpack_from(data)
    if version != _VSTATE_VERSION:
        raise FioError(f"fio verify state {name}: version {version}, this harness reads version {_VSTATE_VERSION} "
                       f"(fio 3.x)")
    return VerifyState(name, numberio, depth)


@dataclass(frozen=True)
class FioVerifyResult:
    """fio's read-back of what a job wrote. `errors` None = not measured (see `error`), never 0."""

    job: str
    method: str  # one line: what was verified and how
    written_blocks: int | None  # blocks the job wrote at least once (from its saved verify state)
    verified_blocks: int | None  # blocks fio read back and checked
    verified_bytes: int | None
    errors: int | None  # blocks that failed verification (fio stops at the first one)
    error: str = ""  # why it could not verify
    failures: tuple[str, ...] = ()  # fio's own lines naming the bad blocks
    seconds: float | None = None

    @property
    def measured(self) -> bool:
        return self.errors is not None and not self.error

    @property
    def passed(self) -> bool:
        return self.measured and self.errors == 0


_VERIFY_FAILURE_RE = re.compile(r"verify(?: failed|: bad)")


def verify_written(job: FioJob, result: FioResult | None, timeline: Timeline | None = None, *,
                   fio_binary: str = "fio", timeout_s: float | None = None,
                   env: Mapping[str, str] | None = None) -> FioVerifyResult:
    """Read back every block `job` wrote and check fio's verify header and checksum in each.

    Call after the job stopped (FioRunner.stop/wait or run_job returned `result`). Runs a second fio job
    with the same name and options plus verify_only=1 and verify_state_load=1: fio replays the write
    job's offset sequence from its seeds up to the number of writes the saved state records, reads each
    of those blocks once and checks magic, length, offset, header crc and the data checksum. The pass
    uses the write job's iodepth: fio's saved state only tells which of the last `iodepth` writes
    completed, and a deeper read-back overruns into blocks never written (measured: iodepth 64 after a
    16-deep job reported unwritten blocks as bad). Never raises for a cluster or fio problem: those come
    back as `error` (not measured)."""
    started = time.monotonic()

    def not_measured(why: str, written: int | None = None) -> FioVerifyResult:
        out = FioVerifyResult(job.name, f"fio verify={job.verify} read-back of {job.name}: not run", written, None,
                              None, None, why, (), time.monotonic() - started)
        if timeline is not None:
            timeline.event("workload.verify", f"fio:{job.name}", measured=False, error=why)
        return out

    if job.verify is None or job.verify_only:
        return not_measured(f"fio workload {job.name!r} was run without verify (set FioJob.verify, e.g. crc32c)")
    if result is None:
        return not_measured(f"fio workload {job.name!r} left no result (it failed or never ran)")
    if not result.verify_state:
        return not_measured(f"fio workload {job.name!r} saved no verify state (fio was killed before it could "
                            f"exit, or ran in client/server mode)")
    try:
        states = [parse_verify_state(n, d) for n, d in sorted(result.verify_state.items())]
    except FioError as e:
        return not_measured(str(e))
    file_blocks = (job.size_bytes or 0) // job.block_bytes
    written = sum(min(st.numberio, file_blocks) for st in states)
    slack = sum(st.depth for st in states)  # writes that may still have been in flight when fio stopped
    if written == 0:
        return not_measured(f"fio workload {job.name!r} issued no writes", 0)

    check = dataclasses.replace(job, verify_only=True, time_based=False,
                                runtime=int(timeout_s) if timeout_s else 3600)
    cap = (timeout_s or 3600) + 60
    binary = shutil.which(fio_binary)
    if binary is None:
        return not_measured("fio not found; install Debian package fio", written)
    run_env = dict(os.environ)
    if job.conf:
        run_env["CEPH_CONF"] = job.conf
    run_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix=f"fio-verify-{job.name}-") as tmp:
        workdir = Path(tmp)
        for name, data in result.verify_state.items():
            (workdir / name).write_bytes(data)
        job_file = workdir / f"{job.name}.fio"
        job_file.write_text(check.job_file_text())
        try:
            proc = subprocess.run([binary, "--output-format=json", "--eta=never", str(job_file)], cwd=workdir,
                                  env=run_env, capture_output=True, text=True, timeout=cap)
        except subprocess.TimeoutExpired:
            return not_measured(f"fio verify pass of {job.name!r} did not finish within {cap:.0f}s", written)
        except OSError as e:
            return not_measured(f"cannot run {binary}: {e}", written)
    docs = [json.loads(d) for d in iter_documents(proc.stdout) if d]
    jobs = [j for d in docs for j in d.get("jobs", [])]
    failures = tuple(line.strip() for line in proc.stderr.splitlines() if _VERIFY_FAILURE_RE.search(line))
    tail = "; ".join(line.strip() for line in proc.stderr.splitlines()[-5:] if line.strip())
    if not jobs:
        return not_measured(f"fio verify pass of {job.name!r} exited {proc.returncode} without a report: {tail}",
                            written)
    verified_blocks = sum(int(j.get("read", {}).get("total_ios", 0)) for j in jobs)
    verified_bytes = sum(int(j.get("read", {}).get("io_bytes", 0)) for j in jobs)
    job_errors = sorted({int(j.get("error", 0)) for j in jobs} - {0})
    eilseq = 84  # fio's verify failure
    if failures or eilseq in job_errors:
        errors = max(1, len(failures))
    elif proc.returncode != 0 or job_errors:
        return not_measured(f"fio verify pass of {job.name!r} failed (exit {proc.returncode}, errors {job_errors}): "
                            f"{tail}", written)
    elif verified_blocks < written - slack:
        return not_measured(f"fio verify pass of {job.name!r} read back only {verified_blocks} of {written} "
                            f"written blocks", written)
    else:
        errors = 0
    method = (f"fio verify={job.verify}: {verified_blocks} of {written} blocks of {job.bs} that {job.name} wrote "
              f"(offsets replayed from its saved verify state, {job.ioengine} engine, iodepth {job.iodepth}) read "
              f"back after it stopped; each block's header (magic, length, offset, header crc) and {job.verify} "
              f"of its data checked; not checked: that a block rewritten in a later pass holds its latest write "
              f"(fio skips that for time-based jobs); fio stops at the first bad block")
    out = FioVerifyResult(job.name, method, written, verified_blocks, verified_bytes, errors, "", failures[:10],
                          time.monotonic() - started)
    if timeline is not None:
        timeline.event("workload.verify", f"fio:{job.name}", measured=True, written_blocks=written,
                       verified_blocks=verified_blocks, errors=errors, failures=list(failures[:10]),
                       seconds=round(out.seconds or 0.0, 1), method=method)
    return out
