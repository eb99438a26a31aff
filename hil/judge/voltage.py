"""Tests of voltage and volt-var: range A held, the baseline's overvoltage, and Q in steady
state against OpenDER's answer for the same curve."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hil.judge.columns import NoData, Run, rolling_range
from hil.judge.opender_ref import opender_q_pu
from hil.judge.outcome import at, result, span

if TYPE_CHECKING:
    from hil.judge.columns import Series
    from hil.judge.specs import VoltageExceeds, VoltageWithin, VoltVarSteadyState
    from hil.records import TestResult


def _voltages(series: Series, from_s: float, to_s: float | None) -> tuple[int, int] | None:
    """Indices of the highest and lowest voltage in the window; None without a voltage."""
    window = series.window(from_s, to_s)
    v = series.signal("v_pu")[window]
    if not np.isfinite(v).any():
        return None
    return window.start + int(np.nanargmax(v)), window.start + int(np.nanargmin(v))


def voltage_within(spec: VoltageWithin, run: Run) -> TestResult:
    """Every voltage in [low_pu, high_pu]; measured: the extreme nearest its bound."""
    from_s = spec.from_s + spec.settle_s
    where = span(from_s, spec.to_s)
    if spec.devices is None:
        candidates = list(run.columns.all().values())
    else:
        candidates = [run.columns.of(device) for device in spec.devices]
    worst: tuple[float, Series, int, float] | None = None  # (margin, series, index, bound)
    judged = 0
    for series in candidates:
        extremes = _voltages(series, from_s, spec.to_s)
        if extremes is None:
            if spec.devices is not None:
                raise NoData(f"no voltage sample of {series.device} in {where}")
            continue
        judged += 1
        high, low = extremes
        v = series.signal("v_pu")
        for margin, i, bound in (
            (spec.high_pu - v[high], high, spec.high_pu),
            (v[low] - spec.low_pu, low, spec.low_pu),
        ):
            if worst is None or margin < worst[0]:
                worst = (float(margin), series, i, bound)
    if worst is None:
        raise NoData(f"no voltage sample of any device in {where}")
    margin, series, i, bound = worst
    extreme = "max" if bound == spec.high_pu else "min"
    value = float(series.signal("v_pu")[i])
    return result(
        spec.name,
        margin >= 0,
        value,
        bound,
        f"{extreme} {value:.4f} pu at {at(series, i)}, against {spec.low_pu}..{spec.high_pu} pu "
        f"({judged} devices, {where})",
    )


def voltage_exceeds(spec: VoltageExceeds, run: Run) -> TestResult:
    """The device's voltage goes above above_pu; measured: its highest voltage."""
    series = run.columns.of(spec.device)
    where = span(spec.from_s, spec.to_s)
    extremes = _voltages(series, spec.from_s, spec.to_s)
    if extremes is None:
        raise NoData(f"no voltage sample of {spec.device} in {where}")
    i = extremes[0]
    value = float(series.signal("v_pu")[i])
    return result(
        spec.name,
        value > spec.above_pu,
        value,
        spec.above_pu,
        f"max {value:.4f} pu at {at(series, i)} ({where}); must exceed {spec.above_pu} pu",
    )


def volt_var_steady_state(spec: VoltVarSteadyState, run: Run) -> TestResult:
    """|Q - OpenDER's Q at the same voltage| within tolerance in steady state; measured: the
    worst, % of the VA rating."""
    series = run.columns.of(spec.device)
    where = span(spec.from_s, spec.to_s)
    window = series.window(spec.from_s, spec.to_s)
    v = series.signal("v_pu")
    q = series.signal("q_var")
    still = rolling_range(series.t_s, v, spec.settled_s) < spec.settled_band_pu
    rows = window.start + np.flatnonzero(still[window] & np.isfinite(q[window]))
    if len(rows) == 0:
        raise NoData(
            f"no steady-state sample of {spec.device} in {where} (voltage moved "
            f">= {spec.settled_band_pu} pu within every {spec.settled_s} s)"
        )
    reference = opender_q_pu(spec.curve, spec.v_ref_pu, v[rows]) * spec.va_rtg
    error_pct = np.abs(q[rows] - reference) / spec.va_rtg * 100
    k = int(np.argmax(error_pct))
    i = int(rows[k])
    return result(
        spec.name,
        error_pct[k] <= spec.tolerance_pct_va,
        error_pct[k],
        spec.tolerance_pct_va,
        f"worst |Q - Q OpenDER| {error_pct[k]:.3f} % of {spec.va_rtg:g} VA at {at(series, i)}: "
        f"V {v[i]:.4f} pu, Q {q[i]:.1f} var, OpenDER {reference[k]:.1f} var "
        f"({len(rows)} steady-state samples of {window.stop - window.start} in {where})",
    )
