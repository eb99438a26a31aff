"""Battery SoC: projection of a storage schedule, its first violation, headroom and holding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derms_edge.control.soc import (
    SOC_TOLERANCE_PCT,
    BatteryLimits,
    Segment,
    headroom_w,
    hold_at_limit,
    project,
    violation_detail,
)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
BATTERY = BatteryLimits(
    capacity_wh=10000.0,
    reserve_pct=20.0,
    max_pct=95.0,
    efficiency=0.95,
    charge_w_max=5000.0,
    discharge_w_max=5000.0,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def segment(start_s: float, end_s: float, w: float, mrid: str = "e1") -> Segment:
    return Segment(at(start_s), at(end_s), w, mrid)


def final_soc(limits: BatteryLimits, soc_pct: float, segments: list[Segment]) -> float:
    return project(limits, soc_pct, T0, segments).points[-1][1]


def test_charging_past_the_maximum_is_found_with_its_time_and_detail() -> None:
    projection = project(BATTERY, 57.0, T0, [segment(0, 3600, -5000.0, "charge")])
    violation = projection.first_violation
    assert violation is not None
    assert violation.mrid == "charge"
    assert violation.soc_end_pct == pytest.approx(104.5)  # 57 + 5 kWh x 0.95 / 10 kWh
    assert (violation.limit, violation.limit_pct) == ("maximum", 95.0)
    assert violation.at == at(38 / 47.5 * 3600)  # 38 % of room at 47.5 % per hour
    assert violation_detail(violation) == (
        "storage_w -5000 W from 10:00 for 3600 s would take SoC to 104.5 %, "
        "above the maximum 95 % (reached at 10:48)"
    )


def test_discharging_below_the_reserve() -> None:
    schedule = [segment(0, 1800, 2000.0, "ok"), segment(3600, 7200, 5000.0, "deep")]
    violation = project(BATTERY, 50.0, T0, schedule).first_violation
    assert violation is not None
    assert violation.mrid == "deep"
    soc_at_start = 50.0 - 1000 / 0.95 / 100  # 1 kWh out of the cells
    assert violation.soc_end_pct == pytest.approx(soc_at_start - 5000 / 0.95 / 100)
    assert (violation.limit, violation.limit_pct) == ("reserve", 20.0)
    to_reserve_s = (soc_at_start - 20.0) / (5000 / 0.95 / 100) * 3600
    assert (violation.at - at(3600)).total_seconds() == pytest.approx(to_reserve_s)
    assert "below the reserve 20 %" in violation_detail(violation)


def test_breakpoints_at_segment_starts_and_ends_idle_in_between() -> None:
    projection = project(BATTERY, 50.0, T0, [segment(600, 1200, 1000.0), segment(1800, 2400, 0)])
    times = [t for t, _ in projection.points]
    assert times == [at(0), at(600), at(1200), at(1800), at(2400)]
    socs = [soc for _, soc in projection.points]
    assert socs[0] == socs[1] == 50.0
    assert socs[2] == socs[3] == socs[4] < 50.0
    assert projection.first_violation is None


def test_past_segments_are_ignored_and_a_running_one_counts_from_now() -> None:
    schedule = [segment(-7200, -3600, 5000.0, "past"), segment(-1800, 1800, 2000.0, "running")]
    projection = project(BATTERY, 50.0, T0, schedule)
    assert projection.points[0] == (T0, 50.0)
    assert final_soc(BATTERY, 50.0, schedule) == pytest.approx(50.0 - 1000 / 0.95 / 100)
    assert projection.first_violation is None


def test_already_below_the_reserve_breaks_at_once() -> None:
    violation = project(BATTERY, 19.0, T0, [segment(60, 120, 500.0)]).first_violation
    assert violation is not None
    assert violation.at == at(60)


def test_ending_within_the_tolerance_is_not_a_violation() -> None:
    to_reserve_wh = (50.0 - 20.0 + SOC_TOLERANCE_PCT / 2) / 100 * 10000 * 0.95
    schedule = [segment(0, 3600, to_reserve_wh)]
    assert project(BATTERY, 50.0, T0, schedule).first_violation is None


def test_limits_and_segments_are_checked() -> None:
    with pytest.raises(ValueError, match="capacity_wh"):
        BatteryLimits(0.0, 10.0, 90.0, 0.9)
    with pytest.raises(ValueError, match="efficiency"):
        BatteryLimits(1000.0, 10.0, 90.0, 1.5)
    with pytest.raises(ValueError, match="reserve_pct"):
        BatteryLimits(1000.0, 95.0, 90.0, 0.9)
    with pytest.raises(ValueError, match="ends"):
        segment(10, 0, 100.0)


efficiencies = st.floats(0.5, 1.0)
capacities = st.floats(1000.0, 100000.0)


@given(capacities, efficiencies, st.floats(20, 80), st.floats(100, 5000), st.floats(60, 7200))
def test_charge_then_discharge_the_same_energy_loses_the_round_trip(
    capacity_wh: float, efficiency: float, soc_pct: float, w: float, duration_s: float
) -> None:
    limits = BatteryLimits(capacity_wh, 0.0, 100.0, efficiency)
    schedule = [segment(0, duration_s, -w), segment(duration_s, 2 * duration_s, w)]
    energy_wh = w * duration_s / 3600
    loss_pct = energy_wh * (1 / efficiency - efficiency) / capacity_wh * 100
    assert final_soc(limits, soc_pct, schedule) == pytest.approx(soc_pct - loss_pct)
    stored_back = [
        segment(0, duration_s, -w),
        segment(duration_s, 2 * duration_s, w * efficiency**2),
    ]
    assert final_soc(limits, soc_pct, stored_back) == pytest.approx(soc_pct)


powers = st.one_of(st.floats(-8000, -1), st.floats(1, 8000))


@given(st.floats(20, 95), st.lists(st.tuples(st.integers(0, 3600), powers), max_size=6))
def test_the_first_violation_is_where_soc_first_leaves_the_window(
    soc_pct: float, gaps_and_powers: list[tuple[int, float]]
) -> None:
    schedule, t = [], -1800.0
    for n, (gap_s, w) in enumerate(gaps_and_powers):
        schedule.append(segment(t + gap_s, t + gap_s + 1800, w, f"e{n}"))
        t += gap_s + 1800
    projection = project(BATTERY, soc_pct, T0, schedule)
    violation = projection.first_violation
    socs = [soc for _, soc in projection.points]
    outside = [s < 20 - SOC_TOLERANCE_PCT or s > 95 + SOC_TOLERANCE_PCT for s in socs]
    if violation is None:
        assert not any(outside)
        return
    assert any(outside)
    first_out = outside.index(True)
    assert projection.points[first_out][0] == violation.end  # it ends the first segment out
    names = [s.mrid for s in schedule if s.end == violation.end]
    assert names == [violation.mrid]
    # the crossing: the schedule cut at that time reaches the limit there, no earlier
    cut = [
        Segment(s.start, min(s.end, violation.at), s.w, s.mrid)
        for s in schedule
        if s.start < violation.at
    ]
    soc_at_crossing = final_soc(BATTERY, soc_pct, cut)
    assert project(BATTERY, soc_pct, T0, cut).first_violation is None
    if violation.at > max(violation.start, T0):
        assert soc_at_crossing == pytest.approx(violation.limit_pct)


@given(capacities, efficiencies, st.floats(10, 90), st.floats(0.1, 3600))
def test_headroom_never_lets_one_step_cross_a_limit(
    capacity_wh: float, efficiency: float, soc_pct: float, dt_s: float
) -> None:
    limits = BatteryLimits(capacity_wh, 10.0, 90.0, efficiency, 7000.0, 5000.0)
    dt_s = timedelta(seconds=dt_s).total_seconds()  # what a datetime segment can hold
    discharge_w, charge_w = headroom_w(limits, soc_pct, dt_s)
    assert 0 <= discharge_w <= 5000.0
    assert 0 <= charge_w <= 7000.0
    after_discharge = final_soc(limits, soc_pct, [segment(0, dt_s, discharge_w)])
    after_charge = final_soc(limits, soc_pct, [segment(0, dt_s, -charge_w)])
    assert after_discharge >= 10.0 - 1e-9
    assert after_charge <= 90.0 + 1e-9
    if discharge_w < 5000.0:  # not the rating: the whole room to the reserve is used
        assert after_discharge == pytest.approx(10.0)
    if charge_w < 7000.0:
        assert after_charge == pytest.approx(90.0)


def test_headroom_outside_the_window_and_without_ratings() -> None:
    limits = BatteryLimits(10000.0, 20.0, 80.0, 1.0)
    assert headroom_w(limits, 10.0, 60.0) == pytest.approx((0.0, 420000.0))  # 7 kWh in a minute
    assert headroom_w(limits, 90.0, 60.0) == pytest.approx((420000.0, 0.0))
    with pytest.raises(ValueError, match="dt_s"):
        headroom_w(limits, 50.0, 0.0)


@pytest.mark.parametrize(
    ("soc_pct", "w", "applied"),
    [
        (50.0, 3000.0, 3000.0),
        (50.0, -3000.0, -3000.0),
        (20.0, 3000.0, 0.0),  # at the reserve: no more discharge
        (20.0 + SOC_TOLERANCE_PCT / 2, 3000.0, 0.0),
        (15.0, 3000.0, 0.0),
        (20.0, -3000.0, -3000.0),  # charging away from the reserve is fine
        (95.0 - SOC_TOLERANCE_PCT / 2, -3000.0, 0.0),  # at the maximum: no more charge
        (99.0, -3000.0, 0.0),
        (95.0, 3000.0, 3000.0),
        (20.0 + 2 * SOC_TOLERANCE_PCT, 3000.0, 3000.0),
        (50.0, 0.0, 0.0),
    ],
)
def test_hold_at_limit(soc_pct: float, w: float, applied: float) -> None:
    assert hold_at_limit(BATTERY, soc_pct, w) == applied
