"""Build a device's driver and coordinator from its configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from derms_edge.config import AnyDevice, OcppDevice, OpcUaDevice, ProfileDevice
from derms_edge.devices.coordinator import DeviceCoordinator, DeviceDriver, DeviceReport
from derms_edge.devices.modbus import LinkPool
from derms_edge.devices.profile import ProfileDriver
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.model import DeviceKind

if TYPE_CHECKING:
    from derms_edge.devices.ocpp.hub import OcppHub


@dataclass(frozen=True, slots=True)
class Wiring:
    """How a coordinator is tied into a running gateway (the defaults: standing alone)."""

    report: Callable[[DeviceReport], None] | None = None
    await_decision_s: float = 0.0
    """After a connect, the writes wait for the controller's decision at most this long."""
    keepalive_s: float | None = None
    """How often setpoints in force are kept alive (None: never)."""
    revert_s: float = 0.0
    """The devices' revert timers (0: not used)."""
    revert_max_w_pct: float | None = None
    """What an IEEE 1547 device's active power limit reverts to when the gateway falls silent
    (704 WMaxLimPctRvrt); None: 100 %."""
    ocpp: OcppHub | None = None
    """The gateway's CSMS, when the configuration has OCPP devices."""


def build_coordinator(
    device: AnyDevice, links: LinkPool, wiring: Wiring = Wiring()
) -> DeviceCoordinator:
    """The coordinator of one configured device, on a link shared with its neighbours.

    A register profile's charger is kept alive at least every ``refresh_s / 2`` whatever the
    wiring says: its limit expires by itself. An OPC UA device has its own session and needs
    no link; asyncua is imported only here, when the configuration has one. An OCPP device
    (the ocpp library, likewise imported here) is one EVSE of a station on the shared CSMS.
    """
    driver: DeviceDriver
    keepalive_s = wiring.keepalive_s
    if isinstance(device, OpcUaDevice):
        from derms_edge.devices.opcua.driver import OpcUaDriver

        driver = OpcUaDriver(device)
        return _coordinator(device, driver, wiring, keepalive_s, take_over=True)
    if isinstance(device, OcppDevice):
        from derms_edge.devices.ocpp.driver import OcppDriver

        if wiring.ocpp is None:
            raise ValueError(f"{device.id}: an OCPP device needs the gateway's CSMS (Wiring.ocpp)")
        # take over: a profile a stopped gateway installed holds until its validTo
        driver = OcppDriver(device, wiring.ocpp)
        # refreshed halfway to its validTo: looked at four times per validity at least
        quarter_s = wiring.ocpp.section.profile_valid_s / 4
        keepalive_s = quarter_s if keepalive_s is None else min(keepalive_s, quarter_s)
        return _coordinator(device, driver, wiring, keepalive_s, take_over=True)
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
            transport,
            device.kind,
            device.id,
            device.base_address,
            revert_s=wiring.revert_s,
            max_w_pct_fallback=wiring.revert_max_w_pct,
        )
    return _coordinator(
        device, driver, wiring, keepalive_s, hold_when_idle=isinstance(device, ProfileDevice)
    )


def _coordinator(
    device: AnyDevice,
    driver: DeviceDriver,
    wiring: Wiring,
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
        report=wiring.report,
        # the controller decides nothing for a meter (it takes no controls): nothing to wait for
        await_decision_s=0.0 if device.kind == DeviceKind.METER else wiring.await_decision_s,
        keepalive_s=keepalive_s,
        hold_when_idle=hold_when_idle,
        take_over=take_over,
    )
