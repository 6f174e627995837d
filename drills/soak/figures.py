"""Per-fault figures of a soak, from the run's timeline (pure: samples, histograms and events in, figures out).

For each step, three windows on the run's clock:

    before   the quiet spell that preceded the inject (at most BEFORE_MAX_S of it)
    during   inject -> heal: the fault in force
    settle   heal -> every PG active+clean again (the step's settle)

and in each the client figures the drills use elsewhere (drills/report/analysis.py): median fio write IOPS,
p99 of every write that completed in the window (fio's histograms; the worst second's p99 without them),
the longest run of zero-IOPS seconds, S3 requests per second (PUT) and S3 errors; OSD mark-downs from the
osdmap events.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from drills.report.analysis import (IOPS, LAT_P99, PhaseSpan, Window, longest_zero_run, phase_p99_from_histograms,
                                    single)
from drills.timeline import Event, Histogram, Sample

BEFORE_MAX_S = 30.0
SCHEDULE_FILE = "soak-schedule.json"  # the seed and the drawn schedule, written before the first fault
SOAK_FILE = "soak.json"  # the soak as it ran: each step's moments and figures, for the report
S3_PUT_RPS, S3_ERRORS = "s3.put.rps", "s3.errors"


@dataclass(frozen=True)
class StepTiming:
    """When a step's moments happened (wall clock), as the runner saw them."""

    index: int
    label: str  # the faults' labels
    t_quiet: float  # the quiet spell began
    t_inject: float | None = None  # None: never injected (the soak stopped before)
    t_heal: float | None = None
    t_clean: float | None = None  # None: not active+clean within the settle bound
    note: str = ""


@dataclass(frozen=True)
class StepFigures:
    index: int
    label: str
    t_inject: float | None
    held_s: float | None  # inject -> heal
    settle_s: float | None  # heal -> active+clean; None: not settled
    iops_before: float | None
    iops_during: float | None
    iops_ratio: float | None  # during / before
    p99_before_s: float | None
    p99_during_s: float | None
    p99_ratio: float | None
    stall_s: float | None  # longest run of zero-IOPS seconds, inject -> clean
    s3_put_rps_before: float | None
    s3_put_rps_during: float | None
    s3_errors: int | None  # S3 requests that failed, inject -> clean; None: no S3 client ran
    markdowns: int  # OSD mark-downs, inject -> clean
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def subject(self) -> str:
        """How a per-fault check names this step."""
        return f"#{self.index} {self.label}"


def _median(points: Sequence[tuple[float, float | None]], w: Window) -> float | None:
    xs = [v for t, v in points if v is not None and w.start <= t < w.end]
    return statistics.median(xs) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _p99(hists: list[Histogram], p99s: Sequence[tuple[float, float | None]], w: Window) -> float | None:
    if hists:
        from_hist = phase_p99_from_histograms(hists, w)
        if from_hist is not None:
            return from_hist
    xs = [v for t, v in p99s if v is not None and w.start <= t < w.end]
    return max(xs) / 1000.0 if xs else None


def step_figures(timings: Iterable[StepTiming], samples: list[Sample], histograms: list[Histogram],
                 events: Iterable[Event], end: float) -> list[StepFigures]:
    """The figures of every step (see the module's docstring); `end` closes a window left open."""
    everything = Window(0.0, float("inf"))
    iops = single(samples, IOPS, everything)
    p99s = single(samples, LAT_P99, everything)
    puts = single(samples, S3_PUT_RPS, everything)
    s3_errors = single(samples, S3_ERRORS, everything)
    hists = list(histograms)
    downs = sorted(e.t for e in events if e.kind == "cluster.osd_down")
    out = []
    for s in timings:
        if s.t_inject is None:
            out.append(StepFigures(s.index, s.label, None, None, None, None, None, None, None, None, None, None, None,
                                   None, None, 0, s.note or "not injected"))
            continue
        heal = s.t_heal if s.t_heal is not None else end
        clean = s.t_clean if s.t_clean is not None else (end if s.t_heal is None else max(heal, end))
        before = Window(max(s.t_quiet, s.t_inject - BEFORE_MAX_S), s.t_inject)
        during = Window(s.t_inject, heal)
        after_inject = PhaseSpan("step", s.t_inject, clean)
        ib, idur = _median(iops, before), _median(iops, during)
        pb, pd = _p99(hists, p99s, before), _p99(hists, p99s, during)
        errs = [v for t, v in s3_errors if v is not None and s.t_inject <= t < clean]
        out.append(StepFigures(
            index=s.index, label=s.label, t_inject=s.t_inject,
            held_s=None if s.t_heal is None else s.t_heal - s.t_inject,
            settle_s=None if s.t_clean is None or s.t_heal is None else s.t_clean - s.t_heal,
            iops_before=ib, iops_during=idur, iops_ratio=_ratio(idur, ib),
            p99_before_s=pb, p99_during_s=pd, p99_ratio=_ratio(pd, pb),
            stall_s=longest_zero_run(iops, after_inject),
            s3_put_rps_before=_median(puts, before), s3_put_rps_during=_median(puts, during),
            s3_errors=int(sum(errs)) if s3_errors else None,
            markdowns=sum(1 for t in downs if s.t_inject <= t < clean),
            note=s.note))
    return out


def per_fault(figures: Sequence[StepFigures], attr: str) -> dict[str, Any]:
    """{step subject: figure} for a per-fault measurement (a check names the worst step and every breach)."""
    return {f.subject: getattr(f, attr) for f in figures if f.t_inject is not None}
