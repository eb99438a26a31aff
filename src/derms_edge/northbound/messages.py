"""Payloads the gateway publishes, as pydantic models: the contract's single source of truth."""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from derms_edge.model import (
    Capability,
    ControlValue,
    DeviceKind,
    DeviceState,
    FixedPf,
    OperatingState,
    Quality,
    Response,
    Status,
    VoltVarCurve,
)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a Z suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_serializer("ts", check_fields=False)
    def _ts(self, ts: datetime) -> str:
        return rfc3339(ts)

    def encode(self) -> bytes:
        """The JSON bytes published on MQTT."""
        return self.model_dump_json().encode()


class LastDispatch(BaseModel):
    """The last controls message a role sent, and the gateway's latest answer to its event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = Field(description="The role of the controls topic it came on")
    mrid: str | None = Field(
        description="Its event's mrid (the last one of an array); null if the payload had none"
    )
    received: datetime = Field(description="When the gateway took it")
    status: Status | None = Field(
        None, description="The latest response to the event: its status now (null: not yet)"
    )
    reason: str | None = Field(None, description="As in the response")
    detail: str | None = Field(None, description="As in the response")
    answered: datetime | None = Field(None, description="When that response was made")

    @field_serializer("received", "answered")
    def _moment(self, moment: datetime | None) -> str | None:
        return None if moment is None else rfc3339(moment)


class StatusMessage(_Payload):
    """``{root}/status``, retained, QoS 1."""

    online: bool
    ts: datetime
    version: str
    devices: list[str]
    device_quality: dict[str, Quality] = Field(
        description="Per device: the quality of its latest telemetry (ok, stale, offline, "
        "or unknown: not tried yet)"
    )
    buffered: int = Field(
        ge=0,
        description="Telemetry messages and responses in the gateway's buffer that the "
        "broker has not acknowledged yet",
    )
    dropped: int = Field(
        ge=0,
        description="Telemetry messages dropped unsent because the buffer was full, since "
        "the buffer was created (responses are never dropped)",
    )
    rejected_inbound: int = Field(
        ge=0,
        description="Inbound messages dropped unread and unanswered over a role's rate limit "
        "(control.rate_limit), since the gateway started",
    )
    last_dispatch: LastDispatch | None = Field(
        None,
        description="The last controls message taken since the gateway started, and the "
        "latest answer to its event; null when none came",
    )


class TelemetryMessage(_Payload):
    """``{root}/telemetry/{device}``, QoS 1. SI units; null where the device has no value.

    Positive ``w`` is power delivered to the grid (generation, battery discharge).
    """

    ts: datetime = Field(
        description="When the reading was taken (now, when offline or unknown); over an OPC UA "
        "subscription, when it last confirmed the values (a notification or a keep-alive)"
    )
    seq: int = Field(
        ge=0,
        description="+1 per telemetry message of this gateway, across restarts; a message "
        "sent again (at least once delivery) has the same seq",
    )
    device: str
    kind: DeviceKind
    quality: Quality
    w: float | None = Field(None, description="Active power, W")
    var: float | None = Field(None, description="Reactive power, var (positive = injecting)")
    va: float | None = Field(None, description="Apparent power, VA")
    pf: float | None = Field(None, description="Power factor, -1..1")
    v: float | None = Field(None, description="Mean line-to-neutral voltage, V")
    hz: float | None = Field(None, description="Frequency, Hz")
    a: float | None = Field(None, description="AC current, A")
    soc_pct: float | None = Field(None, description="State of charge, %")
    wh_exported: float | None = Field(None, description="Energy delivered to the grid, Wh")
    wh_imported: float | None = Field(None, description="Energy taken from the grid, Wh")
    state: OperatingState | None = None

    @classmethod
    def of(
        cls,
        *,
        seq: int,
        device: str,
        kind: DeviceKind,
        quality: Quality,
        ts: datetime,
        state: DeviceState | None,
    ) -> TelemetryMessage:
        """A telemetry message; values are null when there is no reading to trust."""
        values = {} if state is None or quality in _NO_VALUES else _fields(state)
        # values come from our own dataclasses: validated once, at the device boundary
        return cls.model_construct(
            seq=seq, device=device, kind=DeviceKind(kind), quality=quality, ts=ts, **values
        )


_NO_VALUES = frozenset({Quality.OFFLINE, Quality.UNKNOWN})
"""Qualities whose telemetry carries null values: there is no reading to trust."""

_HEAD = ("ts", "seq", "device", "kind", "quality")
_VALUES = tuple(name for name in TelemetryMessage.model_fields if name not in _HEAD)
"""The reading's fields in the message, in the model's order (``state`` last)."""
assert tuple(TelemetryMessage.model_fields)[: len(_HEAD)] == _HEAD
assert set(_VALUES) == {field.name for field in dataclasses.fields(DeviceState)}
_PLAIN = re.compile(r"[A-Za-z0-9_.:-]+")
"""A device id that is the same in JSON as in Python (no escaping, no non-ASCII)."""


def telemetry_payload(
    *,
    seq: int,
    device: str,
    kind: DeviceKind,
    quality: Quality,
    ts: datetime,
    state: DeviceState | None,
) -> bytes:
    """The bytes of ``TelemetryMessage.of(...).encode()``, built without the model (in half
    its time: every device, every round). Anything the direct way does not write
    exactly as pydantic does goes through the model: a number in exponent form, not finite
    or not a float (pydantic writes an int as a float), a device id that JSON escapes.
    tests/unit/test_messages.py compares the two."""
    if type(seq) is int and _PLAIN.fullmatch(device) is not None:
        reading = _reading_json(quality, state)
        if reading is not None:
            return (
                f'{{"ts":"{rfc3339(ts)}","seq":{seq:d},"device":"{device}"'
                f',"kind":"{DeviceKind(kind).value}","quality":"{quality.value}"{reading}}}'
            ).encode()
    message = TelemetryMessage.of(
        seq=seq, device=device, kind=kind, quality=quality, ts=ts, state=state
    )
    return message.encode()


def _reading_json(quality: Quality, state: DeviceState | None) -> str | None:
    """The reading's members of a telemetry message (each after a comma); None where a
    value is not plain."""
    parts = []
    values = None if state is None or quality in _NO_VALUES else state
    for name in _VALUES:
        value = None if values is None else getattr(values, name)
        if value is None:
            parts.append(f',"{name}":null')
        elif name == "state":
            if not isinstance(value, OperatingState):
                return None
            parts.append(f',"state":"{value.value}"')
        elif type(value) is float and math.isfinite(value) and "e" not in (text := repr(value)):
            parts.append(f',"{name}":{text}')
        else:
            return None
    return "".join(parts)


class CapabilityMessage(_Payload):
    """``{root}/capability/{device}``, retained: nameplate and limits read from the device."""

    ts: datetime
    device: str
    kind: DeviceKind
    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    version: str | None = None
    w_max: float | None = Field(None, description="W")
    v_nom: float | None = Field(None, description="V, line to neutral")
    va_max: float | None = Field(None, description="VA")
    var_max_inj: float | None = Field(None, description="var")
    var_max_abs: float | None = Field(None, description="var")
    wh_rtg: float | None = Field(None, description="Wh")
    charge_w_max: float | None = Field(None, description="W")
    discharge_w_max: float | None = Field(None, description="W")
    soc_min_pct: float | None = Field(None, description="%")
    soc_max_pct: float | None = Field(None, description="%")
    soc_step_pct: float | None = Field(
        None, description="The smallest change of state of charge the device reports, %"
    )
    max_a: float | None = Field(None, description="EV chargers: highest current limit, A per phase")
    phases: int | None = Field(None, description="EV chargers: phases in use")
    models: list[int] = Field(description="SunSpec model ids, in chain order")

    @classmethod
    def of(
        cls, *, device: str, kind: DeviceKind, ts: datetime, capability: Capability
    ) -> CapabilityMessage:
        """The capability message of one device."""
        values = _fields(capability) | {"models": list(capability.models)}
        return cls.model_validate({"device": device, "kind": kind, "ts": ts} | values)


def _fields(obj: DeviceState | Capability) -> dict[str, Any]:
    return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}


class ResponseMessage(_Payload):
    """``{root}/responses``, QoS 1: one step of one event's life, or why it was refused."""

    mrid: str | None = Field(description="The event's mrid; null if the payload had none")
    status: Status
    reason: str | None = Field(
        None,
        description="Machine-readable: invalid, expired, duplicate, unauthorized, "
        "not_applicable, device_offline, device_refused, soc_limit, soc_unknown, "
        "unknown_event, dispatcher_timeout, replayed, superseded_by:<mrid>",
    )
    detail: str | None = Field(None, description="For people: which field, limit and numbers")
    ts: datetime

    @classmethod
    def of(cls, response: Response) -> ResponseMessage:
        """The message for one response of the control core."""
        return cls.model_construct(
            mrid=response.mrid or None,
            status=response.status,
            reason=response.reason,
            detail=response.detail,
            ts=response.ts,
        )


def control_value_data(value: ControlValue) -> Any:
    """A control value as JSON-ready data, in the contract's field names."""
    if isinstance(value, VoltVarCurve):
        return {
            "points": [list(point) for point in value.points],
            "v_ref_pu": value.v_ref_pu,
            "response_time_s": value.response_time_s,
            "mode": value.mode,
        }
    if isinstance(value, FixedPf):
        return {"pf": value.pf, "excitation": value.excitation}
    return value


class ActiveValue(BaseModel):
    """One control value in force and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Any = Field(description="As in the control object: a number, or a curve/PF object")
    source: Literal["event", "default", "export_limit", "export_limit_fallback"] = Field(
        description="event, a role's or the configuration's default, the site export loop, "
        "or its open-loop cap while the meter is not fresh"
    )
    mrid: str | None = Field(None, description="The event, when source is event")
    role: str | None = Field(None, description="The role whose event or default this is")


class ActiveMessage(_Payload):
    """``{root}/active``, retained: per device and control type, what is applied now."""

    ts: datetime
    devices: dict[str, dict[str, ActiveValue]]
    site: dict[str, ActiveValue] = Field(description="Site-wide controls (export_limit_w)")
