"""Setpoints: what the gateway asks of one device, before a driver maps it onto points."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from derms_edge.model.curves import FixedPf, VoltVarCurve


class SetpointName(StrEnum):
    """What the gateway can ask of a device; the driver maps each onto the device's points."""

    MAX_W_PCT = "max_w_pct"
    """Active power limit, % of WMax (704 WMaxLimPct or 123 WMaxLimPct)."""
    VAR = "var"
    """Reactive power setpoint, var, positive = injecting (704 VarSet/VarSetPct, 123 VArPct)."""
    VOLT_VAR = "volt_var"
    """A volt-var curve run by the device itself (705, or 126 on legacy devices)."""
    FIXED_PF = "fixed_pf"
    """Constant power factor (704 PFWInj/PFWAbs, or 123 OutPFSet)."""
    STORAGE_W = "storage_w"
    """Battery active power, W, positive = discharge (704 WSet, or 124 InWRte/OutWRte)."""
    EVSE_MAX_A = "evse_max_a"
    """EV charger current limit per phase, A (a register profile's current-limit register)."""


SetpointValue = float | VoltVarCurve | FixedPf
Setpoints = Mapping[SetpointName, SetpointValue]
"""The setpoints the gateway wants in force on one device; a missing name is not controlled."""
