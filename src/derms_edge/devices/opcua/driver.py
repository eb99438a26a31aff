"""The driver of a device that speaks OPC UA: configured nodes in, DeviceState out; setpoints
written to their nodes in the nodes' own data types and read back.

Connect: a new session (the previous one closed), the namespace URIs of ``nsu=`` node ids
looked up again (servers renumber namespaces when they restart), every configured node read
once (a wrong node id fails here, named), the setpoint nodes' data types learnt, the
capability points read, then a subscription to the measurements, or polling when the server
refuses one or ``subscribe`` is false.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.ua_utils import data_type_to_variant_type
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from derms_edge.config import POINT_UNITS, OpcUaDevice, OpcUaPointName
from derms_edge.devices.charger import rated_w
from derms_edge.devices.coordinator import Sample
from derms_edge.devices.opcua.connection import (
    Target,
    discard,
    open_client,
    resolve,
    status_name,
    status_text,
    translate_errors,
)
from derms_edge.devices.opcua.subscription import Watch, subscribe
from derms_edge.devices.opcua.values import (
    CAPABILITIES,
    MEASUREMENTS,
    NUMBER_TYPES,
    Conversion,
    same_value,
    to_node,
    to_si,
)
from derms_edge.errors import ConnectionLost, ControlRefused, DeviceProtocolError
from derms_edge.model import (
    Capability,
    DeviceKind,
    DeviceState,
    SetpointName,
    SetpointValue,
    limit_refusal,
)

log = logging.getLogger(__name__)

SETPOINT_POINTS: dict[SetpointName, OpcUaPointName] = {
    SetpointName.EVSE_MAX_A: "max_a_setpoint",
    SetpointName.STORAGE_W: "storage_w_setpoint",
    SetpointName.MAX_W_PCT: "max_w_pct_setpoint",
    SetpointName.VAR: "var_setpoint",
}
"""Which node point takes each setpoint."""
RELEASED: dict[OpcUaPointName, float] = {
    "storage_w_setpoint": 0.0,
    "max_w_pct_setpoint": 100.0,
    "var_setpoint": 0.0,
}
"""What a released setpoint writes (SI units); a charger's current limit goes to its max_a."""
DEFAULT_MAX_A = 32.0
"""A charger's current limit when neither the configuration nor a max_a node gives it, A."""
_BUILTIN_TYPES = range(1, 26)
"""ns=0 data type ids that are the built-in types themselves (Boolean .. DiagnosticInfo)."""


def _raw(value: ua.DataValue | None) -> Any:
    """The plain value of a DataValue; None for a Bad status or no value."""
    if value is None or value.Value is None:
        return None
    if value.StatusCode is not None and value.StatusCode.is_bad():
        return None
    raw = value.Value.Value
    return raw.Text if isinstance(raw, ua.LocalizedText) else raw


def _loss(exc: Exception) -> str:
    """Why asyncua gave a session up, for people."""
    if isinstance(exc, TimeoutError):
        return "the server did not answer the watchdog read in time"
    if isinstance(exc, ConnectionError):
        return "the connection closed"
    if isinstance(exc, UaStatusCodeError):
        return status_text(exc.code)[0]
    return str(exc) or type(exc).__name__


@dataclass(slots=True)
class _Session:
    """One connection's worth of state: the client and what was learnt at connect."""

    client: Client
    node_ids: dict[OpcUaPointName, ua.NodeId]
    types: dict[OpcUaPointName, ua.VariantType]
    """The data type of each setpoint node."""
    watch: Watch | None = None
    """The subscription to the measurements; None: they are polled."""
    lost: list[str] = field(default_factory=list)
    """Why asyncua's watchdog gave the session up, if it did."""


