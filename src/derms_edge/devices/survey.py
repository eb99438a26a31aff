"""What ``derms-edge init`` finds at a site: the SunSpec units on every Modbus link (their
kind from their models, their nameplate read as the gateway will read it), the devices of
every OPC UA server, and what answered but cannot be read, with why."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from derms_edge.config import SUNSPEC_BASES, OpcUaSecurity, SerialSection
from derms_edge.devices.modbus import ModbusLink
from derms_edge.devices.opcua.skeleton import Skeleton, skeletons
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.devices.sunspec.mapping import kind_of
from derms_edge.devices.sunspec.scan import Found, NotSunSpec, probe
from derms_edge.errors import ConnectionLost, DeviceError
from derms_edge.model import Capability, DeviceKind


@dataclass(frozen=True, slots=True)
class ModbusPlace:
    """A Modbus link to scan: a TCP endpoint (a device, or a gateway to RS-485) or a serial
    port (Modbus RTU)."""

    host: str | None = None
    port: int = 502
    serial: SerialSection | None = None

    @property
    def label(self) -> str:
        """Where it is, for people."""
        if self.serial is not None:
            return f"{self.serial.port} at {self.serial.baudrate} baud"
        return f"{self.host}:{self.port}"

    def open(self, timeout_s: float) -> ModbusLink:
        """A link to it (connected on the first read)."""
        if self.serial is not None:
            return ModbusLink.serial(self.serial, timeout_s)
        assert self.host is not None
        return ModbusLink.tcp(self.host, self.port, timeout_s)

    def settings(self) -> dict[str, Any]:
        """Its keys in a device entry of the configuration."""
        if self.serial is not None:
            return {"serial": self.serial.model_dump(include={"port", "baudrate", "parity"})}
        return {"host": self.host, "port": self.port}


@dataclass(frozen=True, slots=True)
class SunSpecUnit:
    """A SunSpec device the gateway can read."""

    place: ModbusPlace
    unit_id: int
    base: int
    kind: DeviceKind
    capability: Capability


@dataclass(frozen=True, slots=True)
class OpcUaFound:
    """A device object on an OPC UA server, its points guessed from the browse names."""

    endpoint: str
    skeleton: Skeleton


@dataclass(frozen=True, slots=True)
class SurveyPlan:
    """Where to look and how long to wait for each answer."""

    modbus: tuple[ModbusPlace, ...] = ()
    unit_ids: tuple[int, ...] = (1,)
    bases: tuple[int, ...] = SUNSPEC_BASES
    opcua: tuple[str, ...] = ()
    timeout_s: float = 0.5
    """Per Modbus answer; an OPC UA server gets ten times as long to open a session."""

    @property
    def steps(self) -> int:
        """Unit ids to probe and servers to browse: the length of the progress bar."""
        return len(self.modbus) * len(self.unit_ids) + len(self.opcua)


@dataclass(slots=True)
class Survey:
    """Everything found, in the order it was found."""

    sunspec: list[SunSpecUnit] = field(default_factory=list)
    opcua: list[OpcUaFound] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    """Devices that answered but that the gateway could not read, each with why."""

    @property
    def devices(self) -> int:
        """How many devices the configuration will have."""
        return len(self.sunspec) + len(self.opcua)


async def _sunspec_unit(
    place: ModbusPlace, link: ModbusLink, unit_id: int, bases: Sequence[int], survey: Survey
) -> None:
    """Probe one unit id and, for a SunSpec device of a kind the gateway knows, read its
    nameplate through the driver the daemon will use."""
    where = f"{place.label} unit {unit_id}"
    unit = link.unit(unit_id)
    try:
        try:
            outcome: Found | NotSunSpec | None = await probe(unit, unit_id, bases)
        except ConnectionLost as error:
            if str(error) not in survey.unread:  # said once per link, not once per unit
                survey.unread.append(str(error))
            return
        if isinstance(outcome, NotSunSpec):
            survey.unread.append(f"{where}: answers, but {outcome.reason}")
        if not isinstance(outcome, Found):
            return
        models = tuple(header.model_id for header in outcome.result.models)
        kind = kind_of(models)
        if kind is None:
            listed = ", ".join(map(str, models))
            survey.unread.append(f"{where}: SunSpec models {listed}, none the gateway reads")
            return
        driver = SunSpecDriver(unit, kind, where, base_address=outcome.result.base)
        try:
            capability = await driver.connect()
        except DeviceError as error:
            survey.unread.append(f"{where}: a SunSpec {kind}, but reading it failed: {error}")
            return
        survey.sunspec.append(SunSpecUnit(place, unit_id, outcome.result.base, kind, capability))
    finally:
        await unit.close()


async def _opcua_server(endpoint: str, timeout_s: float, survey: Survey) -> None:
    """Browse one server: one device per object under Objects."""
    from derms_edge.devices.opcua.browse import browse
    from derms_edge.devices.opcua.connection import Target

    target = Target(endpoint, endpoint, OpcUaSecurity(), timeout_s=timeout_s)
    try:
        variables = await browse(target)
    except DeviceError as error:
        survey.unread.append(str(error))
        return
    if not variables:
        survey.unread.append(f"{endpoint}: no variables under Objects")
        return
    fallback = endpoint.rstrip("/").rsplit("/", 1)[-1]
    for skeleton in skeletons(variables, fallback):
        if skeleton.points:
            survey.opcua.append(OpcUaFound(endpoint, skeleton))
        else:
            survey.unread.append(
                f"{endpoint}: object {skeleton.device_id!r}: no variable looks like a point"
            )


async def survey(plan: SurveyPlan, step: Callable[[str], None] | None = None) -> Survey:
    """Probe every unit id on every Modbus link and browse every OPC UA server; ``step``
    is told what was just looked at, once per step of ``plan.steps``."""
    found = Survey()
    for place in plan.modbus:
        link = place.open(plan.timeout_s)
        for unit_id in plan.unit_ids:
            await _sunspec_unit(place, link, unit_id, plan.bases, found)
            if step is not None:
                step(f"{place.label} unit {unit_id}")
    for endpoint in plan.opcua:
        await _opcua_server(endpoint, 10 * plan.timeout_s, found)
        if step is not None:
            step(endpoint)
    return found
