"""OCPP charging profiles from the gateway's limits: the payloads (checked against the
``ocpp`` library's bundled JSON schemas, as a station would), the W <-> A conversion that
never exceeds the limit, the validity rules, and the station's answers read back."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallResult, _validate_payload
from ocpp.v16 import call_result as v16_result
from ocpp.v201 import call_result as v201_result

from derms_edge.devices.ocpp.capability import OcppVersion, RateUnit, SmartCharging
from derms_edge.devices.ocpp.profiles import (
    DEFAULT_FAIL_SAFE_S,
    Answer,
    Installed,
    Limit,
    Plan,
    Purpose,
    clear_request,
    composite_request,
    confirms,
    convert,
    fallback,
    installed_of,
    limit_for_setpoint,
    limit_in_force,
    plan_limit,
    profile_id,
    profile_problems,
    read_answer,
    set_request,
)
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import SetpointName

V16, V201 = OcppVersion.V16, OcppVersion.V201
NOW = datetime(2026, 12, 4, 7, 0, 0, 250_000, tzinfo=UTC)
STATION = SmartCharging(
    rate_units=frozenset({RateUnit.A, RateUnit.W}), max_periods=24, max_stack_level=8
)
AMPS_ONLY = replace(STATION, rate_units=frozenset({RateUnit.A}))
WATTS_ONLY = replace(STATION, rate_units=frozenset({RateUnit.W}))


def on_the_wire(request: Any, version: OcppVersion) -> dict[str, Any]:
    """The payload as ``ocpp.ChargePoint.call`` sends it (serialize, camelCase, drop the
    Nones), validated against the library's schema for the action: raises like the
    library would on a payload a station would reject."""
    payload = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
    _validate_payload(Call("1", type(request).__name__, payload), version.value)
    return payload


def valid_answer(action: str, payload: dict[str, Any], version: OcppVersion) -> dict[str, Any]:
    """A station's answer, checked against the schema (so the test's example is real)."""
    _validate_payload(CallResult("1", payload, action=action), version.value)
    return payload


def test_station_max_profile_201_in_amps() -> None:
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    payload = on_the_wire(set_request(plan, V201), V201)
    profile = payload["chargingProfile"]
    assert payload["evseId"] == 0
    assert profile["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert profile["chargingProfileKind"] == "Absolute"
    assert profile["stackLevel"] == 8  # the station's highest: leads its purpose
    assert profile["id"] == profile_id(Purpose.STATION_MAX, 0)
    (schedule,) = profile["chargingSchedule"]
    assert schedule["chargingRateUnit"] == "A"
    assert schedule["startSchedule"] == "2026-12-04T06:59:00Z"  # a minute early: clock skew
    assert schedule["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 3}
    ]
    assert profile["validFrom"] == "2026-12-04T06:59:00Z"
    assert profile["validTo"] == "2026-12-04T07:15:00Z"  # the fail-safe: 900 s from now
    assert DEFAULT_FAIL_SAFE_S == 900


def test_station_max_profile_16_on_connector_0() -> None:
    plan = plan_limit(Limit(10.0, RateUnit.A), STATION, NOW, fail_safe_s=120)
    payload = on_the_wire(set_request(plan, V16), V16)
    profile = payload["csChargingProfiles"]
    assert payload["connectorId"] == 0
    assert profile["chargingProfilePurpose"] == "ChargePointMaxProfile"
    assert profile["chargingProfileId"] == plan.profile_id
    assert profile["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 10.0, "numberPhases": 3}
    ]
    assert profile["validTo"] == "2026-12-04T07:02:00Z"
    assert plan.refresh_at() == datetime(2026, 12, 4, 7, 1, tzinfo=UTC)


def test_the_same_limit_gives_the_same_profile_id_every_refresh() -> None:
    first = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    later = plan_limit(Limit(6.0, RateUnit.A), STATION, NOW + timedelta(minutes=7))
    assert first.profile_id == later.profile_id  # replaces, never stacks a second
    assert profile_id(Purpose.TX_DEFAULT, 1) != profile_id(Purpose.TX_DEFAULT, 2)


def test_a_power_limit_to_a_station_that_takes_only_amps() -> None:
    # 11 kW on 3 x 230 V: 15.94 A, rounded down to 15.9 A (15.9 x 690 = 10971 W)
    plan = plan_limit(Limit(11_000.0, RateUnit.W), AMPS_ONLY, NOW)
    assert (plan.unit, plan.limit) == (RateUnit.A, 15.9)
    on_the_wire(set_request(plan, V201), V201)
    on_the_wire(set_request(plan, V16), V16)


def test_a_current_limit_to_a_station_that_takes_only_watts() -> None:
    # 16 A on 3 x 230 V = 11040 W
    plan = plan_limit(Limit(16.0, RateUnit.A), WATTS_ONLY, NOW)
    assert (plan.unit, plan.limit) == (RateUnit.W, 11_040.0)
    single = plan_limit(Limit(6.0, RateUnit.A), replace(WATTS_ONLY, phases=1), NOW)
    assert (single.limit, single.phases) == (1380.0, 1)


def test_a_limit_in_a_unit_the_station_takes_is_not_converted() -> None:
    assert plan_limit(Limit(4200.0, RateUnit.W), STATION, NOW).limit == 4200.0
    # 16.09 A is no schedule limit (one decimal): 16.0, never 16.1
    assert plan_limit(Limit(16.09, RateUnit.A), STATION, NOW).limit == 16.0


def test_a_curtailment_is_a_share_of_the_chargers_current() -> None:
    assert Limit.percent_of(50, 32.0) == Limit(16.0, RateUnit.A)
    assert limit_for_setpoint(SetpointName.MAX_W_PCT, 25, 32.0) == Limit(8.0, RateUnit.A)
    assert limit_for_setpoint(SetpointName.EVSE_MAX_A, 10, None) == Limit(10.0, RateUnit.A)
    with pytest.raises(ValueError, match="max_a, which is unknown"):
        limit_for_setpoint(SetpointName.MAX_W_PCT, 25, None)
    with pytest.raises(ValueError, match="not var"):
        limit_for_setpoint(SetpointName.VAR, 0, 32.0)
    with pytest.raises(ValueError, match="120"):
        Limit.percent_of(120, 32.0)
    with pytest.raises(ValueError, match="nan"):
        Limit(math.nan, RateUnit.A)


def on_the_wire_decimal(value: float) -> Fraction:
    """The limit exactly as JSON carries it (the float's shortest repr, as json.dumps
    writes it): 0.1 is sent as 1/10, not as the binary float just above it."""
    return Fraction(repr(value))


@given(
    st.floats(0, 100_000, allow_nan=False),
    st.sampled_from([1, 2, 3]),
    st.floats(180, 260, allow_nan=False),
)
def test_watts_to_amps_never_exceeds_the_power_limit(w: float, phases: int, v: float) -> None:
    amps = on_the_wire_decimal(convert(Limit(w, RateUnit.W), RateUnit.A, phases, v))
    assert amps * phases * Fraction(v) <= Fraction(w)  # exact: never above
    assert Fraction(w) - amps * phases * Fraction(v) < Fraction(1, 10) * phases * Fraction(v)
    assert amps * 10 == int(amps * 10)  # one decimal


@given(
    st.floats(0, 80, allow_nan=False),
    st.sampled_from([1, 2, 3]),
    st.floats(180, 260, allow_nan=False),
)
def test_amps_to_watts_never_exceeds_the_current_limit(a: float, phases: int, v: float) -> None:
    watts = on_the_wire_decimal(convert(Limit(a, RateUnit.A), RateUnit.W, phases, v))
    assert watts <= Fraction(a) * phases * Fraction(v)
    assert Fraction(a) * phases * Fraction(v) - watts < Fraction(1, 10)


def test_a_station_that_refused_station_wide_profiles_gets_tx_default() -> None:
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW, evse_id=1)
    # a station refusing ChargingStationMaxProfile (evcc PR #14888: many do)
    answer = read_answer(
        valid_answer(
            "SetChargingProfile",
            {
                "status": "Rejected",
                "statusInfo": {"reasonCode": "UnsupportedRequest", "additionalInfo": "no max"},
            },
            V201,
        )
    )
    assert answer == Answer(False, "station answered Rejected: UnsupportedRequest: no max")
    station = fallback(STATION, plan, answer)
    assert station is not None and station.station_max_rejected
    retry = plan_limit(Limit(16.0, RateUnit.A), station, NOW, evse_id=1)
    payload = on_the_wire(set_request(retry, V201), V201)
    assert payload["evseId"] == 1
    assert payload["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile"
    assert payload["chargingProfile"]["id"] == profile_id(Purpose.TX_DEFAULT, 1)
    payload16 = on_the_wire(set_request(retry, V16), V16)
    assert payload16["connectorId"] == 1
    assert payload16["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
    # no second fallback: a refused TxDefaultProfile is the end of the road
    assert fallback(station, retry, read_answer({"status": "NotSupported"})) is None
    assert fallback(STATION, plan, read_answer({"status": "Accepted"})) is None


def test_answers_in_either_key_style() -> None:
    assert read_answer(valid_answer("SetChargingProfile", {"status": "Accepted"}, V16)).accepted
    refused = read_answer(valid_answer("SetChargingProfile", {"status": "NotSupported"}, V16))
    assert refused == Answer(False, "station answered NotSupported")
    snake = read_answer({"status": "Rejected", "status_info": {"reason_code": "InvalidValue"}})
    assert snake.detail == "station answered Rejected: InvalidValue"


def test_clear_releases_only_the_gateways_profile() -> None:
    for version in (V201, V16):
        payload = on_the_wire(clear_request(Purpose.STATION_MAX, 3, version), version)
        key = "chargingProfileId" if version is V201 else "id"
        assert payload == {key: profile_id(Purpose.STATION_MAX, 0)}
    payload = on_the_wire(clear_request(Purpose.TX_DEFAULT, 2, V201), V201)
    assert payload == {"chargingProfileId": profile_id(Purpose.TX_DEFAULT, 2)}


def test_the_composite_schedule_confirms_the_limit() -> None:
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    assert on_the_wire(composite_request(1, RateUnit.A, V201), V201) == {
        "duration": 60,
        "evseId": 1,
        "chargingRateUnit": "A",
    }
    on_the_wire(composite_request(1, RateUnit.A, V16), V16)
    # shaped as OCPP 2.0.1 part 2, K08 GetCompositeScheduleResponse
    answer201 = valid_answer(
        "GetCompositeSchedule",
        {
            "status": "Accepted",
            "schedule": {
                "evseId": 1,
                "duration": 60,
                "scheduleStart": "2026-12-04T07:00:00Z",
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": 13.0, "numberPhases": 3},
                    {"startPeriod": 30, "limit": 16.0, "numberPhases": 3},
                ],
            },
        },
        V201,
    )
    assert limit_in_force(answer201, V201) == Limit(13.0, RateUnit.A)  # lower: still held
    assert limit_in_force(answer201, V201, at_s=45) == Limit(16.0, RateUnit.A)
    assert confirms(plan, limit_in_force(answer201, V201))
    answer16 = valid_answer(
        "GetCompositeSchedule",
        {
            "status": "Accepted",
            "connectorId": 1,
            "scheduleStart": "2026-12-04T07:00:00Z",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}],
            },
        },
        V16,
    )
    assert limit_in_force(answer16, V16) == Limit(32.0, RateUnit.A)
    assert not confirms(plan, limit_in_force(answer16, V16))  # the station ignores it
    assert limit_in_force({"status": "Rejected"}, V16) is None
    assert not confirms(plan, None)
    watts = {"status": "Accepted", "schedule": {**answer201["schedule"], "chargingRateUnit": "W"}}
    assert not confirms(plan, limit_in_force(watts, V201))  # another unit proves nothing


def _profile(**changes: Any) -> Installed:
    base = Installed(
        profile_id=7,
        purpose="TxDefaultProfile",
        stack_level=2,
        evse_id=1,
        start_periods=(0, 600, 1200),
        valid_from=NOW,
        valid_to=NOW + timedelta(hours=1),
    )
    return replace(base, **changes)


def test_a_valid_profile_has_no_problem() -> None:
    assert profile_problems(_profile(), STATION) == ()


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"start_periods": (60, 600)}, "first period starts at 60 s, not 0"),
        ({"start_periods": (0, 600, 600)}, "do not strictly increase"),
        ({"start_periods": (0, 900, 300)}, "do not strictly increase"),
        ({"start_periods": ()}, "no period"),
        ({"start_periods": tuple(range(0, 2500, 100))}, "25 periods, the station takes 24"),
        ({"stack_level": 9}, "stack level 9 is outside 0..8"),
        ({"stack_level": -1}, "stack level -1 is outside 0..8"),
        ({"purpose": "ChargingStationMaxProfile"}, "on evse 1, allowed on 0 only"),
        ({"valid_to": NOW}, "validTo is not after validFrom"),
    ],
)
def test_profiles_a_station_would_refuse(changes: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in profile_problems(_profile(**changes), STATION))


def test_no_two_profiles_of_one_purpose_and_stack_level_valid_at_once() -> None:
    mine = _profile()
    clash = _profile(profile_id=8, valid_from=NOW + timedelta(minutes=30), valid_to=None)
    (problem,) = profile_problems(mine, STATION, [clash])
    assert "profile 8 has the same purpose TxDefaultProfile and stack level 2" in problem
    later = _profile(profile_id=8, valid_from=NOW + timedelta(hours=1), valid_to=None)
    unbounded = _profile(profile_id=9, valid_from=None, valid_to=None)
    assert profile_problems(mine, STATION, [later]) == ()  # one ends as the other starts
    assert profile_problems(mine, STATION, [_profile()]) == ()  # same id: a replacement
    assert profile_problems(mine, STATION, [_profile(profile_id=8, stack_level=3)]) == ()
    assert profile_problems(mine, STATION, [_profile(profile_id=8, evse_id=2)]) == ()
    assert profile_problems(mine, STATION, [_profile(profile_id=8, purpose="TxProfile")]) == ()
    assert len(profile_problems(mine, STATION, [unbounded])) == 1
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    other = replace(installed_of(plan, V201), profile_id=1)  # a CSMS's own at our level
    assert len(profile_problems(installed_of(plan, V201), STATION, [other])) == 1


def test_plans_that_break_the_rules_are_not_built() -> None:
    with pytest.raises(ValueError, match=r"stack level 9 is outside 0\.\.8"):
        plan_limit(Limit(16.0, RateUnit.A), STATION, NOW, stack_level=9)
    with pytest.raises(ValueError, match="time zone"):
        plan_limit(Limit(16.0, RateUnit.A), STATION, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="fail_safe_s"):
        plan_limit(Limit(16.0, RateUnit.A), STATION, NOW, fail_safe_s=0)


def test_the_schema_check_catches_what_a_station_would_reject() -> None:
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    # two decimals: OCPP 1.6's schema takes a limit to 0.1 only
    bad = replace(plan, limit=13.77)
    with pytest.raises(OCPPError):
        on_the_wire(set_request(bad, V16), V16)
    request = set_request(plan, V201)
    kind = replace(request.charging_profile, charging_profile_kind="Sometimes")
    with pytest.raises(OCPPError):
        on_the_wire(replace(request, charging_profile=kind), V201)


def test_plan_is_a_plain_value() -> None:
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    assert isinstance(plan, Plan)
    assert plan == plan_limit(Limit(16.0, RateUnit.A), STATION, NOW)
    with pytest.raises(AttributeError):
        plan.limit = 32.0  # type: ignore[misc]


def test_answers_as_the_library_returns_them() -> None:
    # ChargePoint.call returns call_result dataclasses with snake_case nested dicts
    refused = v201_result.SetChargingProfile(
        status="Rejected", status_info={"reason_code": "TxNotFound", "additional_info": "evse 2"}
    )
    assert read_answer(refused) == Answer(False, "station answered Rejected: TxNotFound: evse 2")
    composite = v16_result.GetCompositeSchedule(
        status="Accepted",
        connector_id=0,
        schedule_start="2026-12-04T07:00:00Z",
        charging_schedule={
            "charging_rate_unit": "W",
            "charging_schedule_period": [{"start_period": 0, "limit": 11_000.0}],
        },
    )
    assert limit_in_force(composite, V16) == Limit(11_000.0, RateUnit.W)
    with pytest.raises(DeviceProtocolError, match="GetCompositeSchedule: the answer 'Accepted'"):
        limit_in_force("Accepted", V16)


def test_a_plan_that_would_clash_with_an_installed_profile_is_not_built() -> None:
    # a 1.6 station reporting another CSMS's ChargePointMaxProfile at our stack level
    theirs = Installed(
        profile_id=1,
        purpose="ChargePointMaxProfile",
        stack_level=8,
        evse_id=0,
        start_periods=(0,),
    )
    with pytest.raises(ValueError, match="profile 1 has the same purpose"):
        plan_limit(Limit(16.0, RateUnit.A), STATION, NOW, installed=[theirs])
    plan = plan_limit(Limit(16.0, RateUnit.A), STATION, NOW, stack_level=7, installed=[theirs])
    assert plan.stack_level == 7


stations = st.builds(
    SmartCharging,
    rate_units=st.sampled_from(
        [frozenset({RateUnit.A}), frozenset({RateUnit.W}), frozenset({RateUnit.A, RateUnit.W})]
    ),
    phases=st.sampled_from([1, 2, 3]),
    v_nom=st.floats(100, 260),
    max_periods=st.integers(1, 48),
    max_stack_level=st.integers(0, 20),
    station_max_rejected=st.booleans(),
)
limits = st.one_of(
    st.builds(Limit, st.floats(0, 80), st.just(RateUnit.A)),
    st.builds(Limit, st.floats(0, 60_000), st.just(RateUnit.W)),
)


@given(limits, stations, st.integers(0, 4))
def test_every_plan_is_a_valid_payload_that_never_allows_more(
    limit: Limit, station: SmartCharging, evse_id: int
) -> None:
    plan = plan_limit(limit, station, NOW, evse_id=evse_id)
    for version in (V201, V16):
        on_the_wire(set_request(plan, version), version)
    assert plan.unit in station.rate_units
    per_amp = station.phases * Fraction(station.v_nom)
    sent = on_the_wire_decimal(plan.limit)
    if plan.unit is limit.unit:
        assert sent <= Fraction(limit.value)
    elif plan.unit is RateUnit.A:
        assert sent * per_amp <= Fraction(limit.value)
    else:
        assert sent <= Fraction(limit.value) * per_amp
