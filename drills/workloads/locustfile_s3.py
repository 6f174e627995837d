"""The locustfile of the S3 workload. Runs only inside a `locust` process (never imported by the harness:
locust monkey-patches the interpreter with gevent).

One user class, `S3User`: a boto3 S3 client per user doing a weighted PUT / GET / DELETE mix on its own
keys in one bucket. Every request fires locust's `request` event; a listener buckets the completions per
wall-clock second and per op into log-scale latency histograms (1 % wide buckets). Once a second is over
the buckets are shipped as JSON lines:

    {"second": 1700000000, "op": "PUT", "source": "<runner id>", "ok": 12, "errors": 1,
     "hist": {"<bucket>": count, ...}, "error_kinds": {"ConnectTimeoutError": 1}}

* standalone (`locust --headless`): written straight to the record file;
* distributed: every worker sends its buckets to the master as a `drills_s3_buckets` message, and the
  master writes them to the record file. So the record file is always on the runner's machine.

Configuration comes from the command-line options registered below (each also readable from the
environment variable named in it, which is how the harness passes the credentials: not on a command line).
The master forwards custom options to its workers with the spawn message.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from typing import Any

import gevent
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

MESSAGE_TYPE = "drills_s3_buckets"
BUCKET_RATIO = 1.01  # latency histogram bucket width: 1 %
_OPS = ("PUT", "GET", "DELETE")


def bucket_of(latency_ms: float) -> int:
    """Histogram bucket of a latency: bucket b holds (1.01**(b-1), 1.01**b] microseconds."""
    us = max(latency_ms * 1000.0, 1.0)
    return int(math.ceil(math.log(us) / math.log(BUCKET_RATIO)))


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("ceph-drills S3 workload")
    group.add_argument("--s3-endpoint", env_var="DRILLS_S3_ENDPOINT", default="", help="radosgw URL")
    group.add_argument("--s3-access-key", env_var="DRILLS_S3_ACCESS_KEY", default="")
    group.add_argument("--s3-secret-key", env_var="DRILLS_S3_SECRET_KEY", default="")
    group.add_argument("--s3-bucket", env_var="DRILLS_S3_BUCKET", default="drills-s3")
    group.add_argument("--s3-object-size", env_var="DRILLS_S3_OBJECT_SIZE", type=int, default=4096)
    group.add_argument("--s3-mix", env_var="DRILLS_S3_MIX", default="put:1,get:1,delete:1")
    group.add_argument("--s3-keys-per-user", env_var="DRILLS_S3_KEYS_PER_USER", type=int, default=100)
    group.add_argument("--s3-rate-per-user", env_var="DRILLS_S3_RATE_PER_USER", type=float, default=0.0)
    group.add_argument("--s3-connect-timeout", env_var="DRILLS_S3_CONNECT_TIMEOUT", type=float, default=5.0)
    group.add_argument("--s3-read-timeout", env_var="DRILLS_S3_READ_TIMEOUT", type=float, default=30.0)
    group.add_argument("--s3-record-file", env_var="DRILLS_S3_RECORD_FILE", default="")


class SecondBuckets:
    """Per (second, op) counts and latency histograms of completed requests, drained once a second."""

    def __init__(self, source: str):
        self.source = source
        self._lock = threading.Lock()
        self._buckets: dict[tuple[int, str], dict[str, Any]] = {}

    def add(self, op: str, completed_at: float, latency_ms: float, error: BaseException | None) -> None:
        key = (int(completed_at), op)
        with self._lock:
            b = self._buckets.setdefault(key, {"ok": 0, "errors": 0, "hist": {}, "error_kinds": {}})
            if error is None:
                b["ok"] += 1
                h = str(bucket_of(latency_ms))
                b["hist"][h] = b["hist"].get(h, 0) + 1
            else:
                b["errors"] += 1
                kind = type(error).__name__
                b["error_kinds"][kind] = b["error_kinds"].get(kind, 0) + 1

    def drain(self, before_second: float | None) -> list[dict[str, Any]]:
        """Remove and return the records of seconds < before_second (all of them when None)."""
        with self._lock:
            done = [k for k in self._buckets if before_second is None or k[0] < before_second]
            out = [{"second": s, "op": op, "source": self.source, **self._buckets.pop((s, op))}
                   for s, op in sorted(done)]
        return out


class RecordWriter:
    def __init__(self, path: str):
        self._file = open(path, "a", buffering=1) if path else None
        self._lock = threading.Lock()

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._file is None or not records:
            return
        with self._lock:
            self._file.write("".join(json.dumps(r) + "\n" for r in records))

    def close(self) -> None:
        if self._file is not None:
            with self._lock:
                self._file.close()
                self._file = None


class Collector:
    """Wires the request listener, the once-a-second drain and the hand-over (file or master)."""

    def __init__(self, environment: Any):
        self.environment = environment
        self.runner = environment.runner
        self.buckets = SecondBuckets(f"{os.uname().nodename}:{os.getpid()}")
        self.writer: RecordWriter | None = None
        self._final_sent = False
        environment.events.request.add_listener(self.on_request)
        if isinstance(self.runner, MasterRunner):
            self.runner.register_message(MESSAGE_TYPE, self.on_worker_message)
        environment.events.test_stopping.add_listener(lambda **_kw: self.flush(final=False))
        environment.events.test_stop.add_listener(lambda **_kw: self.flush(final=True))
        environment.events.quitting.add_listener(self.on_quitting)
        gevent.spawn(self._drain_loop)

    def _record_writer(self) -> RecordWriter:
        if self.writer is None:
            opts = self.environment.parsed_options
            self.writer = RecordWriter(getattr(opts, "s3_record_file", "") if opts else "")
        return self.writer

    def on_request(self, request_type: str, response_time: float, exception: BaseException | None = None,
                   **_kw: Any) -> None:
        self.buckets.add(request_type, time.time(), response_time, exception)

    def on_worker_message(self, msg: Any, **_kw: Any) -> None:
        self._record_writer().write(msg.data)

    def _drain_loop(self) -> None:
        while True:
            gevent.sleep(1.0 - (time.time() % 1.0) + 0.05)  # just after each second boundary
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        records = self.buckets.drain(None if final else int(time.time()))
        if not records:
            return
        if isinstance(self.runner, WorkerRunner):
            self.runner.send_message(MESSAGE_TYPE, records)
        elif not isinstance(self.runner, MasterRunner):
            self._record_writer().write(records)

    def on_quitting(self, **_kw: Any) -> None:
        self.flush(final=True)
        if self.writer is not None:
            self.writer.close()


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    if environment.runner is not None:
        environment.drills_collector = Collector(environment)


def _parse_mix(text: str) -> list[tuple[str, int]]:
    mix = []
    for part in text.split(","):
        op, _, weight = part.partition(":")
        op = op.strip().upper()
        if op not in _OPS or not weight.strip().isdigit():
            raise ValueError(f"bad --s3-mix entry {part!r} (want put:N,get:N,delete:N)")
        mix.append((op, int(weight)))
    if not any(w for _, w in mix):
        raise ValueError("--s3-mix has no positive weight")
    return mix


def _wait_time(user: "S3User") -> float:
    rate = user.rate_per_user
    if rate <= 0:
        return 0.0
    # constant throughput: the time left of this task's 1/rate slot
    elapsed = time.monotonic() - user.task_started
    return max(0.0, 1.0 / rate - elapsed)


class S3User(User):
    """A boto3 S3 client doing a weighted PUT/GET/DELETE mix on keys of its own."""

    wait_time = _wait_time

    def on_start(self) -> None:
        import boto3  # after locust's monkey-patching, so botocore's sockets are cooperative
        from botocore.config import Config

        opts = self.environment.parsed_options
        self.rate_per_user = float(opts.s3_rate_per_user)
        self.mix = _parse_mix(opts.s3_mix)
        self.bucket = opts.s3_bucket
        self.object_size = int(opts.s3_object_size)
        self.keys_per_user = int(opts.s3_keys_per_user)
        self.prefix = f"u-{uuid.uuid4().hex[:12]}"
        self.live: list[str] = []
        self.next_key = 0
        self.payload = os.urandom(self.object_size)
        self.task_started = time.monotonic()
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=opts.s3_endpoint, aws_access_key_id=opts.s3_access_key,
            aws_secret_access_key=opts.s3_secret_key, region_name="us-east-1",
            config=Config(connect_timeout=opts.s3_connect_timeout, read_timeout=opts.s3_read_timeout,
                          retries={"total_max_attempts": 1, "mode": "standard"},  # errors surface, no retries
                          s3={"addressing_style": "path"}, max_pool_connections=2))

    def _fire(self, op: str, name: str, started: float, length: int, error: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type=op, name=name, response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length, exception=error, context={}, response=None)

    @task
    def one_request(self) -> None:
        self.task_started = time.monotonic()
        ops, weights = zip(*self.mix)
        op = random.choices(ops, weights)[0]
        if op != "PUT" and not self.live:
            op = "PUT"  # nothing to read or delete yet
        key = self._pick(op)
        started = time.perf_counter()
        length = 0
        error: BaseException | None = None
        try:
            if op == "PUT":
                self.client.put_object(Bucket=self.bucket, Key=key, Body=self.payload)
                length = self.object_size
            elif op == "GET":
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                length = len(body)
                if length != self.object_size:
                    raise ValueError(f"GET {key}: {length} bytes, expected {self.object_size}")
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:  # noqa: BLE001 - every failure is a failed request, counted by kind
            error = e
        self._fire(op, f"/{self.bucket}/[key]", started, length, error)
        if error is None:
            if op == "PUT" and key not in self.live:
                self.live.append(key)
            elif op == "DELETE":
                self.live.remove(key)

    def _pick(self, op: str) -> str:
        if op == "PUT":
            if len(self.live) < self.keys_per_user:
                self.next_key += 1
                return f"{self.prefix}/{self.next_key:08d}"
            return random.choice(self.live)  # overwrite
        return random.choice(self.live)
