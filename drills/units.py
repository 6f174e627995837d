"""Sizes and durations with units: one rule set for the CLI, environment knobs and thresholds files.

Sizes are written in the binary units Ceph and fio report in: B, KiB, MiB, GiB, TiB ("256MiB", "1.5GiB";
bare digits are bytes where a unit may be left out). "2G", "2GB" and "2gib" are refused, not guessed:
Ceph and fio read "2G" as 2 GiB while SI reads "2GB" as 2 x 10^9 bytes, 7 % apart, and a memory budget
or an RSS limit silently 7 % off is worse than a one-line error.  Durations: ms, s, min, h ("250ms",
"45s", "10min"); "m" is refused with a hint (minutes are "min").
"""

from __future__ import annotations

import argparse
import re

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
SIZE_UNITS = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}
TIME_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}

_NUMBER_UNIT = re.compile(r"(\d+(?:\.\d+)?) ?([A-Za-z]*)")
_SIZE_HELP = "B, KiB, MiB, GiB, TiB"
_TIME_HELP = "ms, s, min, h"


def _split(text: str, what: str, example: str) -> tuple[str, str]:
    body = text.strip()
    if body.startswith("-"):
        raise ValueError(f"{text!r}: a {what} cannot be negative; write e.g. {example!r}")
    m = _NUMBER_UNIT.fullmatch(body)
    if not m:
        helps = _SIZE_HELP if what == "size" else _TIME_HELP
        raise ValueError(f"{text!r} is not a {what}; write a number and a unit ({helps}), e.g. {example!r}")
    return m.group(1), m.group(2)


def parse_bytes(text: str | int, *, unit_required: bool = False) -> int:
    """'256MiB' -> 268435456. Bare digits are bytes unless `unit_required` (thresholds files say the unit)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size; write e.g. '2GiB'")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text!r}: a size cannot be negative; write e.g. '2GiB'")
        return text
    number, unit = _split(str(text), "size", "2GiB")
    if not unit:
        if unit_required:
            raise ValueError(f"{text!r} is not a size: say the unit ({_SIZE_HELP}), e.g. '{number}B' or '2GiB'")
        return int(float(number))
    if unit not in SIZE_UNITS:
        if unit.lower().rstrip("b").rstrip("i") in ("k", "m", "g", "t"):
            raise ValueError(f"{text!r}: unit {unit!r} is ambiguous (Ceph and fio read 2G as 2 GiB, SI reads 2GB as "
                             f"2 x 10^9 bytes); write it as {_SIZE_HELP}, e.g. '{number}{_binary(unit)}'")
        raise ValueError(f"{text!r}: unit {unit!r} is not one of {_SIZE_HELP}; write e.g. '2GiB'")
    return int(float(number) * SIZE_UNITS[unit])


def _binary(unit: str) -> str:
    return {"k": "KiB", "m": "MiB", "g": "GiB", "t": "TiB"}[unit[0].lower()]


def parse_seconds(text: str | int | float, *, unit_required: bool = True) -> float:
    """'250ms' -> 0.25, '10min' -> 600. A number (not a string) is seconds; a bare string number is refused."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{text!r}: a duration cannot be negative; write e.g. '45s'")
        return float(text)
    number, unit = _split(str(text), "duration", "45s")
    if not unit and not unit_required:
        return float(number)
    if unit not in TIME_UNITS:
        if not unit:
            raise ValueError(f"{text!r} is not a duration: say the unit ({_TIME_HELP}), e.g. '{number}s'")
        hint = " (minutes are 'min')" if unit == "m" else ""
        raise ValueError(f"{text!r}: unit {unit!r} is not one of {_TIME_HELP}{hint}; write e.g. '45s'")
    return float(number) * TIME_UNITS[unit]


def size_arg(text: str) -> int:
    """argparse `type=` for a size option: the parser's one-line error instead of a traceback."""
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
