"""Controls and events as the control core sees them: validated, immutable, in SI units."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal


class ControlType(StrEnum):
    """The control functions a role may send (the keys of a control object)."""

    MAX_W_PCT = "max_w_pct"
    """Curtailment: active power limit, % of the device's WMax."""
    EXPORT_LIMIT_W = "export_limit_w"
    """Site export limit at the meter, W."""
    VOLT_VAR = "volt_var"
    """IEEE 1547-2018 volt-var curve."""
    FIXED_PF = "fixed_pf"
    """Constant power factor."""
    STORAGE_W = "storage_w"
    """Battery active power setpoint, W, positive = discharge."""
    EVSE_MAX_A = "evse_max_a"
    """EV charger current limit per phase, A (0 = pause, else at least 6)."""
    EVSE_MAX_W = "evse_max_w"
    """EV charger power cap, W (e.g. 4.2 kW under Germany's EnWG §14a); the charger's current
    limit becomes P / (phases x measured V line to neutral)."""


MIN_EVSE_A = 6.0
"""IEC 61851: below 6 A a charger cannot signal a current, so 0 (pause) or at least 6 A."""
MAX_EVSE_A = 80.0
"""The highest current limit IEC 61851 PWM can signal, A."""

VoltVarMode = Literal["auto", "native", "edge"]
Excitation = Literal["inject", "absorb"]


@dataclass(frozen=True, slots=True)
class VoltVarCurve:
    """A volt-var characteristic: points are (V in pu of nominal, Q in % of nameplate VA)."""

    points: tuple[tuple[float, float], ...]
    v_ref_pu: float = 1.0
    response_time_s: float = 5.0
    """Open-loop response time: 90 % of a step is reached after this many seconds."""
    mode: VoltVarMode = "auto"


@dataclass(frozen=True, slots=True)
class FixedPf:
    """Constant power factor: displacement PF and whether the device injects or absorbs var."""

    pf: float
    excitation: Excitation


ControlValue = float | VoltVarCurve | FixedPf


def number(value: ControlValue) -> float:
    """A numeric control value (limits, setpoints) as a float; curves and PFs are not."""
    if not isinstance(value, float | int):
        raise TypeError(f"expected a number, not {value!r}")
    return float(value)


def value_data(value: ControlValue) -> Any:
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


@dataclass(frozen=True, slots=True)
class Control:
    """Any subset of the control functions; None means "not part of this control"."""

    max_w_pct: float | None = None
    export_limit_w: float | None = None
    volt_var: VoltVarCurve | None = None
    fixed_pf: FixedPf | None = None
    storage_w: float | None = None
    evse_max_a: float | None = None
    evse_max_w: float | None = None

    def items(self) -> dict[ControlType, ControlValue]:
        """The control functions that are set, by type."""
        return {
            ControlType(f.name): value
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        }

    @property
    def types(self) -> frozenset[ControlType]:
        """The control functions that are set."""
        return frozenset(self.items())


@dataclass(frozen=True, slots=True)
class Event:
    """One scheduled control from one role, after validation (IEEE 2030.5 DERControl-like)."""

    mrid: str
    role: str
    primacy: int
    """Lower wins (IEEE 2030.5 PrimacyType)."""
    creation_time: datetime
    start: datetime
    """Effective start, randomization already applied."""
    duration_s: float
    control: Control
    devices: tuple[str, ...] | None = None
    """None: every device that supports the control."""
    randomize_start_s: float = 0.0
    body: str = ""
    """Canonical JSON of the event as received, to tell a repeat from a duplicate mrid."""

    @property
    def end(self) -> datetime:
        """When the event's window closes."""
        return self.start + timedelta(seconds=self.duration_s)

    def active_at(self, now: datetime) -> bool:
        """Whether ``now`` is inside the event's window [start, end)."""
        return self.start <= now < self.end

    def beats(self, other: Event) -> bool:
        """IEEE 2030.5 precedence: lower primacy, then newer creation time."""
        if self.primacy != other.primacy:
            return self.primacy < other.primacy
        return self.creation_time > other.creation_time


class Status(StrEnum):
    """Response statuses (IEEE 2030.5 Response.status, by name)."""

    RECEIVED = "received"
    SCHEDULED = "scheduled"
    STARTED = "started"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    REJECTED = "rejected"
    ABORTED = "aborted"


class Reason(StrEnum):
    """Machine-readable reasons; ``superseded_by:<mrid>`` is built with :func:`superseded_by`."""

    INVALID = "invalid"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    UNAUTHORIZED = "unauthorized"
    NOT_APPLICABLE = "not_applicable"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_REFUSED = "device_refused"
    SOC_LIMIT = "soc_limit"
    SOC_UNKNOWN = "soc_unknown"
    UNKNOWN_EVENT = "unknown_event"
    DISPATCHER_TIMEOUT = "dispatcher_timeout"


def superseded_by(mrid: str) -> str:
    """The reason for an event displaced by ``mrid``."""
    return f"superseded_by:{mrid}"


@dataclass(frozen=True, slots=True)
class Response:
    """What the gateway says about one event."""

    mrid: str
    status: Status
    ts: datetime
    reason: str | None = None
    detail: str | None = None
