"""Charging profiles from the gateway's charger limit, and the station's answers (sans-I/O).

The gateway holds one profile per station: a station-wide cap (2.0.1
ChargingStationMaxProfile on evse 0, 1.6 ChargePointMaxProfile on connector 0) at a reserved
stack level, or, once the station refused that, a TxDefaultProfile on the EVSE. One
Absolute schedule with one period at startPeriod 0, in a unit the station takes (W <-> A at
the station's phases and nominal voltage, always rounded down to 0.1 so the limit is never
exceeded), valid from a minute ago (clock skew) until ``fail_safe_s`` from now: if the
gateway stops refreshing it, the profile expires and the station falls back to its own
limits. Release is a Clear of the gateway's profile id. The I/O side sends what
``set_request``/``clear_request`` return (the ``ocpp`` library's call dataclasses) and hands
the answers back to ``read_answer`` and ``limit_in_force``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any

from ocpp.charge_point import camel_to_snake_case  # type: ignore[import-untyped]
from ocpp.v16 import call as v16_call  # type: ignore[import-untyped]
from ocpp.v16 import datatypes as v16_types
from ocpp.v201 import call as v201_call  # type: ignore[import-untyped]
from ocpp.v201 import datatypes as v201_types

from derms_edge.devices.ocpp.capability import OcppVersion, RateUnit, SmartCharging
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import SetpointName

DEFAULT_FAIL_SAFE_S = 900
"""How long a profile stays valid without a refresh, s (15 min): long enough to ride out a
short outage of the gateway, short enough that a dead gateway's limit does not linger."""
CLOCK_MARGIN_S = 60
"""How far before now a profile's validFrom and startSchedule go, s: a refresh replaces the
profile of the same id at once, so a station whose clock is behind the gateway's would
otherwise hold no limit until the new validFrom."""


class Purpose(StrEnum):
    """Which profile the gateway installs."""

    STATION_MAX = "station_max"
    """2.0.1 ChargingStationMaxProfile / 1.6 ChargePointMaxProfile, on evse/connector 0."""
    TX_DEFAULT = "tx_default"
    """TxDefaultProfile on the EVSE: the fallback for stations that refuse the first."""


_WIRE = {
    OcppVersion.V201: {
        Purpose.STATION_MAX: "ChargingStationMaxProfile",
        Purpose.TX_DEFAULT: "TxDefaultProfile",
    },
    OcppVersion.V16: {
        Purpose.STATION_MAX: "ChargePointMaxProfile",
        Purpose.TX_DEFAULT: "TxDefaultProfile",
    },
}
_PROFILE_ID_BASE = {Purpose.STATION_MAX: 740_100, Purpose.TX_DEFAULT: 740_200}


def profile_id(purpose: Purpose, evse_id: int) -> int:
    """The gateway's own chargingProfileId for a purpose on an EVSE: the same every time,
    so a refresh replaces the profile (same id) instead of stacking a second one."""
    return _PROFILE_ID_BASE[purpose] + evse_id


@dataclass(frozen=True, slots=True)
class Limit:
    """A charging limit: A per phase or W, 0 = pause."""

    value: float
    unit: RateUnit

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"Limit: {self.value} {self.unit} is not a finite value >= 0")

    @classmethod
    def percent_of(cls, pct: float, max_a: float) -> Limit:
        """A curtailment (max_w_pct) as a current: pct % of the charger's max_a, A per phase."""
        if not 0 <= pct <= 100:
            raise ValueError(f"Limit.percent_of: {pct} % is not within 0..100")
        return cls(pct / 100 * max_a, RateUnit.A)


def limit_for_setpoint(name: SetpointName, value: float, max_a: float | None) -> Limit:
    """The limit a charger setpoint asks for: evse_max_a as it is (A per phase), max_w_pct
    as that share of the charger's max_a. Raises ValueError for another setpoint, or for a
    curtailment of a charger whose max_a is unknown."""
    if name is SetpointName.EVSE_MAX_A:
        return Limit(value, RateUnit.A)
    if name is SetpointName.MAX_W_PCT:
        if max_a is None:
            raise ValueError("max_w_pct needs the charger's max_a, which is unknown")
        return Limit.percent_of(value, max_a)
    raise ValueError(f"an OCPP charger takes evse_max_a or max_w_pct, not {name.value}")


