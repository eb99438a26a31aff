"""Which event's value is in force, per device and control type (IEEE 2030.5 rules).

Within a role the event with the lowest primacy wins, then the newest creation time.
Across roles, limits combine most-restrictively (every role's limit holds), and setpoints
go to the strongest event. An event is superseded only when another one displaces it
completely: every device and control type, for the whole of its remaining window.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from derms_edge.control.events import ControlType, Event, number

LIMITS = frozenset(
    {
        ControlType.MAX_W_PCT,
        ControlType.EXPORT_LIMIT_W,
        ControlType.EVSE_MAX_A,
        ControlType.EVSE_MAX_W,
    }
)
"""Control types that are upper limits: the lowest value in force from any role holds."""
REACTIVE = (ControlType.VOLT_VAR, ControlType.FIXED_PF)
"""Reactive power modes: a device runs one at a time, the strongest event's."""


def strongest(events: Iterable[Event]) -> Event | None:
    """The event that beats every other (lowest primacy, then newest creation time)."""
    best: Event | None = None
    for event in events:
        if best is None or event.beats(best):
            best = event
    return best


def resolve(events: Iterable[Event], control_type: ControlType) -> Event | None:
    """The event whose value of ``control_type`` is in force among active, applicable events."""
    candidates = [e for e in events if control_type in e.control.types]
    if control_type not in LIMITS:
        return strongest(candidates)
    by_role: dict[str, list[Event]] = {}
    for event in candidates:
        by_role.setdefault(event.role, []).append(event)
    winners = [w for w in map(strongest, by_role.values()) if w is not None]
    if not winners:
        return None
    return min(winners, key=lambda e: (number(e.control.items()[control_type]), e.primacy))


def _covers_devices(new: Event, old: Event) -> bool:
    if new.devices is None:
        return True
    return old.devices is not None and set(old.devices) <= set(new.devices)


def displaces(new: Event, old: Event, now: datetime) -> bool:
    """Whether ``new`` takes over every device, type and second left of ``old``."""
    if new.mrid == old.mrid or not old.control.types <= new.control.types:
        return False
    if not _covers_devices(new, old):
        return False
    if new.start > max(old.start, now) or new.end < old.end:
        return False
    if not new.beats(old):
        return False
    # a limit from another role does not displace: both hold, most-restrictively
    return new.role == old.role or not (old.control.types & LIMITS)
