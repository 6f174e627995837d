"""`drill run`: a suite of drill modules run through pytest, with exit codes for schedulers.

Exit codes: 0 all passed, 1 a threshold or check failed, 2 harness or set-up error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from drills.admission import Refused, admit, plan_drills
from drills.report.summary import write_refused
from drills.faults.errors import FaultError
from drills.target import Target, TargetError, load_target
from drills.invariants import INVARIANT_NAMES
from drills.thresholds import SHIPPED_DEFAULTS, ThresholdsError, load_thresholds

# Suites, in run order, come from the drill catalogue (drills/catalogue.py).
from drills.catalogue import GRAY, RESTORE, RUNBOOK_DRILLS, SUITES  # noqa: E402

BY_MODULE = {d.module: d for d in RUNBOOK_DRILLS}

# Phase lengths (drills/scenario.py Pace) and drill sizes per suite: smoke keeps a run to minutes;
# nightly and full run the restore drill at the bug's size (41 restores).
SUITE_PACE = {"smoke": "smoke", "nightly": "nightly", "full": "full", "soak": "smoke"}
# Per-drill safety net against a hang (pytest-timeout), whatever the caller's working directory: a drill
# at nightly/full pace runs well past the 900 s a smoke-sized one needs.
SUITE_TIMEOUT_S = {"smoke": 900, "nightly": 3600, "full": 5400, "soak": 3600}  # `drill soak` sets its own
SUITE_ENV: dict[str, dict[str, str]] = {
    "smoke": {"DRILL_RESTORE_COUNT": "4", "DRILL_RESTORE_VOLUME_MIB": "16", "DRILL_RESTORE_CHUNK_MIB": "4", "DRILL_RESTORE_RAW_SECONDS": "5"},
    "nightly": {},
    "full": {"DRILL_RESTORE_FAULT": "rack_power_cut:rack1", "DRILL_SOAK_DURATION": "20min"},
    "soak": {},
}


class RunError(Exception):
    pass


def check_report_dir(report_dir: str) -> Path:
    p = Path(report_dir)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"report directory {p} cannot be created: {e.strerror}; pass a writable --report-dir") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise RunError(f"report directory {p} is not writable; pass a writable --report-dir")
    return p


def print_plan(t: Target, suite: str, modules: list[str], thresholds: str | None, out: Path) -> None:
    """What a run would do, from the drill modules themselves; nothing is touched."""
    import importlib

    from drills.scenario import Pace

    limits = load_thresholds(thresholds)
    pace = Pace.named(SUITE_PACE[suite])
    print(f"plan: suite {suite!r} on {t.cluster.name} ({t.path}), destructive={t.destructive}, thresholds {limits.path}")
    for name in modules:
        mod = importlib.import_module(name)
        drill = getattr(mod, "DRILL", name)
        print(f"- {drill} ({name})")
        spec = BY_MODULE.get(name)
        if spec is not None:
            print(f"    {spec.what} Aimed at {spec.aim}.")
        make_fault = getattr(mod, "make_fault", None)
        if name == RESTORE:
            env = {**SUITE_ENV[suite], **{k: v for k, v in os.environ.items() if k.startswith("DRILL_RESTORE_")}}
            print(f"    restores: {env.get('DRILL_RESTORE_COUNT', '41')} x {env.get('DRILL_RESTORE_VOLUME_MIB', '128')} MiB volumes, "
                  f"{env.get('DRILL_RESTORE_CHUNK_MIB', '64')} MiB zlib chunks, budget {env.get('DRILL_RESTORE_BUDGET', '256MiB')}; "
                  f"fault: {env.get('DRILL_RESTORE_FAULT') or 'none'}")
        elif make_fault is None and hasattr(mod, "planned_faults"):  # faults of its own (the soak): its notes say which
            for line in mod.plan_notes(t):
                print(f"    {line}")
        elif make_fault is None:
            print("    fault: none (non-destructive)")
            print("    workloads: fio rbd 4k randwrite + verifying writer (RADOS)")
        else:
            fault = make_fault(t)
            o = fault.takes_down()
            print(f"    fault: {fault.label} ({fault.description}); takes down hosts {sorted(o.hosts) or '-'}, "
                  f"OSDs {sorted(o.osds()) or '-'}")
            if spec is not None and spec.runbook == GRAY:
                from drills.gray_runbook import REPORT_ALLOWANCE_S, hold_seconds

                print(f"    phases (gray runbook): warm-up {pace.warmup:.0f} s, baseline {pace.baseline:.0f} s, degraded: the fault "
                      f"held {hold_seconds(pace.gray_hold, None):.0f} s (pace {pace.gray_hold:.0f} s, at least "
                      f"osd_op_complaint_time + {REPORT_ALLOWANCE_S:.0f} s), recovery (until active+clean), after {pace.after:.0f} s")
                print("    records: inject -> first SLOW_OPS, OSD mark-downs and mark-ups, client p99 and IOPS per phase")
                print("    workloads: fio rbd 4k randwrite iodepth 16 + verifying writer (RADOS, 20 writes/s)")
            elif not getattr(mod, "OWN_RUNBOOK", False):  # a drill with its own runbook says it in plan_notes
                print(f"    phases: warm-up {pace.warmup:.0f} s, baseline {pace.baseline:.0f} s, detection, degraded {pace.degraded:.0f} s, "
                      f"recovery (until active+clean), after {pace.after:.0f} s")
                print("    workloads: fio rbd 4k randwrite iodepth 16 + verifying writer (RADOS, 20 writes/s)")
            # A drill whose phases differ from the plain runbook says how (e.g. a controlled restart).
            for line in getattr(mod, "plan_notes", lambda _t: [])(t):
                print(f"    {line}")
        for th in limits.for_drill(drill):
            extra = "" if th.severity == "fail" else f"  ({th.severity})"
            if th.source != SHIPPED_DEFAULTS:
                extra += f"  [from {th.source}]"
            print(f"    limit {th.phase:9s} {th.key} = {th.written}{extra}")
        allowed = limits.health_allowed(drill)
        print(f"    cluster log: health checks allowed {', '.join(sorted(allowed)) or 'none'}; any other, or any [ERR] line, fails")
        print(f"    invariants (no thresholds file drops them): {', '.join(INVARIANT_NAMES)}")
    print(f"reports under {out}/<run-id>/; nothing was touched")


def admit_suite(t: Target, modules: list[str], skip_destructive: bool) -> dict[str, str]:
    """The admission the pytest plugin also does (drills/admission.py), before pytest starts."""
    import importlib

    from drills.cluster import CephCluster, ClusterError

    plan = plan_drills([importlib.import_module(m) for m in modules], t)
    try:
        cluster = CephCluster(t).connect()
    except ClusterError as e:
        raise Refused(str(e)) from None
    try:
        return admit(t, cluster, plan, skip_destructive)
    finally:
        cluster.close()


def rerun_failed(run_dir: str, report_dir: str, dry_run: bool, extra: list[str], skip_destructive: bool = False) -> int:
    """`drill run --rerun-failed RUN_DIR`: the failed drills of a run again, with its resolved configuration."""
    from drills.runconfig import RunConfigError, rerun_plan

    try:
        plan = rerun_plan(run_dir)
    except RunConfigError as e:
        print(f"drill: error: {e}", file=sys.stderr)
        return 2
    print(plan.summary())
    os.environ.update(plan.env)  # the same DRILL_* knobs; run_suite's setdefault leaves them in force
    return run_suite(plan.target_path, plan.suite, plan.thresholds_path, report_dir, dry_run,
                     ["-k", plan.pytest_k, *extra], skip_destructive, modules=plan.modules)


def run_suite(target: str, suite: str, thresholds: str | None, report_dir: str, dry_run: bool, extra: list[str],
              skip_destructive: bool = False, modules: list[str] | None = None, timeout_s: int | None = None) -> int:
    import pytest

    if suite not in SUITES:
        print(f"drill: error: unknown suite {suite!r}; choose one of {', '.join(SUITES)}", file=sys.stderr)
        return 2
    try:
        t = load_target(target)
        load_thresholds(thresholds)  # unknown keys or units: exit 2 before anything is touched
        out = check_report_dir(report_dir)
    except (TargetError, RunError, ThresholdsError) as e:
        print(f"drill: error: {e}", file=sys.stderr)
        return 2
    modules = modules or SUITES[suite]
    if dry_run:
        try:
            print_plan(t, suite, modules, thresholds, out)
        except (ThresholdsError, TargetError, FaultError, Refused) as e:
            print(f"drill: error: {e}", file=sys.stderr)
            return 2
        return 0
    from drills.runconfig import new_run_id

    run_id = new_run_id()
    try:
        admit_suite(t, modules, skip_destructive)
    except Refused as e:
        # one line, exit 2, nothing run; the run directory records the refusal for the nightly record
        write_refused(out / run_id, str(e))
        print(f"drill: error: refused: {e}", file=sys.stderr)
        return 2
    args = [
        "-p", "no:cacheprovider",
        "--rootdir", str(out.resolve()),
        "--pyargs", *modules,
        f"--target={t.path}",
        f"--report-dir={out}",
        f"--run-id={run_id}",
        f"--junitxml={out / run_id / 'junit.xml'}",
        "-o", "console_output_style=classic",
        "-o", f"timeout={timeout_s or SUITE_TIMEOUT_S[suite]}",
        *([f"--thresholds={thresholds}"] if thresholds else []),
        *(["--skip-destructive"] if skip_destructive else []),
        *extra,
    ]
    os.environ.setdefault("DRILL_PACE", SUITE_PACE[suite])
    os.environ["DRILL_SUITE"] = suite  # recorded in run.json: history and calibration group runs by suite
    for k, v in SUITE_ENV[suite].items():
        os.environ.setdefault(k, v)  # the caller's environment wins
    return run_exit_code(int(pytest.main(args)), out / run_id)


def run_exit_code(pytest_rc: int, run_dir: Path) -> int:
    """`drill run`'s exit status: the verdict the report, summary.json and .prom show (drills/verdict.py),
    whatever pytest's own code (an error verdict, 2, is not pytest's "interrupted", also 2; an interrupted
    run's verdict carries 130, or 128 + the signal that stopped it); pytest's only where no verdict was
    reached (a usage error, Ctrl-C before the first drill)."""
    if (run_dir / "summary.json").exists():
        from drills.verdict import run_verdict

        return run_verdict(run_dir).exit_code
    if pytest_rc == 2:  # interrupted (Ctrl-C) before any verdict: faults were healed by the fault session on the way out
        return 130
    return 2 if pytest_rc != 0 else 0


# --- drill run ---------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction, default_target: str) -> None:
    run = sub.add_parser("run", help="run a drill suite against a target and write the report")
    run.add_argument("--target", default=default_target)
    run.add_argument("--suite", default="smoke", help="smoke | nightly | full | soak (default smoke)")
    run.add_argument("--thresholds", default=None, help="thresholds TOML (default: the shipped one)")
    run.add_argument("--report-dir", default="reports")
    run.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")
    run.add_argument("--rerun-failed", metavar="RUN_DIR", default=None,
                     help="repeat the failed drills of that run with its resolved configuration (config.json)")
    run.add_argument("--skip-destructive", action="store_true",
                     help="on a target without destructive = true, skip the drills that inject faults (each shown as skipped, with why) instead of refusing the run")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments after --")
    run.set_defaults(func=cmd_run)


def cmd_run(a: argparse.Namespace) -> int:
    if a.rerun_failed:
        return rerun_failed(a.rerun_failed, a.report_dir, a.dry_run, a.pytest_args, a.skip_destructive)
    return run_suite(
        target=a.target,
        suite=a.suite,
        thresholds=a.thresholds,
        report_dir=a.report_dir,
        dry_run=a.dry_run,
        extra=a.pytest_args,
        skip_destructive=a.skip_destructive,
    )
