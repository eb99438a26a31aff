"""Map decoded SunSpec models onto the device-neutral `DeviceState` and `Capability`.

IEEE 1547-2018 models (7xx, 802) are preferred where a device has them; legacy models
(1xx, 2xx) are the fallback. Which models a kind needs on each poll is decided here, so a
poll reads only those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from math import fsum

from derms_edge.devices.sunspec.models import PointValue
from derms_edge.model import Capability, DeviceKind, DeviceState, OperatingState

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
    if kind == DeviceKind.METER:
        return _first(models, (*METER_MODELS, DER_MEASURE_AC))
    return _first(models, (DER_MEASURE_AC, *INVERTER_MODELS))


def soc_model(models: Iterable[int]) -> int | None:
    """The model that carries a battery's state of charge: 713, then 802, then 124."""
    return _first(models, (DER_STORAGE_CAPACITY, BATTERY, STORAGE))


def kind_of(models: Iterable[int]) -> DeviceKind | None:
    """The kind of device a chain of SunSpec models makes: a battery where a state of
    charge is (713, 802, 124), else an inverter where inverter measurements are (701,
    101-103, 111-113), else a meter (201-204, 211-214); None when it has none of them, so
    the gateway could read nothing of it."""
    models = tuple(models)
    if soc_model(models) is not None:
        return DeviceKind.BATTERY
    if _first(models, (DER_MEASURE_AC, *INVERTER_MODELS)) is not None:
        return DeviceKind.INVERTER
    if _first(models, METER_MODELS) is not None:
        return DeviceKind.METER
    return None


def poll_models(kind: DeviceKind, models: Iterable[int]) -> tuple[int, ...]:
    """The models read on every poll of a device of this kind."""
    models = tuple(models)
    wanted = [measurement_model(kind, models)]
    if kind == DeviceKind.BATTERY:
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
    return fsum(numbers) / len(numbers) if numbers else None  # statistics.fmean, 0.15 MB lighter


