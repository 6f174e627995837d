"""The run's verdict: one function decides it, and every output reads it from there.

Each drill leaves a result (drills/report/results.py) whatever happens: ``passed``,
``failed`` (a check or a stop condition), ``error`` (the harness itself broke) or
``skipped`` (with the reason).  pytest's own outcomes are recorded beside them
(``tests.json``): a test that failed without a drill result still counts.  `decide`
turns both into one `RunVerdict`; the exit code of `drill run` and of a pytest session
with the plugin, the HTML page, ``summary.json``, the JUnit file and the .prom file all
come from it, so they never disagree.

Exit codes: 0 passed; 1 a check or a stop condition failed; 2 set-up or harness error, a
refusal, or nothing judged; 130 interrupted (Ctrl-C; faults healed on the way out).  A harness error outranks a failed check (the run is
incomplete: a drill that never got judged may have failed too); the summary names both.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from drills.report.results import DrillResult, ResultsError, read_drill_results

TESTS_FILE = "tests.json"
REFUSED_FILE = "refused.txt"
INTERRUPTED_FILE = "interrupted.txt"

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class TestOutcome:
    """What pytest said of one test item, and what kind of outcome it was.

    kind: "check" (an assertion of the test failed: a finding about the cluster),
    "stop" (a stop condition aborted the drill), "harness" (any other exception: the
    harness broke), "refused" (a guard refused the fault), "skip", "pass".
    """

    __test__ = False  # a dataclass, not a pytest test class

    nodeid: str
    drill: str | None  # the module's DRILL, or None for tests outside drill modules
    outcome: str  # passed | failed | error | skipped
    kind: str
    message: str = ""  # one line for people (the skip reason, the finding, the exception)
    wrote_result: bool = False


@dataclass(frozen=True)
class DrillVerdict:
    drill: str
    outcome: str  # passed | failed | error | skipped
    summary: str  # one line: what decided it
    warnings: int = 0


@dataclass(frozen=True)
class RunVerdict:
    outcome: str  # passed | failed | error | refused | skipped (nothing judged)
    exit_code: int
    drills: tuple[DrillVerdict, ...] = ()
    reasons: tuple[str, ...] = ()  # one line per failed/errored drill or test
    warnings: int = 0

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "exit_code": self.exit_code, "warnings": self.warnings,
                "reasons": list(self.reasons), "drills": [asdict(d) for d in self.drills]}


def drill_verdict(r: DrillResult) -> DrillVerdict:
    warns = sum(1 for c in r.checks if c.warned)
    v = r.verdict
    if v == "error":
        return DrillVerdict(r.drill, v, f"harness error: {r.error}", warns)
    if v == "skipped":
        return DrillVerdict(r.drill, v, f"skipped: {r.error or 'no reason given'}", warns)
    failed = [c for c in r.checks if c.fails_drill]
    if v == "failed":
        parts = []
        if r.stop_condition:
            parts.append(f"stopped: {r.stop_condition}")
        if failed:
            parts.append(f"{len(failed)} of {len(r.checks)} checks failed: " + "; ".join(c.message() for c in failed[:5])
                         + (f"; and {len(failed) - 5} more" if len(failed) > 5 else ""))
        return DrillVerdict(r.drill, v, " — ".join(parts) or "failed", warns)
    return DrillVerdict(r.drill, v, f"{len(r.checks)} checks passed" + (f", {warns} warning(s)" if warns else ""), warns)


def decide(results: Iterable[DrillResult], tests: Iterable[TestOutcome] = (), refused: str = "",
           results_error: str = "", interrupted: str = "") -> RunVerdict:
    """The run's verdict from its drill results and pytest's outcomes (see the module doc)."""
    if refused:
        return RunVerdict("refused", EXIT_ERROR, reasons=(f"refused: {refused}",))
    drills = [drill_verdict(r) for r in results]
    if interrupted:  # Ctrl-C or a signal: what ran is shown, but the run is not judged whole
        # stopped by SIGTERM/SIGHUP: 128 + the signal, as the process exits; Ctrl-C: 130
        m = re.search(r"stopped by (SIGTERM|SIGHUP)", interrupted)
        code = 128 + signal.Signals[m.group(1)] if m else EXIT_INTERRUPTED
        return RunVerdict("interrupted", code, tuple(drills), (f"interrupted: {interrupted}",),
                          sum(d.warnings for d in drills))
    reasons = [f"{d.drill}: {d.summary}" for d in drills if d.outcome in ("failed", "error")]
    judged = {d.drill for d in drills}
    outcomes = [d.outcome for d in drills]
    for t in tests:
        if t.wrote_result and t.drill in judged:
            continue  # its drill result speaks for it
        if t.outcome in ("failed", "error"):
            # a failure in set-up or teardown (a failed preflight, a cluster that did not answer) is a set-up
            # error; in the test itself an assertion or a stop condition is a finding, anything else the harness
            outcome = "failed" if t.outcome == "failed" and t.kind in ("check", "stop") else "error"
            outcomes.append(outcome)
            reasons.append(f"{t.nodeid}: {'failed' if outcome == 'failed' else 'harness error'}: {t.message}")
        elif t.outcome == "passed":
            outcomes.append("passed")
        elif t.outcome == "skipped":
            outcomes.append("skipped")
    if results_error:
        outcomes.append("error")
        reasons.append(f"results unreadable: {results_error}")
    warnings = sum(d.warnings for d in drills)
    if "error" in outcomes:
        return RunVerdict("error", EXIT_ERROR, tuple(drills), tuple(reasons), warnings)
    if "failed" in outcomes:
        return RunVerdict("failed", EXIT_FAILED, tuple(drills), tuple(reasons), warnings)
    if "passed" in outcomes:
        return RunVerdict("passed", EXIT_PASSED, tuple(drills), tuple(reasons), warnings)
    if outcomes:  # every drill skipped: nothing was judged, which is not a pass
        return RunVerdict("skipped", EXIT_ERROR, tuple(drills), ("nothing judged: every drill was skipped",), warnings)
    return RunVerdict("error", EXIT_ERROR, tuple(drills), ("nothing judged: no drill left a result",), warnings)


def write_test_outcomes(run_dir: str | Path, tests: Iterable[TestOutcome]) -> Path:
    path = Path(run_dir) / TESTS_FILE
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps([asdict(t) for t in tests], indent=2))
    os.replace(tmp, path)
    return path


def read_test_outcomes(run_dir: str | Path) -> list[TestOutcome]:
    path = Path(run_dir) / TESTS_FILE
    if not path.exists():
        return []
    try:
        return [TestOutcome(**d) for d in json.loads(path.read_text())]
    except (json.JSONDecodeError, TypeError) as e:
        raise ResultsError(f"{path}: malformed test outcomes ({e})") from None


def run_verdict(run_dir: str | Path) -> RunVerdict:
    """The verdict of a run directory, read from what its drills and tests left there."""
    run_dir = Path(run_dir)
    refused_file, interrupted_file = run_dir / REFUSED_FILE, run_dir / INTERRUPTED_FILE
    refused = refused_file.read_text().strip() if refused_file.exists() else ""
    interrupted = interrupted_file.read_text().strip() if interrupted_file.exists() else ""
    try:
        results, error = read_drill_results(run_dir), ""
        tests = read_test_outcomes(run_dir)
    except ResultsError as e:
        results, tests, error = [], [], str(e)
    return decide(results, tests, refused, error, interrupted)


@dataclass
class OutcomeLog:
    """Collects pytest's outcomes during a session (one instance per session, held by the plugin)."""

    tests: dict[str, TestOutcome] = field(default_factory=dict)

    def add(self, t: TestOutcome) -> None:
        prev = self.tests.get(t.nodeid)
        # setup, call and teardown each report: keep the worst (a teardown error after a pass is an error)
        if prev is None or _rank(t) > _rank(prev):
            self.tests[t.nodeid] = t

    def all(self) -> list[TestOutcome]:
        return list(self.tests.values())


def _rank(t: TestOutcome) -> int:
    return {"passed": 0, "skipped": 1, "failed": 2, "error": 3}.get(t.outcome, 0)
