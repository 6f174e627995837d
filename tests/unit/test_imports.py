"""Every module of the package imports alone, in a fresh interpreter: no import cycle hides behind an
import order that happens to work (`import drills.restart.flags` once failed this way)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import drills


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(drills.__path__, "drills.")
                  if not m.name.startswith("drills.workloads.locustfile"))  # a locust file runs under locust


def _import_alone(module: str) -> tuple[str, str]:
    p = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    return module, "" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = _modules()
    assert "drills.restart.flags" in modules and "drills.verdict" in modules
    with ThreadPoolExecutor(max_workers=4) as ex:
        failures = {m: err for m, err in ex.map(_import_alone, modules) if err}
    assert failures == {}


# --- the import contract: no cycles among module-level imports, and the fault room's layers -------------

def _top_level_imports(inside_functions: bool = False) -> dict[str, set[str]]:
    """module -> the drills modules it imports at module level (with `inside_functions`, the lazy imports in
    function bodies and `if TYPE_CHECKING:` blocks too). A module's own packages are not edges: Python
    runs them before it anyway."""
    import ast
    from pathlib import Path

    root = Path(drills.__file__).parent
    names = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root.parent).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        names[mod] = p
    graph: dict[str, set[str]] = {}
    for mod, p in names.items():
        deps: set[str] = set()
        tree = ast.parse(p.read_text())
        nodes = ast.walk(tree) if inside_functions else tree.body
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("drills"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in names else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("drills")}
        ancestors = {mod.rsplit(".", i)[0] for i in range(1, mod.count(".") + 1)}
        graph[mod] = {d for d in deps if d in names and d != mod and d not in ancestors}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_at_module_level() -> None:
    graph = _top_level_imports()
    assert len(graph) > 90 and "drills.faults.session" in graph
    assert _cycles(graph) == []


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    # a lazy import hides a cycle from the interpreter, not from a reader: data flows one way
    graph = _top_level_imports(inside_functions=True)
    assert "drills.faults.backends" in graph["drills.faults.fault"]  # the lazy edges are counted
    assert _cycles(graph) == []


def test_the_fault_room_imports_downwards_only() -> None:
    # errors <- interface <- fault <- kinds, gray; the session knows kinds only as registry data
    layers = ["drills.faults.errors", "drills.faults.interface", "drills.faults.fault"]
    graph = _top_level_imports()
    for i, mod in enumerate(layers):
        above = set(layers[i + 1:]) | {"drills.faults.kinds", "drills.faults.gray", "drills.faults.session",
                                       "drills.faults.base", "drills.faults.backends", "drills.faults.guard"}
        assert graph[mod] & above == set(), (mod, graph[mod] & above)
    assert not graph["drills.faults.session"] & {"drills.faults.kinds", "drills.faults.gray", "drills.restart.flags"}
    # nothing in the package imports the compatibility module any more
    assert [m for m, deps in graph.items() if "drills.faults.base" in deps] == []


def test_every_registered_fault_kind_resolves_to_its_class() -> None:
    from drills.faults.session import FAULT_TYPES, fault_type

    for kind in FAULT_TYPES:
        assert fault_type(kind).kind == kind
