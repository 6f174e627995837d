"""Repository-level pytest wiring for the harness's own tests.

The drill options and fixtures come from the installed plugin (drills/plugin.py);
this file only orders tests: the one that tears the session sandbox down runs last.
"""

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [i for i in items if i.get_closest_marker("sandbox_teardown")]
    if last:
        items[:] = [i for i in items if i not in last] + last
