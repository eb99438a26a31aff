"""discover --opcua without a server: guessing points from browse names, rendering the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from derms_edge.config import OpcUaDevice, OpcUaSecurity, parse_config
from derms_edge.devices.opcua.skeleton import Variable, guess, listing, render, skeletons

EVSE = "urn:derms-edge:hil:evse"
BATTERY = "urn:derms-edge:hil:battery"


def var(
    uri: str, device: str, name: str, data_type: str = "Double", *, rw: bool = False
) -> Variable:
    return Variable(f"nsu={uri};s={device}.{name}", (device, name), data_type, True, rw)


CHARGER = [
    var(EVSE, "ev2", "ActualPower"),
    var(EVSE, "ev2", "Voltage"),
    var(EVSE, "ev2", "Current"),
    var(EVSE, "ev2", "Frequency"),
    var(EVSE, "ev2", "EnergyDelivered"),
    var(EVSE, "ev2", "EvSoC"),
    var(EVSE, "ev2", "PlugState", "Boolean"),
    var(EVSE, "ev2", "Mode3State", "UInt16"),
    var(EVSE, "ev2", "Phases", "Byte"),
    var(EVSE, "ev2", "MaxCurrent", "Float"),
    var(EVSE, "ev2", "MaxCurrentSetpoint", "Float", rw=True),
]
STORAGE = [
    var(BATTERY, "bat1", "ActivePower"),
    var(BATTERY, "bat1", "SoC"),
    var(BATTERY, "bat1", "SoCMin"),
    var(BATTERY, "bat1", "SoCMax"),
    var(BATTERY, "bat1", "CapacityWh", "UInt32"),
    var(BATTERY, "bat1", "MaxChargePower"),
    var(BATTERY, "bat1", "MaxDischargePower"),
    var(BATTERY, "bat1", "OperatingState", "String"),
    var(BATTERY, "bat1", "PowerSetpoint", "Int32", rw=True),
]


@pytest.mark.parametrize(
    ("name", "writable", "point"),
    [
        ("ActualPower", False, "w"),
        ("ActivePower", False, "w"),
        ("Power", False, "w"),
        ("ReactivePower", False, "var"),
        ("ApparentPower", False, "va"),
        ("PowerFactor", False, "pf"),
        ("Voltage", False, "v"),
        ("Current", False, "a"),
        ("Frequency", False, "hz"),
        ("SoC", False, "soc_pct"),
        ("StateOfCharge", False, "soc_pct"),
        ("EnergyDelivered", False, "wh_imported"),
        ("EnergyExported", False, "wh_exported"),
        ("Mode3State", False, "state"),
        ("OperatingState", False, "state"),
        ("PlugState", False, "state"),
        ("MaxCurrent", False, "max_a"),
        ("SoCMin", False, "soc_min_pct"),
        ("SoCMax", False, "soc_max_pct"),
        ("CapacityWh", False, "wh_rtg"),
        ("MaxChargePower", False, "charge_w_max"),
        ("MaxDischargePower", False, "discharge_w_max"),
        ("RatedPower", False, "w_max"),
        ("MaxCurrentSetpoint", True, "max_a_setpoint"),
        ("ChargingCurrentLimit", True, "max_a_setpoint"),
        ("PowerSetpoint", True, "storage_w_setpoint"),
        ("WMaxLimPct", True, "max_w_pct_setpoint"),
        ("ReactivePowerSetpoint", True, "var_setpoint"),
        ("Phases", False, None),
        ("SerialNumber", False, None),
    ],
)
def test_points_are_guessed_from_browse_names(name: str, writable: bool, point: str | None) -> None:
    guessed = guess(var(EVSE, "d", name, rw=writable))
    assert (guessed[0] if guessed else None) == point


def test_a_setpoint_name_needs_write_access() -> None:
    assert guess(var(EVSE, "d", "MaxCurrentSetpoint", rw=False)) is None
    assert guess(var(EVSE, "d", "MaxCurrent", rw=True)) == ("max_a", 2)


def test_the_best_match_gets_the_point_and_the_rest_are_left_over() -> None:
    (charger,) = skeletons(CHARGER)
    assert charger.device_id == "ev2"
    assert charger.kind == "evse"
    assert charger.points["state"].path[-1] == "Mode3State"  # a better name than PlugState
    assert [v.path[-1] for v in charger.unmatched] == ["PlugState", "Phases"]
    assert list(charger.points) == [
        "w", "v", "hz", "a", "soc_pct", "wh_imported", "state", "max_a", "max_a_setpoint",
    ]  # fmt: skip


def test_objects_are_devices_and_their_kind_is_guessed() -> None:
    charger, battery = skeletons(CHARGER + STORAGE)
    assert (charger.device_id, charger.kind) == ("ev2", "evse")
    assert (battery.device_id, battery.kind) == ("bat1", "battery")
    assert set(battery.points) == {
        "w", "soc_pct", "soc_min_pct", "soc_max_pct", "wh_rtg", "charge_w_max",
        "discharge_w_max", "state", "storage_w_setpoint",
    }  # fmt: skip
    assert battery.unmatched == []


def test_variables_right_under_objects_belong_to_the_fallback_device() -> None:
    loose = Variable("nsu=urn:x;i=7", ("Power",), "Double")
    (device,) = skeletons([loose], "meter 1")
    assert device.device_id == "meter-1"
    assert device.kind == "meter"


def test_the_listing_has_one_aligned_line_per_variable() -> None:
    lines = listing(CHARGER[:2] + CHARGER[-1:])
    assert lines[0].split() == [
        "nsu=urn:derms-edge:hil:evse;s=ev2.ActualPower", "ev2/ActualPower", "Double", "r",
    ]  # fmt: skip
    assert lines[2].split()[-2:] == ["Float", "rw"]
    assert len({line.index("ev2/") for line in lines}) == 1
    assert listing([]) == []


def test_the_skeleton_is_a_valid_configuration(tmp_path: Path) -> None:
    endpoint = "opc.tcp://127.0.0.1:4841/derms-edge/hil/ev2"
    security = OpcUaSecurity(
        policy="Basic256Sha256",
        certificate=tmp_path / "client-cert.der",
        private_key=tmp_path / "client-key.pem",
    )
    text = render(endpoint, skeletons(CHARGER + STORAGE), security=security, username="gw")
    data = yaml.safe_load(text)
    for device in data["devices"]:
        device["password"] = "secret"
    config = parse_config({"gateway": {"id": "gw1"}, **data})
    charger, battery = config.devices
    assert isinstance(charger, OpcUaDevice)
    assert isinstance(battery, OpcUaDevice)
    assert charger.endpoint == endpoint
    assert charger.security.certificate == tmp_path / "client-cert.der"
    assert charger.username == "gw"
    assert charger.nodes["max_a_setpoint"].node == f"nsu={EVSE};s=ev2.MaxCurrentSetpoint"
    assert battery.nodes["storage_w_setpoint"].node == f"nsu={BATTERY};s=bat1.PowerSetpoint"
    assert '# ev2/PlugState: "nsu=urn:derms-edge:hil:evse;s=ev2.PlugState"' in text
    assert "states:" in text  # a numeric state node: its values need mapping
    assert "scale: -1" in text  # the sign warning


def test_a_device_with_nothing_recognised_says_so() -> None:
    text = render("opc.tcp://h:4840", skeletons([var(EVSE, "x", "SerialNumber", "String")]))
    assert "no variable looked like a point" in text
    assert "# x/SerialNumber:" in text
