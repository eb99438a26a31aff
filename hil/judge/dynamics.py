"""Tests of how a device's P or Q moves: the 90 % response time to a step, settling to a
target (limit active power), and the default control after the dispatcher falls silent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hil.judge.columns import NoData, Run
from hil.judge.outcome import at, result

if TYPE_CHECKING:
    from hil.judge.columns import Series
    from hil.judge.specs import DefaultControlApplied, ResponseTime, SettlesTo, Settling
    from hil.records import TestResult

RESPONSE_FRACTION = 0.9
"""The share of the step that defines the response time (IEEE 1547 open-loop response)."""
FINAL_SHARE = 0.1
"""The final value is the mean of this last share of the window."""


def response_time(spec: ResponseTime, run: Run) -> TestResult:
    """The time from step_at_s to 90 % of the step, the crossing interpolated linearly between
    samples; measured against tr_s within tolerance_pct."""
    series = run.columns.of(spec.device)
    t, x = series.t_s, series.signal(spec.signal)
    window_s = 4 * spec.tr_s if spec.window_s is None else spec.window_s
    end_s = spec.step_at_s + window_s
    before = int(np.searchsorted(t, spec.step_at_s, side="right")) - 1
    after = series.window(spec.step_at_s, end_s)
    after = slice(before + 1, after.stop)
    tail = x[after][t[after] >= end_s - FINAL_SHARE * window_s]
    if before < 0 or not np.isfinite(x[before]) or not np.isfinite(tail).any():
        raise NoData(
            f"{spec.signal} of {spec.device} needs a sample at or before the step at "
            f"t={spec.step_at_s:.1f} s and samples up to t={end_s:.1f} s"
        )
    initial, final = float(x[before]), float(np.nanmean(tail))
    change = final - initial
    unit = "var" if spec.signal == "q_var" else "W"
    step = f"{initial:.1f} -> {final:.1f} {unit}"
    if abs(change) < spec.min_change_pct / 100 * spec.rating:
        return result(
            spec.name,
            False,
            None,
            spec.tr_s,
            f"no step: {spec.signal} of {series.where()} moved {step} after "
            f"t={spec.step_at_s:.1f} s, less than {spec.min_change_pct:g} % of {spec.rating:g}",
        )
    progress = np.concatenate(([0.0], (x[after] - initial) / change))
    times = np.concatenate(([t[before]], t[after]))
    k = int(np.argmax(progress >= RESPONSE_FRACTION))
    share = (RESPONSE_FRACTION - progress[k - 1]) / (progress[k] - progress[k - 1])
    measured = float(times[k - 1] + share * (times[k] - times[k - 1])) - spec.step_at_s
    band = spec.tolerance_pct / 100 * spec.tr_s
    period = float(np.median(np.diff(times)))
    return result(
        spec.name,
        abs(measured - spec.tr_s) <= band,
        measured,
        spec.tr_s,
        f"{spec.signal} of {series.where()} covered 90 % of its step ({step}) "
        f"{measured:.3f} s after the step at t={spec.step_at_s:.1f} s, against Tr "
        f"{spec.tr_s:g} s +- {band:g} s (sample period {period:g} s, crossing interpolated)",
    )


def _settling(spec: Settling, start_s: float, run: Run) -> TestResult:
    """Settled within within_s of start_s and held until hold_until_s; measured: the time from
    start_s to the first sample after which every sample is inside."""
    series: Series = run.columns.of(spec.device)
    window = series.window(start_s, spec.hold_until_s)
    t, x = series.t_s[window], series.signal(spec.signal)[window]
    due_s = start_s + spec.within_s
    if not (t >= due_s).any():
        raise NoData(
            f"no sample of {spec.device} from t={due_s:.1f} s to t={spec.hold_until_s:.1f} s"
        )
    target, tolerance = spec.target_value(), spec.tolerance_value()
    deviation = x - target if spec.bound == "at_most" else np.abs(x - target)
    outside = np.flatnonzero(~(deviation <= tolerance))  # NaN is outside
    band = (
        f"at most {target:g} + {tolerance:g}"
        if spec.bound == "at_most"
        else f"{target:g} +- {tolerance:g}"
    )
    what = f"{spec.signal} of {series.where()}"
    if len(outside) and outside[-1] == len(t) - 1:
        i = window.start + int(outside[-1])
        return result(
            spec.name,
            False,
            None,
            spec.within_s,
            f"{what} never settled to {band}: still {x[-1]:g} at {at(series, i)}",
        )
    first_inside = int(outside[-1]) + 1 if len(outside) else 0
    measured = float(t[first_inside]) - start_s
    held = np.flatnonzero(t >= due_s)
    worst = int(held[np.nanargmax(deviation[held])]) if np.isfinite(deviation[held]).any() else 0
    return result(
        spec.name,
        measured <= spec.within_s,
        measured,
        spec.within_s,
        f"{what} settled to {band} {measured:.1f} s after t={start_s:.1f} s (allowed "
        f"{spec.within_s:g} s) and held to t={spec.hold_until_s:.1f} s; worst from "
        f"t={due_s:.1f} s: {x[worst]:g} at {at(series, window.start + worst)}",
    )


def settles_to(spec: SettlesTo, run: Run) -> TestResult:
    """The signal settles to its target within within_s of after_s and holds."""
    return _settling(spec, spec.after_s, run)


def default_control_applied(spec: DefaultControlApplied, run: Run) -> TestResult:
    """The default control settles within within_s of the dispatcher timeout's expiry."""
    return _settling(spec, spec.silent_from_s + spec.timeout_s, run)
