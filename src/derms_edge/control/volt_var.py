"""IEEE 1547-2018 volt-var run by the gateway: the piecewise-linear characteristic, the filter.

Follows EPRI's OpenDER (``reactive_power_support_funcs/volt_var.py`` and
``auxiliary_funcs/low_pass_filter.py``): curve voltages shift with VRef, Q is flat outside
the end points, and the open-loop response is a first-order lag (Tustin) whose time
constant makes 90 % of a step arrive at the open-loop response time.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from derms_edge.model import VoltVarCurve

TAU_PER_OLRT = 1.0 / 2.3
"""tau = OLRT / 2.3, as OpenDER rounds ln(10): 1 - exp(-2.3) = 89.97 % of a step at the OLRT."""


def volt_var(v_pu: float, curve: VoltVarCurve) -> float:
    """Q in % of nameplate VA (positive = injecting) at ``v_pu`` on ``curve``.

    The curve's voltages are shifted by VRef - 1 (IEEE 1547-2018 eq. 3.8.1-5); outside the
    first and last points Q stays at their values.
    """
    return interpolate(v_pu - (curve.v_ref_pu - 1.0), curve.points)


def interpolate(x: float, points: Sequence[tuple[float, float]]) -> float:
    """Piecewise-linear y(x) through ``points`` (x non-decreasing), flat beyond the ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            if x1 == x0:
                return y1
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


@dataclass(slots=True)
class ResponseFilter:
    """IEEE 1547 open-loop response: a first-order lag, 90 % of a step at ``response_time_s``.

    Discretised with the bilinear (Tustin) transform as OpenDER does, so a run with the same
    time step matches OpenDER's sample for sample; the step may vary between updates.
    """

    response_time_s: float
    y: float | None = None
    _x_prev: float = 0.0

    def update(self, x: float, dt_s: float) -> float:
        """Advance by ``dt_s`` seconds with input ``x``; return the filtered output."""
        if self.y is None or dt_s <= 0:
            if self.y is None:
                self.y, self._x_prev = x, x
            return self.y
        tau = self.response_time_s * TAU_PER_OLRT
        if tau < dt_s / 2:  # faster than the step can show: pass through
            self.y = x
        else:
            a = dt_s / (dt_s + 2 * tau)
            self.y = a * (x + self._x_prev) + (1 - 2 * a) * self.y
        self._x_prev = x
        return self.y


@dataclass(slots=True)
class EdgeVoltVar:
    """Volt-var run by the gateway ("edge" mode): measured voltage in, reactive power out.

    Called once per control interval with the voltage at the device. ``curve`` may be
    replaced between updates (a new event): Q then moves to the new characteristic through
    the filter, with the new curve's response time, rather than jumping.
    """

    curve: VoltVarCurve
    va_rated: float
    """Nameplate apparent power, VA: the base of the curve's Q in %."""
    response: ResponseFilter = field(init=False)

    def __post_init__(self) -> None:
        self.response = ResponseFilter(self.curve.response_time_s)

    def update(self, v_pu: float, dt_s: float) -> float:
        """Advance by ``dt_s`` seconds at ``v_pu``; return Q in var (positive = injecting)."""
        self.response.response_time_s = self.curve.response_time_s
        q_pct = self.response.update(volt_var(v_pu, self.curve), dt_s)
        return q_pct * self.va_rated / 100.0
