"""A run's resolved configuration, stored in its directory, and `drill run --rerun-failed RUN_DIR`.

Like teuthology's stored config and `--rerun`: what a run was held to is kept beside its results, so
that a failed drill can be repeated under exactly the same limits and knobs.

    config.json               thresholds after layering (every limit with its severity and source), the
                              health allow-lists, DRILL_* environment knobs, the pace (resolved, with
                              DRILL_PACE_OVERRIDES applied), suite, Ceph and harness versions, seed
    resolved-thresholds.toml  a thresholds file that `drills.thresholds.load_thresholds` loads to exactly the
                              same limits and severities (and the file's [regression] rules, copied)

`write_resolved_config` writes both (the plugin calls it once the run directory exists); `rerun_plan`
reads a run directory and says what `drill run --rerun-failed` repeats: the failed and errored drills and
failed tests only, with the resolved thresholds and the same DRILL_* knobs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from drills.thresholds import DURATION, SIZE, SPECS, Thresholds, ThresholdsError, load_thresholds


def new_run_id() -> str:
    """A run directory's name: the UTC time the run started, to the second."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")

CONFIG_FILE = "config.json"
RESOLVED_THRESHOLDS_FILE = "resolved-thresholds.toml"
CONFIG_SCHEMA_VERSION = 1
ENV_PREFIX = "DRILL_"
# Never stored, whatever the prefix: a knob that could hold a credential.
_SECRET = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|_KEY$|KEYRING|URL", re.IGNORECASE)


class RunConfigError(Exception):
    """A run directory that cannot be rerun, or a configuration that cannot be stored; one line saying what to do."""


# --- writing -----------------------------------------------------------------------------------


def drill_env(env: Mapping[str, str]) -> dict[str, str]:
    """The DRILL_* knobs of an environment (sorted), without anything that may hold a credential."""
    return {k: str(v) for k, v in sorted(env.items()) if k.startswith(ENV_PREFIX) and not _SECRET.search(k)}


def _pace_dict(pace: Any, env: Mapping[str, str]) -> dict[str, Any]:
    """A Pace (drills/scenario.py) or a pace name -> {"name", field: seconds, ...}."""
    if isinstance(pace, str):
        from drills.scenario import Pace

        try:
            resolved = Pace.named(pace)
        except ValueError as e:
            raise RunConfigError(str(e)) from None
        return {"name": pace, **dataclasses.asdict(resolved)}
    if dataclasses.is_dataclass(pace) and not isinstance(pace, type):
        name = env.get("DRILL_PACE", "smoke")
        if env.get("DRILL_PACE_OVERRIDES", "").strip():
            name += f" + {env['DRILL_PACE_OVERRIDES'].strip()}"
        return {"name": name, **dataclasses.asdict(pace)}
    if isinstance(pace, Mapping):
        return dict(pace)
    raise RunConfigError(f"pace: expected a drills.scenario.Pace or a pace name, got {type(pace).__name__}")


def _toml_value(value: Any) -> str:
    """One TOML value as text (tomli_w formats it, so strings are quoted and floats round-trip)."""
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _limit_value(key: str, limit: float, written: str) -> Any:
    """What to write for one limit: durations and sizes as written ("45s"); ratios and counts as numbers."""
    unit = SPECS[key].unit
    if unit in (DURATION, SIZE):
        return written
    if float(limit).is_integer() and (unit == "count" or re.fullmatch(r"\d+", written.strip())):
        return int(limit)
    return float(limit)


def resolved_thresholds_toml(thresholds: Thresholds) -> str:
    """A thresholds file that loads (over the shipped defaults) to the same limits and severities.

    Every limit is written as a table with its severity, so none depends on what the defaults say then;
    a comment names where each came from.  The [regression] rules of the user's file are copied as they were.
    """
    lines = [
        "# Resolved thresholds of one run (drills/runconfig.py): every limit the run was held to, after the",
        "# shipped defaults and the --thresholds file were layered. `drill run --rerun-failed` passes this file",
        "# as --thresholds, so a rerun is judged by exactly the same limits and severities.",
        f"# thresholds: {thresholds.path}",
        "schema_version = 1",
    ]
    by_table: dict[tuple[str, str], list[Any]] = {}
    for t in thresholds.entries:
        by_table.setdefault((t.drill, t.phase), []).append(t)
    for (drill, phase), entries in by_table.items():
        lines.append("")
        lines.append(f"[{drill}.{phase}]")
        for t in entries:
            value = _toml_value(_limit_value(t.key, t.limit, t.written))
            lines.append(f"{t.key} = {{ limit = {value}, severity = {_toml_value(t.severity)} }}  # from {t.source}")
    for drill, codes in sorted(thresholds.allowed_health.items()):
        lines.append("")
        lines.append(f"[{drill}.health]")
        lines.append(f"allow = {_toml_value(sorted(codes))}")
    regression = _user_regression_tables(thresholds.path)
    if regression:
        lines.append("")
        lines.append(f"# [regression] rules copied from {thresholds.path} (the shipped defaults' rules load anyway)")
        lines.append(tomli_w.dumps({"regression": regression}).rstrip())
    return "\n".join(lines) + "\n"


