"""Tests of the site: its export under the limit (through load steps and a meter dropout) and
the battery's reserve kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hil.judge.columns import NoData, Run
from hil.judge.outcome import at, result, span

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hil.judge.columns import Floats
    from hil.judge.specs import ExportAtMost, SocAtLeast
    from hil.records import TestResult


def _covered(t_s: Floats, starts: Sequence[float], ends: Sequence[float]) -> np.ndarray:
    """True at each time inside any [start, end] (inclusive)."""
    count = np.zeros(len(t_s) + 1, dtype=np.int64)
    np.add.at(count, np.searchsorted(t_s, starts, side="left"), 1)
    np.add.at(count, np.searchsorted(t_s, ends, side="right"), -1)
    covered: np.ndarray = np.cumsum(count[:-1]) > 0
    return covered


def _dropouts(spec: ExportAtMost, run: Run) -> list[tuple[float, float]]:
    """The meter dropouts: fault events naming the fault, in time order, start and end it in
    turn; one left open lasts to the end."""
    instants = sorted(
        e.t_s
        for e in run.events
        if e.kind == "fault" and (spec.dropout_fault in e.detail or spec.dropout_fault in e.payload)
    )
    instants.append(np.inf)
    return list(zip(instants[0:-1:2], instants[1::2], strict=False))


def export_at_most(spec: ExportAtMost, run: Run) -> TestResult:
    """The meter's p_w at most limit_w + tolerance_w outside the excused windows; measured:
    the highest export judged."""
    series = run.columns.of(spec.meter)
    where = span(spec.from_s, spec.to_s)
    window = series.window(spec.from_s, spec.to_s)
    t, p = series.t_s[window], series.signal("p_w")[window]
    instants = [e.t_s for e in run.events if e.kind in spec.excused_kinds]
    dropouts = _dropouts(spec, run)
    excused = _covered(t, instants, [s + spec.settle_s for s in instants])
    lost = _covered(t, [a for a, _ in dropouts], [b for _, b in dropouts])
    judged = np.flatnonzero((~excused | lost) & np.isfinite(p))
    if len(judged) == 0:
        raise NoData(f"no sample of {spec.meter} outside the excused windows in {where}")
    i = int(judged[np.argmax(p[judged])])
    limit = spec.limit_w + spec.tolerance_w
    lost_text = ", ".join(f"t={a:.1f}..{b:.1f} s" for a, b in dropouts) or "none"
    return result(
        spec.name,
        p[i] <= limit,
        p[i],
        limit,
        f"max export {p[i]:.1f} W at {at(series, window.start + i)} against "
        f"{spec.limit_w:g} W + {spec.tolerance_w:g} W ({len(judged)} samples in {where}; "
        f"{len(instants)} instants excused for {spec.settle_s:g} s; meter dropouts, never "
        f"excused: {lost_text})",
    )


def soc_at_least(spec: SocAtLeast, run: Run) -> TestResult:
    """The state of charge never below the reserve; measured: its minimum."""
    series = run.columns.of(spec.device)
    where = span(spec.from_s, spec.to_s)
    window = series.window(spec.from_s, spec.to_s)
    soc = series.signal("soc_pct")[window]
    if not np.isfinite(soc).any():
        raise NoData(f"no state of charge of {spec.device} in {where}")
    i = int(np.nanargmin(soc))
    return result(
        spec.name,
        soc[i] >= spec.reserve_pct,
        soc[i],
        spec.reserve_pct,
        f"min SoC {soc[i]:.2f} % at {at(series, window.start + i)} against the reserve "
        f"{spec.reserve_pct:g} % ({where})",
    )
