"""Every drill of every suite is exercised in CI at least as a dry run: its plan is printed, nothing touched."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from drills.runner import SUITES
from drills.thresholds import DRILLS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "staging-target.toml"


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_dry_run_plans_every_drill_of_the_suite(suite: str, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "drills.cli", "run", "--target", str(EXAMPLE), "--suite", suite,
                        "--report-dir", str(tmp_path), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for module in SUITES[suite]:
        drill = importlib.import_module(module).DRILL
        assert f"- {drill} ({module})" in p.stdout
    # each drill's plan names its invariants and its cluster-log allow-list
    assert p.stdout.count("invariants (no thresholds file drops them)") == len(SUITES[suite])
    assert p.stdout.count("cluster log: health checks allowed") == len(SUITES[suite])
    assert "nothing was touched" in p.stdout
    assert list(tmp_path.iterdir()) == []  # no run directory for a plan


def test_every_suite_drill_has_a_thresholds_section() -> None:
    for modules in SUITES.values():
        for module in modules:
            assert importlib.import_module(module).DRILL in DRILLS
