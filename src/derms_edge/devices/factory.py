"""Build a device's driver and coordinator from its configuration."""

from __future__ import annotations

from collections.abc import Callable

from derms_edge.config import AnyDevice, OpcUaDevice, ProfileDevice
from derms_edge.devices.coordinator import DeviceCoordinator, DeviceDriver
from derms_edge.devices.modbus import LinkPool
from derms_edge.devices.profile import ProfileDriver
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.errors import ControlRefused
from derms_edge.model import Capability, SetpointName


def build_coordinator(
    device: AnyDevice,
    links: LinkPool,
    on_capability: Callable[[str, Capability], None] | None = None,
    *,
    on_refused: Callable[[str, SetpointName, ControlRefused], None] | None = None,
    keepalive_s: float | None = None,
    revert_s: float = 0.0,
) -> DeviceCoordinator:
    """The coordinator of one configured device, on a link shared with its neighbours.

    ``revert_s`` goes into the devices' revert timers (0: not used). ``keepalive_s`` is how
    often setpoints in force are kept alive (None: never). A register profile's charger is
    kept alive at least every ``refresh_s / 2`` whatever it is: its limit expires by itself.
    An OPC UA device has its own session and needs no link; asyncua is imported only here,
    when the configuration has one.
    """
    driver: DeviceDriver
    if isinstance(device, OpcUaDevice):
        from derms_edge.devices.opcua.driver import OpcUaDriver

        driver = OpcUaDriver(device)
        return _coordinator(device, driver, on_capability, on_refused, keepalive_s, take_over=True)
    if device.serial is not None:
        link = links.serial(device.serial, device.timeout_s)
    else:
        assert device.host is not None  # the config allows host or serial, exactly one
        link = links.tcp(device.host, device.port, device.timeout_s)
    transport = link.unit(device.unit_id)
    if isinstance(device, ProfileDevice):
        driver = ProfileDriver(transport, device.profile, device.id)
        half_refresh_s = device.profile.refresh_s / 2
        keepalive_s = half_refresh_s if keepalive_s is None else min(keepalive_s, half_refresh_s)
    else:
        driver = SunSpecDriver(
            transport, device.kind, device.id, device.base_address, revert_s=revert_s
        )
    return _coordinator(
        device,
        driver,
        on_capability,
        on_refused,
        keepalive_s,
        hold_when_idle=isinstance(device, ProfileDevice),
    )


def _coordinator(
    device: AnyDevice,
    driver: DeviceDriver,
    on_capability: Callable[[str, Capability], None] | None,
    on_refused: Callable[[str, SetpointName, ControlRefused], None] | None,
    keepalive_s: float | None,
    *,
    hold_when_idle: bool = False,
    take_over: bool = False,
) -> DeviceCoordinator:
    return DeviceCoordinator(
        device.id,
        driver,
        poll_interval_s=device.poll_interval_s,
        stale_after_s=device.stale_after,
        backoff_max_s=device.backoff_max,
        on_capability=on_capability,
        on_refused=on_refused,
        keepalive_s=keepalive_s,
        hold_when_idle=hold_when_idle,
        take_over=take_over,
    )
