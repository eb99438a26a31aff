"""Battery state of charge: projecting a storage schedule, and the limits it must respect.

The energy model is OpenDER's (``bess_specifc/soc.py``, Eq. 3.6.1-4) with a one-way
efficiency on both sides and no self-discharge: discharging W watts for t seconds drains
W·t/η from the cells, charging adds |W|·t·η. The per-step power limit is OpenDER's
``calculate_p_max_by_soc`` (Eq. 3.6.2-2/3) with the same model. Power is AC at the
battery terminals, positive = discharge (IEEE 2030.5 / SunSpec sign).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from derms_edge.model import ControlType

SOC_TOLERANCE_PCT = 0.05
"""SoC within this many % of a limit counts as at the limit (reading and rounding noise)."""

SECONDS_PER_HOUR = 3600.0

LimitName = Literal["reserve", "maximum"]


@dataclass(frozen=True, slots=True)
class BatteryLimits:
    """What a battery may do: capacity, the SoC window and the power ratings."""

    capacity_wh: float
    reserve_pct: float
    """Lowest SoC allowed: the higher of the device's minimum and the customer's reserve."""
    max_pct: float
    """Highest SoC allowed, %."""
    efficiency: float
    """One-way efficiency, applied to charge and to discharge alike (round trip = η²)."""
    charge_w_max: float | None = None
    """Charge power rating, W (None if the device does not say)."""
    discharge_w_max: float | None = None
    """Discharge power rating, W (None if the device does not say)."""

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError(f"capacity_wh must be positive, not {self.capacity_wh}")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], not {self.efficiency}")
        if not 0 <= self.reserve_pct <= self.max_pct <= 100:
            raise ValueError(
                f"need 0 <= reserve_pct <= max_pct <= 100, not {self.reserve_pct} and "
                f"{self.max_pct}"
            )

    def soc_rate_pct_per_s(self, w: float) -> float:
        """How fast SoC moves, % per second, at ``w`` W (positive = discharge)."""
        return -cell_w(w, self.efficiency) / self.capacity_wh / SECONDS_PER_HOUR * 100.0


def cell_w(w: float, efficiency: float) -> float:
    """Power out of the cells (negative: into them) while the terminals give ``w`` W
    (positive = discharge), through a one-way ``efficiency`` each way."""
    return w / efficiency if w > 0 else w * efficiency


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of constant storage power from one event: [start, end), ``w`` W."""

    start: datetime
    end: datetime
    w: float
    """AC power at the battery terminals, W, positive = discharge."""
    mrid: str

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"segment {self.mrid} ends ({self.end}) before it starts")


@dataclass(frozen=True, slots=True)
class Violation:
    """The first segment that would take SoC outside the window, and how."""

    mrid: str
    start: datetime
    """When the segment starts to count (its start, or the projection's start if later)."""
    end: datetime
    w: float
    at: datetime
    """When SoC crosses the limit (``start`` if it is beyond the limit already)."""
    soc_end_pct: float
    """Projected SoC at the end of the segment, as if nothing stopped it."""
    limit: LimitName
    limit_pct: float

    @property
    def duration_s(self) -> float:
        """How long the segment runs from ``start``, s."""
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class Projection:
    """SoC over time under a schedule: breakpoints (time, SoC %), linear in between."""

    points: tuple[tuple[datetime, float], ...]
    first_violation: Violation | None


def project(
    limits: BatteryLimits, soc_pct: float, at: datetime, segments: Iterable[Segment]
) -> Projection:
    """Project SoC from ``soc_pct`` at ``at`` through ``segments`` (sorted, non-overlapping).

    Between segments the battery idles. Segments that ended by ``at`` are ignored; one that
    has started counts from ``at``. The projection is not clamped: it shows where the
    schedule would take SoC, and ``first_violation`` names the first segment that leaves
    the window by more than :data:`SOC_TOLERANCE_PCT`.
    """
    points = [(at, soc_pct)]
    soc = soc_pct
    violation: Violation | None = None
    for segment in segments:
        if segment.end <= at:
            continue
        start = max(segment.start, at)
        rate = limits.soc_rate_pct_per_s(segment.w)
        soc_end = soc + rate * (segment.end - start).total_seconds()
        if violation is None:
            violation = _violation(limits, segment, start, soc, soc_end)
        if start > points[-1][0]:
            points.append((start, soc))
        points.append((segment.end, soc_end))
        soc = soc_end
    return Projection(tuple(points), violation)


