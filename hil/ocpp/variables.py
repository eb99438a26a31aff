"""What the simulated station tells a CSMS about itself: 2.0.1 device-model variables
(SmartChargingCtrlr, the EVSE's nameplate) and 1.6 configuration keys (pure)."""

from __future__ import annotations

from hil.ocpp.station import OcppStation


def _rate_unit(station: OcppStation) -> str:
    return ",".join(station.spec.rate_units)


def _variables(station: OcppStation) -> dict[tuple[str, str, str], str]:
    """(component, variable, attribute type) -> value."""
    spec = station.spec
    max_w = spec.max_a * spec.grid.v_nom * spec.phases
    return {
        ("SmartChargingCtrlr", "Enabled", "Actual"): "true",
        ("SmartChargingCtrlr", "Available", "Actual"): "true",
        ("SmartChargingCtrlr", "RateUnit", "Actual"): _rate_unit(station),
        ("SmartChargingCtrlr", "PeriodsPerSchedule", "Actual"): str(spec.max_periods),
        ("SmartChargingCtrlr", "ProfileStackLevel", "Actual"): str(spec.max_stack_level),
        ("SmartChargingCtrlr", "Entries", "Actual"): str(len(station.store.profiles)),
        ("SmartChargingCtrlr", "LimitChangeSignificance", "Actual"): "0.1",
        ("EVSE", "Power", "MaxSet"): f"{max_w:.1f}",
        ("EVSE", "Power", "Actual"): f"{station.reading().w:.1f}",
        ("EVSE", "SupplyPhases", "Actual"): str(spec.phases),
    }


def smart_charging_variable(
    station: OcppStation, component: str, variable: str, attribute: str
) -> tuple[str, str | None]:
    """A GetVariables answer: (attributeStatus, value or None)."""
    known = _variables(station)
    if (component, variable, attribute) in known:
        return "Accepted", known[(component, variable, attribute)]
    if not any(c == component for c, _, _ in known):
        return "UnknownComponent", None
    if not any((c, v) == (component, variable) for c, v, _ in known):
        return "UnknownVariable", None
    return "NotSupportedAttributeType", None


def configuration_16(station: OcppStation) -> dict[str, str]:
    """1.6 GetConfiguration keys (all read-only here)."""
    spec = station.spec
    return {
        "ChargingScheduleAllowedChargingRateUnit": ",".join(
            {"A": "Current", "W": "Power"}[u] for u in spec.rate_units
        ),
        "ChargingScheduleMaxPeriods": str(spec.max_periods),
        "ChargeProfileMaxStackLevel": str(spec.max_stack_level),
        "MaxChargingProfilesInstalled": str(3 * (spec.max_stack_level + 1)),
        "MeterValueSampleInterval": str(round(spec.meter_interval_s)),
        "NumberOfConnectors": "1",
    }
