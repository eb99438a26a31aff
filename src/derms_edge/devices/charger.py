"""What every EV charger driver shares, whatever the charger speaks (a Modbus register
profile, OPC UA): the power rating and the charging state (the IEC 61851 limits are the
model's: `derms_edge.model.evse`)."""

from __future__ import annotations

from derms_edge.model import NOMINAL_V_LN, OperatingState

CHARGING_W = 100.0
"""Power drawn above which a charger counts as charging, W (well under 6 A on one phase)."""


def rated_w(phases: int, v: float | None, max_a: float) -> float:
    """The charger's power rating, W: phases x V x max_a, at the nominal voltage when the
    measured one is missing or 0."""
    return phases * (v or NOMINAL_V_LN) * max_a


def charging_state(w: float | None, total_a: float | None, v: float | None) -> OperatingState:
    """CHARGING while the charger draws more than CHARGING_W (from W, else from the total
    current), IDLE otherwise. W is positive delivered to the grid, so charging is negative."""
    if w is None and total_a is not None:
        w = -(v or NOMINAL_V_LN) * total_a
    return OperatingState.CHARGING if w is not None and w < -CHARGING_W else OperatingState.IDLE