def _pick(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def power_factor(reported: PointValue, w: float | None, va: float | None) -> float | None:
    """The power factor as a fraction, -1..1, from a device's `PF` point.

    Legacy models (1xx, 2xx) state `PF` in percent and 7xx as a fraction, but real devices
    mix them up: SMA Sunny Boy, FIMER PVS, Veris E51 and AccuEnergy Acuvim meters send a
    fraction in the legacy models. So the scale is judged from the reading itself. Where
    `W` and `VA` give a measured |PF| (VA above zero), the reading (as a fraction or as a
    percent) nearer to it wins. Otherwise a reading within ±1 is a fraction (a percent PF
    under 1 % is no operating point; the percent form of unity is 100) and one within ±100
    a percent. Past ±100, or nothing reported and no `W` and `VA`, it is unknown. A device
    without `PF` but with `W` and `VA` gets |W|/VA, unsigned.
    """
    measured = min(abs(w) / va, 1.0) if w is not None and va is not None and va > 0 else None
    number = _num(reported)
    if number is None:
        return measured
    readings = [r for r in (number, number / 100.0) if abs(r) <= 1.0]
    if not readings:
        return None
    if measured is None:
        return readings[0]
    return min(readings, key=lambda r: abs(abs(r) - measured))


def _legacy_inverter(p: Mapping[str, PointValue]) -> DeviceState:
    st = p.get("St")
    w, va = _num(p.get("W")), _num(p.get("VA"))
    return DeviceState(
        w=w,
        var=_num(p.get("VAr")),
        va=va,
        pf=power_factor(p.get("PF"), w, va),
        v=_mean([p.get("PhVphA"), p.get("PhVphB"), p.get("PhVphC")]),
        hz=_num(p.get("Hz")),
        a=_num(p.get("A")),
        wh_exported=_num(p.get("WH")),
        state=_LEGACY_ST.get(st) if isinstance(st, int) else None,
    )


def _der_measure(p: Mapping[str, PointValue]) -> DeviceState:
    invst = p.get("InvSt")
    w, va = _num(p.get("W")), _num(p.get("VA"))
    return DeviceState(
        w=w,
        var=_num(p.get("Var")),
        va=va,
        pf=power_factor(p.get("PF"), w, va),
        v=_pick(_num(p.get("LNV")), _mean([p.get("VL1"), p.get("VL2"), p.get("VL3")])),
        hz=_num(p.get("Hz")),
        a=_num(p.get("A")),
        wh_exported=_num(p.get("TotWhInj")),
        wh_imported=_num(p.get("TotWhAbs")),
        state=_DER_INVST.get(invst) if isinstance(invst, int) else None,
    )


def _meter(p: Mapping[str, PointValue]) -> DeviceState:
    """A meter's W is positive for import; ours is positive for export, so it is negated."""
    w, var, va = _num(p.get("W")), _num(p.get("VAR")), _num(p.get("VA"))
    return DeviceState(
        w=None if w is None else -w,
        var=None if var is None else -var,
        va=va,
        pf=power_factor(p.get("PF"), w, va),
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


_LEGACY_INVERTER_POINTS = frozenset(
    {"St", "W", "VA", "VAr", "PF", "PhVphA", "PhVphB", "PhVphC", "Hz", "A", "WH"}
)
_DER_MEASURE_POINTS = frozenset(
    {"InvSt", "W", "VA", "Var", "PF", "LNV", "VL1", "VL2", "VL3", "Hz", "A"}
    | {"TotWhInj", "TotWhAbs"}
)
_METER_POINTS = frozenset(
    {"W", "VAR", "VA", "PF", "PhV", "PhVphA", "PhVphB", "PhVphC", "Hz", "A"}
    | {"TotWhExp", "TotWhImp"}
)
_STATE_POINTS: dict[int, frozenset[str]] = {
    DER_MEASURE_AC: _DER_MEASURE_POINTS,
    **dict.fromkeys(INVERTER_MODELS, _LEGACY_INVERTER_POINTS),
    **dict.fromkeys(METER_MODELS, _METER_POINTS),
    DER_STORAGE_CAPACITY: frozenset({"SoC"}),
    BATTERY: frozenset({"SoC", "ChaSt"}),
    STORAGE: frozenset({"ChaState", "ChaSt"}),
}


def state_points(model_id: int) -> frozenset[str]:
    """The points of a polled model that `to_state` reads: a poll decodes only these
    (a legacy inverter's model 103 has 45, of which a reading needs 11)."""
    return _STATE_POINTS[model_id]


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
    if kind != DeviceKind.BATTERY:
        return state
    operating = _charge_state(values) or state.state
    return replace(state, soc_pct=_soc(values), state=operating)


_NAMEPLATE: dict[str, tuple[tuple[int, str], ...]] = {
    "w_max": ((DER_CAPACITY, "WMax"), (SETTINGS, "WMax"), (NAMEPLATE, "WRtg")),
    "v_nom": ((DER_CAPACITY, "VNom"), (SETTINGS, "VRef")),
    "va_max": ((DER_CAPACITY, "VAMax"), (SETTINGS, "VAMax"), (NAMEPLATE, "VARtg")),
    "var_max_inj": ((DER_CAPACITY, "VarMaxInj"), (SETTINGS, "VArMaxQ1"), (NAMEPLATE, "VArRtgQ1")),
    "var_max_abs": ((DER_CAPACITY, "VarMaxAbs"), (SETTINGS, "VArMaxQ4"), (NAMEPLATE, "VArRtgQ4")),
    "wh_rtg": ((DER_STORAGE_CAPACITY, "WHRtg"), (BATTERY, "WHRtg"), (NAMEPLATE, "WHRtg")),
    "charge_w_max": (
        (DER_CAPACITY, "WChaRteMax"),
        (BATTERY, "WChaRteMax"),
        (STORAGE, "WChaMax"),
        (NAMEPLATE, "MaxChaRte"),
    ),
    "discharge_w_max": (
        (DER_CAPACITY, "WDisChaRteMax"),
        (BATTERY, "WDisChaRteMax"),
        (NAMEPLATE, "MaxDisChaRte"),
        (STORAGE, "WChaMax"),
    ),
}
"""Each nameplate value and the points it is read from, the first one a device has: the
IEEE 1547 models (702, 713, 802) before the legacy ones (121 settings, 120 nameplate, 124)."""
_SOC_MINIMUMS = ((BATTERY, "SoCMin"), (BATTERY, "SoCRsvMin"), (STORAGE, "MinRsvPct"))
"""The storage state of charge may not go below any of these, %: the highest holds."""
_SOC_MAXIMUMS = ((BATTERY, "SoCMax"), (BATTERY, "SocRsvMax"))
"""... nor above any of these: the lowest holds."""
_SOC_SCALE_FACTORS = (
    (DER_STORAGE_CAPACITY, "Pct_SF"),
    (BATTERY, "SoC_SF"),
    (STORAGE, "ChaState_SF"),
)
"""The scale factor of the SoC point of each model, in the order `soc_model` reads them."""


def to_capability(values: ModelValues, models: Sequence[int]) -> Capability:
    """Nameplate and limits, preferring 702/713/802 settings over 120/121/124."""

    def point(model_id: int, name: str) -> PointValue:
        return values.get(model_id, {}).get(name)

    def text(name: str) -> str | None:
        value = point(COMMON, name)
        return value if isinstance(value, str) and value else None

    nameplate = {
        field: _pick(*(_num(point(model_id, name)) for model_id, name in sources))
        for field, sources in _NAMEPLATE.items()
    }
    if nameplate["var_max_abs"] is not None:  # some devices state it negative
        nameplate["var_max_abs"] = abs(nameplate["var_max_abs"])
    minimums = [v for v in (_num(point(m, n)) for m, n in _SOC_MINIMUMS) if v is not None]
    maximums = [v for v in (_num(point(m, n)) for m, n in _SOC_MAXIMUMS) if v is not None]
    has_storage = any(values.get(m) for m in (DER_STORAGE_CAPACITY, BATTERY, STORAGE))
    soc_sf = next((point(m, sf) for m, sf in _SOC_SCALE_FACTORS if values.get(m)), None)
    return Capability(
        manufacturer=text("Mn"),
        model=text("Md"),
        serial_number=text("SN"),
        version=text("Vr"),
        w_max=nameplate["w_max"],
        v_nom=nameplate["v_nom"],
        va_max=nameplate["va_max"],
        var_max_inj=nameplate["var_max_inj"],
        var_max_abs=nameplate["var_max_abs"],
        wh_rtg=nameplate["wh_rtg"],
        charge_w_max=nameplate["charge_w_max"],
        discharge_w_max=nameplate["discharge_w_max"],
        soc_min_pct=max(minimums) if minimums else (0.0 if has_storage else None),
        soc_max_pct=min(maximums) if maximums else (100.0 if has_storage else None),
        # a scale factor outside SunSpec's -10..10 is garbage (10.0 ** 309 overflows)
        soc_step_pct=10.0**soc_sf if isinstance(soc_sf, int) and -10 <= soc_sf <= 10 else None,
        models=tuple(models),
    )
