"""What the control core sees of every device now: its configuration joined with its
coordinator's latest reading, quality and capability."""

from __future__ import annotations

from collections.abc import Mapping

from derms_edge.config import (
    AnyDevice,
    Config,
    OcppDevice,
    OpcUaDevice,
    ProfileDevice,
    StorageSettings,
)
from derms_edge.control import DeviceView
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.model import Capability, DeviceKind


class DeviceViews:
    """Calling it gives every configured device's `DeviceView`, as of now."""

    def __init__(self, config: Config, coordinators: Mapping[str, DeviceCoordinator]) -> None:
        self._devices = config.devices
        self._efficiency = config.control.efficiency
        self._coordinators = coordinators

    def __call__(self) -> dict[str, DeviceView]:
        views = {}
        for device in self._devices:
            coordinator = self._coordinators[device.id]
            reading = coordinator.reading
            capability = coordinator.capability
            storage = device if isinstance(device, StorageSettings) else None
            max_a, phases = _charger(device, capability)
            views[device.id] = DeviceView(
                id=device.id,
                kind=device.kind,
                quality=coordinator.quality(),
                state=reading.state if reading is not None else None,
                capability=capability,
                supports=coordinator.driver.supports() if capability is not None else None,
                reserve_soc_pct=storage.reserve_soc_pct if storage is not None else None,
                soc_frozen_after_wh=storage.soc_frozen_after_wh if storage is not None else None,
                efficiency=(storage.efficiency if storage is not None else None)
                or self._efficiency,
                max_a=max_a,
                phases=phases,
            )
        return views


def _charger(device: AnyDevice, capability: Capability | None) -> tuple[float | None, int | None]:
    """An EV charger's highest current limit (A per phase) and phases: configured, else read."""
    if isinstance(device, ProfileDevice):
        return device.profile.max_a, device.profile.phases
    if isinstance(device, OpcUaDevice) and device.kind == DeviceKind.EVSE:
        read = capability.max_a if capability is not None else None
        return device.max_a or read, device.phases
    if isinstance(device, OcppDevice):
        read = capability.max_a if capability is not None else None
        return device.max_a or read, capability.phases if capability is not None else None
    return None, None
