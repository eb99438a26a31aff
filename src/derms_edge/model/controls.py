"""The control functions a role may send, and a control: any subset of them, with values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from derms_edge.model.curves import FixedPf, VoltVarCurve


class ControlType(StrEnum):
    """The control functions a role may send (the keys of a control object)."""

    MAX_W_PCT = "max_w_pct"
    """Curtailment: active power limit, % of the device's WMax."""
    EXPORT_LIMIT_W = "export_limit_w"
    """Site export limit at the meter, W."""
    VOLT_VAR = "volt_var"
    """IEEE 1547-2018 volt-var curve."""
    FIXED_PF = "fixed_pf"
    """Constant power factor."""
    STORAGE_W = "storage_w"
    """Battery active power setpoint, W, positive = discharge."""
    EVSE_MAX_A = "evse_max_a"
    """EV charger current limit per phase, A (0 = pause, else at least 6)."""
    EVSE_MAX_W = "evse_max_w"
    """EV charger power cap, W (e.g. 4.2 kW under Germany's EnWG §14a); the charger's current
    limit becomes P / (phases x measured V line to neutral)."""
    RESERVE_SOC_PCT = "reserve_soc_pct"
    """The customer's backup reserve on a battery, % SoC: a floor under every storage
    dispatch (enforced by the gateway's SoC guard, not written to the device)."""


ControlValue = float | VoltVarCurve | FixedPf

CONTROL_TYPES: tuple[ControlType, ...] = tuple(ControlType)
"""Every control type in order, as a tuple: iterating the enum itself costs a generator of
Python code per member, and a control's items are asked for many times in every step."""


def number(value: ControlValue) -> float:
    """A numeric control value (limits, setpoints) as a float; curves and PFs are not."""
    if not isinstance(value, float | int):
        raise TypeError(f"expected a number, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Control:
    """Any subset of the control functions; None means "not part of this control"."""

    max_w_pct: float | None = None
    export_limit_w: float | None = None
    volt_var: VoltVarCurve | None = None
    fixed_pf: FixedPf | None = None
    storage_w: float | None = None
    evse_max_a: float | None = None
    evse_max_w: float | None = None
    reserve_soc_pct: float | None = None

    def items(self) -> dict[ControlType, ControlValue]:
        """The control functions that are set, by type (each ControlType is a field, in
        order: tests/unit/test_arbitration_cases.py; faster than dataclasses.fields)."""
        return {
            control_type: value
            for control_type in CONTROL_TYPES
            if (value := getattr(self, control_type)) is not None
        }

    @property
    def types(self) -> frozenset[ControlType]:
        """The control functions that are set."""
        return frozenset(self.items())
