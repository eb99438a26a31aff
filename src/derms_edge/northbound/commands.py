"""Inbound MQTT messages as validated commands: a topic and its payload in, a command out.

Validation happens here, at the boundary, and nowhere else: a payload that passes becomes
a command carrying the model's immutable values; one that fails becomes `Invalid`, whose
detail names the field and what would be right (the control loop answers it ``rejected``).
Each element of an array of events is validated on its own.

With signing required (a `KeyRing` given), controls, cancels and default controls must be
JWS signed with one of their role's keys (`derms_edge.northbound.signed`): one that is not
becomes one `Invalid` with the reason ``unauthorized`` and no mrid, since nothing of an
unverified payload is read; one that is carries its `Signed` proof.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, Field, ValidationError, model_validator

from derms_edge.model import Control, Event, Reason
from derms_edge.northbound.signed import KeyRing, Signed
from derms_edge.northbound.topics import Topics
from derms_edge.schema import ControlPayload, Identifier, Strict, problems

M = TypeVar("M", bound=BaseModel)

Mrid = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
"""An event's id: 1 to 64 printable ASCII characters without spaces."""


class EventPayload(Strict):
    """One scheduled control (IEEE 2030.5 DERControl semantics)."""

    mrid: Mrid
    creation_time: AwareDatetime | None = Field(None, description="default: time of receipt")
    primacy: int | None = Field(None, ge=0, le=255, description="lower wins; default: the role's")
    devices: list[Identifier] | None = Field(
        None, min_length=1, description="default: every device that supports the control"
    )
    start: AwareDatetime | None = Field(None, description="default: now")
    duration_s: float = Field(gt=0, le=31 * 86400, description="length of the window, s")
    randomize_start_s: float = Field(
        0, ge=0, le=3600, description="start is delayed by a random 0..this many s"
    )
    control: ControlPayload

    @model_validator(mode="after")
    def _some_control(self) -> Self:
        if not self.control.to_control().types:
            raise ValueError("control sets no control function")
        return self

    @model_validator(mode="after")
    def _window_fits(self) -> Self:
        if self.start is not None:
            try:
                self.start + timedelta(seconds=self.duration_s + self.randomize_start_s)
            except OverflowError:
                raise ValueError(
                    "start: the window (start + duration_s + randomize_start_s) ends after "
                    "the year 9999"
                ) from None
        return self

    def to_event(self, *, role: str, primacy: int, now: datetime, delay_s: float) -> Event:
        """The event as the gateway runs it, received ``now`` from ``role`` (whose primacy is
        the default), its start delayed by ``delay_s`` (drawn from randomize_start_s)."""
        return Event(
            mrid=self.mrid,
            role=role,
            primacy=primacy if self.primacy is None else self.primacy,
            creation_time=self.creation_time or now,
            start=(self.start or now) + timedelta(seconds=delay_s),
            duration_s=self.duration_s,
            control=self.control.to_control(),
            devices=tuple(self.devices) if self.devices is not None else None,
            randomize_start_s=self.randomize_start_s,
            body=json.dumps(self.model_dump(mode="json", exclude_unset=True), sort_keys=True),
        )


class CancelPayload(Strict):
    """Cancel one event."""

    mrid: Mrid
    creation_time: AwareDatetime | None = Field(
        None, description="required when signed: the replay window is measured from it"
    )


@dataclass(frozen=True, slots=True)
class Invalid:
    """A payload (or one element of an array) that failed validation."""

    mrid: str | None
    detail: str
    reason: Reason = Reason.INVALID


@dataclass(frozen=True, slots=True)
class Command:
    """What a role sent: its name (the topic's), and whether the broker kept it (retained:
    it proves nothing about the sender being alive now)."""

    role: str
    retained: bool
    signed: Signed | None = field(default=None, kw_only=True)
    """The proof that one of the role's keys signed it (when signing is required)."""


@dataclass(frozen=True, slots=True)
class Controls(Command):
    """``controls/{role}`` (or a group's): one event or an array of them."""

    events: tuple[EventPayload | Invalid, ...]


