"""What a station says about itself (BootNotification, GetVariables on SmartChargingCtrlr,
GetConfiguration) into the gateway's Capability and the station's smart-charging limits."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from ocpp.messages import Call, CallResult, _validate_payload

from derms_edge.devices.ocpp.capability import (
    DEFAULT_MAX_PERIODS,
    DEFAULT_MAX_STACK_LEVEL,
    DEFAULT_PHASES,
    DEFAULT_RATE_UNITS,
    OcppVersion,
    RateUnit,
    SmartCharging,
    configuration_request,
    evse_capability,
    nameplate,
    rated_w_201,
    smart_charging_16,
    smart_charging_201,
    variables_request,
)
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import Capability
from tests.unit.test_ocpp_profiles import on_the_wire

V16, V201 = OcppVersion.V16, OcppVersion.V201


def station_says(action: str, payload: dict[str, Any], version: OcppVersion) -> dict[str, Any]:
    """A request from the station, checked against the schema (so the example is real)."""
    _validate_payload(Call("1", action, payload), version.value)
    return payload


def station_answers(action: str, payload: dict[str, Any], version: OcppVersion) -> dict[str, Any]:
    _validate_payload(CallResult("1", payload, action=action), version.value)
    return payload


def test_boot_notification_201() -> None:
    # OCPP 2.0.1 part 4 (JSON), BootNotificationRequest example, with serial and firmware
    boot = station_says(
        "BootNotification",
        {
            "reason": "PowerUp",
            "chargingStation": {
                "model": "SingleSocketCharger",
                "vendorName": "VendorX",
                "serialNumber": "SN-0042",
                "firmwareVersion": "1.2.3",
            },
        },
        V201,
    )
    assert nameplate(V201, boot) == Capability(
        manufacturer="VendorX",
        model="SingleSocketCharger",
        serial_number="SN-0042",
        version="1.2.3",
    )


def test_boot_notification_16() -> None:
    # the OCPP 1.6 example of the ocpp library's Call docstring (ocpp/messages.py), and a
    # station that gives only the charge box serial
    boot = station_says(
        "BootNotification",
        {
            "chargePointVendor": "VendorX",
            "chargePointModel": "SingleSocketCharger",
            "chargeBoxSerialNumber": "CB-7",
            "firmwareVersion": "2.9.2",
        },
        V16,
    )
    plate = nameplate(V16, boot)
    assert (plate.manufacturer, plate.model, plate.serial_number, plate.version) == (
        "VendorX",
        "SingleSocketCharger",
        "CB-7",
        "2.9.2",
    )
    # the library hands a handler snake_case keys: the same result
    assert (
        nameplate(V16, {"charge_point_vendor": "VendorX", "charge_point_model": "M"}).model == "M"
    )


@pytest.mark.parametrize(
    ("version", "boot"),
    [
        (V201, {"reason": "PowerUp"}),
        (V201, {"chargingStation": {"model": "X", "vendorName": "  "}}),
        (V16, {"chargePointModel": "X"}),
    ],
)
def test_a_boot_without_vendor_or_model_is_refused(
    version: OcppVersion, boot: dict[str, Any]
) -> None:
    with pytest.raises(DeviceProtocolError, match="BootNotification"):
        nameplate(version, boot)


def test_the_requests_read_at_connect_are_valid() -> None:
    request = on_the_wire(variables_request(evse_id=2), V201)
    asked = [
        (d["component"]["name"], d["variable"]["name"], d.get("attributeType"))
        for d in request["getVariableData"]
    ]
    assert asked == [
        ("SmartChargingCtrlr", "RateUnit", None),
        ("SmartChargingCtrlr", "PeriodsPerSchedule", None),
        ("SmartChargingCtrlr", "ProfileStackLevel", None),
        ("SmartChargingCtrlr", "Enabled", None),
        ("ChargingStation", "SupplyPhases", None),
        ("EVSE", "SupplyPhases", None),
        ("EVSE", "Power", "MaxSet"),
    ]
    assert request["getVariableData"][-1]["component"]["evse"] == {"id": 2}
    assert on_the_wire(configuration_request(), V16)["key"][0] == (
        "ChargingScheduleAllowedChargingRateUnit"
    )


def _result(variable: str, value: str, status: str = "Accepted", **more: Any) -> dict[str, Any]:
    return {
        "attributeStatus": status,
        "attributeValue": value,
        "component": {"name": more.pop("component", "SmartChargingCtrlr")},
        "variable": {"name": variable},
        **more,
    }


def test_smart_charging_ctrlr_201() -> None:
    # shaped as OCPP 2.0.1 part 2 B06 GetVariablesResponse; values as a station that takes
    # A and W, 24 periods, stack levels 0..8
    answer = station_answers(
        "GetVariables",
        {
            "getVariableResult": [
                _result("RateUnit", "A,W"),
                _result("PeriodsPerSchedule", "24"),
                _result("ProfileStackLevel", "8", attributeType="Actual"),
                _result("Enabled", "true"),
            ]
        },
        V201,
    )
    charging = smart_charging_201(answer["getVariableResult"])
    assert charging == SmartCharging(
        rate_units=frozenset({RateUnit.A, RateUnit.W}), max_periods=24, max_stack_level=8
    )


def test_the_supply_and_the_rating_201() -> None:
    # OCPP 2.0.1 part 2 appendix: SupplyPhases (ChargingStation, EVSE), EVSE.Power MaxSet, W
    results = station_answers(
        "GetVariables",
        {
            "getVariableResult": [
                _result("SupplyPhases", "3", component="ChargingStation"),
                _result("SupplyPhases", "1", component="EVSE"),
                _result("Power", "7400", component="EVSE", attributeType="MaxSet"),
                _result("Power", "3100.5", component="EVSE"),  # Actual: what it draws now
            ]
        },
        V201,
    )["getVariableResult"]
    charging = smart_charging_201(results)
    assert charging.phases == 1  # the EVSE's own supply wins over the station's
    assert rated_w_201(results) == 7400.0
    cap = evse_capability(Capability(), charging, w_max=rated_w_201(results))
    assert (cap.w_max, cap.max_a) == (7400.0, 32.1)  # 7400 / 230 = 32.17, rounded down
    assert smart_charging_201([_result("SupplyPhases", "0", component="EVSE")]).phases == 3
    for odd in ("NaN", "-1", "lots", "0"):
        assert (
            rated_w_201([_result("Power", odd, component="EVSE", attributeType="MaxSet")]) is None
        )
    assert rated_w_201([]) is None


def test_variables_a_station_does_not_answer_keep_the_defaults() -> None:
    answer = station_answers(
        "GetVariables",
        {
            "getVariableResult": [
                {
                    "attributeStatus": "UnknownVariable",
                    "component": {"name": "SmartChargingCtrlr"},
                    "variable": {"name": "RateUnit"},
                },
                _result("PeriodsPerSchedule", "99", status="Rejected"),
                _result("ProfileStackLevel", "5", component="OtherCtrlr"),
                _result("ProfileStackLevel", "7", attributeType="MaxSet"),
                _result("Enabled", "false"),
            ]
        },
        V201,
    )
    charging = smart_charging_201(answer["getVariableResult"])
    assert charging.rate_units == DEFAULT_RATE_UNITS == frozenset({RateUnit.A})
    assert charging.max_periods == DEFAULT_MAX_PERIODS == 1
    assert charging.max_stack_level == DEFAULT_MAX_STACK_LEVEL == 0
    assert charging.phases == DEFAULT_PHASES == 3
    assert not charging.supported


def test_get_configuration_16() -> None:
    # OCPP 1.6 section 9.4 keys; "Current,Power" as the standard spells the list
    answer = station_answers(
        "GetConfiguration",
        {
            "configurationKey": [
                {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "10"},
                {
                    "key": "ChargingScheduleAllowedChargingRateUnit",
                    "readonly": True,
                    "value": "Current,Power",
                },
                {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "1024"},
                {
                    "key": "SupportedFeatureProfiles",
                    "readonly": True,
                    "value": "Core,FirmwareManagement,SmartCharging",
                },
            ],
            "unknownKey": [],
        },
        V16,
    )
    charging = smart_charging_16(answer["configurationKey"])
    assert charging == SmartCharging(
        rate_units=frozenset({RateUnit.A, RateUnit.W}), max_periods=1024, max_stack_level=10
    )


def test_a_16_station_without_smart_charging_or_power() -> None:
    keys = [
        {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
        {"key": "SupportedFeatureProfiles", "readonly": True, "value": "Core, RemoteTrigger"},
        {"key": "ChargeProfileMaxStackLevel", "readonly": True},  # no value at all
    ]
    base = SmartCharging(phases=1, v_nom=120.0, max_stack_level=3)
    charging = smart_charging_16(keys, base)
    assert charging.rate_units == frozenset({RateUnit.A})
    assert not charging.supported
    assert (charging.phases, charging.v_nom, charging.max_stack_level) == (1, 120.0, 3)


def test_a_number_that_is_not_one_is_named() -> None:
    keys = [{"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "lots"}]
    with pytest.raises(DeviceProtocolError, match="ChargingScheduleMaxPeriods: 'lots'"):
        smart_charging_16(keys)
    with pytest.raises(DeviceProtocolError, match=r"SmartChargingCtrlr\.ProfileStackLevel"):
        smart_charging_201([_result("ProfileStackLevel", "8.5")])


def test_smart_charging_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="phases: 4"):
        SmartCharging(phases=4)
    with pytest.raises(ValueError, match="rate_units"):
        SmartCharging(rate_units=frozenset())
    with pytest.raises(ValueError, match="v_nom"):
        SmartCharging(v_nom=0.0)
    with pytest.raises(ValueError, match="max_periods 0"):
        SmartCharging(max_periods=0)


def test_the_evse_capability() -> None:
    plate = Capability(manufacturer="VendorX", model="M", serial_number="S", version="1")
    three = SmartCharging()
    cap = evse_capability(plate, three, max_a=16.0)
    assert (cap.max_a, cap.w_max, cap.phases, cap.v_nom) == (16.0, 16.0 * 3 * 230.0, 3, 230.0)
    assert (cap.manufacturer, cap.model, cap.serial_number, cap.version) == (
        "VendorX",
        "M",
        "S",
        "1",
    )
    # 11.03 kW on 3 x 230 V: 15.99 A, rounded down (a rating is never overstated)
    assert evse_capability(plate, three, w_max=11_030.0).max_a == 15.9
    single = evse_capability(plate, replace(three, phases=1), max_a=32.0)
    assert single.w_max == 32.0 * 230.0
    unknown = evse_capability(plate, three)
    assert (unknown.max_a, unknown.w_max) == (None, None)  # never a guessed rating