class OpcUaDriver:
    """Reads one OPC UA device through its configured nodes and writes its setpoints.

    Values are converted to SI with each point's scale and unit; ``w`` is positive for power
    delivered to the grid (give ``scale: -1`` for a node that counts consumption positive). An
    EV charger's ``a`` node is the current per phase; readings report the total.
    """

    def __init__(self, device: OpcUaDevice) -> None:
        self._device = device
        self._name = device.id
        self._target = Target(
            device.id,
            device.endpoint,
            device.security,
            device.username,
            device.password,
            device.timeout_s,
        )
        nodes = device.nodes
        self._measured = [p for p in MEASUREMENTS if p in nodes]
        state = nodes.get("state")
        self._conversion = Conversion(
            kind=device.kind,
            factors={p: nodes[p].factor(p) for p in self._measured},
            phases=device.phases,
            states=state.states if state is not None else None,
        )
        self._session: _Session | None = None
        self._notified = 0
        """Notifications handled in sessions closed since."""
        self._max_a = device.max_a or DEFAULT_MAX_A
        self.mode: Literal["subscription", "poll"] | None = None
        """How the last connect reads the measurements; None while not connected."""

    # -- DeviceDriver ------------------------------------------------------------------------

    async def connect(self) -> Capability:
        """Open a session and learn the device; DeviceError says what is wrong, and where."""
        await self.close()
        started = time.monotonic()
        client = await open_client(self._target)
        try:
            session, capability, why_polling = await self._start(client)
        except BaseException:
            await discard(client)
            raise
        self._session = session
        self.mode = "subscription" if session.watch is not None else "poll"
        reading = (
            f"subscribed every {self._device.publishing_interval_ms:g} ms"
            if session.watch is not None
            else f"polling every {self._device.poll_interval_s:g} s"
            + (f" ({why_polling})" if why_polling else "")
        )
        log.info(
            "%s: connected to %s (%s) in %.0f ms: %d nodes, %s",
            self._name,
            self._device.endpoint,
            self._target.describe(),
            (time.monotonic() - started) * 1000,
            len(session.node_ids),
            reading,
        )
        return capability

    async def poll(self) -> DeviceState:
        """The newest values (subscription) or one batched read (polling); ConnectionLost when
        the session is gone."""
        session = await self._alive()
        if session.watch is not None:
            values = session.watch.notifications.values
            raw = {point: _raw(values.get(point)) for point in self._measured}
        elif not self._measured:  # only nameplate and setpoint nodes: nothing to read
            raw = {}
        else:
            ids = [session.node_ids[point] for point in self._measured]
            with translate_errors(self._target, "reading the measurements"):
                results = await session.client.uaclient.read_attributes(ids, AttributeIds.Value)
            raw = {point: _raw(value) for point, value in zip(self._measured, results, strict=True)}
        return self._conversion.reading(raw)

    def sampled_at(self) -> Sample | None:
        """Subscription: when it last confirmed the values (see `Watch.confirmed`); polling:
        None (measured when read)."""
        session = self._session
        if session is None or session.watch is None:
            return None
        return session.watch.confirmed(by_value=self._device.max_value_age_s is not None)

    @property
    def notifications(self) -> int:
        """Data-change notifications handled since the driver was made, over every session."""
        session = self._session
        current = session.watch.notifications.count if session and session.watch else 0
        return self._notified + current

    async def close(self) -> None:
        """Close the session (the server deletes its subscription)."""
        session, self._session = self._session, None
        self.mode = None
        if session is not None:
            if session.watch is not None:
                self._notified += session.watch.notifications.count
            await discard(session.client)

    def supports(self) -> frozenset[SetpointName]:
        """The setpoints with a configured node, once connected."""
        if self._session is None:
            return frozenset()
        return frozenset(n for n, point in SETPOINT_POINTS.items() if point in self._device.nodes)

    async def keepalive(self) -> None:
        """Nothing to refresh: the session lives on asyncua's publish requests and watchdog
        reads, and OPC UA has no standard setpoint watchdog. A server that reverts setpoints
        by itself is caught by the coordinator, which rewrites them after every reconnect."""

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        """Write a setpoint (SI units) to its node in the node's data type, and read it back.

        ``None`` releases it: a charger's limit goes to its max_a, battery power and reactive
        power to 0, the active power limit to 100 %. ControlRefused names the node and, when
        the server refused, the status (``BadOutOfRange: ...``).
        """
        point = SETPOINT_POINTS.get(name)
        if point is None or point not in self._device.nodes:
            raise ControlRefused(
                self._name, name.value, f"no node is configured for it (nodes.{point})"
            )
        session = self._session
        if session is None:
            raise ConnectionLost(f"{self._name}: not connected")
        spec = self._device.nodes[point]
        where = f"nodes.{point} ({spec.node})"
        si = self._setpoint(point, where, value)
        vtype = session.types[point]
        unit = POINT_UNITS[point]
        try:
            raw = to_node(si, spec.factor(point), vtype.name)
        except ValueError as exc:
            raise ControlRefused(self._name, where, f"{si:g} {unit}: {exc}") from exc
        node_id = session.node_ids[point]
        uaclient = session.client.uaclient
        with translate_errors(self._target, f"writing {where}"):
            status = (
                await uaclient.write_attributes([node_id], [ua.DataValue(ua.Variant(raw, vtype))])
            )[0]
        if status.is_bad():
            refusal, doc = status_text(status.value)
            reason = f"{refusal}: {doc} (wrote {raw!r} as {vtype.name} for {si:g} {unit})"
            raise ControlRefused(self._name, where, reason)
        with translate_errors(self._target, f"reading back {where}"):
            back = (await uaclient.read_attributes([node_id], AttributeIds.Value))[0]
        back_raw = _raw(back)
        if not same_value(raw, back_raw, vtype.name):
            shown = status_name(back.StatusCode) if back_raw is None else repr(back_raw)
            raise ControlRefused(self._name, where, f"wrote {raw!r}, read back {shown}")
        log.debug("%s: %s = %r (%g %s)", self._name, where, raw, si, unit)

    # -- connect ---------------------------------------------------------------------------

    async def _start(self, client: Client) -> tuple[_Session, Capability, str | None]:
        with translate_errors(self._target, "reading the namespace array"):
            namespaces: list[str] = await client.get_namespace_array()
        node_ids = self._resolve(namespaces)
        points = list(self._device.nodes)
        params = ua.ReadParameters()
        for point in points:
            for attribute in (AttributeIds.DataType, AttributeIds.Value):
                params.NodesToRead.append(
                    ua.ReadValueId(NodeId=node_ids[point], AttributeId=attribute)
                )
        with translate_errors(self._target, "reading the configured nodes"):
            results = await client.uaclient.read(params)
        data_types = dict(zip(points, results[0::2], strict=True))
        values = dict(zip(points, results[1::2], strict=True))
        for point, data_type in data_types.items():
            if data_type.StatusCode is not None and data_type.StatusCode.is_bad():
                raise self._node_error(point, data_type.StatusCode)
        types = {
            point: await self._setpoint_type(client, point, data_types[point], values[point])
            for point in points
            if point.endswith("_setpoint")
        }
        session = _Session(client, node_ids, types)
        lost = session.lost

        async def connection_lost(exc: Exception) -> None:
            lost.append(_loss(exc))

        client.connection_lost_callback = connection_lost
        why_polling = None
        if self._device.subscribe and self._measured:
            seed = {point: values[point] for point in self._measured}
            ids = {point: node_ids[point] for point in self._measured}
            interval = self._device.publishing_interval_ms
            watch = await subscribe(client, self._target, ids, interval, seed)
            if isinstance(watch, str):
                why_polling = watch
            else:
                session.watch = watch
        return session, self._capability(values), why_polling

    def _resolve(self, namespaces: list[str]) -> dict[OpcUaPointName, ua.NodeId]:
        node_ids = {}
        for point, spec in self._device.nodes.items():
            try:
                node_ids[point] = resolve(spec.node_ref, namespaces)
            except KeyError:
                listed = ", ".join(f"{i}: {uri}" for i, uri in enumerate(namespaces))
                raise DeviceProtocolError(
                    f"{self._name}: {self._device.endpoint}: nodes.{point} ({spec.node}): "
                    "the server has no namespace "
                    f"{spec.node_ref.namespace_uri!r}; its namespaces are {listed}"
                ) from None
        return node_ids

    def _node_error(self, point: OpcUaPointName, status: ua.StatusCode) -> DeviceProtocolError:
        name, doc = status_text(status.value)
        hint = " (is it a variable?)" if name == "BadAttributeIdInvalid" else f": {doc}"
        node = self._device.nodes[point].node
        return DeviceProtocolError(
            f"{self._name}: {self._device.endpoint}: nodes.{point} ({node}): {name}{hint}"
        )

    async def _setpoint_type(
        self, client: Client, point: OpcUaPointName, data_type: ua.DataValue, value: ua.DataValue
    ) -> ua.VariantType:
        """The VariantType a setpoint node is written with: its DataType's built-in type."""
        type_id = data_type.Value.Value if data_type.Value is not None else None
        if not isinstance(type_id, ua.NodeId):
            raise self._node_error(
                point, ua.StatusCode(ua.UInt32(StatusCodes.BadAttributeIdInvalid))
            )
        if (
            type_id.NamespaceIndex == 0
            and isinstance(type_id.Identifier, int)
            and type_id.Identifier in _BUILTIN_TYPES
        ):
            vtype = ua.VariantType(type_id.Identifier)
        else:
            with translate_errors(self._target, f"reading the data type of nodes.{point}"):
                vtype = await data_type_to_variant_type(client.get_node(type_id))
        if vtype is ua.VariantType.Variant:  # abstract (Number, BaseDataType): as it holds now
            held = value.Value.VariantType if value.Value is not None else None
            vtype = (
                held if held is not None and held.name in NUMBER_TYPES else ua.VariantType.Double
            )
        if vtype.name not in NUMBER_TYPES:
            node = self._device.nodes[point].node
            raise DeviceProtocolError(
                f"{self._name}: nodes.{point} ({node}) has data type {vtype.name}; "
                "a setpoint node must hold a number"
            )
        return vtype

    def _capability(self, values: Mapping[OpcUaPointName, ua.DataValue]) -> Capability:
        nodes = self._device.nodes
        si = {p: to_si(_raw(values[p]), nodes[p].factor(p)) for p in CAPABILITIES if p in nodes}
        max_a = self._device.max_a or si.get("max_a") or DEFAULT_MAX_A
        self._max_a = max_a
        if self._device.kind != DeviceKind.EVSE:
            return Capability(
                w_max=si.get("w_max"),
                va_max=si.get("va_max"),
                wh_rtg=si.get("wh_rtg"),
                charge_w_max=si.get("charge_w_max"),
                discharge_w_max=si.get("discharge_w_max"),
                soc_min_pct=si.get("soc_min_pct"),
                soc_max_pct=si.get("soc_max_pct"),
                max_a=si.get("max_a"),
            )
        v = to_si(_raw(values["v"]), nodes["v"].factor("v")) if "v" in nodes else None
        phases = self._device.phases
        return Capability(
            w_max=si.get("w_max") or rated_w(phases, v, max_a),
            va_max=si.get("va_max"),
            max_a=max_a,
            phases=phases,
        )

    # -- poll ------------------------------------------------------------------------------

    async def _alive(self) -> _Session:
        """The session, if it still works; else close it and raise ConnectionLost."""
        session = self._session
        if session is None:
            raise ConnectionLost(f"{self._name}: not connected")
        reason = self._lost(session)
        if reason is None:
            try:
                await session.client.check_connection()
            except ConnectionError as exc:
                reason = f"lost the session: {_loss(exc)}"
        if reason is not None:
            await self.close()
            raise ConnectionLost(f"{self._name}: {self._device.endpoint}: {reason}")
        return session

    def _lost(self, session: _Session) -> str | None:
        if session.lost:
            return f"lost the session: {session.lost[-1]}"
        return None if session.watch is None else session.watch.lost(self._device.timeout_s)

    # -- write -----------------------------------------------------------------------------

    def _setpoint(self, point: OpcUaPointName, where: str, value: SetpointValue | None) -> float:
        """The SI value to write: released, checked for a charger's range."""
        if value is None:
            return self._max_a if point == "max_a_setpoint" else RELEASED[point]
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ControlRefused(self._name, where, f"{value!r} is not a number")
        amps = float(value)
        refusal = limit_refusal(amps, self._max_a) if point == "max_a_setpoint" else None
        if refusal is not None:
            raise ControlRefused(self._name, where, refusal)
        return amps
