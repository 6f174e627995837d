"""Notifications that never break a drill: a webhook at the end of a run, Grafana annotations per fault.

Sinks (all optional, configured from the environment - or the same names as `drill run` options):

  DRILLS_WEBHOOK_URL         POST a JSON body at the end of a run: Slack-compatible ("text"), plus
                             run_id, verdict, exit_code, report, drills (for any other receiver)
  DRILLS_GRAFANA_URL         Grafana base URL; one annotation per fault (start = fault.inject,
                             end = fault.heal), posted when the fault heals (POST /api/annotations)
  DRILLS_GRAFANA_TOKEN       a Grafana service-account token (a credential: environment only, never a file)
  DRILLS_GRAFANA_DASHBOARD   optional dashboard UID to pin the annotations to (else organisation-wide)
  DRILLS_REPORT_URL          optional base URL where reports/ is served; the report link becomes a URL
  DRILLS_NOTIFY_TIMEOUT      seconds per request (default 5)

Every request has a timeout, and runs in a daemon thread joined with that timeout, so a sink
that accepts the connection and never answers cannot stall the run.  A failing sink returns a
note (one line) and is recorded in <run_dir>/notifications.jsonl for the report; nothing here
raises.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from drills.progress import TimelineTail

NOTIFICATIONS_FILE = "notifications.jsonl"
DEFAULT_TIMEOUT_S = 5.0
ENV = {
    "webhook_url": "DRILLS_WEBHOOK_URL",
    "grafana_url": "DRILLS_GRAFANA_URL",
    "grafana_token": "DRILLS_GRAFANA_TOKEN",
    "grafana_dashboard_uid": "DRILLS_GRAFANA_DASHBOARD",
    "report_url": "DRILLS_REPORT_URL",
    "timeout_s": "DRILLS_NOTIFY_TIMEOUT",
}


class NotifyConfigError(Exception):
    """A notification setting that cannot be used; one line naming the variable and what to fix."""


@dataclass(frozen=True)
class NotifyConfig:
    webhook_url: str = ""
    grafana_url: str = ""
    grafana_token: str = ""
    grafana_dashboard_uid: str = ""
    report_url: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.grafana_url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "NotifyConfig":
        """Read DRILLS_* variables; a malformed URL or timeout is a NotifyConfigError (before anything runs)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {k: env.get(v, "").strip() for k, v in ENV.items()}
        for key in ("webhook_url", "grafana_url", "report_url"):
            url = values[key]
            if url:
                parsed = urllib.parse.urlparse(url)
                if parsed.scheme not in ("http", "https") or not parsed.netloc:
                    raise NotifyConfigError(f"{ENV[key]}={url!r} is not an http(s) URL; set it to e.g. "
                                            f"https://hooks.example.com/... or unset it")
        timeout = values.pop("timeout_s") or str(DEFAULT_TIMEOUT_S)
        try:
            t = float(timeout)
            if not 0 < t <= 120:
                raise ValueError
        except ValueError:
            raise NotifyConfigError(f"{ENV['timeout_s']}={timeout!r}: expected seconds between 0 and 120, e.g. 5") from None
        return cls(**values, timeout_s=t)


