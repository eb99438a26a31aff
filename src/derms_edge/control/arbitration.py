"""Which event's value is in force, per device and control type (IEEE 2030.5 rules).

Within a role the event with the lowest primacy wins, then the newest creation time.
Across roles, bounds combine most-restrictively: each role's limit holds (its winning event,
else its default), so no role lifts another's, and the highest reserve holds; setpoints go
to the strongest event. An event is superseded only when another one displaces it
completely: every device and control type, for the whole of its remaining window. Where no
event sets a setpoint or mode, the default of the strongest role that has one holds, else
the configuration's; an event beats any default (of a bound: its own role's).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from derms_edge.control.views import DeviceView, Role
from derms_edge.model import CONTROL_TYPES, Control, ControlType, ControlValue, Event, number

LIMITS = frozenset(
    {
        ControlType.MAX_W_PCT,
        ControlType.EXPORT_LIMIT_W,
        ControlType.EVSE_MAX_A,
        ControlType.EVSE_MAX_W,
    }
)
"""Control types that are upper limits: the lowest value in force from any role holds."""
FLOORS = frozenset({ControlType.RESERVE_SOC_PCT})
"""Control types that are lower bounds: the highest value in force from any role holds."""
BOUNDS = LIMITS | FLOORS
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
    """The strongest event that sets ``control_type`` (a setpoint or a mode)."""
    return strongest(e for e in events if control_type in e.control.types)


def bound_in_force(
    events: Iterable[Event], defaults: Defaults, control_type: ControlType
) -> InForce | None:
    """A limit or floor in force: each role's own (its winning event, else its default),
    the most restrictive across roles (lowest limit, highest floor; on a tie the stronger
    role's); without any, the configuration's default."""
    by_role: dict[str, list[Event]] = {}
    for event in events:
        if control_type in event.control.types:
            by_role.setdefault(event.role, []).append(event)
    held: list[tuple[float, int, InForce]] = []
    for role, mine in by_role.items():
        winner = strongest(mine)
        assert winner is not None  # every list has an event
        value = number(winner.control.items()[control_type])
        held.append(
            (value, winner.primacy, InForce(value, Source(SourceKind.EVENT, role, winner.mrid)))
        )
    for role, control in defaults.by_role.items():
        default = control.items().get(control_type)
        if default is not None and role not in by_role:
            source = Source(SourceKind.DEFAULT, role)
            held.append(
                (number(default), role_primacy(source, defaults.roles), InForce(default, source))
            )
    if not held:
        return defaults.of(control_type)
    sign = -1.0 if control_type in FLOORS else 1.0
    return min(held, key=lambda h: (sign * h[0], h[1]))[2]


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
    # a bound from another role does not displace: both hold, most-restrictively
    return new.role == old.role or not (old.control.types & BOUNDS)


def applies(event: Event, device_id: str) -> bool:
    """Whether ``event`` is for this device (an event naming no devices is for all)."""
    return event.devices is None or device_id in event.devices


class SourceKind(enum.StrEnum):
    """Where a value in force came from."""

    EVENT = "event"
    DEFAULT = "default"
    EXPORT_LIMIT = "export_limit"
    """The site export loop's own limit on an inverter."""
    EXPORT_LIMIT_FALLBACK = "export_limit_fallback"
    """The export loop's open-loop cap while the meter's reading is not fresh."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value in force came from: an event, a role's default, the config's, a loop."""

    kind: SourceKind
    role: str | None = None
    mrid: str | None = None


@dataclass(frozen=True, slots=True)
class InForce:
    """One control value in force and its source."""

    value: ControlValue
    source: Source


CONFIG_PRIMACY = 256
"""The configuration's own default comes after every role's (primacies are 0..255)."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """The default controls: each role's (retained on MQTT) and the configuration's."""

    roles: Mapping[str, Role]
    by_role: Mapping[str, Control]
    config: Control
    _in_force: Mapping[ControlType, InForce] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # once per step, not once per device or per control type: each role's controls are
        # read once, strongest role first; the first found of each type holds
        found: dict[ControlType, InForce] = {}
        for role in sorted(self.by_role, key=lambda r: self.roles[r].primacy):
            for control_type, value in self.by_role[role].items().items():
                found.setdefault(control_type, InForce(value, Source(SourceKind.DEFAULT, role)))
        for control_type, value in self.config.items().items():
            found.setdefault(control_type, InForce(value, Source(SourceKind.DEFAULT)))
        in_force = {t: found[t] for t in CONTROL_TYPES if t in found}
        object.__setattr__(self, "_in_force", in_force)

    def in_force(self) -> Mapping[ControlType, InForce]:
        """Every control's default in force, the same for every device: the strongest role's
        that sets it, else the configuration's."""
        return self._in_force

    def of(self, control_type: ControlType) -> InForce | None:
        """The default in force for one control type, if any."""
        return self._in_force.get(control_type)


def role_primacy(source: Source, roles: Mapping[str, Role]) -> int:
    """The primacy of a default's role; the configuration's own default comes last."""
    role = roles.get(source.role) if source.role is not None else None
    return role.primacy if role is not None else CONFIG_PRIMACY


def device_in_force(
    device: DeviceView,
    events: Iterable[Event],
    defaults: Defaults,
    stronger: Callable[[Source, Source], bool],
) -> dict[ControlType, InForce]:
    """What holds on one device: per bound the most restrictive role's, per setpoint or
    mode the winning event's value, else the default; one reactive mode at a time (the
    ``stronger`` source's)."""
    per_type = defaults.in_force()
    mine = [e for e in events if applies(e, device.id)]
    result: dict[ControlType, InForce] = {}
    for control_type in CONTROL_TYPES:
        if control_type is ControlType.EXPORT_LIMIT_W or not device.can(control_type):
            continue
        if control_type in BOUNDS:
            bound = bound_in_force(mine, defaults, control_type)
            if bound is not None:
                result[control_type] = bound
            continue
        winner = resolve(mine, control_type)
        if winner is not None:
            value = winner.control.items()[control_type]
            result[control_type] = InForce(
                value, Source(SourceKind.EVENT, winner.role, winner.mrid)
            )
        elif control_type in per_type:
            result[control_type] = per_type[control_type]
    if all(t in result for t in REACTIVE):
        volt_var, fixed_pf = (result[t].source for t in REACTIVE)
        del result[ControlType.VOLT_VAR if stronger(fixed_pf, volt_var) else ControlType.FIXED_PF]
    return result


def reserve_ahead(
    events: Iterable[Event], defaults: Defaults, device_id: str, now: datetime
) -> float | None:
    """The highest reserve in force on a battery from ``now`` on, over the events not
    finished (at ``now`` and at each later start): what a storage schedule is projected
    against, so a reserve scheduled for later (a storm) also holds back a discharge before."""
    mine = [e for e in events if applies(e, device_id) and e.end > now]
    moments = {now} | {e.start for e in mine if e.start > now}
    floors = [
        bound_in_force(
            [e for e in mine if e.start <= moment < e.end], defaults, ControlType.RESERVE_SOC_PCT
        )
        for moment in moments
    ]
    return max((number(f.value) for f in floors if f is not None), default=None)


def site_in_force(events: Iterable[Event], defaults: Defaults) -> InForce | None:
    """The site's export limit in force: the most restrictive role's (see `bound_in_force`)."""
    return bound_in_force(events, defaults, ControlType.EXPORT_LIMIT_W)
