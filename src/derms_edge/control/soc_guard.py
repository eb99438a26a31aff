"""The state-of-charge guard on a running storage setpoint: never fails open.

Each control step, before a storage setpoint reaches a battery: with no fresh SoC (or no
known capacity) nothing is applied and the event stops; at the reserve (discharging) or the
maximum (charging) the setpoint holds at 0 W and the event stops; short of them it is
tapered so SoC cannot cross a limit within two control intervals (the device's response lag
included); and a curtailment of the battery caps its discharge.
"""

from __future__ import annotations

from dataclasses import dataclass

from derms_edge.control.soc import headroom_w, hold_at_limit
from derms_edge.control.views import DeviceView
from derms_edge.model import Reason


@dataclass(frozen=True, slots=True)
class Stop:
    """Why the event behind a storage setpoint must stop."""

    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Guarded:
    """What the guard lets through: the storage setpoint (None: none at all) and whether the
    event behind it must stop."""

    w: float | None
    stop: Stop | None = None


def guard_storage(
    device: DeviceView, w: float, max_w_pct: float | None, interval_s: float
) -> Guarded:
    """The storage setpoint (W, positive = discharge) that ``device``'s SoC limits and a
    curtailment (``max_w_pct`` of its discharge rating) allow now."""
    limits = device.battery_limits()
    if not device.soc_known or limits is None:
        why = device.soc_frozen or (f"state of charge unknown or stale (quality {device.quality})")
        return Guarded(
            None, Stop(Reason.SOC_UNKNOWN, f"{device.id}: {why}; storage control stopped")
        )
    assert device.state is not None and device.state.soc_pct is not None
    soc = device.state.soc_pct
    held = hold_at_limit(limits, soc, w)
    stop = None
    if held == w and w != 0:
        discharge_w, charge_w = headroom_w(limits, soc, 2 * interval_s)
        held = min(w, discharge_w) if w > 0 else max(w, -charge_w)
    elif held != w:
        edge = "reserve" if w > 0 else "maximum"
        bound = limits.reserve_pct if w > 0 else limits.max_pct
        stop = Stop(
            Reason.SOC_LIMIT,
            f"{device.id}: SoC {soc:.1f} % reached the {edge} {bound:g} %; "
            f"storage_w {w:g} W stopped",
        )
    cap = device.capability
    if max_w_pct is not None and held > 0 and cap is not None:
        w_max = cap.discharge_w_max or cap.w_max
        if w_max is not None:
            held = min(held, max_w_pct / 100.0 * w_max)
    return Guarded(held, stop)
