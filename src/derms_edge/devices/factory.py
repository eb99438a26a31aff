"""Build a device's driver and coordinator from its configuration."""

from __future__ import annotations

from collections.abc import Callable

from derms_edge.config import SunSpecDevice
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.model import Capability


def build_coordinator(
    device: SunSpecDevice,
    links: LinkPool,
    on_capability: Callable[[str, Capability], None] | None = None,
) -> DeviceCoordinator:
    """The coordinator of one configured device, on a link shared with its neighbours."""
    if device.serial is not None:
        link = links.serial(device.serial, device.timeout_s)
    else:
        assert device.host is not None  # the config allows host or serial, exactly one
        link = links.tcp(device.host, device.port, device.timeout_s)
    driver = SunSpecDriver(link.unit(device.unit_id), device.kind, device.id, device.base_address)
    return DeviceCoordinator(
        device.id,
        driver,
        poll_interval_s=device.poll_interval_s,
        stale_after_s=device.stale_after,
        backoff_max_s=device.backoff_max_s,
        on_capability=on_capability,
    )
