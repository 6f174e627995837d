"""Sizes and durations with units, parsed strictly ("256MiB", "1.5GiB", "45s", "250ms", "10min")."""

from __future__ import annotations

import re

BYTE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
              "g": 1000**3, "gb": 1000**3, "gib": 1 << 30, "t": 1000**4, "tb": 1000**4, "tib": 1 << 40,
              "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
TIME_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}

_NUMBER_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str | int) -> int:
    """'256MiB' -> 268435456. A bare number is bytes."""
    if isinstance(text, int):
        return text
    m = _NUMBER_UNIT.fullmatch(text)
    if not m or m.group(2).lower() not in BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size (use e.g. 512MiB, 2GiB, 4096)")
    return int(float(m.group(1)) * BYTE_UNITS[m.group(2).lower()])


def parse_seconds(text: str | int | float) -> float:
    """'250ms' -> 0.25, '10min' -> 600. A bare string number is refused: say the unit."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _NUMBER_UNIT.fullmatch(str(text))
    if not m or m.group(2) not in TIME_UNITS:
        raise ValueError(f"{text!r} is not a duration (use e.g. 250ms, 45s, 10min, 1h)")
    return float(m.group(1)) * TIME_UNITS[m.group(2)]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
