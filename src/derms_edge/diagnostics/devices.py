"""Every configured device asked once, all at the same time, each with short timeouts: does
it answer, which SunSpec models does it hold (or which OPC UA variables), and what kind of
device do they make it."""

from __future__ import annotations

import asyncio

from derms_edge.config import (
    SUNSPEC_BASES,
    AnyDevice,
    Config,
    ModbusDevice,
    OcppDevice,
    OpcUaDevice,
    ProfileDevice,
    SunSpecDevice,
)
from derms_edge.devices.modbus import LinkPool
from derms_edge.devices.sunspec.discovery import discover
from derms_edge.devices.sunspec.mapping import kind_of
from derms_edge.diagnostics.result import Check
from derms_edge.errors import DeviceError
from derms_edge.model import DeviceKind

REQUEST_TIMEOUT_S = 2.0
"""Longest wait for one answer (a device's own timeout_s when shorter)."""
DEVICE_DEADLINE_S = 10.0
"""Longest time for one device's whole probe."""


async def devices(config: Config, *, serial_in_use: bool = False) -> list[Check]:
    """One result per device, in the configuration's order. ``serial_in_use``: the running
    service holds the serial ports, so RTU devices are not probed (two masters on one bus
    garble each other's requests)."""
    pool = LinkPool()
    probes = [_probe(device, pool, serial_in_use) for device in config.devices]
    return list(await asyncio.gather(*probes))


def _where(device: AnyDevice) -> str:
    if isinstance(device, ModbusDevice):
        return f"{device.link} unit {device.unit_id}"
    return device.link


def _not_answering(device: AnyDevice, why: str) -> Check:
    if isinstance(device, OpcUaDevice):
        hint = f"derms-edge discover --opcua {device.endpoint} browses it"
    elif not isinstance(device, ModbusDevice):
        hint = "check the station's CSMS URL, identity and password"
    elif device.serial is not None:
        hint = (
            "check its power, the RS-485 wiring (A/B, termination, bias) and its "
            "serial.baudrate, serial.parity and unit_id against the device's settings"
        )
    else:
        hint = (
            f"check its power and network, host, port and unit_id; derms-edge discover "
            f"--host {device.host} --port {device.port} --unit-ids 1-247 finds it"
        )
    return Check.failed(f"device {device.id} ({_where(device)}) does not answer: {why}", hint)


async def _probe(device: AnyDevice, pool: LinkPool, serial_in_use: bool) -> Check:
    if isinstance(device, OcppDevice):
        return Check.warning(
            f"device {device.id} ({_where(device)}) not asked: a charging station connects "
            "to the gateway, not the other way round",
            "its quality in derms-edge status says whether it is connected",
        )
    if isinstance(device, ModbusDevice) and device.serial is not None and serial_in_use:
        return Check.warning(
            f"device {device.id} ({_where(device)}) not asked: the running service holds the "
            "serial port",
            "its quality in derms-edge status says whether it answers the gateway; "
            "or stop the service and run doctor again",
        )
    timeout_s = min(device.timeout_s, REQUEST_TIMEOUT_S)
    try:
        async with asyncio.timeout(DEVICE_DEADLINE_S):
            if isinstance(device, OpcUaDevice):
                return await _opcua(device, timeout_s)
            return await _modbus(device, pool, timeout_s)
    except TimeoutError:
        return _not_answering(device, f"no complete answer within {DEVICE_DEADLINE_S:g} s")
    except DeviceError as error:
        return _not_answering(device, str(error))


async def _modbus(device: SunSpecDevice | ProfileDevice, pool: LinkPool, timeout_s: float) -> Check:
    if device.serial is not None:
        link = pool.serial(device.serial, timeout_s)
    else:
        assert device.host is not None  # the config allows host or serial, exactly one
        link = pool.tcp(device.host, device.port, timeout_s)
    unit = link.unit(device.unit_id)
    try:
        if isinstance(device, ProfileDevice):
            limit = device.profile.current_limit
            await unit.read(limit.address, 1 if limit.type.endswith("16") else 2)
            return Check.passed(
                f"device {device.id} ({_where(device)}) answers: register profile "
                f"{device.profile.name}, kind {device.kind}"
            )
        bases = SUNSPEC_BASES if device.base_address is None else (device.base_address,)
        found = await discover(unit.read, bases)
    finally:
        await unit.close()
    models = [header.model_id for header in found.models]
    kind = kind_of(models)
    title = (
        f"device {device.id} ({_where(device)}) answers: SunSpec at {found.base}, models "
        f"{', '.join(map(str, models))}"
    )
    if kind is None:
        return Check.failed(
            f"{title}: none the gateway reads (no inverter, battery or meter model)",
            f"check devices[{device.id}]: unit id and base_address, or a register profile",
        )
    return _kind_checked(device, kind, f"{title}: {kind}")


async def _opcua(device: OpcUaDevice, timeout_s: float) -> Check:
    from derms_edge.devices.opcua.browse import browse
    from derms_edge.devices.opcua.connection import Target
    from derms_edge.devices.opcua.skeleton import skeletons

    target = Target(
        device.id, device.endpoint, device.security, device.username, device.password, timeout_s
    )
    variables = await browse(target)
    kinds = {skeleton.kind for skeleton in skeletons(variables, device.id)}
    title = f"device {device.id} ({device.endpoint}) answers: OPC UA, {len(variables)} variables"
    if len(kinds) != 1:
        return Check.passed(f"{title}, kind {device.kind} as configured")
    (kind,) = kinds
    return _kind_checked(device, kind, f"{title}: {kind}")


def _kind_checked(device: AnyDevice, kind: DeviceKind, title: str) -> Check:
    if kind == device.kind:
        return Check.passed(title)
    return Check.warning(
        f"{title}, but configured as kind {device.kind}",
        f"check devices[{device.id}].kind: the device looks like a {kind}",
    )
