"""Unit tests: no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

import drills.thresholds

PINNED_THRESHOLDS = Path(__file__).resolve().parents[1] / "data" / "pinned-thresholds.toml"


@pytest.fixture
def fixed_defaults(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped defaults replaced by a pinned copy, for tests that judge synthetic figures: the real
    defaults are calibrated from sandbox runs and move when recalibrated (tests/unit/test_thresholds.py
    checks those)."""
    monkeypatch.setattr(drills.thresholds, "DEFAULT_THRESHOLDS_FILE", PINNED_THRESHOLDS)
    return PINNED_THRESHOLDS
