"""Map decoded SunSpec models onto the device-neutral `DeviceState` and `Capability`.

IEEE 1547-2018 models (7xx, 802) are preferred where a device has them; legacy models
(1xx, 2xx) are the fallback. Which models a kind needs on each poll is decided here, so a
poll reads only those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from statistics import fmean

from derms_edge.config import DeviceKind
from derms_edge.devices.sunspec.models import PointValue
from derms_edge.model import Capability, DeviceState, OperatingState

ModelValues = Mapping[int, Mapping[str, PointValue]]
"""Decoded points of each model a device has, by model id."""

COMMON = 1
DER_MEASURE_AC = 701
DER_CAPACITY = 702
DER_STORAGE_CAPACITY = 713
BATTERY = 802
STORAGE = 124
NAMEPLATE = 120
SETTINGS = 121
INVERTER_MODELS = (103, 102, 101, 113, 112, 111)
"""Legacy inverter models, integer with scale factors first, then float."""
METER_MODELS = (203, 204, 202, 201, 213, 214, 212, 211)
"""Legacy meter models: wye and delta three-phase first, then split- and single-phase."""

_LEGACY_ST = {
    1: OperatingState.OFF,
    2: OperatingState.SLEEPING,
    3: OperatingState.STARTING,
    4: OperatingState.RUNNING,  # MPPT
    5: OperatingState.THROTTLED,
    6: OperatingState.SHUTTING_DOWN,
    7: OperatingState.FAULT,
    8: OperatingState.STANDBY,
}
_DER_INVST = {
    0: OperatingState.OFF,
    1: OperatingState.SLEEPING,
    2: OperatingState.STARTING,
    3: OperatingState.RUNNING,
    4: OperatingState.THROTTLED,
    5: OperatingState.SHUTTING_DOWN,
    6: OperatingState.FAULT,
    7: OperatingState.STANDBY,
}
_CHA_ST = {
    1: OperatingState.OFF,
    2: OperatingState.IDLE,  # EMPTY
    3: OperatingState.DISCHARGING,
    4: OperatingState.CHARGING,
    5: OperatingState.IDLE,  # FULL
    6: OperatingState.IDLE,  # HOLDING
    7: OperatingState.RUNNING,  # TESTING
}


def _first(models: Iterable[int], candidates: Sequence[int]) -> int | None:
    present = set(models)
    return next((model_id for model_id in candidates if model_id in present), None)


def measurement_model(kind: DeviceKind, models: Iterable[int]) -> int | None:
    """The model that carries AC measurements for this kind of device."""
    models = tuple(models)
    if kind == "meter":
        return _first(models, (*METER_MODELS, DER_MEASURE_AC))
    return _first(models, (DER_MEASURE_AC, *INVERTER_MODELS))


def soc_model(models: Iterable[int]) -> int | None:
    """The model that carries a battery's state of charge: 713, then 802, then 124."""
    return _first(models, (DER_STORAGE_CAPACITY, BATTERY, STORAGE))


def poll_models(kind: DeviceKind, models: Iterable[int]) -> tuple[int, ...]:
    """The models read on every poll of a device of this kind."""
    models = tuple(models)
    wanted = [measurement_model(kind, models)]
    if kind == "battery":
        wanted += [soc_model(models), _first(models, (BATTERY, STORAGE))]
    return tuple(dict.fromkeys(m for m in wanted if m is not None))


def nameplate_models(models: Iterable[int]) -> tuple[int, ...]:
    """The models read once at connect for nameplate, ratings and limits."""
    nameplate = (COMMON, NAMEPLATE, SETTINGS, DER_CAPACITY, DER_STORAGE_CAPACITY, BATTERY, STORAGE)
    return tuple(m for m in models if m in nameplate)


def _num(value: PointValue) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _mean(values: Iterable[PointValue]) -> float | None:
    numbers = [n for n in map(_num, values) if n is not None and n > 0]
    return fmean(numbers) if numbers else None


