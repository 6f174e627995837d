"""Unit tests: no cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import drills.thresholds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emulators.fake import FakeBackend, make_target  # noqa: E402

PINNED_THRESHOLDS = Path(__file__).resolve().parents[1] / "data" / "pinned-thresholds.toml"


@pytest.fixture
def fixed_defaults(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped defaults replaced by a pinned copy, for tests that judge synthetic figures: the real
    defaults are calibrated from sandbox runs and move when recalibrated (tests/unit/test_thresholds.py
    checks those)."""
    monkeypatch.setattr(drills.thresholds, "DEFAULT_THRESHOLDS_FILE", PINNED_THRESHOLDS)
    return PINNED_THRESHOLDS


@pytest.fixture
def target(tmp_path: Path):
    """The fault tests' fake 3-rack target, its state (ledger) under tmp_path (a module's own `target`
    function or fixture takes precedence)."""
    return make_target(str(tmp_path / "state"))


@pytest.fixture
def fake() -> FakeBackend:
    """A fault backend that records what it was asked to do instead of doing it."""
    return FakeBackend()
