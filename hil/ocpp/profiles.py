"""Charging profiles as an OCPP charging station keeps them: validation and the composite
schedule, for 1.6 and 2.0.1 alike (pure: no websocket, no `ocpp` library).

The composite at an instant: within each purpose the valid profile with the highest stack level
that has a period then leads (an EVSE-specific profile before a station-wide one of the same
level); a TxProfile replaces the TxDefaultProfile for its transaction; across purposes the lowest
limit wins, and the station's own maximum caps it. Limits are compared in A per phase: a W limit
is divided by the line-to-neutral voltage and the phases it is drawn on.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

RECURRENCY_S = {"Daily": 86400, "Weekly": 7 * 86400}
DEFAULT_PHASES = 3
"""Phases a period is drawn on when it does not say (both versions)."""


class Purpose(enum.Enum):
    """A profile's purpose; STATION_MAX is 1.6's ChargePointMaxProfile and 2.0.1's
    ChargingStationMaxProfile."""

    STATION_MAX = "StationMax"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"


PURPOSE_NAMES = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "ChargingStationMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}


@dataclass(frozen=True, slots=True)
class Period:
    """A schedule period: from start_s after the schedule's start, limit in its unit."""

    start_s: int
    limit: float
    phases: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """One installed charging profile with its (single) schedule."""

    id: int
    stack_level: int
    purpose: Purpose
    kind: str
    """Absolute, Recurring or Relative."""
    evse_id: int
    """0: the whole station; else the EVSE (1.6: connector) it applies to."""
    unit: str
    """A or W."""
    periods: tuple[Period, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None

    def valid_at(self, t: datetime) -> bool:
        """Whether validFrom <= t < validTo."""
        return (self.valid_from is None or self.valid_from <= t) and (
            self.valid_to is None or t < self.valid_to
        )

    def schedule_start(self, t: datetime, anchor: datetime) -> datetime:
        """When the schedule in force at t started: startSchedule, its last recurrence before
        t, or (Relative) the anchor (the transaction's start, or now without one)."""
        if self.kind == "Relative" or self.start_schedule is None:
            return anchor
        if self.kind == "Recurring" and self.recurrency in RECURRENCY_S:
            every = RECURRENCY_S[self.recurrency]
            k = math.floor((t - self.start_schedule).total_seconds() / every)
            return self.start_schedule + timedelta(seconds=k * every)
        return self.start_schedule

    def period_at(self, t: datetime, anchor: datetime) -> Period | None:
        """The period in force at t, None outside validity, before the start or after the
        duration."""
        if not self.valid_at(t):
            return None
        offset = (t - self.schedule_start(t, anchor)).total_seconds()
        if offset < 0 or (self.duration_s is not None and offset >= self.duration_s):
            return None
        current = None
        for period in self.periods:
            if period.start_s <= offset:
                current = period
        return current

    def edges(self, t0: datetime, t1: datetime, anchor: datetime) -> Iterable[datetime]:
        """Instants in (t0, t1) at which this profile's limit may change."""
        starts = [self.schedule_start(t0, anchor)]
        if self.kind == "Recurring" and self.recurrency in RECURRENCY_S:
            every = timedelta(seconds=RECURRENCY_S[self.recurrency])
            while starts[-1] + every < t1:
                starts.append(starts[-1] + every)
        found = [e for e in (self.valid_from, self.valid_to) if e is not None]
        for start in starts:
            found += [start + timedelta(seconds=p.start_s) for p in self.periods]
            if self.duration_s is not None:
                found.append(start + timedelta(seconds=self.duration_s))
        return (e for e in found if t0 < e < t1)


@dataclass(frozen=True, slots=True)
class Criteria:
    """Which profiles a ClearChargingProfile removes: those matching every field given."""

    profile_id: int | None = None
    evse_id: int | None = None
    purpose: Purpose | None = None
    stack_level: int | None = None

    def matches(self, p: Profile) -> bool:
        return (
            (self.profile_id is None or p.id == self.profile_id)
            and (self.evse_id is None or p.evse_id == self.evse_id)
            and (self.purpose is None or p.purpose is self.purpose)
            and (self.stack_level is None or p.stack_level == self.stack_level)
        )


@dataclass(frozen=True, slots=True)
class StationRules:
    """What the station supports and how it behaves when a profile is offered."""

    version: str
    """"2.0.1" or "1.6"."""
    evse_id: int
    max_stack_level: int
    max_periods: int
    rate_units: tuple[str, ...]
    reject_station_wide: bool
    """Refuse ChargingStationMaxProfile / ChargePointMaxProfile (many real stations do)."""


@dataclass(frozen=True, slots=True)
class Electrical:
    """What converts between A per phase and W: the station's phases and voltage."""

    phases: int
    v: float
    max_a: float

    def amps(self, limit: float, unit: str, phases: int | None) -> float:
        """A per phase from a limit in A or W drawn on `phases` (default 3, at most the
        station's)."""
        if unit == "A":
            return limit
        return limit / (self.v * min(phases or DEFAULT_PHASES, self.phases))

    def in_unit(self, amps: float, unit: str) -> float:
        """A per phase as a limit in `unit`, on the station's phases."""
        return amps if unit == "A" else amps * self.v * self.phases


def refusal(
    profile: Profile,
    rules: StationRules,
    installed: Iterable[Profile],
    transaction_id: str | None,
    now: datetime,
) -> str | None:
    """Why the station rejects a profile offered for `profile.evse_id` (None: accept), by the
    OCPP rules (2.0.1 requirement numbers in brackets)."""
    if profile.evse_id not in (0, rules.evse_id):
        return f"no EVSE {profile.evse_id}"
    if not 0 <= profile.stack_level <= rules.max_stack_level:
        return f"stack level {profile.stack_level} outside 0..{rules.max_stack_level}"
    if profile.unit not in rules.rate_units:
        return f"rate unit {profile.unit} not supported (K01.FR.26)"
    if profile.purpose is Purpose.STATION_MAX:
        if rules.reject_station_wide:
            return "station-wide profiles are not accepted by this station"
        if profile.evse_id != 0:
            return "a station maximum profile needs EVSE 0 (K01.FR.03)"
        if profile.kind == "Relative":
            return "a station maximum profile cannot be Relative (K01.FR.38)"
    if profile.purpose is Purpose.TX:
        if profile.evse_id == 0:
            return "a TxProfile needs an EVSE (K01.FR.16)"
        if transaction_id is None:
            return "a TxProfile needs an active transaction (K01.FR.09)"
        if rules.version == "2.0.1" and profile.transaction_id is None:
            return "a TxProfile needs a transactionId (K01.FR.03)"
        if profile.transaction_id not in (None, transaction_id):
            return f"transaction {profile.transaction_id} is not the active one (K01.FR.33)"
    reason = _schedule_refusal(profile, rules)
    if reason is not None:
        return reason
    if profile.valid_to is not None and profile.valid_to <= (profile.valid_from or now):
        return "validTo is not after validFrom (or now)"
    if rules.version == "2.0.1":
        for other in installed:
            if (
                other.id != profile.id
                and other.purpose is profile.purpose
                and other.stack_level == profile.stack_level
                and other.evse_id == profile.evse_id
                and _overlap(other, profile)
            ):
                return f"profile {other.id} has the same stack level and purpose (K01.FR.39)"
    return None


def _schedule_refusal(profile: Profile, rules: StationRules) -> str | None:
    starts = [p.start_s for p in profile.periods]
    if not starts:
        return "the schedule has no periods"
    if len(starts) > rules.max_periods:
        return f"{len(starts)} periods, at most {rules.max_periods}"
    if starts[0] != 0:
        return "the first period must start at 0 (K01.FR.31)"
    if any(b <= a for a, b in itertools.pairwise(starts)):
        return "period starts must increase (K01.FR.35)"
    if any(p.limit < 0 for p in profile.periods):
        return "a limit is negative"
    if profile.kind in ("Absolute", "Recurring") and profile.start_schedule is None:
        return f"an {profile.kind} profile needs startSchedule (K01.FR.40)"
    if profile.kind == "Relative" and profile.start_schedule is not None:
        return "a Relative profile must not have startSchedule (K01.FR.41)"
    if profile.kind == "Recurring" and profile.recurrency not in RECURRENCY_S:
        return "a Recurring profile needs recurrencyKind Daily or Weekly"
    return None


def _overlap(a: Profile, b: Profile) -> bool:
    lo = max(_stamp(a.valid_from, -math.inf), _stamp(b.valid_from, -math.inf))
    hi = min(_stamp(a.valid_to, math.inf), _stamp(b.valid_to, math.inf))
    return lo < hi


def _stamp(t: datetime | None, default: float) -> float:
    return default if t is None else t.timestamp()


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """A period of a composite schedule: from start_s after its start, A per phase."""

    start_s: int
    amps: float


class ProfileStore:
    """The profiles installed on a station and the composite limit they make."""

    def __init__(self, rules: StationRules, electrical: Electrical) -> None:
        self.rules = rules
        self.electrical = electrical
        self.profiles: dict[int, Profile] = {}

    def install(self, profile: Profile, transaction_id: str | None, now: datetime) -> str | None:
        """Install (or replace by id) a profile; the reason it was rejected, or None. 1.6
        replaces a profile of the same stack level and purpose; 2.0.1 rejects it."""
        reason = refusal(profile, self.rules, self.profiles.values(), transaction_id, now)
        if reason is not None:
            return reason
        if self.rules.version == "1.6":
            for other in list(self.profiles.values()):
                if (
                    other.purpose is profile.purpose
                    and other.stack_level == profile.stack_level
                    and other.evse_id == profile.evse_id
                ):
                    del self.profiles[other.id]
        self.profiles[profile.id] = profile
        return None

    def clear(self, criteria: Criteria) -> int:
        """Remove the profiles matching the criteria; how many were removed."""
        gone = [p.id for p in self.profiles.values() if criteria.matches(p)]
        for i in gone:
            del self.profiles[i]
        return len(gone)

    def end_transaction(self) -> None:
        """A transaction ended: its TxProfiles go with it."""
        self.clear(Criteria(purpose=Purpose.TX))

    def _leading(
        self, purposes: tuple[Purpose, ...], t: datetime, anchor: datetime, tx: str | None
    ) -> float | None:
        """A per phase of the first valid profile with a period at t among `purposes`, by
        stack level (EVSE-specific first); None if none has one."""
        candidates = [
            p
            for p in self.profiles.values()
            if p.purpose in purposes
            and (p.purpose is not Purpose.TX or (tx is not None and p.transaction_id in (None, tx)))
        ]
        candidates.sort(key=lambda p: (p.stack_level, p.evse_id != 0), reverse=True)
        for profile in candidates:
            period = profile.period_at(t, anchor)
            if period is not None:
                return self.electrical.amps(period.limit, profile.unit, period.phases)
        return None

    def limit_a(
        self, t: datetime, anchor: datetime, tx: str | None = None, evse_id: int = 1
    ) -> float:
        """The composite limit at t, A per phase: the station maximum (and for an EVSE the
        transaction's or default profile) and the station's own max_a, the lowest of them."""
        limits = [self.electrical.max_a]
        station = self._leading((Purpose.STATION_MAX,), t, anchor, tx)
        if station is not None:
            limits.append(station)
        if evse_id != 0:
            tx_limit = self._leading((Purpose.TX,), t, anchor, tx)
            if tx_limit is None:
                tx_limit = self._leading((Purpose.TX_DEFAULT,), t, anchor, tx)
            if tx_limit is not None:
                limits.append(tx_limit)
        return min(limits)

    def edges(self, t0: datetime, t1: datetime, anchor: datetime) -> list[datetime]:
        """Sorted instants in (t0, t1) where the composite may change."""
        return sorted({e for p in self.profiles.values() for e in p.edges(t0, t1, anchor)})

    def composite(
        self,
        start: datetime,
        duration_s: int,
        anchor: datetime,
        tx: str | None = None,
        evse_id: int = 1,
    ) -> list[CompositePeriod]:
        """The composite schedule from start for duration_s: one period per change."""
        end = start + timedelta(seconds=duration_s)
        periods: list[CompositePeriod] = []
        for t in [start, *self.edges(start, end, anchor)]:
            amps = self.limit_a(t, anchor, tx, evse_id)
            start_s = math.ceil((t - start).total_seconds())
            if periods and periods[-1].start_s == start_s:
                periods.pop()
            if not periods or periods[-1].amps != amps:
                periods.append(CompositePeriod(start_s, amps))
        return periods