def _user_regression_tables(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():  # "shipped defaults": their [regression] rules are loaded anyway
        return {}
    try:
        return dict(tomllib.loads(p.read_text()).get("regression", {}))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _same_limits(a: Thresholds, b: Thresholds) -> list[str]:
    """What differs between two sets of limits (value or severity), or the allow-lists; empty when the same."""
    ka = {(t.drill, t.phase, t.key): (t.limit, t.severity) for t in a.entries}
    kb = {(t.drill, t.phase, t.key): (t.limit, t.severity) for t in b.entries}
    diffs = [f"{'.'.join(k)}: {ka.get(k)} vs {kb.get(k)}" for k in sorted(set(ka) | set(kb)) if ka.get(k) != kb.get(k)]
    ha = {d: set(c) for d, c in a.allowed_health.items() if c}
    hb = {d: set(c) for d, c in b.allowed_health.items() if c}
    if ha != hb:
        diffs.append(f"health allow-lists: {ha} vs {hb}")
    return diffs


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_resolved_config(run_dir: str | Path, thresholds: Thresholds, suite: str, pace: Any,
                          env: Mapping[str, str], versions: Mapping[str, Any], seed: int | str | None = None) -> Path:
    """Write <run_dir>/config.json and <run_dir>/resolved-thresholds.toml; return config.json's path.

    `pace`: the drills.scenario.Pace the run uses (current_pace(), overrides applied) or a pace name;
    `env`: the run's environment (only DRILL_* knobs are kept, nothing that may hold a credential);
    `versions`: e.g. {"ceph": "16.2.15 pacific", "harness": "0.1.0", "ceph_versions": {...}}.
    The thresholds file is checked to load back to the same limits before anything is written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    toml_text = resolved_thresholds_toml(thresholds)
    toml_path = run_dir / RESOLVED_THRESHOLDS_FILE
    _atomic_write(toml_path, toml_text)
    try:
        back = load_thresholds(toml_path)
    except ThresholdsError as e:  # a bug here, not the user's: say it in one line
        toml_path.unlink(missing_ok=True)
        raise RunConfigError(f"resolved thresholds do not load back: {e}") from None
    diffs = _same_limits(thresholds, back)
    if diffs:
        toml_path.unlink(missing_ok=True)
        raise RunConfigError(f"resolved thresholds differ when loaded back: {'; '.join(diffs[:3])}")
    knobs = drill_env(env)
    config = {
        "schema_version": CONFIG_SCHEMA_VERSION,
        "run_id": run_dir.name,
        "written": time.time(),
        "suite": suite,
        "pace": _pace_dict(pace, env),
        "seed": seed,
        "versions": dict(versions),
        "env": knobs,
        "thresholds": {
            "path": thresholds.path,
            "resolved_file": RESOLVED_THRESHOLDS_FILE,
            "limits": [{"drill": t.drill, "phase": t.phase, "key": t.key, "limit": t.limit, "written": t.written,
                        "severity": t.severity, "source": t.source} for t in thresholds.entries],
            "health_allow": {d: sorted(c) for d, c in sorted(thresholds.allowed_health.items())},
        },
    }
    path = run_dir / CONFIG_FILE
    _atomic_write(path, json.dumps(config, indent=2, default=str) + "\n")
    return path


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """config.json of a run, or None when the run has none (runs before it was written); a broken one raises."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunConfigError(f"{path}: not readable JSON ({e}); the run's configuration is lost, rerun it by hand") from None
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: expected a JSON object")
    return data


# --- rerunning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RerunPlan:
    """What `drill run --rerun-failed RUN_DIR` repeats."""

    target_path: str
    suite: str
    modules: list[str]  # drill modules to pass to pytest (--pyargs), in the order the run had them
    thresholds_path: str  # the run's resolved-thresholds.toml
    env: dict[str, str]  # DRILL_* knobs to set (over the suite's defaults) before pytest starts
    pytest_k: str  # a -k expression selecting the failed tests of those modules
    drills: tuple[str, ...] = ()  # the failed/errored drills, for the message
    run_dir: str = ""

    def summary(self) -> str:
        what = ", ".join(self.drills) or ", ".join(self.modules)
        return f"rerun of {self.run_dir}: {what} (-k {self.pytest_k!r}) with {self.thresholds_path}"


def _module_of_nodeid(nodeid: str) -> tuple[str, str] | None:
    """'…/drills/test_smoke.py::test_x[a]' -> ('drills.test_smoke', 'test_x'), for drill modules only."""
    path, _, rest = nodeid.partition("::")
    stem = Path(path).stem
    if not stem.startswith("test_") or not rest:
        return None
    module = f"drills.{stem}"
    if not (Path(__file__).parent / f"{stem}.py").exists():
        return None
    function = rest.split("::")[-1].split("[", 1)[0]
    return module, function


def rerun_plan(run_dir: str | Path) -> RerunPlan:
    """The failed and errored drills (and failed tests) of a run, with its resolved configuration."""
    from drills.report.results import ResultsError, read_drill_results
    from drills.timeline import read_meta
    from drills.verdict import REFUSED_FILE, read_test_outcomes

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunConfigError(f"{run_dir}: no such directory; pass a run directory, e.g. reports/<run-id>")
    markers = ("run.json", "summary.json", "drills", "tests.json", CONFIG_FILE)
    if not any((run_dir / m).exists() for m in markers):
        raise RunConfigError(f"{run_dir}: not a run directory (none of {', '.join(markers)}); "
                             "pass a directory drill run wrote, e.g. reports/<run-id>")
    refused = run_dir / REFUSED_FILE
    if refused.exists():
        raise RunConfigError(f"nothing to rerun: run {run_dir.name} was refused before any drill ran "
                             f"({refused.read_text().strip()}); fix that and start a new run with drill run")
    try:
        results = read_drill_results(run_dir)
        tests = read_test_outcomes(run_dir)
    except ResultsError as e:
        raise RunConfigError(f"{run_dir}: results unreadable ({e}); rerun the suite with drill run") from None
    meta = read_meta(run_dir)

    failed_drills = [r.drill for r in results if r.verdict in ("failed", "error")]
    modules: dict[str, set[str] | None] = {}  # module -> test functions (None: the whole module)
    for d in failed_drills:
        modules.setdefault(f"drills.test_{d}", set())
    for t in tests:
        if t.outcome not in ("failed", "error"):
            continue
        where = _module_of_nodeid(t.nodeid)
        if where is None:
            continue
        functions = modules.setdefault(where[0], set())
        if functions is not None:
            functions.add(where[1])
    for d in failed_drills:  # a failed drill whose test pytest did not record as failed: its whole module
        if not modules.get(f"drills.test_{d}"):
            modules[f"drills.test_{d}"] = None
    if not modules:
        judged = len(results) + len(tests)
        if not judged:
            raise RunConfigError(f"nothing to rerun: run {run_dir.name} left no drill result and no test outcome "
                                 "(it did not get as far as a drill); start a new run with drill run")
        raise RunConfigError("nothing to rerun: every drill passed"
                             + (f" (or was skipped) in run {run_dir.name}" if any(r.verdict == "skipped" for r in results) else
                                f" in run {run_dir.name}"))

    config = read_config(run_dir)
    target = meta.get("target") if isinstance(meta.get("target"), dict) else {}
    target_path = str(target.get("path") or "")
    if config is None:
        hint = f"drill run --target {target_path or 'FILE'} --suite {meta.get('suite') or 'SUITE'}"
        if meta.get("thresholds") and meta.get("thresholds") != "shipped defaults":
            hint += f" --thresholds {meta['thresholds']}"
        raise RunConfigError(f"{run_dir}: no {CONFIG_FILE}: this run is older than stored configurations, so its "
                             f"resolved thresholds and DRILL_* settings are unknown; rerun by hand: {hint}")
    thresholds_path = run_dir / RESOLVED_THRESHOLDS_FILE
    if not thresholds_path.exists():
        raise RunConfigError(f"{run_dir}: {CONFIG_FILE} is there but {RESOLVED_THRESHOLDS_FILE} is missing; "
                             "the run's limits cannot be reproduced, rerun by hand with drill run")
    try:
        load_thresholds(thresholds_path)
    except ThresholdsError as e:
        raise RunConfigError(f"{RESOLVED_THRESHOLDS_FILE} no longer loads ({e}); rerun by hand with drill run") from None
    if not target_path:
        raise RunConfigError(f"{run_dir}/run.json does not name the target file (target.path); "
                             "rerun by hand: drill run --target FILE")
    suite = str(config.get("suite") or meta.get("suite") or "")
    if not suite:
        raise RunConfigError(f"{run_dir}: the run's suite is not recorded; rerun by hand: drill run --suite SUITE")
    env = {str(k): str(v) for k, v in (config.get("env") or {}).items()}

    from drills.catalogue import SUITES

    order = SUITES.get(suite, [])
    ordered = sorted(modules, key=lambda m: (order.index(m) if m in order else len(order), m))
    names: list[str] = []
    for m in ordered:
        functions = modules[m]
        names.extend(sorted(functions) if functions else [m.rsplit(".", 1)[1]])
    return RerunPlan(target_path=target_path, suite=suite, modules=ordered, thresholds_path=str(thresholds_path),
                     env=env, pytest_k=" or ".join(dict.fromkeys(names)), drills=tuple(failed_drills),
                     run_dir=str(run_dir))
