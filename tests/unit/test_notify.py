"""Notifications against a local HTTP server: bodies, timeouts, failures as notes, never raised."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from drills.history.synthetic import make_run, rack_measurements
from drills.notify import (
    NOTIFICATIONS_FILE,
    FaultAnnotator,
    NotifyConfig,
    NotifyConfigError,
    fault_spans,
    notify_run_end,
)
from drills.timeline import Timeline

T0 = 1_760_000_000.0


class Sink:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.status = 200
        self.delay = 0.0


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Sink, str]]:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    state = Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, dict(self.headers), body))
            time.sleep(state.delay)
            try:
                self.send_response(state.status)
                self.end_headers()
                self.wfile.write(b"{}")
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run(tmp: Path) -> Path:
    return make_run(tmp, "r1", T0, {"rack_power_cut": rack_measurements(detection=90.0)})


def test_webhook_posts_a_slack_compatible_verdict(tmp_path: Path, sink: tuple[Sink, str]) -> None:
    state, url = sink
    run = _run(tmp_path)
    cfg = NotifyConfig(webhook_url=url + "/hooks/T000/SECRET", report_url="https://drills.example/reports")
    assert notify_run_end(cfg, run) == []
    path, headers, body = state.requests[0]
    assert path == "/hooks/T000/SECRET" and headers["Content-Type"] == "application/json"
    assert body["verdict"] == "failed" and body["run_id"] == "r1"
    assert body["text"].startswith(":x: ceph-drills run r1: *failed*")
    assert "<https://drills.example/reports/r1/index.html>" in body["text"]
    assert json.loads((run / NOTIFICATIONS_FILE).read_text().splitlines()[0])["ok"] is True


def test_grafana_gets_one_region_per_fault_with_token(tmp_path: Path, sink: tuple[Sink, str]) -> None:
    state, url = sink
    run = _run(tmp_path)
    cfg = NotifyConfig(grafana_url=url, grafana_token="tok", grafana_dashboard_uid="ceph")
    assert notify_run_end(cfg, run) == []
    path, headers, body = state.requests[0]
    assert path == "/api/annotations" and headers["Authorization"] == "Bearer tok"
    assert body["time"] == int((T0 + 20) * 1000) and body["timeEnd"] == int((T0 + 60) * 1000)
    assert body["dashboardUID"] == "ceph" and "rack_power_cut" in body["tags"] and "power off rack2" in body["text"]
    assert notify_run_end(cfg, run) == [] and len(state.requests) == 1  # never posted twice


def test_live_annotator_posts_when_the_fault_heals(tmp_path: Path, sink: tuple[Sink, str]) -> None:
    state, url = sink
    run = tmp_path / "live"
    with Timeline(run) as tl:
        ann = FaultAnnotator(NotifyConfig(grafana_url=url), run, poll_s=0.05).start()
        tl.event("fault.inject", "kill osd.3", fault_id="f1", fault="kill", ok=True)
        time.sleep(0.3)
        assert state.requests == []  # not before the heal: start and end go together
        tl.event("fault.heal", "kill osd.3", fault_id="f1", fault="kill", ok=True)
        deadline = time.time() + 5
        while not state.requests and time.time() < deadline:
            time.sleep(0.05)
        assert len(state.requests) == 1
        assert ann.stop() == []


@pytest.mark.parametrize("status, delay, expect", [(500, 0.0, "HTTP 500"), (200, 2.0, "no answer within 0.3 s")])
def test_a_failing_sink_is_a_note_not_an_exception(tmp_path: Path, sink: tuple[Sink, str], status: int,
                                                   delay: float, expect: str) -> None:
    state, url = sink
    state.status, state.delay = status, delay
    run = _run(tmp_path)
    began = time.monotonic()
    notes = notify_run_end(NotifyConfig(webhook_url=url + "/hook/SECRET", grafana_url=url, timeout_s=0.3), run)
    assert time.monotonic() - began < 5  # bounded by the timeouts, not by the server
    assert len(notes) == 2 and all(expect in n for n in notes), notes
    assert all("SECRET" not in n for n in notes)  # a webhook's secret path is not written into the report
    recorded = [json.loads(l) for l in (run / NOTIFICATIONS_FILE).read_text().splitlines()]
    assert [r["ok"] for r in recorded] == [False, False]


def test_an_unreachable_sink_is_a_note(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notes = notify_run_end(NotifyConfig(webhook_url=f"http://127.0.0.1:{port}/x", timeout_s=1), _run(tmp_path))
    assert len(notes) == 1 and "cannot reach it" in notes[0]


def test_config_from_env() -> None:
    cfg = NotifyConfig.from_env({"DRILLS_WEBHOOK_URL": "https://hooks.example/x", "DRILLS_NOTIFY_TIMEOUT": "2"})
    assert cfg.enabled and cfg.timeout_s == 2 and not cfg.grafana_url
    assert not NotifyConfig.from_env({}).enabled
    with pytest.raises(NotifyConfigError, match="DRILLS_GRAFANA_URL='grafana:3000' is not an http"):
        NotifyConfig.from_env({"DRILLS_GRAFANA_URL": "grafana:3000"})
    with pytest.raises(NotifyConfigError, match="DRILLS_NOTIFY_TIMEOUT='0'"):
        NotifyConfig.from_env({"DRILLS_NOTIFY_TIMEOUT": "0"})


def test_fault_spans_pair_by_id_and_skip_failed_injects() -> None:
    ev = [{"t": 1, "kind": "fault.inject", "label": "a", "data": {"fault_id": "1", "ok": False}},
          {"t": 2, "kind": "fault.inject", "label": "b", "data": {"fault_id": "2"}},
          {"t": 5, "kind": "fault.heal", "label": "b", "data": {"fault_id": "2", "ok": False}},
          {"t": 6, "kind": "fault.heal", "label": "a", "data": {"fault_id": "1"}}]
    spans = fault_spans(ev)
    assert [(s.fault_id, s.start, s.end, s.healed) for s in spans] == [("2", 2.0, 5.0, False)]
