"""OPC UA values to SI readings and setpoints to node values: conversions, types, states."""

from __future__ import annotations

import math

import pytest

from derms_edge.config import NodePoint
from derms_edge.devices.opcua.values import (
    Conversion,
    derive_state,
    map_state,
    same_value,
    state_text,
    to_node,
    to_si,
)
from derms_edge.model import OperatingState


def factor(point: str, **spec: object) -> float:
    return NodePoint.model_validate({"node": "ns=2;s=x", **spec}).factor(point)


def test_node_values_become_si_with_scale_and_unit() -> None:
    assert to_si(7000.0, factor("w", scale=-1)) == -7000.0
    assert to_si(12.5, factor("wh_imported", unit="kWh")) == 12500.0
    assert to_si(3, factor("w", unit="kW", scale=-1)) == -3000.0
    assert to_si(True, 1.0) == 1.0
    assert to_si(None, 1.0) is None
    assert to_si("12", 1.0) is None
    assert to_si(math.nan, 1.0) is None
    assert to_si(math.inf, 1.0) is None


def test_setpoints_become_node_values_the_other_way_round() -> None:
    # a battery's PowerSetpoint counts charging positive: discharge 3 kW is -3000
    assert to_node(3000.0, factor("storage_w_setpoint", scale=-1), "Int32") == -3000
    assert to_node(2500.0, factor("storage_w_setpoint", unit="kW"), "Double") == 2.5
    assert to_node(16.0, factor("max_a_setpoint"), "Float") == 16.0
    assert isinstance(to_node(16.0, 1.0, "Float"), float)
    assert isinstance(to_node(16.0, 1.0, "UInt16"), int)


@pytest.mark.parametrize(
    ("si", "expected"),
    [(2.5, 3), (-2.5, -3), (2.4999, 2), (0.5, 1), (-0.49, 0), (1234.5, 1235)],
)
def test_integers_round_half_away_from_zero(si: float, expected: int) -> None:
    assert to_node(si, 1.0, "Int32") == expected


@pytest.mark.parametrize(
    ("type_name", "low", "high"),
    [
        ("SByte", -128, 127),
        ("Byte", 0, 255),
        ("Int16", -32768, 32767),
        ("UInt16", 0, 65535),
        ("Int32", -(2**31), 2**31 - 1),
        ("UInt32", 0, 2**32 - 1),
    ],
)
def test_integer_ranges_are_refused_before_sending(type_name: str, low: int, high: int) -> None:
    assert to_node(low, 1.0, type_name) == low
    assert to_node(high, 1.0, type_name) == high
    with pytest.raises(ValueError, match=f"outside the {type_name} range {low}..{high}"):
        to_node(high + 1, 1.0, type_name)
    with pytest.raises(ValueError, match=f"outside the {type_name} range"):
        to_node(low - 1, 1.0, type_name)


def test_a_negative_value_does_not_fit_an_unsigned_node() -> None:
    with pytest.raises(ValueError, match=r"-3000 is outside the UInt16 range 0\.\.65535"):
        to_node(3000.0, -1.0, "UInt16")


def test_floats_are_checked_for_their_range_and_finiteness() -> None:
    assert to_node(1e38, 1.0, "Float") == 1e38
    with pytest.raises(ValueError, match="outside the Float range"):
        to_node(1e39, 1.0, "Float")
    assert to_node(1e39, 1.0, "Double") == 1e39
    with pytest.raises(ValueError, match="not a finite number"):
        to_node(math.inf, 1.0, "Double")


def test_a_node_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="a String node does not take a number"):
        to_node(1.0, 1.0, "String")
    with pytest.raises(ValueError, match="a Boolean node does not take a number"):
        to_node(1.0, 1.0, "Boolean")


def test_read_back_compares_as_the_data_type_resolves() -> None:
    assert same_value(16, 16, "UInt16")
    assert not same_value(16, 17, "UInt16")
    assert same_value(16.1, 16.100000381469727, "Float")  # 16.1 as float32
    assert not same_value(16.1, 16.100000381469727, "Double")
    assert same_value(0.0, 0.0, "Double")
    assert not same_value(1, True, "Byte")
    assert not same_value(1, None, "Byte")
    assert not same_value(1, "1", "Byte")