def floor_tenth(exact: Fraction) -> float:
    """``exact`` rounded down to 0.1 (the resolution of a schedule's limit)."""
    return math.floor(exact * 10) / 10


def convert(limit: Limit, unit: RateUnit, phases: int, v: float) -> float:
    """The limit in ``unit``: W = A x phases x V, A = W / (phases x V), computed exactly and
    rounded down to 0.1, so the converted limit never allows more than the original. V is
    the nominal voltage, as OCPP's ChargingRateUnitType says a station converts (the set
    voltage of the area, not the measured one)."""
    if limit.unit is unit:
        return floor_tenth(Fraction(limit.value))
    per_amp = phases * Fraction(v)
    if unit is RateUnit.A:
        return floor_tenth(Fraction(limit.value) / per_amp)
    return floor_tenth(Fraction(limit.value) * per_amp)


@dataclass(frozen=True, slots=True)
class Plan:
    """One profile the gateway means to install, in our words."""

    purpose: Purpose
    evse_id: int
    """0 for the station-wide profile (1.6: connectorId)."""
    issued_at: datetime
    """When the plan was made (whole seconds, UTC)."""
    profile_id: int
    stack_level: int
    unit: RateUnit
    limit: float
    """In ``unit``, at most one decimal."""
    phases: int
    valid_from: datetime
    valid_to: datetime

    def refresh_at(self) -> datetime:
        """When to re-issue the profile: halfway from its issue to its expiry."""
        return self.issued_at + (self.valid_to - self.issued_at) / 2


@dataclass(frozen=True, slots=True)
class Installed:
    """The parts of any charging profile the validity rules look at."""

    profile_id: int
    purpose: str
    """On the wire, e.g. TxDefaultProfile."""
    stack_level: int
    evse_id: int
    start_periods: tuple[int, ...]
    valid_from: datetime | None = None
    valid_to: datetime | None = None


def plan_limit(
    limit: Limit,
    station: SmartCharging,
    now: datetime,
    *,
    evse_id: int = 0,
    stack_level: int | None = None,
    fail_safe_s: int = DEFAULT_FAIL_SAFE_S,
    installed: Iterable[Installed] = (),
) -> Plan:
    """The profile that holds ``limit``: station-wide unless the station refused that
    before, at ``stack_level`` (default: the station's highest, so it leads its purpose),
    in the limit's own unit if the station takes it, else converted. ``evse_id`` is where a
    TxDefaultProfile goes (0: every EVSE); ``installed``, the profiles the station reports,
    if known. Raises ValueError if the plan breaks a rule."""
    if now.tzinfo is None:
        raise ValueError("plan_limit: now must carry a time zone")
    if fail_safe_s <= 0:
        raise ValueError(f"plan_limit: fail_safe_s {fail_safe_s} must be > 0")
    purpose = Purpose.TX_DEFAULT if station.station_max_rejected else Purpose.STATION_MAX
    where = 0 if purpose is Purpose.STATION_MAX else evse_id
    unit = limit.unit if limit.unit in station.rate_units else next(iter(station.rate_units))
    start = now.astimezone(UTC).replace(microsecond=0)
    plan = Plan(
        purpose=purpose,
        evse_id=where,
        issued_at=start,
        profile_id=profile_id(purpose, where),
        stack_level=station.max_stack_level if stack_level is None else stack_level,
        unit=unit,
        limit=convert(limit, unit, station.phases, station.v_nom),
        phases=station.phases,
        valid_from=start - timedelta(seconds=CLOCK_MARGIN_S),
        valid_to=start + timedelta(seconds=fail_safe_s),
    )
    mine = installed_of(plan, OcppVersion.V201)
    problems = profile_problems(mine, station, (_as_201(p) for p in installed))
    if problems:
        raise ValueError("plan_limit: " + "; ".join(problems))
    return plan


def installed_of(plan: Plan, version: OcppVersion) -> Installed:
    """The plan as the validity rules see it."""
    return Installed(
        profile_id=plan.profile_id,
        purpose=_WIRE[version][plan.purpose],
        stack_level=plan.stack_level,
        evse_id=plan.evse_id,
        start_periods=(0,),
        valid_from=plan.valid_from,
        valid_to=plan.valid_to,
    )


