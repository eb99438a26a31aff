"""Whether an event may be accepted when it arrives, and whether it may start when it is due.

On arrival: its role may send every control in it at its primacy; its times make sense
(created no later than the gateway's clock allows, starting within a year); it has not
ended; its devices exist and can carry its controls; an EV current or a storage power is
within the device's rating; and a battery's projected state of charge stays inside its
window over the whole storage schedule with this event in it (the schedule already
infeasible without it is not this event's fault).

A device that cannot be reached is no reason to refuse a limit: it is accepted and started,
and written when the device answers. Storage never starts blind: an event with a storage
setpoint for a battery whose state of charge is not known fresh (unreachable, stale, frozen)
waits, unstarted, until it is; due with a fresh SoC, it starts only if the projection from
the SoC measured now still holds. A battery that answers but has no state of charge or
capacity to give is refused at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from derms_edge.control.arbitration import applies, resolve
from derms_edge.control.soc import Segment, project, violation_detail
from derms_edge.control.views import DeviceView, Role
from derms_edge.model import ControlType, DeviceKind, Event, Quality, Reason, Response, Status

MAX_AHEAD = timedelta(days=366)
"""An event may start at most this far ahead of the gateway's clock."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """A storage event due to start that waits for a fresh state of charge."""

    devices: tuple[str, ...]
    detail: str
    """Why, for people: which battery, and what is missing."""


def repeat_answer(event: Event, known: Event, status: Status, now: datetime) -> Response:
    """The answer to an event whose mrid is ``known`` (now in ``status``): that status if it
    is the same event sent again, else a rejection (an mrid names one event)."""
    if known.body == event.body:
        return Response(event.mrid, status, now, detail="repeat of a known event")
    return Response.rejected(
        event.mrid,
        now,
        Reason.DUPLICATE,
        f"mrid {event.mrid} is already used by an event with a different body (status {status})",
    )


def arrival_refusal(
    event: Event,
    role: Role,
    *,
    devices: Mapping[str, DeviceView],
    scheduled: Iterable[Event],
    meter: str | None,
    max_clock_skew_s: float,
    now: datetime,
) -> Response | None:
    """Why ``event`` cannot be accepted now (None: it can). ``scheduled`` are the events not
    finished yet: a storage event is projected with them."""
    refusal = role.refusal(event.control)
    if refusal is not None:
        return Response.rejected(event.mrid, now, Reason.UNAUTHORIZED, refusal)
    if event.primacy < role.primacy:
        return Response.rejected(
            event.mrid,
            now,
            Reason.UNAUTHORIZED,
            f"primacy {event.primacy} is stronger than role {role.name}'s {role.primacy}",
        )
    skew_s = (event.creation_time - now).total_seconds()
    if skew_s > max_clock_skew_s:
        return Response.rejected(
            event.mrid,
            now,
            Reason.INVALID,
            f"creation_time: {iso(event.creation_time)} is {skew_s:.0f} s ahead of the "
            f"gateway's clock ({iso(now)}); at most {max_clock_skew_s:g} s "
            "(control.max_clock_skew_s) is taken as clock skew",
        )
    if event.start - now > MAX_AHEAD:
        return Response.rejected(
            event.mrid,
            now,
            Reason.INVALID,
            f"start: {iso(event.start)} is more than {MAX_AHEAD.days} days ahead of the "
            f"gateway's clock ({iso(now)})",
        )
    if event.end <= now:
        return Response.rejected(
            event.mrid,
            now,
            Reason.EXPIRED,
            f"the event ended at {iso(event.end)}, before it arrived ({iso(now)})",
        )
    unknown = [d for d in event.devices or () if d not in devices]
    if unknown:
        return Response.rejected(
            event.mrid,
            now,
            Reason.NOT_APPLICABLE,
            f"devices: no device {', '.join(unknown)} at this gateway "
            f"(devices: {', '.join(devices)})",
        )
    problem = _inapplicable(event, devices, meter)
    if problem is not None:
        return Response.rejected(event.mrid, now, Reason.NOT_APPLICABLE, problem)
    if event.control.storage_w is None:
        return None
    check = _soc_check(event, devices, list(scheduled), now, include=True)
    return check if isinstance(check, Response) else None  # waiting: checked when due


def start_check(
    event: Event, devices: Mapping[str, DeviceView], scheduled: Iterable[Event], now: datetime
) -> Response | Waiting | None:
    """Whether ``event``, due now, starts (None), waits for a fresh state of charge
    (`Waiting`), or is refused (the rejection): a battery's SoC measured now would leave
    its window, or a battery that answers has none to give."""
    if event.control.storage_w is None:
        return None
    return _soc_check(event, devices, list(scheduled), now, include=False)


