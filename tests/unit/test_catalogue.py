"""The drill catalogue is the one place a runbook drill is named: suites, modules, thresholds and plan agree."""

from __future__ import annotations

import importlib

from drills.catalogue import BY_NAME, RUNBOOK_DRILLS, SUITES
from drills.thresholds import load_thresholds


def test_every_runbook_drill_has_its_module_test_suites_and_limits() -> None:
    limits = load_thresholds(None)
    in_suites = {m for modules in SUITES.values() for m in modules}
    for spec in RUNBOOK_DRILLS:
        mod = importlib.import_module(spec.module)
        assert mod.DRILL == spec.name and mod.make_fault is spec.make_fault
        assert getattr(mod, f"test_{spec.name}").__name__ == f"test_{spec.name}"  # node ids as before
        assert spec.module in in_suites and all(spec.module in SUITES[s] for s in spec.suites)
        assert limits.for_drill(spec.name), f"no [{spec.name}.*] section in the shipped thresholds"
    assert all(len(ms) == len(set(ms)) for ms in SUITES.values())


def test_a_drill_aims_where_its_catalogue_entry_says(monkeypatch, tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from emulators.fake import make_target

    t = make_target(tmp_path)
    cut = BY_NAME["rack_power_cut"].make_fault(t)
    assert cut.takes_down().hosts == {h.name for h in t.racks[1].hosts}
    monkeypatch.setenv("DRILL_RACK", t.racks[0].name)
    assert BY_NAME["rack_power_cut"].make_fault(t).takes_down().hosts == {h.name for h in t.racks[0].hosts}