def _as_201(profile: Installed) -> Installed:
    """A profile with its purpose named as in 2.0.1 (ChargePointMaxProfile is renamed)."""
    if profile.purpose == _WIRE[OcppVersion.V16][Purpose.STATION_MAX]:
        return replace(profile, purpose=_WIRE[OcppVersion.V201][Purpose.STATION_MAX])
    return profile


def _overlap(a: Installed, b: Installed) -> bool:
    far_past, far_future = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    a_from, a_to = a.valid_from or far_past, a.valid_to or far_future
    b_from, b_to = b.valid_from or far_past, b.valid_to or far_future
    return a_from < b_to and b_from < a_to


def profile_problems(
    profile: Installed, station: SmartCharging, installed: Iterable[Installed] = ()
) -> tuple[str, ...]:
    """Why a station would refuse this profile (empty when it would not), by the rules of
    OCPP 2.0.1 K01 (1.6 section 3.13 alike): the first period starts at 0 (K01.FR.31),
    periods strictly increase (K01.FR.35), no more periods than the station takes, the stack
    level within 0..the station's highest, a station-wide profile only on evse 0
    (K01.FR.03), and no other profile of the same purpose and stack level on the same EVSE
    valid at the same time (K01.FR.39; the same id replaces, so it does not count)."""
    problems: list[str] = []
    starts = profile.start_periods
    if not starts:
        problems.append("the schedule has no period")
    elif starts[0] != 0:
        problems.append(f"the first period starts at {starts[0]} s, not 0")
    if any(b <= a for a, b in itertools.pairwise(starts)):
        problems.append(f"startPeriod values {list(starts)} do not strictly increase")
    if len(starts) > station.max_periods:
        problems.append(f"{len(starts)} periods, the station takes {station.max_periods}")
    if not 0 <= profile.stack_level <= station.max_stack_level:
        problems.append(
            f"stack level {profile.stack_level} is outside 0..{station.max_stack_level}"
        )
    if profile.purpose in ("ChargingStationMaxProfile", "ChargePointMaxProfile") and (
        profile.evse_id != 0
    ):
        problems.append(f"{profile.purpose} on evse {profile.evse_id}, allowed on 0 only")
    if profile.valid_from and profile.valid_to and profile.valid_to <= profile.valid_from:
        problems.append("validTo is not after validFrom")
    for other in installed:
        same = (other.purpose, other.stack_level, other.evse_id) == (
            profile.purpose,
            profile.stack_level,
            profile.evse_id,
        )
        if same and other.profile_id != profile.profile_id and _overlap(profile, other):
            problems.append(
                f"profile {other.profile_id} has the same purpose {profile.purpose} and "
                f"stack level {profile.stack_level} and is valid at the same time"
            )
    return tuple(problems)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def set_request(plan: Plan, version: OcppVersion) -> Any:
    """The SetChargingProfile request that installs ``plan`` (``ocpp`` library dataclass)."""
    purpose, start = _WIRE[version][plan.purpose], _iso(plan.valid_from)
    if version is OcppVersion.V201:
        period = v201_types.ChargingSchedulePeriodType(
            start_period=0, limit=plan.limit, number_phases=plan.phases
        )
        schedule = v201_types.ChargingScheduleType(
            id=plan.profile_id,
            charging_rate_unit=plan.unit.value,
            charging_schedule_period=[period],
            start_schedule=start,
        )
        profile = v201_types.ChargingProfileType(
            id=plan.profile_id,
            stack_level=plan.stack_level,
            charging_profile_purpose=purpose,
            charging_profile_kind="Absolute",
            charging_schedule=[schedule],
            valid_from=start,
            valid_to=_iso(plan.valid_to),
        )
        return v201_call.SetChargingProfile(evse_id=plan.evse_id, charging_profile=profile)
    profile16 = v16_types.ChargingProfile(
        charging_profile_id=plan.profile_id,
        stack_level=plan.stack_level,
        charging_profile_purpose=purpose,
        charging_profile_kind="Absolute",
        charging_schedule=v16_types.ChargingSchedule(
            charging_rate_unit=plan.unit.value,
            charging_schedule_period=[
                v16_types.ChargingSchedulePeriod(
                    start_period=0, limit=plan.limit, number_phases=plan.phases
                )
            ],
            start_schedule=start,
        ),
        valid_from=start,
        valid_to=_iso(plan.valid_to),
    )
    return v16_call.SetChargingProfile(connector_id=plan.evse_id, cs_charging_profiles=profile16)