def _violation(
    limits: BatteryLimits,
    segment: Segment,
    start: datetime,
    soc_start: float,
    soc_end: float,
) -> Violation | None:
    """The violation of one segment running from ``start``, if it leaves the window."""
    rate_pct_per_s = limits.soc_rate_pct_per_s(segment.w)
    limit: LimitName
    if rate_pct_per_s < 0 and soc_end < limits.reserve_pct - SOC_TOLERANCE_PCT:
        limit, limit_pct = "reserve", limits.reserve_pct
    elif rate_pct_per_s > 0 and soc_end > limits.max_pct + SOC_TOLERANCE_PCT:
        limit, limit_pct = "maximum", limits.max_pct
    else:
        return None
    to_limit_s = max(0.0, (limit_pct - soc_start) / rate_pct_per_s)
    return Violation(
        mrid=segment.mrid,
        start=start,
        end=segment.end,
        w=segment.w,
        at=start + timedelta(seconds=to_limit_s),
        soc_end_pct=soc_end,
        limit=limit,
        limit_pct=limit_pct,
    )


def violation_detail(violation: Violation) -> str:
    """A sentence for a person: what the segment does and which limit it breaks, when."""
    side = "below the reserve" if violation.limit == "reserve" else "above the maximum"
    return (
        f"{ControlType.STORAGE_W.value} {violation.w:.0f} W from {_clock(violation.start)} "
        f"for {violation.duration_s:.0f} s would take SoC to {violation.soc_end_pct:.1f} %, "
        f"{side} {violation.limit_pct:g} % (reached at {_clock(violation.at)})"
    )


def _clock(t: datetime) -> str:
    """Time of day, with seconds only when there are any."""
    return t.strftime("%H:%M:%S" if t.second or t.microsecond else "%H:%M")


def headroom_w(limits: BatteryLimits, soc_pct: float, dt_s: float) -> tuple[float, float]:
    """(max discharge W, max charge W) that keep SoC inside the window for ``dt_s`` seconds.

    OpenDER's ``calculate_p_max_by_soc``: the energy between SoC and the limit, spread over
    the step, through the efficiency; capped at the ratings; never negative.
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be positive, not {dt_s}")
    wh_per_pct = limits.capacity_wh / 100.0
    per_s = SECONDS_PER_HOUR / dt_s
    discharge_w = max(0.0, (soc_pct - limits.reserve_pct) * wh_per_pct * per_s * limits.efficiency)
    charge_w = max(0.0, (limits.max_pct - soc_pct) * wh_per_pct * per_s / limits.efficiency)
    if limits.discharge_w_max is not None:
        discharge_w = min(discharge_w, limits.discharge_w_max)
    if limits.charge_w_max is not None:
        charge_w = min(charge_w, limits.charge_w_max)
    return discharge_w, charge_w


def hold_at_limit(limits: BatteryLimits, soc_pct: float, w: float) -> float:
    """The storage setpoint to apply now: 0 if ``w`` would push SoC further past a limit.

    Discharging at or below the reserve, or charging at or above the maximum (within
    :data:`SOC_TOLERANCE_PCT`), holds at 0 W; anything else passes unchanged.
    """
    if w > 0 and soc_pct <= limits.reserve_pct + SOC_TOLERANCE_PCT:
        return 0.0
    if w < 0 and soc_pct >= limits.max_pct - SOC_TOLERANCE_PCT:
        return 0.0
    return w
