"""Simulated SunSpec devices, one module per kind, and build_device to pick one for a spec."""

from collections.abc import Mapping

from hil.devices.base import DeviceState, Fault, PhysicsDevice, SimulatedDevice
from hil.devices.battery import BatteryInverter
from hil.devices.evse import EvCharger, EvseState
from hil.devices.meter import Meter, PowerSource
from hil.devices.models import scale_factor
from hil.devices.pv_1547 import Pv1547Inverter
from hil.devices.pv_legacy import PvLegacyInverter
from hil.devices.replay import ReplayDevice
from hil.physics import SimClock
from hil.spec import BatterySpec, EvseSpec, MeterSpec, ModbusSpec, Pv1547Spec, PvLegacySpec

__all__ = [
    "BatteryInverter",
    "DeviceState",
    "EvCharger",
    "EvseState",
    "Fault",
    "Meter",
    "PhysicsDevice",
    "PowerSource",
    "Pv1547Inverter",
    "PvLegacyInverter",
    "ReplayDevice",
    "SimulatedDevice",
    "build_device",
    "scale_factor",
]


def build_device(
    spec: ModbusSpec,
    clock: SimClock,
    built: Mapping[str, SimulatedDevice | PowerSource] | None = None,
) -> SimulatedDevice:
    """The simulated Modbus device a spec describes; a meter measures devices already
    `built`."""
    if isinstance(spec, PvLegacySpec):
        return PvLegacyInverter(spec, clock)
    if isinstance(spec, Pv1547Spec):
        return Pv1547Inverter(spec, clock)
    if isinstance(spec, BatterySpec):
        return BatteryInverter(spec, clock)
    if isinstance(spec, EvseSpec):
        return EvCharger(spec, clock)
    if isinstance(spec, MeterSpec):
        return Meter(spec, clock, built or {})
    return ReplayDevice(spec, clock)
