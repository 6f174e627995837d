"""S3 workload: locust, headless in a subprocess, against radosgw; per-second figures on the timeline.

locust monkey-patches the interpreter with gevent, so it is never imported here: the harness runs the
`locust` command on `drills/workloads/locustfile_s3.py` and reads what that locustfile records. The
locustfile listens to locust's `request` event and writes, once a second, one JSON line per
(second, op, source) with the number of successful and failed requests and a 1 %-bucket latency
histogram (in distributed mode the workers send them to the master, which writes them). A reader thread
here tails that file, merges the sources and, once a second can no longer receive records, writes:

    s3.<op>.rps          successful requests completed in that second       (op: put, get, delete)
    s3.<op>.errors       failed requests completed in that second
    s3.<op>.lat_p50_ms   latency percentiles of that second's successful requests;
    s3.<op>.lat_p99_ms   null (a gap) in a second without one
    s3.errors            failed requests of all ops in that second

at t = the end of the second, labelled workload=<name>. locust's own "current" figures (10 s windows)
are not used.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from drills.target import Target, TargetError
from drills.timeline import Timeline
from drills.workloads.reaper import TAG_ENV, WorkloadProcesses, new_tag
from drills.units import parse_bytes
from drills.workloads.spec import workload_fields

LOCUSTFILE = Path(__file__).with_name("locustfile_s3.py")
OPS = ("put", "get", "delete")
BUCKET_RATIO = 1.01  # must match locustfile_s3.BUCKET_RATIO
DEFAULT_MASTER_PORT = 5557
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3WorkloadError(RuntimeError):
    """The S3 workload could not run (locust missing, radosgw unreachable, locust failed)."""


class S3ConfigError(S3WorkloadError, ValueError):
    """A workload definition is wrong (unknown field, bad value)."""


@dataclass(frozen=True)
class S3Workload:
    """One locust S3 workload. Sizes take units ("4k", "1M"); times are seconds."""

    name: str
    users: int = 4
    spawn_rate: float = 0.0  # users started per second; 0 = all at once
    runtime_s: int = 60
    object_size: int | str = "4KiB"
    mix: dict[str, int] = field(default_factory=lambda: {"put": 1, "get": 1, "delete": 1})
    keys_per_user: int = 100  # each user keeps at most this many live objects; further PUTs overwrite
    rate_per_user: float = 0.0  # requests per second per user; 0 = as fast as each user can
    bucket: str = ""  # default: drills-<name>
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    cleanup: bool = True  # delete the bucket's objects (and the bucket) afterwards

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any], name: str | None = None) -> "S3Workload":
        data = workload_fields(cls, spec, name, "s3", S3ConfigError)
        return cls(**data)

    def validate(self) -> None:
        where = f"s3 workload {self.name!r}"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise S3ConfigError(f"{where}: name must be letters, digits, '_', '.', '-'")
        for attr in ("users", "runtime_s", "keys_per_user"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise S3ConfigError(f"{where}: {attr} must be a positive integer, got {value!r}")
        for attr in ("spawn_rate", "rate_per_user"):
            if not isinstance(getattr(self, attr), (int, float)) or getattr(self, attr) < 0:
                raise S3ConfigError(f"{where}: {attr} must be a number >= 0")
        for attr in ("connect_timeout_s", "read_timeout_s"):
            if not isinstance(getattr(self, attr), (int, float)) or getattr(self, attr) <= 0:
                raise S3ConfigError(f"{where}: {attr} must be a number > 0")
        try:
            size = parse_bytes(self.object_size)
        except (ValueError, TypeError) as e:
            raise S3ConfigError(f"{where}: object_size {self.object_size!r}: {e}") from None
        if size < 1:
            raise S3ConfigError(f"{where}: object_size must be at least 1 byte")
        if not isinstance(self.mix, dict) or not self.mix:
            raise S3ConfigError(f"{where}: mix must be a table like {{put = 1, get = 2, delete = 1}}")
        bad = sorted(k for k in self.mix if k not in OPS)
        if bad:
            raise S3ConfigError(f"{where}: mix has unknown op(s) {', '.join(bad)} (known: {', '.join(OPS)})")
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 0 for w in self.mix.values()):
            raise S3ConfigError(f"{where}: mix weights must be integers >= 0")
        if not self.mix.get("put"):
            raise S3ConfigError(f"{where}: mix needs a put weight > 0 (GET and DELETE act on written keys)")
        if self.bucket and not _BUCKET_RE.match(self.bucket):
            raise S3ConfigError(f"{where}: bucket {self.bucket!r} is not a valid S3 bucket name")

    @property
    def object_bytes(self) -> int:
        return parse_bytes(self.object_size)

    @property
    def bucket_name(self) -> str:
        return self.bucket or f"drills-{self.name.lower().replace('_', '-').replace('.', '-')}"[:63]

    @property
    def ops(self) -> tuple[str, ...]:
        """The ops this workload does (weight > 0), in OPS order."""
        return tuple(op for op in OPS if self.mix.get(op))

    def mix_text(self) -> str:
        return ",".join(f"{op}:{self.mix.get(op, 0)}" for op in OPS)


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def from_target(cls, target: Target) -> "S3Endpoint":
        if not target.s3.endpoint:
            raise TargetError("target has no [s3] endpoint")
        if not target.s3.credentials_file:
            raise TargetError("target's [s3] has no credentials_file")
        try:
            creds = json.loads(Path(target.s3.credentials_file).read_text())
        except OSError as e:
            raise TargetError(f"[s3] credentials_file {target.s3.credentials_file}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise TargetError(f"[s3] credentials_file {target.s3.credentials_file}: not JSON: {e}") from None
        try:
            return cls(target.s3.endpoint, creds["access_key"], creds["secret_key"])
        except KeyError as e:
            raise TargetError(f"[s3] credentials_file {target.s3.credentials_file}: no {e.args[0]}") from None

    def client(self, connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0, attempts: int = 1) -> Any:
        """A boto3 S3 client of this endpoint (path-style addressing, as radosgw wants by default)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.url, aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                          retries={"total_max_attempts": attempts}, s3={"addressing_style": "path"}))