def clear_request(purpose: Purpose, evse_id: int, version: OcppVersion) -> Any:
    """The ClearChargingProfile request that releases the gateway's profile (by its id:
    nobody else's profile is touched)."""
    where = 0 if purpose is Purpose.STATION_MAX else evse_id
    if version is OcppVersion.V201:
        return v201_call.ClearChargingProfile(charging_profile_id=profile_id(purpose, where))
    return v16_call.ClearChargingProfile(id=profile_id(purpose, where))


def composite_request(
    evse_id: int, unit: RateUnit, version: OcppVersion, duration_s: int = 60
) -> Any:
    """The GetCompositeSchedule request that reads back the limit in force on an EVSE."""
    if version is OcppVersion.V201:
        return v201_call.GetCompositeSchedule(
            duration=duration_s, evse_id=evse_id, charging_rate_unit=unit.value
        )
    return v16_call.GetCompositeSchedule(
        connector_id=evse_id, duration=duration_s, charging_rate_unit=unit.value
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A station's answer to a request, in our words."""

    accepted: bool
    detail: str | None = field(default=None)
    """The station's status and reason when it refused, for a refusal's ``detail``."""


def _snake(answer: object, action: str) -> dict[str, Any]:
    """An answer with snake_case keys: the ``ocpp`` library's call_result dataclass (what
    ``ChargePoint.call`` returns), or its payload in either key style."""
    if is_dataclass(answer) and not isinstance(answer, type):
        answer = asdict(answer)
    if not isinstance(answer, Mapping):
        raise DeviceProtocolError(f"{action}: the answer {answer!r} is not an object")
    result: dict[str, Any] = camel_to_snake_case(dict(answer))
    return result


def read_answer(answer: object) -> Answer:
    """A SetChargingProfile/ClearChargingProfile answer ({status, statusInfo?}, either key
    style): accepted only on "Accepted"; otherwise the status with the 2.0.1 statusInfo's
    reasonCode and additionalInfo as the detail."""
    a = _snake(answer, "SetChargingProfile")
    status = a.get("status")
    if status == "Accepted":
        return Answer(accepted=True)
    raw_info = a.get("status_info")
    info: Mapping[str, Any] = raw_info if isinstance(raw_info, Mapping) else {}
    parts = [str(status)] + [
        str(info[k]) for k in ("reason_code", "additional_info") if info.get(k) is not None
    ]
    return Answer(accepted=False, detail="station answered " + ": ".join(parts))


def fallback(station: SmartCharging, plan: Plan, answer: Answer) -> SmartCharging | None:
    """After a refused station-wide profile, the station as it now is (refuses station-wide
    profiles: plan again for a TxDefaultProfile); None when there is nothing to fall back to."""
    if answer.accepted or plan.purpose is not Purpose.STATION_MAX:
        return None
    return replace(station, station_max_rejected=True)


def limit_in_force(answer: object, version: OcppVersion, at_s: int = 0) -> Limit | None:
    """The limit in force ``at_s`` seconds into a GetCompositeSchedule answer's schedule
    (2.0.1 ``schedule``, 1.6 ``chargingSchedule``); None when refused or without a period
    covering that time."""
    a = _snake(answer, "GetCompositeSchedule")
    if a.get("status") != "Accepted":
        return None
    schedule = a.get("schedule") if version is OcppVersion.V201 else a.get("charging_schedule")
    if not isinstance(schedule, Mapping):
        return None
    periods: Sequence[Mapping[str, Any]] = schedule.get("charging_schedule_period") or ()
    current = [p for p in periods if int(p["start_period"]) <= at_s]
    if not current:
        return None
    period = max(current, key=lambda p: int(p["start_period"]))
    return Limit(float(period["limit"]), RateUnit(schedule["charging_rate_unit"]))


def confirms(plan: Plan, in_force: Limit | None) -> bool:
    """Whether the limit read back holds the plan: same unit, at or under the plan's limit
    (another profile may hold it lower; the composite takes the lowest)."""
    return in_force is not None and in_force.unit is plan.unit and in_force.value <= plan.limit
