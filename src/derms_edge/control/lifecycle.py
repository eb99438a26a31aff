"""An event's life: every status change in one transition table, as h11's ``_state.py`` keeps
HTTP's.

Rule: a record's status changes here and nowhere else, through `admit` (the first two
answers) and `advance` (every later one); an illegal change is a bug, and raises.

    (arrives) --admit--> SCHEDULED --START--> STARTED --END--> COMPLETED
                             |                    |
                             |                    +--CANCEL----> CANCELLED
                             |                    +--SUPERSEDE-> SUPERSEDED
                             |                    +--ABORT-----> ABORTED
                             +--END (its window passed unseen)-> COMPLETED
                             +--CANCEL / SUPERSEDE / ABORT (as above)
                             +--REFUSE (due to start, cannot)--> REJECTED

An event refused on arrival gets no record: it is answered REJECTED (`Response.rejected`) and
forgotten.
The table does not know why a trigger fires (the controller decides that); it knows only
which changes exist.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from derms_edge.errors import LifecycleError
from derms_edge.model import Event, Reason, Response, Status


class Trigger(enum.Enum):
    """What moves an event on."""

    START = "start"
    """Its start is due and nothing stops it."""
    END = "end"
    """Its window closed."""
    CANCEL = "cancel"
    """Its role cancelled it."""
    SUPERSEDE = "supersede"
    """A stronger event took over every device, type and second left of it."""
    REFUSE = "refuse"
    """Its start is due but it cannot start (devices offline, SoC)."""
    ABORT = "abort"
    """It must stop (SoC limit or unknown, a device refused, its dispatcher fell silent)."""


TRANSITIONS: dict[Status, dict[Trigger, Status]] = {
    Status.SCHEDULED: {
        Trigger.START: Status.STARTED,
        Trigger.END: Status.COMPLETED,
        Trigger.CANCEL: Status.CANCELLED,
        Trigger.SUPERSEDE: Status.SUPERSEDED,
        Trigger.REFUSE: Status.REJECTED,
        Trigger.ABORT: Status.ABORTED,
    },
    Status.STARTED: {
        Trigger.END: Status.COMPLETED,
        Trigger.CANCEL: Status.CANCELLED,
        Trigger.SUPERSEDE: Status.SUPERSEDED,
        Trigger.ABORT: Status.ABORTED,
    },
}
OPEN = frozenset(TRANSITIONS)
"""Statuses with a future: the records a control step looks at."""
TERMINAL = frozenset(status for moves in TRANSITIONS.values() for status in moves.values()) - OPEN
"""Final statuses: nothing moves a record on from one of them."""


@dataclass(slots=True)
class Record:
    """An accepted event and where it is in its life."""

    event: Event
    status: Status


def admit(event: Event, now: datetime, detail: str) -> tuple[Record, list[Response]]:
    """The record of an accepted event, and its first answers: received, then scheduled."""
    record = Record(event, Status.SCHEDULED)
    return record, [
        Response(event.mrid, Status.RECEIVED, now),
        Response(event.mrid, Status.SCHEDULED, now, detail=detail),
    ]


def advance(
    record: Record,
    trigger: Trigger,
    now: datetime,
    reason: Reason | str | None = None,
    detail: str | None = None,
) -> Response:
    """Move ``record`` on by ``trigger``; the response that says so."""
    status = TRANSITIONS.get(record.status, {}).get(trigger)
    if status is None:
        raise LifecycleError(f"event {record.event.mrid}: no {trigger.value} from {record.status}")
    record.status = status
    return Response(record.event.mrid, status, now, reason, detail)
