"""Replay protection for signed controls: a signed event or cancel is fresh (its
``creation_time`` within ``control.max_clock_skew_s`` of the gateway's clock) and new (its
signature not seen before), or it is answered without being taken.

A signed message is remembered in the schedule store by the digest of what its signature
covers, until the skew window after the later of its creation time and its event's end: a
repeat inside that time is answered as a repeat (the event's status now, or ``rejected`` /
``replayed`` if it was refused then) and never taken twice, across restarts; after it, the
creation time is too old and the message is refused as replayed anyway. Signed default
controls are neither windowed nor remembered: they are retained, and the broker delivers
them again on every reconnect; setting the same default twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from derms_edge.control import Record
from derms_edge.control.admission import iso
from derms_edge.model import Reason, Response
from derms_edge.northbound.signed import Signed
from derms_edge.runtime.schedule_store import ScheduleStore


@dataclass(frozen=True, slots=True)
class ReplayGuard:
    """The replay window and memory of one gateway (present when signing is required)."""

    store: ScheduleStore
    max_clock_skew_s: float

    def refusal(self, mrid: str, creation_time: datetime | None, now: datetime) -> Response | None:
        """Why a signed event or cancel is not fresh, or None. One created too far ahead of
        the clock is left to admission (``invalid``), as for an unsigned event."""
        if creation_time is None:
            return Response.rejected(
                mrid,
                now,
                Reason.INVALID,
                "creation_time: required in a signed message (the replay window, "
                "control.max_clock_skew_s, is measured from it)",
            )
        age_s = (now - creation_time).total_seconds()
        if age_s <= self.max_clock_skew_s:
            return None
        return Response.rejected(
            mrid,
            now,
            Reason.REPLAYED,
            f"creation_time: {iso(creation_time)} is {age_s:.0f} s behind the gateway's clock "
            f"({iso(now)}); a signed message older than {self.max_clock_skew_s:g} s "
            "(control.max_clock_skew_s) is taken as a replay: sign it anew to send it again",
        )

    def seen(self, signed: Signed) -> bool:
        """Whether this signed message was taken before."""
        return self.store.seen_signed(signed.digest)

    def remember(self, signed: Signed, latest: datetime, now: datetime) -> None:
        """Remember a signed message until the skew window after ``latest`` (the latest of
        its creation times and its events' ends)."""
        try:
            until = latest + timedelta(seconds=self.max_clock_skew_s)
        except OverflowError:  # created in the year 9999: refused, and remembered for good
            until = datetime.max.replace(tzinfo=UTC)
        self.store.remember_signed(signed.digest, until, now)


def repeat(mrid: str, record: Record | None, now: datetime) -> Response:
    """The answer to a signed message taken before: its event's status now, or ``replayed``
    when it left no event (it was refused, or its event is forgotten)."""
    if record is not None:
        return Response(
            mrid, record.status, now, detail="repeat of a signed message; not taken again"
        )
    return Response.rejected(
        mrid, now, Reason.REPLAYED, "repeat of a signed message refused before; not taken again"
    )
