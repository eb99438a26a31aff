"""SunSpec building blocks the device kinds share: models, scale factors and common points."""

from __future__ import annotations

import math

from sunspec2.device import Model

from hil.image import Value
from hil.spec import BatterySpec, MeterSpec, Pv1547Spec, PvLegacySpec

ENABLED = 1
SQRT3 = math.sqrt(3.0)


def scale_factor(max_abs: float, precision: int, signed: bool = True) -> int:
    """The finest scale factor, no finer than 10**precision, that fits max_abs in 16 bits."""
    limit = 32767 if signed else 65534
    sf = precision
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf


def model(model_id: int, **counts: int) -> Model:
    """A pysunspec2 model; counts set repeating-group sizes (NCrv, NPt, or a legacy length)."""
    model_len = counts.pop("model_len", 0)
    built = Model(model_id, model_len=model_len, data=counts or None)
    if built.error_info:
        raise ValueError(f"model {model_id}: {built.error_info}")
    return built


def nameplate(spec: PvLegacySpec | Pv1547Spec | BatterySpec | MeterSpec) -> dict[str, Value]:
    """Model 1 (common) points."""
    return {
        "Mn": spec.manufacturer,
        "Md": spec.model_name,
        "Opt": spec.type,
        "Vr": spec.version,
        "SN": spec.serial or spec.id,
        "DA": spec.unit_id,
    }


def as_float(value: Value, default: float = 0.0) -> float:
    """A point value as a number; unset (None) and strings read as default."""
    return default if value is None or isinstance(value, str) else float(value)


def line_voltage(v: float, phases: int) -> float:
    """Line-to-line voltage for a line-to-neutral v: split phase (2) or three phase (3)."""
    return v * (2 if phases == 2 else SQRT3)


def inverter_103_fixed(*, a_sf: int, w_sf: int, dca_sf: int) -> dict[str, Value]:
    """Model 103 points that never change: scale factors and event flags."""
    return {
        "A_SF": a_sf,
        "V_SF": -1,
        "W_SF": w_sf,
        "Hz_SF": -2,
        "VA_SF": w_sf,
        "VAr_SF": w_sf,
        "PF_SF": -2,
        "WH_SF": 0,
        "DCA_SF": dca_sf,
        "DCV_SF": -1,
        "DCW_SF": w_sf,
        "Tmp_SF": -1,
        "Evt1": 0,
        "Evt2": 0,
    }


def inverter_103_ac(a_phase: float, phases: int, v: float) -> dict[str, Value]:
    """Model 103 currents and voltages: a_phase in each phase, v line to neutral."""
    v_ll = line_voltage(v, phases)
    return {
        "A": a_phase * phases,
        "AphA": a_phase,
        "AphB": a_phase,
        "AphC": a_phase if phases == 3 else None,
        "PPVphAB": v_ll,
        "PPVphBC": v_ll,
        "PPVphCA": v_ll,
        "PhVphA": v,
        "PhVphB": v,
        "PhVphC": v,
    }