# --------------------------------------------------------------------------------------------------
# Per-second aggregation of the locustfile's records (pure logic)
# --------------------------------------------------------------------------------------------------


def bucket_value_ms(bucket: int) -> float:
    """The upper bound of a histogram bucket, in ms (the value a percentile in that bucket reports)."""
    return BUCKET_RATIO ** bucket / 1000.0


def percentile_from_hist(hist: Mapping[int, int], p: float) -> float | None:
    """fio's rule: the first bucket at which the running count reaches p/100 x N. None when empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    need = max(1, math.ceil(p / 100.0 * total))
    running = 0
    for b in sorted(hist):
        running += hist[b]
        if running >= need:
            return bucket_value_ms(b)
    return bucket_value_ms(max(hist))


@dataclass
class OpSecond:
    ok: int = 0
    errors: int = 0
    hist: collections.Counter[int] = field(default_factory=collections.Counter)
    error_kinds: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, record: Mapping[str, Any]) -> None:
        self.ok += int(record.get("ok", 0))
        self.errors += int(record.get("errors", 0))
        self.hist.update({int(b): int(n) for b, n in record.get("hist", {}).items()})
        self.error_kinds.update(record.get("error_kinds", {}))


@dataclass(frozen=True)
class S3Second:
    """One op in one second (t = the end of the second)."""

    t: float
    op: str
    rps: float
    errors: int
    lat_p50_ms: float | None
    lat_p99_ms: float | None


@dataclass(frozen=True)
class S3OpTotals:
    ok: int
    errors: int
    seconds: float
    rps: float
    lat_p50_ms: float | None
    lat_p99_ms: float | None
    error_kinds: dict[str, int]


class SecondAggregator:
    """Merges records from every source per (second, op) and writes closed seconds to the timeline.

    A second is closed once `close_before` passes it; seconds between the first and the last are all
    written, empty ones with rps 0 and latency None. Records for an already closed second are counted in
    `late_records` and added to the totals only.
    """

    def __init__(self, workload: str, ops: Sequence[str], timeline: Timeline | None = None):
        self.workload = workload
        self.ops = tuple(ops)
        self.timeline = timeline
        self.pending: dict[int, dict[str, OpSecond]] = {}
        self.totals: dict[str, OpSecond] = {}
        self.seconds: list[S3Second] = []
        self.next_second: int | None = None  # the first second not yet closed
        self.late_records = 0
        self.sources: set[str] = set()
        self._lock = threading.Lock()

    def add(self, record: Mapping[str, Any]) -> None:
        op = str(record["op"]).lower()
        second = int(record["second"])
        with self._lock:
            self.sources.add(str(record.get("source", "")))
            self.totals.setdefault(op, OpSecond()).add(record)
            if self.next_second is not None and second < self.next_second:
                self.late_records += 1
                return
            self.pending.setdefault(second, {}).setdefault(op, OpSecond()).add(record)

    def close_before(self, second: float | None) -> list[S3Second]:
        """Close every second < `second` (None: up to the last second seen)."""
        with self._lock:
            if not self.pending and self.next_second is None:
                return []
            first = self.next_second if self.next_second is not None else min(self.pending)
            last_seen = max(self.pending, default=first - 1)
            end = last_seen + 1 if second is None else min(int(second), last_seen + 1)
            out: list[S3Second] = []
            for s in range(first, end):
                out += self._emit(s, self.pending.pop(s, {}))
            if end > first:
                self.next_second = end
            self.seconds += out
            return out

    def _emit(self, second: int, per_op: dict[str, OpSecond]) -> list[S3Second]:
        t = second + 1.0
        rows = []
        errors_total = 0
        ops = list(self.ops) + sorted(op for op in per_op if op not in self.ops)
        for op in ops:
            data = per_op.get(op, OpSecond())
            row = S3Second(t, op, float(data.ok), data.errors, percentile_from_hist(data.hist, 50.0),
                           percentile_from_hist(data.hist, 99.0))
            rows.append(row)
            errors_total += data.errors
            if self.timeline is not None:
                labels = {"workload": self.workload}
                self.timeline.sample(f"s3.{op}.rps", row.rps, t=t, **labels)
                self.timeline.sample(f"s3.{op}.errors", float(row.errors), t=t, **labels)
                self.timeline.sample(f"s3.{op}.lat_p50_ms", row.lat_p50_ms, t=t, **labels)
                self.timeline.sample(f"s3.{op}.lat_p99_ms", row.lat_p99_ms, t=t, **labels)
        if self.timeline is not None:
            self.timeline.sample("s3.errors", float(errors_total), t=t, workload=self.workload)
        return rows

    def op_totals(self, seconds: float) -> dict[str, S3OpTotals]:
        with self._lock:
            return {op: S3OpTotals(d.ok, d.errors, seconds, d.ok / seconds if seconds > 0 else 0.0,
                                   percentile_from_hist(d.hist, 50.0), percentile_from_hist(d.hist, 99.0),
                                   dict(d.error_kinds))
                    for op, d in self.totals.items()}


@dataclass
class S3Result:
    workload: str
    seconds: list[S3Second]  # per second and op, in time order
    totals: dict[str, S3OpTotals]  # per op over the whole run
    returncode: int | None
    stopped: bool
    sources: list[str]  # the locust processes that produced records (host:pid)
    late_records: int
    notes: list[str] = field(default_factory=list)

    def series(self, figure: str, op: str) -> list[tuple[float, float | None]]:
        """(t, value) pairs of one figure (rps, errors, lat_p50_ms, lat_p99_ms) of one op."""
        return [(s.t, getattr(s, figure)) for s in self.seconds if s.op == op]

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.totals.values())


# --------------------------------------------------------------------------------------------------
# Running locust
# --------------------------------------------------------------------------------------------------


def find_locust() -> str:
    """The locust command: next to this interpreter (the venv) first, then PATH."""
    beside = Path(sys.executable).parent / "locust"
    if beside.exists():
        return str(beside)
    found = shutil.which("locust")
    if found is None:
        raise S3WorkloadError("locust not found; install it into the venv: pip install locust==2.46.6")
    return found


def preflight(workload: S3Workload, endpoint: S3Endpoint, timeout_s: float = 5.0) -> None:
    """Make sure radosgw answers and the bucket exists; one-line errors naming workload and endpoint."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

    client = endpoint.client(timeout_s, timeout_s)
    where = f"s3 workload {workload.name!r}: radosgw at {endpoint.url}"
    try:
        try:
            client.head_bucket(Bucket=workload.bucket_name)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            client.create_bucket(Bucket=workload.bucket_name)
    except (EndpointConnectionError, ConnectTimeoutError) as e:
        reason = "connection timed out" if isinstance(e, ConnectTimeoutError) else _refusal(e)
        raise S3WorkloadError(f"{where} unreachable: {reason}") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        raise S3WorkloadError(f"{where}: {err.get('Code', '?')} {err.get('Message', '')}".rstrip()) from None
    except BotoCoreError as e:
        raise S3WorkloadError(f"{where}: {e}") from None
    finally:
        client.close()


