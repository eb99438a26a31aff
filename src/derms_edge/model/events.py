"""Events as the gateway runs them (IEEE 2030.5 DERControl semantics), and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from derms_edge.model.controls import Control


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
    arrival: int = 0
    """Order of receipt at this gateway (1, 2, ... kept across restarts): of two events with
    the same primacy and creation time, the later arrival wins."""

    @property
    def end(self) -> datetime:
        """When the event's window closes."""
        return self.start + timedelta(seconds=self.duration_s)

    def beats(self, other: Event) -> bool:
        """IEEE 2030.5 precedence: lower primacy, then newer creation time; on a tie (head-ends
        send whole seconds) the later arrival, which corrects the earlier."""
        if self.primacy != other.primacy:
            return self.primacy < other.primacy
        if self.creation_time != other.creation_time:
            return self.creation_time > other.creation_time
        return self.arrival > other.arrival


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
    REPLAYED = "replayed"


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

    @classmethod
    def rejected(cls, mrid: str, ts: datetime, reason: Reason, detail: str) -> Response:
        """The answer to what was refused on arrival (an event, a cancel, a default)."""
        return cls(mrid, Status.REJECTED, ts, reason, detail)
