"""Simulated SunSpec devices, one module per kind, and build_device to pick one for a spec."""

from hil.devices.base import DeviceState, Fault, PhysicsDevice, SimulatedDevice
from hil.devices.battery import BatteryInverter
from hil.devices.models import scale_factor
from hil.devices.pv_1547 import Pv1547Inverter
from hil.devices.pv_legacy import PvLegacyInverter
from hil.devices.replay import ReplayDevice
from hil.physics import SimClock
from hil.spec import BatterySpec, DeviceSpec, Pv1547Spec, PvLegacySpec

__all__ = [
    "BatteryInverter",
    "DeviceState",
    "Fault",
    "PhysicsDevice",
    "Pv1547Inverter",
    "PvLegacyInverter",
    "ReplayDevice",
    "SimulatedDevice",
    "build_device",
    "scale_factor",
]


def build_device(spec: DeviceSpec, clock: SimClock) -> SimulatedDevice:
    """The simulated device a spec describes."""
    if isinstance(spec, PvLegacySpec):
        return PvLegacyInverter(spec, clock)
    if isinstance(spec, Pv1547Spec):
        return Pv1547Inverter(spec, clock)
    if isinstance(spec, BatterySpec):
        return BatteryInverter(spec, clock)
    return ReplayDevice(spec, clock)