def pending(event: Event, devices: Mapping[str, DeviceView]) -> str | None:
    """Which targeted devices cannot be reached now, for the ``started`` answer: their
    setpoints are written when they answer."""
    targets = [d for d in targets_of(event, devices) if any(map(d.can, event.control.types))]
    away = [f"{d.id} ({d.quality})" for d in targets if d.quality is not Quality.OK]
    if not away:
        return None
    return f"pending, written when they answer: {', '.join(away)}"


def targets_of(event: Event, devices: Mapping[str, DeviceView]) -> list[DeviceView]:
    """The devices an event names, or every device but meters when it names none."""
    if event.devices is None:
        return [d for d in devices.values() if d.kind != DeviceKind.METER]
    return [devices[d] for d in event.devices if d in devices]


def iso(moment: datetime) -> str:
    """A moment as the contract writes it: ISO 8601, UTC as Z."""
    return moment.isoformat().replace("+00:00", "Z")


def _inapplicable(event: Event, devices: Mapping[str, DeviceView], meter: str | None) -> str | None:
    """Why the event's controls do not fit its devices, or None."""
    targets = targets_of(event, devices)
    for control_type in sorted(event.control.types):
        if control_type is ControlType.EXPORT_LIMIT_W:
            if meter is None:
                return "export_limit_w needs a meter (a kind: meter device); there is none"
            continue
        able = [d for d in targets if d.can(control_type)]
        if not able:
            named = ", ".join(d.id for d in targets) or "none"
            return f"{control_type}: no targeted device can do it (devices: {named})"
        if event.devices is not None and len(able) < len(targets):
            unable = ", ".join(d.id for d in targets if not d.can(control_type))
            return f"{control_type}: {unable} cannot do it"
    amps = event.control.evse_max_a
    for device in targets:
        if amps is not None and device.max_a is not None and amps > device.max_a:
            return (
                f"evse_max_a {amps:g} A is above {device.id}'s maximum {device.max_a:g} A per phase"
            )
    value = event.control.storage_w
    for device in targets:
        if value is None or not device.can(ControlType.STORAGE_W):
            continue
        cap = device.capability
        rating = None if cap is None else (cap.discharge_w_max if value > 0 else cap.charge_w_max)
        if rating is not None and abs(value) > rating:
            direction = "discharge" if value > 0 else "charge"
            return f"storage_w {value:g} W is beyond {device.id}'s {direction} rating {rating:g} W"
    return None


def _soc_check(
    event: Event,
    devices: Mapping[str, DeviceView],
    scheduled: list[Event],
    now: datetime,
    *,
    include: bool,
) -> Response | Waiting | None:
    """Project every targeted battery over its storage schedule (with ``event`` added when
    ``include``); refuse the event if it takes one outside its SoC window, or if a battery
    that answers has no SoC or capacity to give; wait while a battery's SoC is not known
    fresh."""
    waiting: list[str] = []
    for device in targets_of(event, devices):
        if not device.can(ControlType.STORAGE_W):
            continue
        limits = device.battery_limits()
        if not device.soc_known or limits is None:
            what = "capacity" if limits is None else "state of charge"
            if device.quality is Quality.OK and device.soc_frozen is None:
                return Response.rejected(
                    event.mrid,
                    now,
                    Reason.SOC_UNKNOWN,
                    f"{device.id}: answers but gives no {what}; no storage activation without it",
                )
            why = device.soc_frozen or f"{what} not known fresh (quality {device.quality})"
            waiting.append(f"{device.id}: {why}")
            continue
        assert device.state is not None and device.state.soc_pct is not None
        soc = device.state.soc_pct
        schedule = [*scheduled, event] if include else scheduled
        violation = project(limits, soc, now, _timeline(device, schedule, now)).first_violation
        if violation is None:
            continue
        before = project(limits, soc, now, _timeline(device, scheduled, now)).first_violation
        if before is not None and before.at <= violation.at and violation.mrid != event.mrid:
            continue  # the schedule was already infeasible before this event
        return Response.rejected(
            event.mrid, now, Reason.SOC_LIMIT, f"{device.id}: {violation_detail(violation)}"
        )
    if waiting:
        return Waiting(tuple(w.partition(":")[0] for w in waiting), "; ".join(waiting))
    return None


def _timeline(device: DeviceView, events: list[Event], now: datetime) -> list[Segment]:
    """The storage setpoint in force over time on one battery, from the schedule."""
    mine = [e for e in events if e.control.storage_w is not None and applies(e, device.id)]
    edges = sorted({t for e in mine for t in (e.start, e.end) if t > now} | {now})
    segments: list[Segment] = []
    for start, end in itertools.pairwise(edges):
        winner = resolve([e for e in mine if e.start <= start < e.end], ControlType.STORAGE_W)
        if winner is not None and winner.control.storage_w is not None:
            segments.append(Segment(start, end, winner.control.storage_w, winner.mrid))
    return segments
