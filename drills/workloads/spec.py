"""Reading a workload definition from a config table: unknown fields are errors naming the workload."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping


def workload_fields(cls: type, spec: Mapping[str, Any], name: str | None, kind: str,
                    error: type[Exception], hint: str = "") -> dict[str, Any]:
    """The table as constructor keywords for dataclass `cls`, or `error` saying what is wrong."""
    data = dict(spec)
    if name is not None:
        data.setdefault("name", name)
    workload = data.get("name", "<unnamed>")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"{kind} workload {workload!r}: unknown field(s) {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(known))}{hint})")
    if "name" not in data:
        raise error(f"{kind} workload: missing field 'name'")
    return data
