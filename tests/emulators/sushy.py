"""sushy-emulator (sushy-tools) on 127.0.0.1, fake driver, basic auth, power changes observable.

The fake driver keeps power state in memory but, with ``external_notifier``
set on a system, PUTs the system's JSON to EXTERNAL_NOTIFICATION_URL on every
change.  ``PowerRecorder`` is that URL: a tiny HTTP server in the test process
that records each notified power state (and writes it to a file).  So a
Redfish ForceOff through the backend is seen by the test as a real action.

One wrapper, no fork of sushy-tools: the fake driver applies a power change
1-11 s (random) after the request; ``LAUNCHER`` starts sushy-emulator with that
delay fixed at 1 s so a test stays well under 30 s while the backend still
has to poll PowerState as it does against real BMCs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from .common import free_port, stop, wait_until

SYSTEM_UUID = "a6c2ab54-7d0e-4b5e-9d1c-0d0d0d0d0d11"

LAUNCHER = """
import sys
import sushy_tools.emulator.resources.systems.fakedriver as fd
fd.random.randint = lambda a, b: 1   # power changes apply after 1 s, not 1-11 s
from sushy_tools.emulator.main import main
sys.argv = ["sushy-emulator"] + sys.argv[1:]
main()
"""


class PowerRecorder:
    """Receives the fake driver's PUT notifications; keeps every power_state seen."""

    def __init__(self, record_file: Path, on_state: "Callable[[str], None] | None" = None):
        self.states: list[str] = []
        self.on_state = on_state  # e.g. cut the sandbox host this BMC drives
        self.record_file = record_file
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                pending = (body.get("pending_power") or {}).get("power_state")
                state = pending or body.get("power_state", "")
                recorder.states.append(state)
                with open(recorder.record_file, "a") as f:
                    f.write(state + "\n")
                if recorder.on_state is not None and state:
                    recorder.on_state(state)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class SushyEmulator:
    workdir: Path
    user: str = "drill"
    password: str = "redfish-s3cret"
    port: int = 0
    initial_power: str = "On"
    proc: subprocess.Popen | None = None
    recorder: PowerRecorder | None = None
    on_state: "Callable[[str], None] | None" = None  # wires this BMC to a host (e.g. a sandbox host)
    _log: list[str] = field(default_factory=list)

    @staticmethod
    def available() -> str:
        import importlib.util

        # find_spec, not import: importing the emulator drags Flask/webob into the test process.
        missing = [m for m in ("sushy_tools", "bcrypt", "flask") if importlib.util.find_spec(m) is None]
        return f"{', '.join(missing)} not installed in this venv (pip install sushy-tools)" if missing else ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "SushyEmulator":
        import bcrypt

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.recorder = PowerRecorder(self.workdir / "power_changes.log", self.on_state)
        self.recorder.start()
        htpasswd = self.workdir / "htpasswd"
        # sushy-emulator accepts only bcrypt entries in its Apache-style auth file.
        htpasswd.write_text(f"{self.user}:{bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n")
        self.port = self.port or free_port()
        config = self.workdir / "emulator.conf"
        config.write_text(
            "\n".join(
                [
                    "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
                    f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}",
                    f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
                    "SUSHY_EMULATOR_FAKE_DRIVER = True",
                    f"SUSHY_EMULATOR_STATE_DIR = {str(self.workdir / 'state')!r}",
                    f"EXTERNAL_NOTIFICATION_URL = {self.recorder.url!r}",
                    "SUSHY_EMULATOR_FAKE_SYSTEMS = [{",
                    f"    'uuid': {SYSTEM_UUID!r}, 'name': 'drill-node', 'power_state': {self.initial_power!r},",
                    "    'external_notifier': True, 'nics': [{'mac': '00:5c:52:31:3a:9c', 'ip': '127.0.0.2'}],",
                    "}]",
                    "",
                ]
            )
        )
        log = open(self.workdir / "sushy.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_until(self._answers, 20, "sushy-emulator", self.proc)
        return self

    def _answers(self) -> bool:
        import urllib.request

        with urllib.request.urlopen(f"{self.base_url}/redfish/v1/", timeout=1) as r:
            return r.status == 200

    def stop(self) -> None:
        stop(self.proc)
        if self.recorder is not None:
            self.recorder.stop()

    def __enter__(self) -> "SushyEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