@dataclass(frozen=True, slots=True)
class Cancel(Command):
    """``controls/{role}/cancel``: cancel one event."""

    request: CancelPayload | Invalid


@dataclass(frozen=True, slots=True)
class DefaultControl(Command):
    """``default_control/{role}``, retained: the role's default control; None clears it (an
    empty payload)."""

    control: Control | Invalid | None


@dataclass(frozen=True, slots=True)
class Heartbeat(Command):
    """``heartbeat/{role}``: the role's dispatcher is alive (any payload)."""


def parse_command(
    topics: Topics,
    topic: str,
    payload: bytes,
    retained: bool,
    *,
    max_bytes: int = 262_144,
    keys: KeyRing | None = None,
) -> Command | None:
    """The command an inbound message carries; None for a topic that is not the gateway's.
    A payload over ``max_bytes`` is not read: it is the command's one `Invalid`. With
    ``keys``, a control, cancel or default control is opened with its role's keys first:
    clearing a default takes a signed empty payload too, so deleting the retained message
    at the broker changes nothing."""
    inbound = topics.parse_inbound(topic)
    if inbound is None:
        return None
    role = inbound.role
    if inbound.kind == "heartbeat":
        return Heartbeat(role, retained)
    refused = (
        Invalid(None, f"payload is {len(payload)} bytes, over mqtt.max_payload_bytes {max_bytes}")
        if len(payload) > max_bytes
        else None
    )
    signed: Signed | None = None
    if keys is not None and refused is None:
        opened = keys.open(payload, role)
        if isinstance(opened, Signed):
            signed, payload = opened, opened.payload
        else:
            refused = Invalid(None, opened.detail, Reason.UNAUTHORIZED)
    match inbound.kind:
        case "controls":
            return Controls(
                role,
                retained,
                (refused,) if refused else tuple(parse_events(payload)),
                signed=signed,
            )
        case "cancel":
            return Cancel(role, retained, refused or parse_cancel(payload), signed=signed)
        case "default_control":
            return DefaultControl(role, retained, refused or parse_default(payload), signed=signed)


def _json(payload: bytes) -> Any | Invalid:
    try:
        return json.loads(payload)
    except UnicodeDecodeError:
        return Invalid(None, "payload is not UTF-8 text")
    except json.JSONDecodeError as error:
        return Invalid(
            None, f"payload is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )
    except RecursionError:
        return Invalid(None, "payload is nested too deeply to read")
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        return Invalid(None, f"payload is not JSON the gateway can read: {error}")


_WORDING = {"extra_forbidden": "unknown field", "missing": "required field is missing"}


def _validate(model: type[M], data: Any, where: str = "") -> M | Invalid:
    """Validate parsed JSON; on failure an Invalid that keeps the mrid when there is one."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        mrid = data.get("mrid") if isinstance(data, dict) else None
        detail = "; ".join(problems(error, root=where, wording=_WORDING))
        return Invalid(mrid if isinstance(mrid, str) else None, detail)


def parse_events(payload: bytes) -> list[EventPayload | Invalid]:
    """One event or a JSON array of events; each element is validated on its own."""
    data = _json(payload)
    if isinstance(data, Invalid):
        return [data]
    if not isinstance(data, list):
        return [_validate(EventPayload, data)]
    if not data:
        return [Invalid(None, "payload is an empty array")]
    return [_validate(EventPayload, item, f"[{index}]") for index, item in enumerate(data)]


def parse_cancel(payload: bytes) -> CancelPayload | Invalid:
    """A cancel request."""
    data = _json(payload)
    return data if isinstance(data, Invalid) else _validate(CancelPayload, data)


def parse_default(payload: bytes) -> Control | Invalid | None:
    """A default control; an empty payload (a retained message deleted) clears it."""
    if not payload.strip():
        return None
    data = _json(payload)
    if isinstance(data, Invalid):
        return data
    control = _validate(ControlPayload, data)
    return control if isinstance(control, Invalid) else control.to_control()
