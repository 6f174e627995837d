"""The plugin's fixtures under their old, unprefixed names, for drill modules written before the prefix.

The plugin loads into every pytest session of the venv, so its fixtures carry the project's prefix
(`drill_cluster`, `drill_faults`, ...) and never shadow another project's `cluster` or `timeline`.
A drill module that still asks for the old names opts in to these aliases:

    pytest_plugins = ["drills.fixture_aliases"]      # in the module or its conftest.py
    pytest -p drills.fixture_aliases ...             # or for one session
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

# old name -> (the plugin's fixture, its scope)
ALIASES = {
    "cluster": ("drill_cluster", "session"),
    "run_dir": ("drill_run_dir", "session"),
    "timeline": ("drill_timeline", "session"),
    "thresholds": ("drill_thresholds", "session"),
    "regression_rules": ("drill_regression_rules", "session"),
    "samplers": ("drill_samplers", "session"),
    "preflight_gate": ("drill_preflight_gate", "session"),
    "faults": ("drill_faults", "function"),
}


def _alias(old: str, new: str, scope: str) -> Callable[..., Any]:
    @pytest.fixture(scope=scope, name=old)  # type: ignore[call-overload]
    def fixture(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(new)

    fixture.__doc__ = f"`{new}` under its old name."
    return fixture


for _old, (_new, _scope) in ALIASES.items():
    globals()[f"_{_old}_alias"] = _alias(_old, _new, _scope)
