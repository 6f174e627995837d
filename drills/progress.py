"""Live progress of a drill run: what is happening now, read from the run's timeline as it grows.

On a terminal (rich): the current drill, its phase, elapsed time in the drill and in the phase,
live client IOPS and p99, degraded %, PGs not active+clean and the faults armed, redrawn
every second.  Without a terminal (CI, journald): one plain line per phase change and one
every 30 s.  Nothing here can fail a drill: a reading that cannot be taken shows as "-".

    register_progress(config, run_dir)    # from pytest_configure (plugin.py) or `drill run`

The plugin writes to a duplicate of the process's stdout taken at registration, before
pytest's capture redirects fd 1 during a test; so it reaches the terminal while a drill runs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

PLUGIN_NAME = "ceph_drills_progress"
PLAIN_EVERY_S = 30.0
REFRESH_S = 1.0
DISABLE_ENV = "DRILLS_PROGRESS"  # "off": no progress; "plain": plain lines even on a terminal


class TimelineTail:
    """Reads the new lines of events.jsonl and series.jsonl since the last call (files may not exist yet)."""

    def __init__(self, run_dir: Path | Callable[[], Path | None]):
        self._run_dir = run_dir
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, str] = {}

    def run_dir(self) -> Path | None:
        return self._run_dir() if callable(self._run_dir) else self._run_dir

    def read(self, name: str) -> list[dict[str, Any]]:
        d = self.run_dir()
        if d is None:
            return []
        p = d / name
        try:
            with open(p, "rb") as f:
                f.seek(self._offsets.get(name, 0))
                chunk = f.read()
                self._offsets[name] = f.tell()
        except OSError:
            return []
        text = self._partial.pop(name, "") + chunk.decode("utf-8", "replace")
        lines = text.split("\n")
        if lines and lines[-1]:
            self._partial[name] = lines[-1]  # a line still being written: kept for the next read
        out = []
        for line in lines[:-1]:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out


@dataclass
class LiveState:
    """What the progress line shows; None = not known (yet)."""

    drill: str = ""
    drill_started: float | None = None
    phase: str = ""
    phase_started: float | None = None
    expected_s: float | None = None  # the drill's expected duration, when the caller knows it
    iops: float | None = None
    p99_ms: float | None = None
    degraded_ratio: float | None = None
    pgs_not_clean: float | None = None
    faults_armed: dict[str, str] = field(default_factory=dict)  # fault_id (or label) -> label
    last_sample_t: float | None = None
    _second: dict[str, dict[tuple, float | None]] = field(default_factory=dict)
    _second_t: int | None = None
    _pgs: dict[str, float | None] = field(default_factory=dict)

    def apply_event(self, e: dict[str, Any]) -> bool:
        """Fold one event in; True when the phase changed."""
        kind, label, data = e.get("kind"), str(e.get("label", "")), e.get("data") or {}
        if kind == "phase":
            if self.drill and data.get("drill") not in (None, self.drill):
                return False
            self.phase = "" if label == "end" else label
            self.phase_started = float(e.get("t", time.time()))
            return True
        key = str(data.get("fault_id") or label)
        if kind == "fault.inject" and data.get("ok", True):
            self.faults_armed[key] = label
        elif kind in ("fault.heal", "fault.release"):
            self.faults_armed.pop(key, None)
        return False

    def apply_sample(self, s: dict[str, Any]) -> None:
        metric, value, t = s.get("metric"), s.get("value"), float(s.get("t", 0.0))
        labels = tuple(sorted((s.get("labels") or {}).items()))
        self.last_sample_t = t
        if metric in ("fio.write.iops", "fio.write.lat_p99_ms"):
            sec = int(t)
            if self._second_t is not None and sec > self._second_t:
                self._close_second()
            self._second_t = sec
            self._second.setdefault(metric, {})[labels] = value
        elif metric == "cluster.degraded_ratio":
            self.degraded_ratio = value
        elif metric == "cluster.pgs":
            state = dict(labels).get("state", "")
            self._pgs[state] = value
            known = [v for v in self._pgs.values() if v is not None]
            self.pgs_not_clean = None if not known else sum(
                v for st, v in self._pgs.items() if v is not None and st != "active+clean")

    def _close_second(self) -> None:
        # fio clients add up; the slowest client's p99 is what a user sees (as drills/report/analysis.py)
        iops = [v for v in self._second.get("fio.write.iops", {}).values() if v is not None]
        p99 = [v for v in self._second.get("fio.write.lat_p99_ms", {}).values() if v is not None]
        if "fio.write.iops" in self._second:
            self.iops = sum(iops) if iops else None
        if "fio.write.lat_p99_ms" in self._second:
            self.p99_ms = max(p99) if p99 else None
        self._second = {}

    def flush(self) -> None:
        if self._second:
            self._close_second()


def _fmt_elapsed(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def plain_line(state: LiveState, now: float) -> str:
    """One line for logs: 'rack_power_cut degraded 2:31 (phase 0:45) iops 812 p99 41 ms degraded 33.1% ...'."""
    elapsed = None if state.drill_started is None else now - state.drill_started
    phase_elapsed = None if state.phase_started is None else now - state.phase_started
    expected = "" if state.expected_s is None else f" of ~{_fmt_elapsed(state.expected_s)}"
    faults = ", ".join(sorted(state.faults_armed.values())) or "none"
    degraded = None if state.degraded_ratio is None else state.degraded_ratio * 100
    return (f"[drill] {state.drill or '-'} {state.phase or '-'} {_fmt_elapsed(elapsed)}{expected} "
            f"(phase {_fmt_elapsed(phase_elapsed)}) iops {_fmt(state.iops, '.0f')} p99 {_fmt(state.p99_ms, '.0f', ' ms')} "
            f"degraded {_fmt(degraded, '.1f', '%')} pgs-not-clean {_fmt(state.pgs_not_clean, '.0f')} faults {faults}")


class DrillProgress:
    """The pytest plugin object: hooks start and stop the display around each drill test."""

    def __init__(self, run_dir: Path | Callable[[], Path | None], out: IO[str], tty: bool,
                 expected: Callable[[str], float | None] | None = None, clock: Callable[[], float] = time.time):
        self.tail = TimelineTail(run_dir)
        self.out = out
        self.tty = tty
        self.expected = expected
        self.clock = clock
        self.state = LiveState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Any = None
        self._last_plain = 0.0
        self._lock = threading.Lock()

    # -- pytest hooks --
    def pytest_runtest_logstart(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self.start(_drill_name(nodeid))

    def pytest_runtest_setup(self, item: Any) -> None:
        # the module's DRILL name: node ids under `drill run` are relative to the report directory
        name = getattr(getattr(item, "module", None), "DRILL", None)
        if name:
            self.state.drill = name

    def pytest_runtest_logfinish(self, nodeid: str, location: tuple[str, int | None, str]) -> None:
        self.stop()

    def pytest_unconfigure(self, config: Any) -> None:
        self.stop()

    # -- driving --
    def start(self, drill: str) -> None:
        self.stop()
        self.poll()  # skip what earlier drills wrote
        self.state = LiveState(drill=drill, drill_started=self.clock(),
                               expected_s=None if self.expected is None else self.expected(drill))
        self._stop.clear()
        if self.tty:
            try:
                from rich.console import Console
                from rich.live import Live

                console = Console(file=self.out, force_terminal=True)
                self._live = Live(get_renderable=self._renderable, console=console, refresh_per_second=1,
                                  transient=True, redirect_stdout=False, redirect_stderr=False)
                self._live.start()
            except Exception as e:  # noqa: BLE001 - progress must never break a drill
                self._live = None
                self.tty = False
                self._write(f"[drill] live progress off ({type(e).__name__}: {e}); plain lines instead")
        self._thread = threading.Thread(target=self._loop, name="drill-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
            self._thread = None
            if not self.tty:
                self.tick()  # a phase that began since the last refresh still gets its line
        if self._live is not None:
            try:
                self._live.stop()
            except Exception:  # noqa: BLE001
                pass
            self._live = None

    def poll(self) -> list[str]:
        """Read what the timeline gained; a plain line for every phase that began (in order)."""
        lines = []
        with self._lock:
            for e in self.tail.read("events.jsonl"):
                if self.state.apply_event(e):
                    lines.append(plain_line(self.state, max(float(e.get("t", 0.0)), self.state.phase_started or 0.0)))
            for s in self.tail.read("series.jsonl"):
                self.state.apply_sample(s)
            self.state.flush()
        return lines

    def tick(self) -> None:
        """One refresh: read the timeline; without a terminal, print each phase change and every 30 s."""
        try:
            phase_lines = self.poll()
        except Exception as e:  # noqa: BLE001 - a torn file or a race must not stop the display
            phase_lines = []
            self._write(f"[drill] progress could not read the timeline: {type(e).__name__}: {e}")
        if self.tty:
            return
        now = self.clock()
        if phase_lines:
            for line in phase_lines[:-1]:
                self._write(line)
            self._write(plain_line(self.state, now))  # the current phase with the latest figures
            self._last_plain = now
        elif now - self._last_plain >= PLAIN_EVERY_S:
            self._write(plain_line(self.state, now))
            self._last_plain = now

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(REFRESH_S)

    def _write(self, line: str) -> None:
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _renderable(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        s, now = self.state, self.clock()
        degraded = None if s.degraded_ratio is None else s.degraded_ratio * 100
        elapsed = None if s.drill_started is None else now - s.drill_started
        expected = "" if s.expected_s is None else f" of ~{_fmt_elapsed(s.expected_s)}"
        head = Text.assemble((s.drill or "-", "bold"), "  ", (s.phase or "-", "cyan"),
                             f"  {_fmt_elapsed(elapsed)}{expected}",
                             f" (phase {_fmt_elapsed(None if s.phase_started is None else now - s.phase_started)})")
        figures = Text(f"IOPS {_fmt(s.iops, '.0f')}  p99 {_fmt(s.p99_ms, '.0f', ' ms')}  "
                       f"degraded {_fmt(degraded, '.1f', '%')}  PGs not clean {_fmt(s.pgs_not_clean, '.0f')}")
        faults = ", ".join(sorted(s.faults_armed.values()))
        armed = Text.assemble(("faults armed: ", "red"), faults) if faults else Text("no fault armed", "green")
        return Group(head, figures, armed)


def _drill_name(nodeid: str) -> str:
    """'drills/test_rack_power_cut.py::test_rack_power_cut' -> 'rack_power_cut' (the module's name)."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    module = module[:-3] if module.endswith(".py") else module
    return module[5:] if module.startswith("test_") else module


def register_progress(config: Any, run_dir: Path | Callable[[], Path | None] | None = None,
                      expected: Callable[[str], float | None] | None = None) -> DrillProgress | None:
    """Register the progress plugin on a pytest config; None when switched off (DRILLS_PROGRESS=off).

    run_dir: the run directory, or a callable returning it once known (e.g. from the plugin's stash);
    None: <--report-dir>/<--run-id> from the options.
    """
    mode = os.environ.get(DISABLE_ENV, "").lower()
    if mode == "off" or config.pluginmanager.has_plugin(PLUGIN_NAME):
        return None
    if run_dir is None:
        base, run_id = config.getoption("--report-dir", None), config.getoption("--run-id", None)
        run_dir = Path(base) / run_id if base and run_id else None
        if run_dir is None:
            return None
    try:
        fd = os.dup(sys.stdout.fileno())  # the real stdout, before a test's capture redirects fd 1
        out = os.fdopen(fd, "w", buffering=1)
    except (OSError, ValueError, AttributeError):
        out = sys.__stdout__
    tty = out.isatty() and mode != "plain"
    plugin = DrillProgress(run_dir, out, tty, expected)
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    return plugin