def _post(url: str, body: Mapping[str, Any], timeout: float, headers: Mapping[str, str] | None = None) -> str | None:
    """POST JSON; None on a 2xx answer, else a one-line reason.  Bounded by `timeout` even if the server stalls."""
    result: list[str | None] = []

    def send() -> None:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                resp.read(65536)
                result.append(None if 200 <= resp.status < 300 else f"HTTP {resp.status}")
        except urllib.error.HTTPError as e:
            result.append(f"HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            timed_out = isinstance(e.reason, TimeoutError)
            result.append(f"no answer within {timeout:g} s" if timed_out else f"cannot reach it: {e.reason}")
        except TimeoutError:
            result.append(f"no answer within {timeout:g} s")
        except (OSError, ValueError) as e:  # timeouts, resets, bad URLs
            result.append(f"{type(e).__name__}: {e}")

    worker = threading.Thread(target=send, name="drills-notify", daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if worker.is_alive() or not result:
        return f"no answer within {timeout:g} s"
    return result[0]


def _redact(url: str) -> str:
    """A URL for a note: webhook URLs carry their secret in the path, so only scheme and host are shown."""
    p = urllib.parse.urlparse(url)
    return f"{p.scheme}://{p.netloc}/…" if p.path not in ("", "/") else f"{p.scheme}://{p.netloc}"


def record_note(run_dir: str | Path, sink: str, ok: bool, note: str) -> None:
    """Append to <run_dir>/notifications.jsonl (what the report shows); never raises."""
    try:
        with open(Path(run_dir) / NOTIFICATIONS_FILE, "a") as f:
            f.write(json.dumps({"t": time.time(), "sink": sink, "ok": ok, "note": note}) + "\n")
    except OSError:
        pass


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def webhook_body(config: NotifyConfig, run_dir: Path) -> dict[str, Any]:
    s = _summary(run_dir)
    verdict = str(s.get("verdict") or "unknown")
    run_id = str(s.get("run_id") or run_dir.name)
    report = run_dir / "index.html"
    link = (config.report_url.rstrip("/") + f"/{run_dir.name}/index.html") if config.report_url else str(report.resolve())
    drills = [{"drill": d.get("drill"), "verdict": d.get("verdict")} for d in s.get("drills") or []]
    passed = sum(1 for d in drills if d["verdict"] == "passed")
    icon = {"passed": ":white_check_mark:", "failed": ":x:", "error": ":warning:"}.get(verdict, ":grey_question:")
    lines = [f"{icon} ceph-drills run {run_id}: *{verdict}*"
             + (f" (exit {s['exit_code']})" if s.get("exit_code") is not None else "")
             + (f", {passed} of {len(drills)} drills passed" if drills else "")]
    for d in drills:
        if d["verdict"] not in ("passed", "skipped"):
            lines.append(f"• {d['drill']}: {d['verdict']}")
    lines.append(f"report: <{link}>" if config.report_url else f"report: {link}")
    return {"text": "\n".join(lines), "run_id": run_id, "verdict": verdict, "exit_code": s.get("exit_code"),
            "report": link, "drills": drills}


def notify_webhook(config: NotifyConfig, run_dir: str | Path) -> str | None:
    """POST the run's verdict; a note when it failed, None when it worked or no webhook is set."""
    if not config.webhook_url:
        return None
    run_dir = Path(run_dir)
    why = _post(config.webhook_url, webhook_body(config, run_dir), config.timeout_s)
    note = None if why is None else f"webhook {_redact(config.webhook_url)}: {why}; the run's result is unaffected"
    record_note(run_dir, "webhook", why is None, note or "verdict posted")
    return note


@dataclass(frozen=True)
class FaultSpan:
    fault_id: str
    label: str
    kind: str
    drill: str
    start: float
    end: float
    healed: bool  # False: the heal event says the heal failed


def fault_spans(events: list[dict[str, Any]]) -> list[FaultSpan]:
    """fault.inject / fault.heal pairs (by fault_id, else label) from raw timeline events."""
    open_: dict[str, dict[str, Any]] = {}
    drill_at: dict[str, str] = {}  # fault key -> the drill whose phase was running when it was injected
    current = ""
    out = []
    for e in sorted(events, key=lambda e: e.get("t", 0.0)):
        data = e.get("data") or {}
        if e.get("kind") == "phase" and data.get("drill"):
            current = "" if e.get("label") == "end" else str(data["drill"])
            continue
        key = str(data.get("fault_id") or e.get("label"))
        if e.get("kind") == "fault.inject" and data.get("ok", True):
            open_[key] = e
            drill_at[key] = str(data.get("drill") or current)
        elif e.get("kind") == "fault.heal" and key in open_:
            start = open_.pop(key)
            sdata = start.get("data") or {}
            out.append(FaultSpan(key, str(start.get("label")), str(sdata.get("fault", "")),
                                 drill_at.get(key, ""), float(start["t"]), float(e["t"]),
                                 bool(data.get("ok", True))))
    return out


def annotation_body(config: NotifyConfig, span: FaultSpan, run_id: str) -> dict[str, Any]:
    tags = ["ceph-drills", f"run:{run_id}"] + [t for t in (span.drill, span.kind) if t]
    body: dict[str, Any] = {
        "time": int(span.start * 1000), "timeEnd": int(span.end * 1000), "tags": tags,
        "text": f"ceph-drills {span.drill + ': ' if span.drill else ''}{span.label}"
                f" ({'healed' if span.healed else 'HEAL FAILED'} after {span.end - span.start:.0f} s; run {run_id})",
    }
    if config.grafana_dashboard_uid:
        body["dashboardUID"] = config.grafana_dashboard_uid
    return body


def annotate_fault(config: NotifyConfig, run_dir: str | Path, span: FaultSpan) -> str | None:
    """Post one fault as a Grafana region annotation; a note when it failed."""
    if not config.grafana_url:
        return None
    run_dir = Path(run_dir)
    headers = {"Authorization": f"Bearer {config.grafana_token}"} if config.grafana_token else {}
    url = config.grafana_url.rstrip("/") + "/api/annotations"
    why = _post(url, annotation_body(config, span, run_dir.name), config.timeout_s, headers)
    note = None if why is None else (f"grafana annotation for {span.label!r} at {_redact(config.grafana_url)}: {why}; "
                                     f"the drill is unaffected")
    record_note(run_dir, "grafana", why is None, note or f"annotated {span.fault_id}")
    return note


def _annotated(run_dir: Path) -> set[str]:
    done = set()
    try:
        for line in (run_dir / NOTIFICATIONS_FILE).read_text().splitlines():
            d = json.loads(line)
            if d.get("sink") == "grafana" and d.get("ok") and str(d.get("note", "")).startswith("annotated "):
                done.add(d["note"][len("annotated "):])
    except (OSError, json.JSONDecodeError):
        pass
    return done


class FaultAnnotator:
    """Watches the run's timeline and posts each fault to Grafana when it heals (start and end together).

    A daemon thread polling events.jsonl once a second; `stop()` posts what is left.  Start it
    with the run's timeline (plugin.py's `timeline` fixture) when config.grafana_url is set.
    """

    def __init__(self, config: NotifyConfig, run_dir: str | Path, poll_s: float = 1.0):
        self.config = config
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self.tail = TimelineTail(self.run_dir)
        self.events: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self._posted = _annotated(self.run_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "FaultAnnotator":
        self._thread = threading.Thread(target=self._loop, name="drills-grafana", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> None:
        self.events += [e for e in self.tail.read("events.jsonl")
                        if str(e.get("kind", "")).startswith("fault.") or e.get("kind") == "phase"]
        for span in fault_spans(self.events):
            if span.fault_id not in self._posted:
                self._posted.add(span.fault_id)
                note = annotate_fault(self.config, self.run_dir, span)
                if note:
                    self.notes.append(note)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - never let a sink take the run down
                self.notes.append(f"grafana annotations stopped: {type(e).__name__}: {e}")
                return
            self._stop.wait(self.poll_s)

    def stop(self) -> list[str]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.timeout_s + 2)
        try:
            self.poll()
        except Exception as e:  # noqa: BLE001
            self.notes.append(f"grafana annotations: {type(e).__name__}: {e}")
        return list(self.notes)


def notify_run_end(config: NotifyConfig, run_dir: str | Path) -> list[str]:
    """At the end of a run (after summary.json is written): annotations not yet posted, then the webhook.

    Returns notes about sinks that failed (empty: all worked or none is set).  Never raises.
    """
    notes: list[str] = []
    run_dir = Path(run_dir)
    try:
        if config.grafana_url:
            annotator = FaultAnnotator(config, run_dir)
            annotator.poll()  # faults a live annotator did not post (or there was none)
            notes += annotator.notes
        note = notify_webhook(config, run_dir)
        if note:
            notes.append(note)
    except Exception as e:  # noqa: BLE001 - a bug here must not turn a passed run into an error
        notes.append(f"notifications: {type(e).__name__}: {e}")
    return notes
