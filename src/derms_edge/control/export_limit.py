"""The site export limit: a closed loop from the meter's export to the inverters' WMaxLimPct.

Once per control interval :meth:`ExportLimiter.step` takes the meter's export (W, positive
= export) and the inverters' output, and moves the total generation it allows, ``allowed``:

    allowed += gain · (target - predicted export),   target = limit - deadband / 2
    predicted export = export + (allowed - generation one interval ago)

``allowed`` is then clamped to [0, Σ WMax · cap], its common % of WMax moves at most
``max_step_pct`` per interval (a ramp of ``max_step_pct / interval_s`` % per second), and
it is shared in proportion to WMax (:func:`share`), never above an inverter's cap. When a
cap changes, the same total is shared anew.

**Why the predicted export.** The plain integral, ``allowed += gain · (target - export)``,
settles by (1 - gain) per step only on a plant that shows a command's full effect at the
next reading. A real site does not: the meter reading is up to one poll interval old and an
inverter follows its limit with a lag of 1-2 s. With a one-interval delay alone the loop is
z² - z + gain = 0, which rings for any gain above 0.25 (at the default 0.5 the poles are
0.5 ± 0.5j: 25 % overshoot). Adding what has been commanded but is not in the reading
yet (``allowed`` minus the generation the reading saw, taken as the inverters' output one
interval ago) removes the plant from the loop:

    allowed(k+1) = (1 - gain) · allowed(k) + gain · (house load + target)

since generation - export is the house load, whatever the inverters are doing. ``allowed``
moves monotonically to load + target, its distance shrinking by (1 - gain) per interval;
the inverters follow that monotonic command with their own first-order lag, so export
approaches the target without overshoot. Where the meter is fresher than assumed, the
interval's change is counted twice: the loop is slower, not oscillating.

**Anti-windup** is built in: with inverters producing less than allowed (cloud), the
fixed point is allowed = generation + (target - export), i.e. production plus exactly the
export headroom, so the return of the sun cannot push export past the limit, and a rise in
load releases the inverters within a few intervals (to 100 % once load + target exceeds
Σ WMax · cap). The steady state is set by the meter alone (an inverter's reading of its own
output equals its limit once it is curtailed), so an inverter's metering error does not
shift it.

**Fail safe.** No fresh meter reading (none yet, or the meter's is older than its staleness
window): the loop falls back at once to an open-loop cap, the limits at which the inverters
together cannot generate more than the loop's target (the limit less half the deadband) even
with no house load, or the limits held, where they are lower (never raised without a
measurement). When the meter is back the
loop starts from there, below the limit, so it cannot overshoot. Export within
``deadband_w`` under the limit: held (no hunting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from derms_edge.control.views import DeviceView
from derms_edge.model import ControlType, DeviceKind, Quality, SetpointName, SetpointValue, number


@dataclass(frozen=True, slots=True)
class Inverter:
    """One inverter as the loop sees it."""

    w_max: float
    """WMax, W: the base of its limit in %."""
    w_now: float
    """Measured active power output, W."""
    cap_pct: float = 100.0
    """The highest limit other controls allow it (e.g. a DSO max_w_pct), % of WMax."""


class ExportLimiter:
    """Loop state for one site export limit; :meth:`step` once per control interval."""

    def __init__(
        self, gain: float, max_step_pct: float, deadband_w: float, *, interval_s: float = 1.0
    ) -> None:
        """The loop's parameters, from ExportLimitSection and ControlSection.interval_s.

        ``gain``: fraction of the error corrected per interval (0 < gain ≤ 1).
        ``max_step_pct``: largest change of a limit per ``interval_s``, % of WMax.
        ``deadband_w``: export this close under the limit is left alone, W.
        ``interval_s``: the control interval that ``max_step_pct`` is per, s.
        """
        if not 0 < gain <= 1:
            raise ValueError(f"gain must be in (0, 1], not {gain}")
        self.gain = gain
        self.max_step_pct = max_step_pct
        self.deadband_w = deadband_w
        self.interval_s = interval_s
        self._allowed_w: float | None = None
        """Total generation the last limits allow, W."""
        self._generation_w: float | None = None
        """Total inverter output at the previous step, W."""
        self._limits: dict[str, float] | None = None
        """The limits returned last, % of WMax."""

    def reset(self) -> None:
        """Forget the loop state (the export limit ended); the next step starts afresh."""
        self._allowed_w = None
        self._generation_w = None
        self._limits = None

    def step(
        self,
        export_w: float | None,
        limit_w: float,
        inverters: Mapping[str, Inverter],
        dt_s: float,
    ) -> dict[str, float]:
        """Advance one control interval; return max_w_pct (WMaxLimPct) per inverter.

        ``export_w``: the meter's export at the point of connection, W, positive = export;
        None when there is no fresh reading. ``dt_s``: time since the previous step.
        """
        generation_w = sum(inverter.w_now for inverter in inverters.values())
        seen_w = generation_w if self._generation_w is None else self._generation_w
        self._generation_w = generation_w
        if export_w is None:  # the open-loop cap: no more than the target even with no load
            cap_pct = level_pct(max(0.0, limit_w - self.deadband_w / 2), inverters)
            if self._limits is None:  # never measured
                return self._command(cap_pct, inverters)
            open_loop = share(cap_pct, inverters)
            held = {  # an inverter not limited before gets 0 until a reading arrives
                name: min(self._limits.get(name, 0.0), open_loop[name]) for name in inverters
            }
            self._allowed_w = sum(inverters[n].w_max * pct / 100.0 for n, pct in held.items())
            self._limits = held
            return dict(held)
        # caps may have changed since: share the same total anew
        previous_pct = level_pct(
            generation_w if self._allowed_w is None else self._allowed_w, inverters
        )
        if limit_w - self.deadband_w <= export_w <= limit_w:
            return self._command(previous_pct, inverters)
        allowed_w = allowed_w_at(previous_pct, inverters)
        predicted_w = export_w + allowed_w - seen_w
        target_w = limit_w - self.deadband_w / 2
        wanted_pct = level_pct(allowed_w + self.gain * (target_w - predicted_w), inverters)
        max_step_pct = self.max_step_pct * dt_s / self.interval_s
        return self._command(
            min(max(wanted_pct, previous_pct - max_step_pct), previous_pct + max_step_pct),
            inverters,
        )

    def _command(self, level: float, inverters: Mapping[str, Inverter]) -> dict[str, float]:
        """Set the common limit to ``level`` % of WMax; return each inverter's limit."""
        self._allowed_w = allowed_w_at(level, inverters)
        self._limits = share(level, inverters)
        return dict(self._limits)


