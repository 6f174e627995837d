"""The soak's section of the report: the seed, the schedule and every step's figures (drills/soak/)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drills.soak.figures import SOAK_FILE


@dataclass(frozen=True)
class SoakRow:
    index: int
    label: str
    at: float | None  # seconds from the drill's start to the inject
    figures: dict[str, Any]


@dataclass(frozen=True)
class SoakView:
    seed: int
    fingerprint: str
    steps_planned: int
    steps_run: int
    planned_s: float
    wall_s: float
    timing_note: str
    replay: str  # the command that draws the schedule again
    rows: list[SoakRow] = field(default_factory=list)


def soak_view(run_dir: str | Path, drill: str, origin: float) -> SoakView | None:
    """The soak's record of a run (soak.json), or None for a run without one."""
    path = Path(run_dir) / SOAK_FILE
    if drill != "soak" or not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    schedule = d.get("schedule", {})
    rows = [SoakRow(f["index"], f["label"], None if f.get("t_inject") is None else f["t_inject"] - origin, f)
            for f in d.get("figures", [])]
    return SoakView(d.get("seed", 0), d.get("fingerprint", ""), len(schedule.get("steps", [])),
                    sum(1 for s in d.get("steps", []) if s.get("t_inject") is not None), d.get("planned_s", 0.0),
                    d.get("wall_s", 0.0), d.get("timing_note", ""), schedule.get("command", ""), rows)
