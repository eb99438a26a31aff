"""Inbound MQTT payloads (events, cancels, default controls) as pydantic models.

Validation happens here, at the boundary, and nowhere else: a payload that passes becomes
the control core's immutable `Control`; one that fails becomes a rejection whose detail
names the field and what would be right.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from derms_edge.control.curves import CATEGORY_CURVES
from derms_edge.control.events import MAX_EVSE_A, MIN_EVSE_A, Control, FixedPf, VoltVarCurve

M = TypeVar("M", bound=BaseModel)

Mrid = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
"""An event's id: 1 to 64 printable ASCII characters without spaces."""
DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VoltVarPayload(_Inbound):
    """A volt-var curve: a named IEEE 1547-2018 category curve, or points of its own."""

    curve: Literal["cat_a", "cat_b"] | None = Field(
        None, description="IEEE 1547-2018 default curve of category A or B"
    )
    points: list[tuple[float, float]] | None = Field(
        None,
        min_length=2,
        max_length=10,
        description="[v_pu, q_pct]: V in pu of nominal, Q in % of nameplate VA, + = injecting",
    )
    v_ref_pu: float = Field(1.0, ge=0.95, le=1.05, description="VRef, pu (IEEE 1547: 0.95-1.05)")
    response_time_s: float | None = Field(
        None, ge=1, le=90, description="open-loop response time, s (default: 10 A, 5 B)"
    )
    mode: Literal["auto", "native", "edge"] = Field(
        "auto", description="native: in the device; edge: in the gateway; auto: native if able"
    )

    @field_validator("points")
    @classmethod
    def _points(cls, points: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if points is None:
            return None
        for index, (v, q) in enumerate(points):
            if not (0.5 <= v <= 1.5 and math.isfinite(v)):
                raise ValueError(f"points[{index}]: v_pu {v} is outside 0.5..1.5")
            if not (-100.0 <= q <= 100.0):
                raise ValueError(f"points[{index}]: q_pct {q} is outside -100..100")
        for index, ((v0, _), (v1, _)) in enumerate(itertools.pairwise(points)):
            if v1 < v0:
                raise ValueError(
                    f"points[{index + 1}]: v_pu {v1} is below the previous point's {v0}"
                )
        return points

    @model_validator(mode="after")
    def _curve_or_points(self) -> Self:
        if (self.curve is None) == (self.points is None):
            raise ValueError('give either "curve" (cat_a or cat_b) or "points", not both')
        return self

    def to_curve(self) -> VoltVarCurve:
        """The curve in the control core's terms."""
        if self.curve is not None:
            default = CATEGORY_CURVES[self.curve]
            points = default.points
            response = self.response_time_s or default.response_time_s
        else:
            assert self.points is not None  # the validator allows exactly one
            points = tuple((float(v), float(q)) for v, q in self.points)
            response = self.response_time_s or 5.0
        return VoltVarCurve(points, self.v_ref_pu, response, self.mode)


class FixedPfPayload(_Inbound):
    """Constant power factor."""

    pf: float = Field(ge=0.8, le=1.0, description="displacement power factor")
    excitation: Literal["inject", "absorb"] = Field(
        description="inject: over-excited (var out); absorb: under-excited (var in)"
    )


class ControlPayload(_Inbound):
    """Any subset of the control functions."""

    max_w_pct: float | None = Field(
        None, ge=0, le=100, description="curtailment: active power limit, % of WMax"
    )
    export_limit_w: float | None = Field(
        None, ge=0, le=1e9, description="site export limit at the meter, W"
    )
    volt_var: VoltVarPayload | None = None
    fixed_pf: FixedPfPayload | None = None
    storage_w: float | None = Field(
        None, ge=-1e9, le=1e9, description="battery power, W, positive = discharge"
    )
    evse_max_a: float | None = Field(
        None, ge=0, le=MAX_EVSE_A, description="EV charger limit per phase, A: 0 (pause) or >= 6"
    )

    evse_max_w: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="EV charger power cap, W: the current limit becomes "
        "W / (phases x measured V line to neutral), rounded down to 0.1 A; under 6 A pauses",
    )

    @field_validator("evse_max_a")
    @classmethod
    def _evse(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_EVSE_A:
            raise ValueError(
                f"{value} A cannot be signalled (IEC 61851): use 0 to pause or at least "
                f"{MIN_EVSE_A:g} A"
            )
        return value

    def to_control(self) -> Control:
        """The control in the control core's terms."""
        return Control(
            max_w_pct=self.max_w_pct,
            export_limit_w=self.export_limit_w,
            volt_var=self.volt_var.to_curve() if self.volt_var is not None else None,
            fixed_pf=FixedPf(self.fixed_pf.pf, self.fixed_pf.excitation)
            if self.fixed_pf is not None
            else None,
            storage_w=self.storage_w,
            evse_max_a=self.evse_max_a,
            evse_max_w=self.evse_max_w,
        )


class EventPayload(_Inbound):
    """One scheduled control (IEEE 2030.5 DERControl semantics)."""

    mrid: Mrid
    creation_time: AwareDatetime | None = Field(None, description="default: time of receipt")
    primacy: int | None = Field(None, ge=0, le=255, description="lower wins; default: the role's")
    devices: list[DeviceId] | None = Field(
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


class CancelPayload(_Inbound):
    """Cancel one event."""

    mrid: Mrid


@dataclass(frozen=True, slots=True)
class Invalid:
    """A payload (or one element of an array) that failed validation."""

    mrid: str | None
    detail: str


def _describe(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: where (dotted path) and what."""
    lines = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"{path or 'payload'}: {message}")
    return "; ".join(lines)


def _json(payload: bytes) -> Any | Invalid:
    try:
        return json.loads(payload)
    except UnicodeDecodeError:
        return Invalid(None, "payload is not UTF-8 text")
    except json.JSONDecodeError as error:
        return Invalid(
            None, f"payload is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        )


def _validate(model: type[M], data: Any, where: str = "") -> M | Invalid:
    """Validate parsed JSON; on failure an Invalid that keeps the mrid when there is one."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        mrid = data.get("mrid") if isinstance(data, dict) else None
        return Invalid(mrid if isinstance(mrid, str) else None, _describe(error, where))


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


def parse_default(payload: bytes) -> ControlPayload | Invalid:
    """A default control; an empty retained payload clears it (handled by the caller)."""
    data = _json(payload)
    return data if isinstance(data, Invalid) else _validate(ControlPayload, data)
