"""What every EV charger driver shares, whatever the charger speaks (a Modbus register
profile, OPC UA): the IEC 61851 signalling rule, the power rating, and the charging state."""

from __future__ import annotations

from derms_edge.control.events import MIN_EVSE_A
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


def limit_refusal(amps: float, max_a: float) -> str | None:
    """Why a charger cannot take this current limit (A per phase), or None if it can:
    0 pauses, else MIN_EVSE_A..max_a."""
    if amps > max_a:
        return f"{amps:g} A is above the charger's max_a {max_a:g} A"
    if not (amps == 0 or amps >= MIN_EVSE_A):
        return f"{amps:g} A cannot be signalled: 0 pauses, else {MIN_EVSE_A:g}..{max_a:g} A"
    return None