def _pick(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _pf_fraction(value: PointValue) -> float | None:
    """Legacy models state PF in percent; 7xx as a fraction."""
    number = _num(value)
    return None if number is None else number / 100.0


def _legacy_inverter(p: Mapping[str, PointValue]) -> DeviceState:
    st = p.get("St")
    return DeviceState(
        w=_num(p.get("W")),
        var=_num(p.get("VAr")),
        va=_num(p.get("VA")),
        pf=_pf_fraction(p.get("PF")),
        v=_mean([p.get("PhVphA"), p.get("PhVphB"), p.get("PhVphC")]),
        hz=_num(p.get("Hz")),
        a=_num(p.get("A")),
        wh_exported=_num(p.get("WH")),
        state=_LEGACY_ST.get(st) if isinstance(st, int) else None,
    )


def _der_measure(p: Mapping[str, PointValue]) -> DeviceState:
    invst = p.get("InvSt")
    return DeviceState(
        w=_num(p.get("W")),
        var=_num(p.get("Var")),
        va=_num(p.get("VA")),
        pf=_num(p.get("PF")),
        v=_pick(_num(p.get("LNV")), _mean([p.get("VL1"), p.get("VL2"), p.get("VL3")])),
        hz=_num(p.get("Hz")),
        a=_num(p.get("A")),
        wh_exported=_num(p.get("TotWhInj")),
        wh_imported=_num(p.get("TotWhAbs")),
        state=_DER_INVST.get(invst) if isinstance(invst, int) else None,
    )


def _meter(p: Mapping[str, PointValue]) -> DeviceState:
    """A meter's W is positive for import; ours is positive for export, so it is negated."""
    w, var = _num(p.get("W")), _num(p.get("VAR"))
    return DeviceState(
        w=None if w is None else -w,
        var=None if var is None else -var,
        va=_num(p.get("VA")),
        pf=_pf_fraction(p.get("PF")),
        v=_pick(_num(p.get("PhV")), _mean([p.get("PhVphA"), p.get("PhVphB"), p.get("PhVphC")])),
        hz=_num(p.get("Hz")),
        a=_num(p.get("A")),
        wh_exported=_num(p.get("TotWhExp")),
        wh_imported=_num(p.get("TotWhImp")),
        state=OperatingState.RUNNING,
    )


def _soc(values: ModelValues) -> float | None:
    if DER_STORAGE_CAPACITY in values:
        return _num(values[DER_STORAGE_CAPACITY].get("SoC"))
    if BATTERY in values:
        return _num(values[BATTERY].get("SoC"))
    if STORAGE in values:
        return _num(values[STORAGE].get("ChaState"))
    return None


def _charge_state(values: ModelValues) -> OperatingState | None:
    for model_id in (BATTERY, STORAGE):
        cha_st = values.get(model_id, {}).get("ChaSt")
        if isinstance(cha_st, int) and cha_st in _CHA_ST:
            return _CHA_ST[cha_st]
    return None


def to_state(kind: DeviceKind, values: ModelValues) -> DeviceState:
    """One device-neutral reading from the models polled for a device of this kind."""
    measured = measurement_model(kind, values)
    points = values.get(measured, {}) if measured is not None else {}
    if measured == DER_MEASURE_AC:
        state = _der_measure(points)
    elif measured in METER_MODELS:
        state = _meter(points)
    else:
        state = _legacy_inverter(points)
    if kind != "battery":
        return state
    operating = _charge_state(values) or state.state
    return replace(state, soc_pct=_soc(values), state=operating)


def _abs(value: float | None) -> float | None:
    return None if value is None else abs(value)


def to_capability(values: ModelValues, models: Sequence[int]) -> Capability:
    """Nameplate and limits, preferring 702/713/802 settings over 120/121/124."""
    common = values.get(COMMON, {})
    der = values.get(DER_CAPACITY, {})
    nameplate = values.get(NAMEPLATE, {})
    settings = values.get(SETTINGS, {})
    storage_capacity = values.get(DER_STORAGE_CAPACITY, {})
    battery = values.get(BATTERY, {})
    storage = values.get(STORAGE, {})

    def text(name: str) -> str | None:
        value = common.get(name)
        return value if isinstance(value, str) and value else None

    soc_minimums = [
        _num(battery.get("SoCMin")),
        _num(battery.get("SoCRsvMin")),
        _num(storage.get("MinRsvPct")),
    ]
    soc_maximums = [_num(battery.get("SoCMax")), _num(battery.get("SocRsvMax"))]
    has_storage = bool(storage_capacity or battery or storage)
    known_minimums = [v for v in soc_minimums if v is not None]
    known_maximums = [v for v in soc_maximums if v is not None]
    return Capability(
        manufacturer=text("Mn"),
        model=text("Md"),
        serial_number=text("SN"),
        version=text("Vr"),
        w_max=_pick(_num(der.get("WMax")), _num(settings.get("WMax")), _num(nameplate.get("WRtg"))),
        v_nom=_pick(_num(der.get("VNom")), _num(settings.get("VRef"))),
        va_max=_pick(
            _num(der.get("VAMax")), _num(settings.get("VAMax")), _num(nameplate.get("VARtg"))
        ),
        var_max_inj=_pick(
            _num(der.get("VarMaxInj")),
            _num(settings.get("VArMaxQ1")),
            _num(nameplate.get("VArRtgQ1")),
        ),
        var_max_abs=_abs(
            _pick(
                _num(der.get("VarMaxAbs")),
                _num(settings.get("VArMaxQ4")),
                _num(nameplate.get("VArRtgQ4")),
            )
        ),
        wh_rtg=_pick(
            _num(storage_capacity.get("WHRtg")),
            _num(battery.get("WHRtg")),
            _num(nameplate.get("WHRtg")),
        ),
        charge_w_max=_pick(
            _num(der.get("WChaRteMax")),
            _num(battery.get("WChaRteMax")),
            _num(storage.get("WChaMax")),
            _num(nameplate.get("MaxChaRte")),
        ),
        discharge_w_max=_pick(
            _num(der.get("WDisChaRteMax")),
            _num(battery.get("WDisChaRteMax")),
            _num(nameplate.get("MaxDisChaRte")),
            _num(storage.get("WChaMax")),
        ),
        soc_min_pct=max(known_minimums) if known_minimums else (0.0 if has_storage else None),
        soc_max_pct=min(known_maximums) if known_maximums else (100.0 if has_storage else None),
        models=tuple(models),
    )
