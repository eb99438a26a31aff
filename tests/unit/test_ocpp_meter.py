"""Station reports (MeterValues, TransactionEvent, Start/StopTransaction,
StatusNotification; OCPP 2.0.1 and 1.6) folded into the gateway's reading of an EVSE.
Every example is checked against the ocpp library's schema before it is used, so the
shapes are ones a station may send."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.messages import Call, _validate_payload

from derms_edge.devices.ocpp.capability import OcppVersion
from derms_edge.devices.ocpp.meter import (
    Charging,
    EvseReading,
    StationState,
    device_state,
    fold,
    start_transaction,
)
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import DeviceState, OperatingState

V16, V201 = OcppVersion.V16, OcppVersion.V201
EMPTY = StationState()


def sent(action: str, payload: dict[str, Any], version: OcppVersion) -> dict[str, Any]:
    """A station's request, checked against the library's schema for it."""
    _validate_payload(Call("1", action, payload), version.value)
    return payload


def sv16(
    measurand: str, value: str, unit: str, phase: str | None = None, **more: Any
) -> dict[str, Any]:
    """A 1.6 sampledValue as the station in maulanahidayatullah/ocpp-node's log.js sends
    them (context Sample.Periodic, format Raw, location Body, a unit on each)."""
    sample = {
        "value": value,
        "context": "Sample.Periodic",
        "format": "Raw",
        "measurand": measurand,
        "location": "Body",
        "unit": unit,
        **more,
    }
    return sample if phase is None else {**sample, "phase": phase}


def meter_values_16(*samples: dict[str, Any], at: str = "2025-02-21T07:26:31Z") -> dict[str, Any]:
    return sent(
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": 12,
            "meterValue": [{"timestamp": at, "sampledValue": list(samples)}],
        },
        V16,
    )


CHARGING_16 = meter_values_16(
    sv16("Voltage", "225.10", "V", "L1-N"),
    sv16("Voltage", "229.90", "V", "L2-N"),
    sv16("Voltage", "231.00", "V", "L3-N"),
    sv16("Current.Import", "15.90", "A", "L1-N"),
    sv16("Current.Import", "16.00", "A", "L2-N"),
    sv16("Current.Import", "16.10", "A", "L3-N"),
    sv16("Power.Active.Import", "11.02", "kW"),
    sv16("Energy.Active.Import.Register", "12", "kWh"),
    sv16("Temperature", "41", "Celsius"),  # not the gateway's: ignored
)


def test_meter_values_16_into_a_charging_evse() -> None:
    state = fold(EMPTY, V16, "MeterValues", CHARGING_16)
    reading = device_state(state, 1)
    assert reading.w == pytest.approx(-11_020.0)  # a charging car: negative
    assert reading.a == pytest.approx(48.0)  # the phases' sum
    assert reading.v == pytest.approx((225.1 + 229.9 + 231.0) / 3)
    assert reading.wh_imported == pytest.approx(12_000.0)  # kWh into Wh
    assert reading.state is OperatingState.CHARGING  # from the power: no status yet
    assert reading.hz is None and reading.wh_exported is None  # not sent: unknown, not 0


def test_meter_values_201_with_multipliers() -> None:
    # OCPP 2.0.1: the value is a number; unitOfMeasure {unit, multiplier} scales it by
    # 10^multiplier (part 2, 2.1.55 UnitOfMeasureType)
    payload = sent(
        "MeterValues",
        {
            "evseId": 1,
            "meterValue": [
                {
                    "timestamp": "2026-12-04T07:00:00Z",
                    "sampledValue": [
                        {
                            "value": 2.1141356,
                            "measurand": "Energy.Active.Import.Register",
                            "unitOfMeasure": {"unit": "kWh", "multiplier": 3},
                        },
                        {
                            "value": 7.4,
                            "measurand": "Power.Active.Import",
                            "unitOfMeasure": {"unit": "kW"},
                        },
                        {
                            "value": 32,
                            "measurand": "Current.Import",
                            "phase": "L1",
                            "unitOfMeasure": {"unit": "A"},
                        },
                        {
                            "value": 400.0,
                            "measurand": "Voltage",
                            "phase": "L1-L2",
                            "unitOfMeasure": {"unit": "V"},
                        },
                        {
                            "value": 4999,
                            "measurand": "Frequency",
                            "unitOfMeasure": {"unit": "Hz", "multiplier": -2},
                        },
                        {
                            "value": 63,
                            "measurand": "SoC",
                            "location": "EV",
                            "unitOfMeasure": {"unit": "Percent"},
                        },
                    ],
                }
            ],
        },
        V201,
    )
    reading = device_state(fold(EMPTY, V201, "MeterValues", payload), 1)
    assert reading.wh_imported == pytest.approx(2_114_135.6)  # kWh x 10^3 x 10^3
    assert reading.w == pytest.approx(-7_400.0)
    assert reading.a == pytest.approx(32.0)  # one phase only: a car on L1
    assert reading.v == pytest.approx(400.0 / math.sqrt(3))  # line-to-line to L-N
    assert reading.hz == pytest.approx(49.99)
    assert reading.soc_pct is None  # the EV's SoC is not the charger's


def test_odd_values_stay_unknown_never_zero() -> None:
    before = fold(EMPTY, V16, "MeterValues", CHARGING_16)
    odd = meter_values_16(
        sv16("Power.Active.Import", "NaN", "W"),
        sv16("Current.Import", "16.0", "A", "L1"),
        sv16("Current.Import", "", "A", "L2"),  # reported, unreadable: the sum is unknown
        sv16("Current.Import", "16.0", "A", "L3"),
        sv16("Voltage", "230", "A"),  # a unit that does not fit the measurand
        sv16("Energy.Active.Import.Register", "inf", "Wh"),
        at="2025-02-21T07:27:31Z",
    )
    reading = device_state(fold(before, V16, "MeterValues", odd), 1)
    assert (reading.w, reading.a, reading.v, reading.wh_imported) == (None, None, None, None)
    assert reading.state is OperatingState.IDLE  # no power known: not charging


def test_a_missing_phase_is_not_counted_a_neutral_is_ignored() -> None:
    payload = meter_values_16(
        sv16("Current.Import", "10.0", "A", "L1"),
        sv16("Current.Import", "10.5", "A", "L2"),
        sv16("Current.Import", "0.4", "A", "N"),
    )
    assert device_state(fold(EMPTY, V16, "MeterValues", payload), 1).a == pytest.approx(20.5)


def test_measurands_without_unit_or_measurand_take_the_defaults() -> None:
    # 1.6: no measurand means Energy.Active.Import.Register, no unit Wh (section 7.31)
    payload = meter_values_16(
        {"value": "1234.5"},
        {"value": "6.0", "measurand": "Current.Import"},  # no unit: A, not Wh
    )
    reading = device_state(fold(EMPTY, V16, "MeterValues", payload), 1)
    assert (reading.wh_imported, reading.a) == (1234.5, 6.0)


def test_a_reading_keeps_what_the_next_message_does_not_carry() -> None:
    state = fold(EMPTY, V16, "MeterValues", CHARGING_16)
    energy = meter_values_16(
        sv16("Energy.Active.Import.Register", "12.5", "kWh"), at="2025-02-21T07:27:31Z"
    )
    reading = device_state(fold(state, V16, "MeterValues", energy), 1)
    assert reading.wh_imported == pytest.approx(12_500.0)
    assert reading.w == pytest.approx(-11_020.0)


def test_an_offline_backlog_does_not_overwrite_the_present() -> None:
    state = fold(EMPTY, V16, "MeterValues", CHARGING_16)
    old = meter_values_16(
        sv16("Energy.Active.Import.Register", "3", "kWh"), at="2025-02-20T07:00:00Z"
    )
    after = fold(state, V16, "MeterValues", old)
    assert device_state(after, 1).wh_imported == pytest.approx(12_000.0)


def test_a_fold_is_pure() -> None:
    state = fold(EMPTY, V16, "MeterValues", CHARGING_16)
    fold(
        state,
        V16,
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Faulted"},
    )
    assert state.evse(1).charging is None and EMPTY.evses == {}
    assert fold(state, V16, "Heartbeat", {}) is state  # says nothing about readings


def test_export_is_positive() -> None:
    # a car feeding the grid (V2G): Power.Active.Export
    payload = meter_values_16(
        sv16("Power.Active.Export", "3.3", "kW"), sv16("Power.Active.Import", "0", "kW")
    )
    assert device_state(fold(EMPTY, V16, "MeterValues", payload), 1).w == pytest.approx(3300.0)


@pytest.mark.parametrize(
    ("status", "operating"),
    [
        ("Charging", OperatingState.CHARGING),
        ("SuspendedEVSE", OperatingState.THROTTLED),  # the station holds it (a limit of 0)
        ("SuspendedEV", OperatingState.IDLE),
        ("Preparing", OperatingState.IDLE),
        ("Available", OperatingState.IDLE),
        ("Faulted", OperatingState.FAULT),
        ("Unavailable", OperatingState.OFF),
    ],
)
def test_status_notification_16(status: str, operating: OperatingState) -> None:
    payload = sent(
        "StatusNotification", {"connectorId": 2, "errorCode": "NoError", "status": status}, V16
    )
    assert device_state(fold(EMPTY, V16, "StatusNotification", payload), 2).state is operating


def test_16_transaction_start_and_stop() -> None:
    start = sent(
        "StartTransaction",
        {
            "connectorId": 1,
            "idTag": "3A5AA876",
            "meterStart": 2_114_135,
            "timestamp": "2025-08-21T07:03:33Z",
        },
        V16,
    )
    state = start_transaction(EMPTY, start, transaction_id=12)
    assert state.evse(1).transaction_id == "12"
    assert state.evse(1).wh_imported == 2_114_135.0
    state = fold(
        state,
        V16,
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
    )
    state = fold(state, V16, "MeterValues", CHARGING_16)
    stop = sent(
        "StopTransaction",
        {
            "transactionId": 12,
            "meterStop": 2_133_854,
            "timestamp": "2025-08-21T13:34:41Z",
            "reason": "EVDisconnected",
            "transactionData": [
                {
                    "timestamp": "2025-08-21T13:34:41Z",
                    "sampledValue": [sv16("Power.Active.Import", "0", "W")],
                }
            ],
        },
        V16,
    )
    ended = fold(state, V16, "StopTransaction", stop)
    reading = device_state(ended, 1)
    assert reading.wh_imported == 2_133_854.0
    assert (reading.w, reading.a) == (None, None)  # unknown until sampled again
    assert reading.state is not OperatingState.CHARGING
    assert ended.evse(1).transaction_id is None
    assert fold(ended, V16, "StopTransaction", stop) == ended  # unknown transaction: no-op


# KEBA P30 x-series, OCPP 2.0.1 firmware 2.9.2, as logged in m-hegele/notes
# (dev/keba-invalid-meter-start-stop.md): the Started event carries one energy value without
# measurand or unit (the default, Wh); the Ended event lists plain and signed values out of
# time order, and its signed values are in kWh without saying so.
KEBA_STARTED = {
    "eventType": "Started",
    "timestamp": "2025-08-21T07:03:33.373+00:00",
    "triggerReason": "Authorized",
    "seqNo": 0,
    "transactionInfo": {
        "transactionId": "28881628250821070333100549825004",
        "chargingState": "SuspendedEV",
    },
    "meterValue": [
        {
            "sampledValue": [{"value": 2114135.6, "context": "Transaction.Begin"}],
            "timestamp": "2025-08-21T07:03:36.481+00:00",
        }
    ],
    "offline": False,
    "evse": {"id": 1, "connectorId": 1},
    "idToken": {"idToken": "3A5AA876", "type": "ISO14443"},
}
_SIGNED = {
    "signingMethod": "ECC256",
    "encodingMethod": "OCMF",
    "signedMeterData": "T0NNRnx7fQ==",
    "publicKey": "eyJVSyI6IiJ9",
}
KEBA_ENDED = {
    "eventType": "Ended",
    "timestamp": "2025-08-21T13:34:41.364+00:00",
    "triggerReason": "Authorized",
    "seqNo": 1,
    "transactionInfo": {
        "transactionId": "28881628250821070333100549825004",
        "chargingState": "Idle",
        "stoppedReason": "EVDisconnected",
    },
    "meterValue": [
        {
            "sampledValue": [
                {
                    "value": 2114135.6,
                    "context": "Transaction.Begin",
                    "measurand": "Energy.Active.Import.Register",
                    "location": "Outlet",
                    "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
                }
            ],
            "timestamp": "2025-08-21T07:03:36.481+00:00",
        },
        {
            "sampledValue": [
                {
                    "value": 2133854.3,
                    "context": "Transaction.End",
                    "measurand": "Energy.Active.Import.Register",
                    "location": "Outlet",
                    "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
                }
            ],
            "timestamp": "2025-08-21T13:34:41.364+00:00",
        },
        {
            "sampledValue": [
                {"value": 2114.1356, "context": "Transaction.Begin", "signedMeterValue": _SIGNED}
            ],
            "timestamp": "2025-08-21T07:03:36.000+00:00",
        },
        {
            "sampledValue": [
                {"value": 2133.8543, "context": "Transaction.End", "signedMeterValue": _SIGNED}
            ],
            "timestamp": "2025-08-21T13:34:41.364+00:00",
        },
    ],
    "offline": False,
    "evse": {"id": 1, "connectorId": 1},
    "idToken": {"idToken": "3A5AA876", "type": "ISO14443"},
}


def test_keba_p30_transaction_201() -> None:
    started = fold(EMPTY, V201, "TransactionEvent", sent("TransactionEvent", KEBA_STARTED, V201))
    evse = started.evse(1)
    assert evse.transaction_id == "28881628250821070333100549825004"
    assert evse.charging is Charging.SUSPENDED_EV
    assert evse.wh_imported == pytest.approx(2_114_135.6)
    assert evse.timestamp == datetime(2025, 8, 21, 7, 3, 36, 481_000, tzinfo=UTC)
    charging = {
        "eventType": "Updated",
        "timestamp": "2025-08-21T07:10:00Z",
        "triggerReason": "ChargingStateChanged",
        "seqNo": 1,
        # no evse after the first event: found by the transaction
        "transactionInfo": {
            "transactionId": "28881628250821070333100549825004",
            "chargingState": "Charging",
        },
        "meterValue": [
            {
                "timestamp": "2025-08-21T07:10:00Z",
                "sampledValue": [
                    {
                        "value": 11.0,
                        "measurand": "Power.Active.Import",
                        "unitOfMeasure": {"unit": "kW"},
                    }
                ],
            }
        ],
    }
    during = fold(started, V201, "TransactionEvent", sent("TransactionEvent", charging, V201))
    assert device_state(during, 1).state is OperatingState.CHARGING
    assert device_state(during, 1).w == pytest.approx(-11_000.0)
    # the library hands the handler snake_case keys: the same fold
    ended_payload = camel_to_snake_case(sent("TransactionEvent", KEBA_ENDED, V201))
    ended = fold(during, V201, "TransactionEvent", ended_payload)
    reading = device_state(ended, 1)
    assert reading.wh_imported == pytest.approx(2_133_854.3)  # not the unit-less kWh
    assert reading.state is OperatingState.IDLE
    assert reading.w is None
    assert ended.evse(1).transaction_id is None


def test_a_201_status_notification_does_not_hide_a_charging_state() -> None:
    occupied = sent(
        "StatusNotification",
        {
            "timestamp": "2025-08-21T07:10:01Z",
            "connectorStatus": "Occupied",
            "evseId": 1,
            "connectorId": 1,
        },
        V201,
    )
    charging = StationState({1: EvseReading(charging=Charging.CHARGING)})
    assert (
        fold(charging, V201, "StatusNotification", occupied).evse(1).charging is Charging.CHARGING
    )
    assert fold(EMPTY, V201, "StatusNotification", occupied).evse(1).charging is Charging.CONNECTED
    faulted = {**occupied, "connectorStatus": "Faulted"}
    assert (
        device_state(fold(charging, V201, "StatusNotification", faulted), 1).state
        is OperatingState.FAULT
    )


def test_the_main_meter_is_evse_0() -> None:
    payload = sent(
        "MeterValues",
        {
            "connectorId": 0,
            "meterValue": [
                {
                    "timestamp": "2025-02-21T07:26:31Z",
                    "sampledValue": [sv16("Energy.Active.Import.Register", "99", "kWh")],
                }
            ],
        },
        V16,
    )
    state = fold(EMPTY, V16, "MeterValues", payload)
    assert device_state(state, 0).wh_imported == pytest.approx(99_000.0)
    assert device_state(state, 1) == DeviceState(state=OperatingState.IDLE)


@pytest.mark.parametrize(
    ("version", "action", "payload", "message"),
    [
        (V16, "MeterValues", {"connectorId": 1, "meterValue": {}}, "meterValue is not a list"),
        (V16, "MeterValues", {"meterValue": []}, "connector_id None is not an evse id"),
        (V201, "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": "t"}]}, "sampledValue"),
        (
            V201,
            "MeterValues",
            {"evseId": 1, "meterValue": [{"timestamp": "yesterday", "sampledValue": []}]},
            "timestamp 'yesterday' is not ISO 8601",
        ),
        (
            V201,
            "TransactionEvent",
            {"eventType": "Updated", "transactionInfo": {}},
            "transactionId is missing",
        ),
        (
            V201,
            "TransactionEvent",
            {"eventType": "Updated", "transactionInfo": {"transactionId": "x"}},
            "transaction x on no known evse",
        ),
    ],
)
def test_malformed_reports_are_named(
    version: OcppVersion, action: str, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(DeviceProtocolError, match=message):
        fold(EMPTY, version, action, payload)


def test_the_keba_examples_are_valid_camel_case() -> None:
    assert snake_to_camel_case(camel_to_snake_case(KEBA_ENDED)) == KEBA_ENDED


def test_entries_out_of_time_order_are_applied_in_time_order() -> None:
    payload = sent(
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [
                {
                    "timestamp": "2025-02-21T07:30:00Z",
                    "sampledValue": [sv16("Energy.Active.Import.Register", "2", "kWh")],
                },
                {
                    "timestamp": "2025-02-21T07:29:00Z",
                    "sampledValue": [
                        sv16("Energy.Active.Import.Register", "1", "kWh"),
                        sv16("Power.Active.Import", "5", "kW"),
                    ],
                },
            ],
        },
        V16,
    )
    reading = device_state(fold(EMPTY, V16, "MeterValues", payload), 1)
    assert (reading.wh_imported, reading.w) == (2000.0, -5000.0)
