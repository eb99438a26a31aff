"""The gateway's ``nodes:`` for the HIL rig's OPC UA devices, as a site would configure them
(see configs/residential.yaml and configs/hil-demo.yaml)."""

from __future__ import annotations

from typing import Any

from hil.opcua.devices import OpcUaBattery, OpcUaCharger

EVSE_NS = OpcUaCharger.namespace_uri
BATTERY_NS = OpcUaBattery.namespace_uri
CHARGER_MEASURED = ("w", "v", "a", "hz", "soc_pct", "wh_imported", "state")
"""The points of `charger_nodes` read with every reading (the rest: at connect, or written)."""


def charger_nodes(device_id: str) -> dict[str, Any]:
    """A rig charger: power drawn is negative at the gateway, energy in kWh, Mode-3 states."""

    def node(name: str) -> str:
        return f"nsu={EVSE_NS};s={device_id}.{name}"

    return {
        "w": {"node": node("ActualPower"), "scale": -1},
        "v": node("Voltage"),
        "a": node("Current"),
        "hz": node("Frequency"),
        "soc_pct": node("EvSoC"),
        "wh_imported": {"node": node("EnergyDelivered"), "unit": "kWh"},
        "state": {
            "node": node("Mode3State"),
            "states": {"0": "idle", "1": "idle", "2": "charging"},
        },
        "max_a": node("MaxCurrent"),
        "max_a_setpoint": node("MaxCurrentSetpoint"),
    }


def battery_nodes(device_id: str) -> dict[str, Any]:
    """A rig battery: its BMS counts charging positive, the gateway discharging."""

    def node(name: str) -> str:
        return f"nsu={BATTERY_NS};s={device_id}.{name}"

    return {
        "w": {"node": node("ActivePower"), "scale": -1},
        "v": node("Voltage"),
        "hz": node("Frequency"),
        "soc_pct": node("SoC"),
        "state": {
            "node": node("OperatingState"),
            "states": {"Idle": "idle", "Charging": "charging", "Discharging": "discharging"},
        },
        "soc_min_pct": node("SoCMin"),
        "soc_max_pct": node("SoCMax"),
        "wh_rtg": node("CapacityWh"),
        "charge_w_max": node("MaxChargePower"),
        "discharge_w_max": node("MaxDischargePower"),
        "storage_w_setpoint": {"node": node("PowerSetpoint"), "scale": -1},
    }
