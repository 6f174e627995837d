"""The plugin's fixtures carry the project's prefix: it loads into every pytest session of the venv, and a
generic `cluster` or `timeline` would shadow another project's. The old names are an opt-in alias plugin."""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

OLD = ("cluster", "run_dir", "timeline", "thresholds", "regression_rules", "samplers", "preflight_gate", "faults")


def _fixture_names(result: pytest.RunResult) -> set[str]:
    # `pytest --fixtures` lists "name [scope] -- file:line" per fixture
    return {m.group(1) for line in result.stdout.lines if (m := re.match(r"^(\w+)( \[\w+ scope\])? -- ", line))}


def test_the_plugin_offers_only_prefixed_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    names = _fixture_names(result)
    ours = {n for n in names if n.startswith("drill")}
    assert {"drill", "drill_target", "drill_cluster", "drill_faults", "drill_timeline", "drill_image"} <= ours, names
    assert names.isdisjoint(OLD), names & set(OLD)


def test_the_old_names_come_back_with_the_alias_plugin(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider", "-p", "drills.fixture_aliases")
    assert set(OLD) <= _fixture_names(result)


def test_an_alias_is_the_same_object_as_the_prefixed_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_alias="""
pytest_plugins = ["drills.fixture_aliases"]

def test_same(thresholds, drill_thresholds):
    assert thresholds is drill_thresholds
""")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q").assert_outcomes(passed=1)


def test_another_projects_failing_test_keeps_its_traceback(pytester: pytest.Pytester) -> None:
    # the plugin rewrites failures of drills only; any other test fails as pytest reports it
    pytester.makepyfile(test_plain="""
def test_boom():
    raise RuntimeError("boom")
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert 'raise RuntimeError("boom")' in out and "harness error" not in out, out


def test_no_drill_module_asks_for_an_old_fixture_name() -> None:
    # a drill (or its module's own fixtures) asking for `cluster` fails only when it runs: catch it here
    import ast
    from pathlib import Path

    import drills

    found = []
    for path in sorted(Path(drills.__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
                if fixture or node.name.startswith("test"):
                    found += [f"{path.name}:{node.name}({a.arg})" for a in node.args.args if a.arg in OLD]
    assert found == []
