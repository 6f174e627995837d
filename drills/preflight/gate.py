"""The gate: a failed preflight blocks destructive drills, unless explicitly overridden.

Override: DRILLS_SKIP_PREFLIGHT=1 in the environment (or `drill preflight` fixed first). The plugin
calls `require_preflight(target)` before it opens a fault session; the result is kept per target
file for the process, so a session of many drills checks once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from drills.hostaccess import HostAccess
from drills.preflight.checks import PreflightReport, preflight
from drills.target import Target

SKIP_ENV = "DRILLS_SKIP_PREFLIGHT"


class PreflightFailed(Exception):
    """The target's hosts are not fit for a destructive drill; the message lists the failed checks."""


@dataclass
class PreflightGate:
    reports: dict[str, PreflightReport] = field(default_factory=dict)
    access: HostAccess | None = None  # the run's HostAccess (None: preflight makes its own per check)

    def require(self, target: Target) -> PreflightReport | None:
        """None when skipped (not destructive, or overridden); raise PreflightFailed on a failed check."""
        if not target.destructive or os.environ.get(SKIP_ENV, "") not in ("", "0"):
            return None
        key = target.path or target.cluster.fsid
        if key not in self.reports:
            shared = self.access is not None and self.access.target == target
            self.reports[key] = preflight(target, access=self.access) if shared else preflight(target)
        report = self.reports[key]
        if not report.ok:
            lines = "\n  ".join(f"{c.host}: {c.check}: {c.detail}" for c in report.failures)
            raise PreflightFailed(
                f"preflight failed on {target.path or target.cluster.name}; destructive drills are blocked:\n  {lines}\n"
                f"Fix the hosts (see `drill preflight --target {target.path}`), or override with {SKIP_ENV}=1."
            )
        return report


def require_preflight(target: Target, gate: PreflightGate | None = None) -> PreflightReport | None:
    """One-shot form for callers without a gate of their own."""
    return (gate or PreflightGate()).require(target)