def test_state_values_as_text() -> None:
    assert state_text(2) == "2"
    assert state_text(2.0) == "2"
    assert state_text(2.5) == "2.5"
    assert state_text(True) == "true"
    assert state_text(False) == "false"
    assert state_text("Charging") == "Charging"


def test_states_mapping_by_text_then_ignoring_case() -> None:
    states = {"0": "idle", "2": "charging", "Fault": "fault", "true": "charging"}
    assert map_state(2, states) is OperatingState.CHARGING
    assert map_state(2.0, states) is OperatingState.CHARGING
    assert map_state(0, states) is OperatingState.IDLE
    assert map_state("FAULT", states) is OperatingState.FAULT
    assert map_state(True, states) is OperatingState.CHARGING
    assert map_state(7, states) is OperatingState.UNKNOWN
    assert map_state(None, states) is None


def test_without_a_mapping_only_state_names_are_states() -> None:
    assert map_state("Charging", None) is OperatingState.CHARGING
    assert map_state("Shutting down", None) is OperatingState.SHUTTING_DOWN
    assert map_state("standby", None) is OperatingState.STANDBY
    assert map_state("Mode C2", None) is None
    assert map_state(3, None) is None


def test_charger_state_from_power_or_current() -> None:
    assert derive_state("evse", -7000.0, None, None) is OperatingState.CHARGING
    assert derive_state("evse", -50.0, None, None) is OperatingState.IDLE
    assert derive_state("evse", None, 18.0, 230.0) is OperatingState.CHARGING
    assert derive_state("evse", None, 0.2, 230.0) is OperatingState.IDLE
    assert derive_state("evse", None, None, None) is OperatingState.IDLE


def test_battery_state_from_power() -> None:
    assert derive_state("battery", -3000.0, None, None) is OperatingState.CHARGING
    assert derive_state("battery", 3000.0, None, None) is OperatingState.DISCHARGING
    assert derive_state("battery", 10.0, None, None) is OperatingState.IDLE
    assert derive_state("battery", None, None, None) is None
    assert derive_state("inverter", 3000.0, None, None) is None


def test_a_charger_reading_reports_total_current_and_consumption_negative() -> None:
    conversion = Conversion(
        kind="evse",
        factors={"w": -1.0, "v": 1.0, "a": 1.0, "wh_imported": 1000.0, "soc_pct": 1.0},
        phases=3,
    )
    state = conversion.reading({"w": 7000.0, "v": 231.0, "a": 10.0, "wh_imported": 12.5})
    assert state.w == -7000.0
    assert state.a == 30.0
    assert state.wh_imported == 12500.0
    assert state.soc_pct is None  # mapped, but no value (Bad status)
    assert state.var is None  # not mapped
    assert state.state is OperatingState.CHARGING


def test_a_state_node_wins_over_the_derived_state() -> None:
    conversion = Conversion(
        kind="evse", factors={"w": -1.0, "state": 1.0}, states={"0": "idle", "2": "charging"}
    )
    assert conversion.reading({"w": 7000.0, "state": 0}).state is OperatingState.IDLE
    assert conversion.reading({"w": 0.0, "state": 2}).state is OperatingState.CHARGING
    assert conversion.reading({"w": 7000.0, "state": None}).state is OperatingState.CHARGING


def test_a_battery_state_node_as_text() -> None:
    conversion = Conversion(kind="battery", factors={"w": -1.0, "state": 1.0})
    assert conversion.reading({"w": 0.0, "state": "Discharging"}).state is (
        OperatingState.DISCHARGING
    )
    assert conversion.reading({"w": 2000.0, "state": "Running?"}).state is (OperatingState.CHARGING)


@pytest.mark.parametrize("type_name", ["Byte", "Int64", "Double"])
def test_a_tiny_factor_is_out_of_range_not_a_crash(type_name: str) -> None:
    """Found by tests/fuzz: 1.8e8 W over a factor of 1e-300 is infinite, which no integer
    rounding takes (OverflowError before this was checked)."""
    with pytest.raises(ValueError, match=f"outside the {type_name} range"):
        to_node(179769314.0, 1e-300, type_name)
