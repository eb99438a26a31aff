"""Hardware-in-the-loop rig: simulated SunSpec Modbus and OPC UA devices for testing the gateway."""

from hil.devices import DeviceState, Fault, PhysicsDevice, SimulatedDevice
from hil.rig import Rig, RigThread
from hil.spec import RigSpec, load_rig_spec

__all__ = [
    "DeviceState",
    "Fault",
    "PhysicsDevice",
    "Rig",
    "RigSpec",
    "RigThread",
    "SimulatedDevice",
    "load_rig_spec",
]
