"""Which event's value is in force, per device and control type (IEEE 2030.5 rules).

Within a role the event with the lowest primacy wins, then the newest creation time.
Across roles, limits combine most-restrictively (every role's limit holds), and setpoints
go to the strongest event. An event is superseded only when another one displaces it
completely: every device and control type, for the whole of its remaining window. Where no
event sets a control, the default of the strongest role that has one holds, else the
configuration's; an event beats any default.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from derms_edge.control.views import DeviceView, Role
from derms_edge.model import Control, ControlType, ControlValue, Event, number

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

    def in_force(self) -> dict[ControlType, InForce]:
        """Every control's default in force, the same for every device: the strongest role's
        that sets it, else the configuration's."""
        found = {t: self.of(t) for t in ControlType}
        return {t: value for t, value in found.items() if value is not None}

    def of(self, control_type: ControlType) -> InForce | None:
        """The default in force for one control type, if any."""
        for role in sorted(self.by_role, key=lambda r: self.roles[r].primacy):
            value = self.by_role[role].items().get(control_type)
            if value is not None:
                return InForce(value, Source(SourceKind.DEFAULT, role))
        value = self.config.items().get(control_type)
        return None if value is None else InForce(value, Source(SourceKind.DEFAULT))


def role_primacy(source: Source, roles: Mapping[str, Role]) -> int:
    """The primacy of a default's role; the configuration's own default comes last."""
    role = roles.get(source.role) if source.role is not None else None
    return role.primacy if role is not None else CONFIG_PRIMACY


def device_in_force(
    device: DeviceView,
    events: Iterable[Event],
    defaults: Mapping[ControlType, InForce],
    stronger: Callable[[Source, Source], bool],
) -> dict[ControlType, InForce]:
    """What holds on one device: per control type the winning event's value, else the
    default; one reactive mode at a time (the ``stronger`` source's)."""
    mine = [e for e in events if applies(e, device.id)]
    result: dict[ControlType, InForce] = {}
    for control_type in ControlType:
        if control_type is ControlType.EXPORT_LIMIT_W or not device.can(control_type):
            continue
        winner = resolve(mine, control_type)
        if winner is not None:
            value = winner.control.items()[control_type]
            result[control_type] = InForce(
                value, Source(SourceKind.EVENT, winner.role, winner.mrid)
            )
        elif control_type in defaults:
            result[control_type] = defaults[control_type]
    if all(t in result for t in REACTIVE):
        volt_var, fixed_pf = (result[t].source for t in REACTIVE)
        del result[ControlType.VOLT_VAR if stronger(fixed_pf, volt_var) else ControlType.FIXED_PF]
    return result


def site_in_force(events: Iterable[Event], defaults: Defaults) -> InForce | None:
    """The site's export limit in force: the winning event's, else the default."""
    winner = resolve(events, ControlType.EXPORT_LIMIT_W)
    if winner is not None and winner.control.export_limit_w is not None:
        return InForce(
            winner.control.export_limit_w, Source(SourceKind.EVENT, winner.role, winner.mrid)
        )
    return defaults.of(ControlType.EXPORT_LIMIT_W)
