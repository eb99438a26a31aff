"""The last dispatch a role sent (a ``controls/{role}`` message) and the gateway's latest
answer to it, for the retained status: an installer sees at a glance whether the DSO's last
event arrived and what became of it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from derms_edge.model import Response, Status


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One dispatch: who sent it, when, and the latest answer to its (last) event."""

    role: str
    mrid: str | None
    """The event's mrid (the last one of an array); None when the payload had none."""
    received: datetime
    status: Status | None = None
    """None until answered (in the same control step, unless the loop failed)."""
    reason: str | None = None
    detail: str | None = None
    answered: datetime | None = None


class DispatchLog:
    """Follows the last dispatch and its answers (the control loop's own record)."""

    def __init__(self) -> None:
        self.last: Dispatch | None = None

    def taken(self, role: str, mrid: str | None, at: datetime) -> None:
        """A role's controls message was taken at ``at``; ``mrid`` is its last event's."""
        self.last = Dispatch(role, mrid, at)

    def answered(self, responses: Iterable[Response]) -> None:
        """Responses the gateway sends: those about the last dispatch's event update it (an
        event without mrid is matched by its first answer only)."""
        for response in responses:
            last = self.last
            if last is None or (response.mrid or None) != last.mrid:
                continue
            if last.mrid is None and last.status is not None:
                continue
            self.last = replace(
                last,
                status=response.status,
                reason=response.reason,
                detail=response.detail,
                answered=response.ts,
            )