def share(level_pct: float, inverters: Mapping[str, Inverter]) -> dict[str, float]:
    """Each inverter's limit at a common ``level_pct``: the level, or its cap if lower."""
    return {name: min(level_pct, inverter.cap_pct) for name, inverter in inverters.items()}


def allowed_w_at(level_pct: float, inverters: Mapping[str, Inverter]) -> float:
    """Total generation allowed, W, at a common limit of ``level_pct`` % of WMax."""
    return sum(
        inverter.w_max * min(level_pct, inverter.cap_pct) / 100.0 for inverter in inverters.values()
    )


def level_pct(allowed_w: float, inverters: Mapping[str, Inverter]) -> float:
    """The common limit, % of WMax, that allows ``allowed_w`` in all (0 to 100).

    Water-filling: raising the level raises every inverter below its cap in proportion to
    its WMax; an inverter stops at its cap. 100 once every inverter is at its cap.
    """
    remaining_w = allowed_w
    level = 0.0
    free_w_max = sum(inverter.w_max for inverter in inverters.values())
    for inverter in sorted(inverters.values(), key=lambda i: i.cap_pct):
        if remaining_w <= 0:
            break
        cap = min(max(inverter.cap_pct, level), 100.0)
        rise_w = free_w_max * (cap - level) / 100.0
        if remaining_w <= rise_w:
            return min(100.0, level + 100.0 * remaining_w / free_w_max)  # float rounding
        remaining_w -= rise_w
        level = cap
        free_w_max -= inverter.w_max
    return level if remaining_w <= 0 else 100.0


@dataclass(frozen=True, slots=True)
class ExportCaps:
    """What one step of the export loop asks of the site."""

    inverters: dict[str, float]
    """The inverters whose limit it lowers below what the other controls allow them, with
    that limit, % of WMax."""
    open_loop: bool
    """No fresh meter reading: the limits are the open-loop fallback."""
    discharge_w: float | None
    """In the fallback, what battery discharge the export limit leaves beside the inverters'
    generation, W (None: not limited here)."""


def limit_export(
    limiter: ExportLimiter,
    limit_w: float,
    *,
    meter: DeviceView | None,
    devices: Mapping[str, DeviceView],
    setpoints: Mapping[str, Mapping[SetpointName, SetpointValue]],
    dt_s: float,
) -> ExportCaps:
    """One step of the export loop on the site."""
    export_w = None
    if meter is not None and meter.quality is Quality.OK and meter.state is not None:
        export_w = meter.state.w
    inverters: dict[str, Inverter] = {}
    for device in devices.values():
        cap = device.capability
        if (
            device.kind != DeviceKind.INVERTER
            or not device.can(ControlType.MAX_W_PCT)
            or cap is None
            or cap.w_max is None
        ):
            continue
        own = setpoints[device.id].get(SetpointName.MAX_W_PCT)
        w_now = device.state.w if device.state is not None and device.state.w else 0.0
        inverters[device.id] = Inverter(
            cap.w_max, max(w_now, 0.0), number(own) if own is not None else 100.0
        )
    open_loop = export_w is None
    if not inverters:
        return ExportCaps({}, open_loop, max(0.0, limit_w) if open_loop else None)
    limits = limiter.step(export_w, limit_w, inverters, dt_s)
    lowered = {name: pct for name, pct in limits.items() if pct < inverters[name].cap_pct}
    if not open_loop:
        return ExportCaps(lowered, False, None)
    allowed_w = sum(inverters[name].w_max * pct / 100.0 for name, pct in limits.items())
    return ExportCaps(lowered, True, max(0.0, limit_w - allowed_w))
