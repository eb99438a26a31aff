"""The control core when things are not normal: ties, dates that do not fit, a frozen SoC,
the meter gone under an export limit, the clock set while events run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from derms_edge.control import SourceKind
from derms_edge.model import (
    CATEGORY_CURVES,
    Control,
    ControlType,
    DeviceKind,
    DeviceState,
    FixedPf,
    Quality,
    Reason,
    SetpointName,
    Status,
)
from derms_edge.runtime.schedule_store import ScheduleStore
from tests.unit.test_engine import (
    BATTERY,
    CHARGER,
    PV,
    T0,
    accept,
    controller,
    event,
    statuses,
    step,
    views,
)

# -- limits for a device that cannot be reached ----------------------------------------------

METER = replace(
    PV, id="meter", kind=DeviceKind.METER, state=DeviceState(w=-1000.0), supports=frozenset()
)


UNREACHABLE_LIMITS = {
    "max_w_pct": (Control(max_w_pct=35.0), "inv1", SetpointName.MAX_W_PCT),
    "volt_var": (Control(volt_var=CATEGORY_CURVES["cat_b"]), "inv1", SetpointName.VOLT_VAR),
    "fixed_pf": (Control(fixed_pf=FixedPf(0.95, "absorb")), "inv1", SetpointName.FIXED_PF),
    "evse_max_a": (Control(evse_max_a=10.0), "ev1", SetpointName.EVSE_MAX_A),
    "evse_max_w": (Control(evse_max_w=4200.0), "ev1", SetpointName.EVSE_MAX_A),
}


@pytest.mark.parametrize("quality", [Quality.OFFLINE, Quality.UNKNOWN])
@pytest.mark.parametrize("kind", sorted(UNREACHABLE_LIMITS))
def test_a_limit_is_never_refused_for_a_device_that_cannot_be_reached(
    kind: str, quality: Quality
) -> None:
    """Accepted, started with the device named pending, and its setpoint decided, so the
    coordinator writes it the moment the device answers. (Volt-var the gateway runs itself
    needs a fresh voltage: its var setpoint follows the first reading.)"""
    control, device, setpoint = UNREACHABLE_LIMITS[kind]
    native = replace(PV, supports=PV.supports | {SetpointName.VOLT_VAR})
    away = {d.id: replace(d, quality=quality) for d in (native, CHARGER)}
    devices = views(*away.values())
    core = controller()
    assert [
        r.status for r in accept(core, event("e", control=control, devices=(device,)), devices)
    ] == [
        Status.RECEIVED,
        Status.SCHEDULED,
    ]
    decision = step(core, T0, devices)
    assert statuses(decision.responses) == [("e", Status.STARTED, None)]
    assert f"{device} ({quality})" in (decision.responses[0].detail or "")
    assert setpoint in decision.setpoints[device]


@pytest.mark.parametrize("quality", [Quality.OFFLINE, Quality.UNKNOWN])
def test_an_export_limit_with_every_device_unreachable_starts_and_caps_them(
    quality: Quality,
) -> None:
    core = controller(meter="meter")
    devices = views(replace(PV, quality=quality), replace(METER, quality=quality))
    accept(core, event("x", control=Control(export_limit_w=2000.0), devices=None), devices)
    decision = step(core, T0, devices)
    assert statuses(decision.responses) == [("x", Status.STARTED, None)]
    assert 5000.0 * decision.setpoints["inv1"][SetpointName.MAX_W_PCT] / 100.0 <= 2000.0


# -- ties go to the later arrival ----------------------------------------------------------


def test_equal_creation_times_the_later_arrival_wins_and_supersedes() -> None:
    core = controller()
    accept(core, event("first", control=Control(max_w_pct=35.0)))
    step(core, T0)
    correction = event("second", control=Control(max_w_pct=60.0))  # same creation_time
    accept(core, correction, now=T0 + timedelta(milliseconds=100))
    decision = step(core, T0 + timedelta(milliseconds=100))
    assert ("first", Status.SUPERSEDED, "superseded_by:second") in statuses(decision.responses)
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 60.0


def test_the_order_of_arrival_survives_a_restart(tmp_path: Path) -> None:
    store = ScheduleStore(tmp_path / "schedule.sqlite")
    core = controller(dispatcher_timeout_s=1e9)
    for mrid, pct in (("first", 35.0), ("second", 60.0)):
        _, changed = core.accept(
            event(mrid, control=Control(max_w_pct=pct), start=T0 + timedelta(hours=1)),
            views(),
            T0,
        )
        store.save(changed, T0)
    store.close()
    again = controller(dispatcher_timeout_s=1e9)
    again.restore(ScheduleStore(tmp_path / "schedule.sqlite").load(T0), T0)
    decision = step(again, T0 + timedelta(hours=1))
    assert ("first", Status.SUPERSEDED, "superseded_by:second") in statuses(decision.responses)
    third = event("third", control=Control(max_w_pct=10.0), start=T0 + timedelta(hours=1))
    again.accept(third, views(), T0 + timedelta(hours=1))
    assert again.records["third"].event.arrival == 3  # numbering goes on after the restart


# -- dates that do not fit --------------------------------------------------------------


def test_a_creation_time_far_ahead_of_the_clock_is_invalid() -> None:
    core = controller()
    future = event("x", creation_time=datetime(9999, 12, 31, tzinfo=UTC))
    (r,) = accept(core, future)
    assert (r.status, r.reason) == (Status.REJECTED, Reason.INVALID)
    assert (r.detail or "").startswith("creation_time:")
    skewed = event("y", creation_time=T0 + timedelta(seconds=299))  # within the skew: fine
    assert statuses(accept(core, skewed))[-1] == ("y", Status.SCHEDULED, None)


def test_a_start_more_than_366_days_ahead_is_invalid_naming_the_field() -> None:
    core = controller()
    (r,) = accept(core, event("x", start=T0 + timedelta(days=367)))
    assert (r.status, r.reason) == (Status.REJECTED, Reason.INVALID)
    assert (r.detail or "").startswith("start:")


def test_an_offset_means_the_same_instant_as_its_utc_form() -> None:
    sydney = timezone(timedelta(hours=10))
    core = controller()
    local = event("au", start=(T0 + timedelta(minutes=5)).astimezone(sydney), duration_s=600)
    accept(core, local)
    assert statuses(step(core, T0 + timedelta(minutes=4)).responses) == []
    assert statuses(step(core, T0 + timedelta(minutes=5)).responses) == [
        ("au", Status.STARTED, None)
    ]
    assert statuses(step(core, T0 + timedelta(minutes=15)).responses) == [
        ("au", Status.COMPLETED, None)
    ]


# -- a frozen state of charge -------------------------------------------------------------


def discharging(soc_pct: float, w: float = 3000.0) -> object:
    return replace(BATTERY, state=DeviceState(w=w, soc_pct=soc_pct))


def test_a_soc_that_does_not_move_while_the_battery_discharges_stops_it() -> None:
    """10 kWh, 2 % = 200 Wh out of the cells: at 3 kW and 95 % efficiency 3158 W leave them,
    so the SoC must move within 228 s."""
    core = controller()
    accept(core, event("d", duration_s=900, control=Control(storage_w=3000.0)))
    step(core, T0)
    at = T0
    for second in range(1, 250):
        at = T0 + timedelta(seconds=second)
        decision = step(core, at, views(discharging(50.0)))  # stuck at 50 %
        if decision.responses:
            break
    assert statuses(decision.responses) == [("d", Status.ABORTED, Reason.SOC_UNKNOWN)]
    assert "frozen at 50 %" in (decision.responses[0].detail or "")
    assert 225 <= (at - T0).total_seconds() <= 235
    assert SetpointName.STORAGE_W not in decision.setpoints["bat1"]
    # nothing starts on it while it is frozen; it recovers when the SoC moves again
    (waits,) = accept(core, event("e", duration_s=600, control=Control(storage_w=1000.0)), now=at)[
        1:
    ]
    assert waits.status is Status.SCHEDULED
    assert statuses(step(core, at + timedelta(seconds=1), views(discharging(50.0))).responses) == []
    moved = step(core, at + timedelta(seconds=2), views(discharging(49.0)))
    assert statuses(moved.responses) == [("e", Status.STARTED, None)]


def test_a_soc_reported_in_coarse_steps_is_given_two_of_them() -> None:
    """A 10 kWh battery whose SoC moves in 5 % steps: 1 kWh (two steps) may go through it
    before its SoC counts as frozen, not 2 % of its capacity."""
    coarse = replace(
        BATTERY,
        capability=replace(BATTERY.capability, soc_step_pct=5.0),  # type: ignore[arg-type]
    )
    core = controller(dispatcher_timeout_s=3600.0)
    accept(core, event("d", duration_s=1500, control=Control(storage_w=3000.0)), views(coarse))
    step(core, T0, views(coarse))
    for second in range(1, 1300):
        decision = step(
            core,
            T0 + timedelta(seconds=second),
            views(replace(coarse, state=DeviceState(w=3000.0, soc_pct=50.0))),
        )
        if decision.responses:
            break
    assert statuses(decision.responses) == [("d", Status.ABORTED, Reason.SOC_UNKNOWN)]
    assert 1135 <= second <= 1145  # 1 kWh out of the cells at 3 kW / 0.95: 1140 s


def test_a_discharge_charged_back_within_a_step_of_the_soc_is_not_frozen() -> None:
    """Energy out and back in leaves the SoC where it was: net, not throughput, is judged.
    A 10 kWh battery in whole-percent steps (threshold 200 Wh) discharges 150 Wh out of its
    cells and charges them back, over and over, its SoC reading 50 % all along: healthy."""
    core = controller(dispatcher_timeout_s=3600.0)
    accept(core, event("cycle", duration_s=2400, control=Control(storage_w=1000.0)))
    assert statuses(step(core, T0).responses) == [("cycle", Status.STARTED, None)]
    cycle_s = round(150.0 / (3000.0 / 0.95) * 3600)  # 150 Wh out of the cells at 3 kW
    second = 0
    for _ in range(6):  # 900 Wh of throughput, 4.5 times the threshold
        for w in (3000.0, -3000.0 / 0.95 / 0.95):  # back in: the same cell energy
            for _ in range(cycle_s):
                second += 1
                decision = step(core, T0 + timedelta(seconds=second), views(discharging(50.0, w)))
                assert not [r for r in decision.responses if r.status is Status.ABORTED]


# -- the meter gone under an export limit ---------------------------------------------------


def test_without_the_meter_the_inverters_fall_to_the_open_loop_cap_and_batteries_too() -> None:
    core = controller(meter="meter")
    accept(core, event("x", control=Control(export_limit_w=3000.0), devices=None))
    accept(core, event("s", role="aggregator", primacy=2, control=Control(storage_w=4000.0)))
    stale_meter = replace(METER, quality=Quality.STALE)
    decision = step(core, T0, views(stale_meter))
    pct = decision.setpoints["inv1"][SetpointName.MAX_W_PCT]
    assert 5000.0 * pct / 100.0 <= 3000.0  # even with no house load
    in_force = decision.active["inv1"][ControlType.MAX_W_PCT]
    assert in_force.source.kind == SourceKind.EXPORT_LIMIT_FALLBACK
    discharge = decision.setpoints["bat1"].get(SetpointName.STORAGE_W, 0.0)
    assert 5000.0 * pct / 100.0 + discharge <= 3000.0  # what the limit leaves, no more
    fresh = step(core, T0 + timedelta(seconds=1), views(METER))
    assert (
        fresh.active["inv1"][ControlType.MAX_W_PCT].source.kind != SourceKind.EXPORT_LIMIT_FALLBACK
    )


# -- the clock set while events run ----------------------------------------------------------


def test_a_clock_set_back_holds_a_started_event_off_until_its_start_never_restarts_it() -> None:
    core = controller(dispatcher_timeout_s=1e9)  # hours pass here: no dispatcher to hear
    accept(core, event("e", duration_s=7200))
    assert statuses(step(core, T0).responses) == [("e", Status.STARTED, None)]
    core.clock_jumped(timedelta(minutes=-30))
    still = step(core, T0 + timedelta(minutes=45), elapsed=1.0)  # inside its window
    assert statuses(still.responses) == [] and still.setpoints["inv1"][SetpointName.MAX_W_PCT] == 50
    core.clock_jumped(timedelta(hours=-1))
    back = step(core, T0 - timedelta(minutes=15), elapsed=1.0)  # before its start: not yet
    assert statuses(back.responses) == [] and SetpointName.MAX_W_PCT not in back.setpoints["inv1"]
    again = step(core, T0 + timedelta(seconds=1), elapsed=1.0)
    assert statuses(again.responses) == [] and again.setpoints["inv1"][SetpointName.MAX_W_PCT] == 50
    end = step(core, T0 + timedelta(hours=2), elapsed=1.0)
    assert statuses(end.responses) == [("e", Status.COMPLETED, None)]
    core.clock_jumped(timedelta(hours=-2))
    assert statuses(step(core, T0 + timedelta(minutes=1), elapsed=1.0).responses) == []


def test_a_clock_set_forward_does_not_time_the_dispatcher_out() -> None:
    core = controller(dispatcher_timeout_s=60.0)
    core.hear("dso", T0)
    accept(core, event("e", duration_s=7200))
    step(core, T0)
    core.clock_jumped(timedelta(hours=1))  # NTP set the clock; the DSO spoke 1 s ago
    jumped = step(core, T0 + timedelta(hours=1, seconds=1), elapsed=1.0)
    assert statuses(jumped.responses) == []
    assert jumped.setpoints["inv1"][SetpointName.MAX_W_PCT] == 50.0


def test_the_elapsed_time_not_the_wall_clock_drives_the_filters() -> None:
    """A jump of an hour moves edge volt-var by one control interval, not to steady state."""
    from derms_edge.model import VoltVarCurve

    curve = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)), mode="edge")
    core = controller()
    accept(core, event("vv", duration_s=7200, control=Control(volt_var=curve)))
    step(core, T0)  # at 1.00 pu: no var
    high = replace(PV, state=DeviceState(w=4000.0, v=1.08 * 230.0))
    core.clock_jumped(timedelta(hours=1))
    q = step(core, T0 + timedelta(hours=1, seconds=1), views(high), elapsed=1.0).setpoints["inv1"]
    steady = 0.44 * 5000.0
    assert 0.1 * steady < -q[SetpointName.VAR] < 0.5 * steady  # 1 s into a 5 s response
