"""What an OCPP charging station says about itself, as the gateway's words (sans-I/O).

BootNotification gives the nameplate (vendor, model, serial, firmware); the smart-charging
limits come from GetVariables on ``SmartChargingCtrlr`` (2.0.1) or GetConfiguration keys
(1.6). Where the station does not say, the defaults below hold, each the value every
station that charges smartly can take; ``max_a`` stays None (unknown) unless the station or
the configuration gives it, because a guessed rating would turn a curtailment in % into
the wrong current.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ocpp.charge_point import camel_to_snake_case  # type: ignore[import-untyped]
from ocpp.v16 import call as v16_call  # type: ignore[import-untyped]
from ocpp.v201 import call as v201_call  # type: ignore[import-untyped]

from derms_edge.errors import DeviceProtocolError
from derms_edge.model import NOMINAL_V_LN, Capability


class OcppVersion(StrEnum):
    """The OCPP versions the gateway speaks (the ``ocpp`` library's version strings)."""

    V16 = "1.6"
    V201 = "2.0.1"


class RateUnit(StrEnum):
    """The unit of a charging schedule's limits (chargingRateUnit)."""

    A = "A"
    """Current per phase, A."""
    W = "W"
    """Power, W."""


DEFAULT_PHASES = 3
"""Phases assumed when the station does not say (OCPP: numberPhases absent means 3)."""
DEFAULT_RATE_UNITS = frozenset({RateUnit.A})
"""Rate units assumed when the station does not say: A, which every smart-charging station
takes (IEC 61851 signals a current)."""
DEFAULT_MAX_PERIODS = 1
"""Periods per schedule assumed when the station does not say: the gateway sends one."""
DEFAULT_MAX_STACK_LEVEL = 0
"""Highest stack level assumed when the station does not say: 0 is always in range."""

SMART_CHARGING_CTRLR = "SmartChargingCtrlr"
VARIABLES_201 = ("RateUnit", "PeriodsPerSchedule", "ProfileStackLevel", "Enabled")
"""SmartChargingCtrlr variables read at connect (OCPP 2.0.1 part 2, appendix 3)."""
KEYS_16 = (
    "ChargingScheduleAllowedChargingRateUnit",
    "ChargingScheduleMaxPeriods",
    "ChargeProfileMaxStackLevel",
    "SupportedFeatureProfiles",
)
"""Configuration keys read at connect (OCPP 1.6 section 9.4, Smart Charging profile)."""


@dataclass(frozen=True, slots=True)
class SmartCharging:
    """What a station accepts in a charging profile."""

    rate_units: frozenset[RateUnit] = DEFAULT_RATE_UNITS
    phases: int = DEFAULT_PHASES
    v_nom: float = NOMINAL_V_LN
    """Nominal line-to-neutral voltage, V: the base of W <-> A conversions."""
    max_periods: int = DEFAULT_MAX_PERIODS
    max_stack_level: int = DEFAULT_MAX_STACK_LEVEL
    supported: bool = True
    """False when the station says it has no smart charging (1.6 SupportedFeatureProfiles,
    2.0.1 SmartChargingCtrlr.Enabled false)."""
    station_max_rejected: bool = False
    """The station refused a station-wide profile before: use TxDefaultProfile."""

    def __post_init__(self) -> None:
        if not self.rate_units:
            raise ValueError("SmartCharging.rate_units: at least one of A, W")
        if self.phases not in (1, 2, 3):
            raise ValueError(f"SmartCharging.phases: {self.phases} is not 1, 2 or 3")
        if not (math.isfinite(self.v_nom) and self.v_nom > 0):
            raise ValueError(f"SmartCharging.v_nom: {self.v_nom} V is not a positive voltage")
        if self.max_periods < 1 or self.max_stack_level < 0:
            raise ValueError(
                f"SmartCharging: max_periods {self.max_periods} must be >= 1, "
                f"max_stack_level {self.max_stack_level} >= 0"
            )


def _snake(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload with snake_case keys, whether it came raw (camelCase) or from the library."""
    result: dict[str, Any] = camel_to_snake_case(dict(payload))
    return result


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def nameplate(version: OcppVersion, boot: Mapping[str, Any]) -> Capability:
    """The nameplate from a BootNotification request (2.0.1 ``chargingStation``, 1.6
    ``chargePoint*`` fields); raises DeviceProtocolError if vendor or model is missing."""
    p = _snake(boot)
    if version is OcppVersion.V201:
        station = p.get("charging_station")
        if not isinstance(station, Mapping):
            raise DeviceProtocolError("BootNotification: chargingStation is missing")
        vendor, model = _text(station.get("vendor_name")), _text(station.get("model"))
        serial, firmware = (
            _text(station.get("serial_number")),
            _text(station.get("firmware_version")),
        )
    else:
        vendor, model = _text(p.get("charge_point_vendor")), _text(p.get("charge_point_model"))
        serial = _text(p.get("charge_point_serial_number")) or _text(
            p.get("charge_box_serial_number")
        )
        firmware = _text(p.get("firmware_version"))
    if vendor is None or model is None:
        raise DeviceProtocolError(f"BootNotification ({version}): vendor or model is missing")
    return Capability(manufacturer=vendor, model=model, serial_number=serial, version=firmware)


def variables_request(evse_id: int = 1) -> Any:
    """The 2.0.1 GetVariables request read at connect: the SmartChargingCtrlr variables,
    the phases the station and the EVSE are supplied with (SupplyPhases) and the EVSE's
    highest power (Power, MaxSet attribute)."""
    evse = {"name": "EVSE", "evse": {"id": evse_id}}
    return v201_call.GetVariables(
        get_variable_data=[
            *(
                {"component": {"name": SMART_CHARGING_CTRLR}, "variable": {"name": name}}
                for name in VARIABLES_201
            ),
            {"component": {"name": "ChargingStation"}, "variable": {"name": "SupplyPhases"}},
            {"component": evse, "variable": {"name": "SupplyPhases"}},
            {"component": evse, "variable": {"name": "Power"}, "attribute_type": "MaxSet"},
        ]
    )


def configuration_request() -> Any:
    """The 1.6 GetConfiguration request for the smart-charging keys read at connect."""
    return v16_call.GetConfiguration(key=list(KEYS_16))


def _int(value: str | None, where: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise DeviceProtocolError(f"{where}: {value!r} is not an integer") from None


def _units(value: str | None) -> frozenset[RateUnit] | None:
    """A rate unit list: 2.0.1 "A,W", 1.6 "Current,Power" (comma separated, any case)."""
    if value is None:
        return None
    names = {"a": RateUnit.A, "current": RateUnit.A, "w": RateUnit.W, "power": RateUnit.W}
    units = frozenset(names[n] for n in (s.strip().lower() for s in value.split(",")) if n in names)
    return units or None


def _accepted(results: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """The values of a GetVariables answer's Accepted results, by (component, variable,
    attribute type; Actual when not given)."""
    found: dict[tuple[str, str, str], str] = {}
    for raw in results:
        r = _snake(raw)
        component = str((r.get("component") or {}).get("name"))
        variable = str((r.get("variable") or {}).get("name"))
        value = r.get("attribute_value")
        if r.get("attribute_status") == "Accepted" and isinstance(value, str):
            found[(component, variable, r.get("attribute_type") or "Actual")] = value
    return found


def smart_charging_201(
    results: Iterable[Mapping[str, Any]], base: SmartCharging | None = None
) -> SmartCharging:
    """Apply a GetVariables answer's ``getVariableResult`` entries: the Accepted Actual
    values of SmartChargingCtrlr, and SupplyPhases (the EVSE's, else the station's; 0, a
    DC supply or an unknown one, is ignored); the rest keeps ``base`` (else the defaults)."""
    found = _accepted(results)

    def ctrlr(name: str) -> str | None:
        return found.get((SMART_CHARGING_CTRLR, name, "Actual"))

    where = f"GetVariables {SMART_CHARGING_CTRLR}"
    enabled = ctrlr("Enabled")
    supply = found.get(("EVSE", "SupplyPhases", "Actual")) or found.get(
        ("ChargingStation", "SupplyPhases", "Actual")
    )
    phases = _int(supply, "GetVariables SupplyPhases")
    charging = _merge(
        base or SmartCharging(),
        units=_units(ctrlr("RateUnit")),
        periods=_int(ctrlr("PeriodsPerSchedule"), f"{where}.PeriodsPerSchedule"),
        stack=_int(ctrlr("ProfileStackLevel"), f"{where}.ProfileStackLevel"),
        supported=None if enabled is None else enabled.strip().lower() == "true",
    )
    return replace(charging, phases=phases) if phases in (1, 2, 3) else charging


def rated_w_201(results: Iterable[Mapping[str, Any]]) -> float | None:
    """The EVSE's highest power from a GetVariables answer (EVSE.Power, MaxSet), W; None
    when the station does not say or says something that is not a positive number."""
    value = _accepted(results).get(("EVSE", "Power", "MaxSet"))
    try:
        w = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return w if math.isfinite(w) and w > 0 else None


def smart_charging_16(
    keys: Iterable[Mapping[str, Any]], base: SmartCharging | None = None
) -> SmartCharging:
    """Apply a GetConfiguration answer's ``configurationKey`` entries ({key, value})."""
    found = {str(k.get("key")): k.get("value") for k in (_snake(raw) for raw in keys)}
    text = {k: v for k, v in found.items() if isinstance(v, str)}
    profiles = text.get("SupportedFeatureProfiles")
    return _merge(
        base or SmartCharging(),
        units=_units(text.get("ChargingScheduleAllowedChargingRateUnit")),
        periods=_int(text.get("ChargingScheduleMaxPeriods"), "ChargingScheduleMaxPeriods"),
        stack=_int(text.get("ChargeProfileMaxStackLevel"), "ChargeProfileMaxStackLevel"),
        supported=None
        if profiles is None
        else "smartcharging" in {p.strip().lower() for p in profiles.split(",")},
    )


def _merge(
    base: SmartCharging,
    *,
    units: frozenset[RateUnit] | None,
    periods: int | None,
    stack: int | None,
    supported: bool | None,
) -> SmartCharging:
    return replace(
        base,
        rate_units=units if units is not None else base.rate_units,
        max_periods=periods if periods is not None and periods >= 1 else base.max_periods,
        max_stack_level=stack if stack is not None and stack >= 0 else base.max_stack_level,
        supported=supported if supported is not None else base.supported,
    )


def evse_capability(
    plate: Capability,
    charging: SmartCharging,
    *,
    max_a: float | None = None,
    w_max: float | None = None,
) -> Capability:
    """The gateway's Capability of one EVSE: the nameplate, the phases and voltage the
    profiles use, and the rating. Given ``max_a`` (A per phase, from config or the station),
    ``w_max`` defaults to phases x V x max_a; given only ``w_max``, ``max_a`` is derived,
    rounded down to 0.1 A; given neither, both stay unknown."""
    if max_a is None and w_max is not None:
        max_a = math.floor(w_max / (charging.phases * charging.v_nom) * 10) / 10
    if w_max is None and max_a is not None:
        w_max = charging.phases * charging.v_nom * max_a
    return replace(plate, w_max=w_max, v_nom=charging.v_nom, max_a=max_a, phases=charging.phases)
