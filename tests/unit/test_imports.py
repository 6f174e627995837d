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