def _refusal(e: Exception) -> str:
    text = str(getattr(e, "kwargs", {}).get("error", e))
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    return text.splitlines()[0][:200]


def cleanup_bucket(workload: S3Workload, endpoint: S3Endpoint) -> int:
    """Delete every object of the workload's bucket and the bucket; returns the number of objects."""
    import boto3
    from botocore.config import Config

    s3 = boto3.session.Session().resource(
        "s3", endpoint_url=endpoint.url, aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key, region_name="us-east-1",
        config=Config(connect_timeout=5, read_timeout=60, s3={"addressing_style": "path"}))
    bucket = s3.Bucket(workload.bucket_name)
    n = 0
    for batch in _batches((o.key for o in bucket.objects.all()), 1000):
        bucket.delete_objects(Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        n += len(batch)
    bucket.delete()
    return n


def _batches(items: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class Distributed:
    """locust's master/worker mode. The harness runs the master; `local_workers` worker processes are
    started on this machine, and `expect_workers - local_workers` must be started elsewhere (e.g. on the
    target's load hosts, through `remote_launcher`) with `worker_command(...)`."""

    expect_workers: int
    local_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT
    master_address: str = ""  # what workers connect to; default master_bind_host
    wait_for_workers_s: int = 60

    def __post_init__(self) -> None:
        if self.expect_workers < 1 or not 0 <= self.local_workers <= self.expect_workers:
            raise S3ConfigError("distributed: expect_workers >= 1 and 0 <= local_workers <= expect_workers")

    @property
    def connect_address(self) -> str:
        return self.master_address or self.master_bind_host


# A callable that starts the workers this machine does not run: given the worker command (with the
# locustfile fetched from the master: `-f -`), it starts it on every remote load host and returns a
# callable that stops them. The SSH backend provides one for staging.
RemoteLauncher = Callable[[list[str]], Callable[[], None]]


def worker_command(locust: str, master_host: str, master_port: int, locustfile: str | Path = "-") -> list[str]:
    """The command of one worker. locustfile '-' = download it from the master (remote load hosts)."""
    return [locust, "-f", str(locustfile), "--worker", "--master-host", master_host,
            "--master-port", str(master_port), "--loglevel", "WARNING"]


class LocustS3Runner:
    """locust (standalone, or master + workers) for one S3 workload, and the reader of its records."""

    def __init__(self, workload: S3Workload, endpoint: S3Endpoint, timeline: Timeline | None = None, *,
                 distributed: Distributed | None = None, remote_launcher: RemoteLauncher | None = None,
                 workdir: str | Path | None = None, close_lag_s: float | None = None,
                 processes: WorkloadProcesses | None = None):
        self.workload = workload
        self.processes = processes  # where a crashed runner's locust is found again (drill heal)
        self.endpoint = endpoint
        self.timeline = timeline
        self.distributed = distributed
        self.remote_launcher = remote_launcher
        if distributed and distributed.expect_workers > distributed.local_workers and remote_launcher is None:
            raise S3ConfigError(f"s3 workload {workload.name!r}: {distributed.expect_workers} workers expected, "
                                f"{distributed.local_workers} local, and no remote_launcher for the rest")
        # records of a second arrive up to ~1 s after it (once a second), plus the master hop
        self.close_lag_s = close_lag_s if close_lag_s is not None else (3.0 if distributed else 2.0)
        self._workdir_arg = Path(workdir) if workdir else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir: Path | None = None
        self.aggregator = SecondAggregator(workload.name, workload.ops, timeline)
        self._master: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._stop_remote: Callable[[], None] | None = None
        self._reader: threading.Thread | None = None
        self._done = threading.Event()
        self._stopped = False
        self._started_at = 0.0
        self.notes: list[str] = []

    # -- commands --

    def _env(self) -> dict[str, str]:
        w = self.workload
        env = dict(os.environ)
        env.update({
            "DRILLS_S3_ENDPOINT": self.endpoint.url, "DRILLS_S3_ACCESS_KEY": self.endpoint.access_key,
            "DRILLS_S3_SECRET_KEY": self.endpoint.secret_key, "DRILLS_S3_BUCKET": w.bucket_name,
            "DRILLS_S3_OBJECT_SIZE": str(w.object_bytes), "DRILLS_S3_MIX": w.mix_text(),
            "DRILLS_S3_KEYS_PER_USER": str(w.keys_per_user), "DRILLS_S3_RATE_PER_USER": str(w.rate_per_user),
            "DRILLS_S3_CONNECT_TIMEOUT": str(w.connect_timeout_s), "DRILLS_S3_READ_TIMEOUT": str(w.read_timeout_s),
            "DRILLS_S3_RECORD_FILE": str(self.record_path),
            "PYTHONUNBUFFERED": "1",
        })
        return env

    @property
    def record_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "s3-records.jsonl"

    def master_command(self, locust: str) -> list[str]:
        w = self.workload
        spawn_rate = w.spawn_rate or w.users
        cmd = [locust, "-f", str(LOCUSTFILE), "--headless", "-u", str(w.users), "-r", f"{spawn_rate:g}",
               "-t", f"{w.runtime_s}s", "--host", self.endpoint.url, "--only-summary", "--stop-timeout", "5",
               "--exit-code-on-error", "0", "--loglevel", "WARNING"]
        if self.distributed:
            d = self.distributed
            cmd += ["--master", "--expect-workers", str(d.expect_workers), "--master-bind-host",
                    d.master_bind_host, "--master-bind-port", str(d.master_port),
                    "--expect-workers-max-wait", str(d.wait_for_workers_s)]
        return cmd

    # -- life cycle --

    def start(self) -> "LocustS3Runner":
        locust = find_locust()
        preflight(self.workload, self.endpoint, timeout_s=min(self.workload.connect_timeout_s, 5.0))
        if self._workdir_arg is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"locust-{self.workload.name}-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        self.record_path.write_text("")
        env = self._env()
        self._started_at = time.time()
        self._master = self._spawn(self.master_command(locust), "master", env)
        if self.distributed:
            d = self.distributed
            for i in range(d.local_workers):
                cmd = worker_command(locust, d.connect_address, d.master_port, LOCUSTFILE)
                self._workers.append(self._spawn(cmd, f"worker{i + 1}", env))
            if d.expect_workers > d.local_workers:
                assert self.remote_launcher is not None
                self._stop_remote = self.remote_launcher(worker_command("locust", d.connect_address,
                                                                        d.master_port))
        self._reader = threading.Thread(target=self._read_records, name=f"locust-{self.workload.name}-records",
                                        daemon=True)
        self._reader.start()
        if self.timeline is not None:
            self.timeline.event("workload.start", f"s3:{self.workload.name}", endpoint=self.endpoint.url,
                                users=self.workload.users, object_size=self.workload.object_bytes,
                                mix=self.workload.mix, bucket=self.workload.bucket_name,
                                workers=self.distributed.expect_workers if self.distributed else 0)
        return self

    def _spawn(self, cmd: list[str], role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        log = open(self.workdir / f"{role}.log", "wb")
        tag = new_tag()  # finds the process again after a crash (drills/workloads/reaper.py)
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**env, TAG_ENV: tag}, cwd=self.workdir, start_new_session=True)
        except OSError as e:
            raise S3WorkloadError(f"s3 workload {self.workload.name!r}: cannot run {cmd[0]}: {e}") from e
        finally:
            log.close()
        if self.processes is not None:
            try:
                self.processes.register(proc.pid, f"locust {role}:{self.workload.name}", cmd, tag)
            except OSError as e:  # unrecorded, a crash would leave it running: not started at all
                proc.kill()
                proc.wait()
                raise S3WorkloadError(f"s3 workload {self.workload.name!r}: cannot record locust in "
                                      f"{self.processes.dir}: {e}") from e
        return proc

    def _read_records(self) -> None:
        with open(self.record_path) as f:
            partial = ""
            while True:
                chunk = f.read()
                if chunk:
                    lines = (partial + chunk).split("\n")
                    partial = lines.pop()
                    for line in lines:
                        if line.strip():
                            try:
                                self.aggregator.add(json.loads(line))
                            except (json.JSONDecodeError, KeyError, ValueError) as e:
                                self.notes.append(f"skipped a bad record line: {e}")
                if self._done.is_set() and not chunk:
                    return
                self.aggregator.close_before(time.time() - self.close_lag_s)
                self._done.wait(0.25)

    @property
    def running(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def stop(self, timeout: float = 30.0) -> S3Result:
        """End the run early (SIGTERM: locust stops its users and writes the last records), then wait."""
        if self.running:
            assert self._master is not None
            self._stopped = True
            self._master.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> S3Result:
        if self._master is None:
            raise S3WorkloadError(f"s3 workload {self.workload.name!r} was never started")
        if timeout is None:
            timeout = self.workload.runtime_s + 60.0 + (self.distributed.wait_for_workers_s if self.distributed else 0)
        try:
            return self._finish(timeout)
        finally:
            self._end_processes()
            if self.workload.cleanup:
                try:
                    cleanup_bucket(self.workload, self.endpoint)
                except Exception as e:  # noqa: BLE001 - cleanup must not mask the result
                    self.notes.append(f"bucket cleanup failed: {type(e).__name__}: {e}")
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def _finish(self, timeout: float) -> S3Result:
        assert self._master is not None
        try:
            rc = self._master.wait(timeout)
        except subprocess.TimeoutExpired:
            self._master.kill()
            self._master.wait()
            self._join_reader()
            raise S3WorkloadError(f"s3 workload {self.workload.name!r}: locust did not finish within "
                                  f"{timeout:.0f}s; killed it{self._log_tail()}") from None
        for w in self._workers:  # workers quit when the master tells them to
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self._join_reader()
        self.aggregator.close_before(None)
        span = float(len({s.t for s in self.aggregator.seconds}))  # seconds with records, first to last
        result = S3Result(self.workload.name, list(self.aggregator.seconds), self.aggregator.op_totals(span), rc,
                          self._stopped, sorted(self.aggregator.sources), self.aggregator.late_records,
                          list(self.notes))
        if result.late_records:
            result.notes.append(f"{result.late_records} record(s) arrived after their second was written; "
                                f"counted in the totals only")
        if self.timeline is not None:
            self.timeline.event("workload.stop", f"s3:{self.workload.name}", returncode=rc, stopped=self._stopped,
                                seconds=len({s.t for s in result.seconds}),
                                totals={op: {"ok": t.ok, "errors": t.errors} for op, t in result.totals.items()})
        if rc not in (0, None) and not (self._stopped and rc in (-signal.SIGTERM, 143)):
            raise S3WorkloadError(f"s3 workload {self.workload.name!r}: locust exited with status {rc}"
                                  f"{self._log_tail()}")
        if not result.seconds:
            raise S3WorkloadError(f"s3 workload {self.workload.name!r}: locust recorded no request"
                                  f"{self._log_tail()}")
        return result

    def _join_reader(self) -> None:
        self._done.set()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def _end_processes(self) -> None:
        for p in [self._master, *self._workers]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
            if p is not None and self.processes is not None:
                self.processes.forget(p.pid)
        if self._stop_remote is not None:
            try:
                self._stop_remote()
            except Exception as e:  # noqa: BLE001
                self.notes.append(f"stopping remote workers failed: {e}")
            self._stop_remote = None

    def _log_tail(self, lines: int = 15) -> str:
        if self.workdir is None:
            return ""
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            text = log.read_text(errors="replace").strip().splitlines()
            if text:
                parts.append(f"{log.stem}:\n  " + "\n  ".join(text[-lines:]))
        return (":\n" + "\n".join(parts)) if parts else ""

    def __enter__(self) -> "LocustS3Runner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.running:
            try:
                self.stop()
            except S3WorkloadError:
                pass


def start_s3(workload: S3Workload, endpoint: S3Endpoint, timeline: Timeline | None = None,
             **kwargs: Any) -> LocustS3Runner:
    """Start the workload in the background; call .wait() or .stop() later."""
    return LocustS3Runner(workload, endpoint, timeline, **kwargs).start()


def run_s3(workload: S3Workload, endpoint: S3Endpoint, timeline: Timeline | None = None,
           **kwargs: Any) -> S3Result:
    """Run the workload to completion."""
    return LocustS3Runner(workload, endpoint, timeline, **kwargs).start().wait()
