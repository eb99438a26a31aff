"""The rig's pure physics and register image, without sockets."""

from __future__ import annotations

import math

import pytest
from pymodbus.constants import ExcCodes
from sunspec2.device import Model

from hil.image import PointChange, SunSpecImage, WriteRefused
from hil.physics import (
    BatteryPhysics,
    BatteryRatings,
    ClearSkyProfile,
    ConstantProfile,
    Grid,
    MeterPhysics,
    PvPhysics,
    PvRatings,
    SimClock,
    TableProfile,
)


def battery(soc_pct: float = 50.0) -> BatteryPhysics:
    ratings = BatteryRatings(wh_rtg=10000, w_cha_max=5000, w_discha_max=5000, va_rtg=5000)
    return BatteryPhysics(ratings, Grid(), soc_pct, tau_s=0.0)


def test_sim_clock_runs_at_its_speed() -> None:
    wall = [100.0]
    clock = SimClock(speed=30, source=lambda: wall[0])
    wall[0] = 102.0
    assert clock.now() == 60.0


def test_sim_clock_holds_one_instant_inside_the_block() -> None:
    wall = [0.0]
    clock = SimClock(speed=10, source=lambda: wall[0])
    with clock.held() as now:
        wall[0] = 1.0
        with clock.held() as inner:
            assert (now, inner, clock.now()) == (0.0, 0.0, 0.0)
    assert clock.now() == 10.0


def test_meter_splits_energy_by_the_sign_of_the_net_power() -> None:
    site = [(0.0, 0.0)]
    meter = MeterPhysics(ConstantProfile(1000), Grid(), lambda: site[0])
    site[0] = (2000.0, -300.0)  # the site ramps from 0 to 2000 W over 10 s
    meter.step(10.0)
    # net export -1000 + 200 t W: imports 2500 W·s until 5 s, exports 2500 W·s after
    assert meter.wh_absorbed == pytest.approx(2500 / 3600)
    assert meter.wh_injected == pytest.approx(2500 / 3600)
    assert (meter.w, meter.var, meter.load_w) == (1000.0, -300.0, 1000.0)
    meter.load_set = 3000.0
    meter.step(11.0)
    assert meter.w == -1000.0


@pytest.mark.parametrize(("w_set", "soc_after"), [(-1000.0, 59.5), (1000.0, 50 - 10 / 0.95)])
def test_soc_integrates_power_with_one_way_efficiency(w_set: float, soc_after: float) -> None:
    bat = battery()
    bat.controls.w_set = w_set
    bat.step(3600.0)
    assert bat.soc_pct == pytest.approx(soc_after)
    assert bat.w == w_set


def test_battery_power_is_forced_to_zero_at_the_reserve() -> None:
    bat = battery(soc_pct=20.5)
    bat.controls.soc_rsv_min_pct = 20.0
    bat.controls.w_set = 5000.0
    bat.step(3600.0)
    assert (bat.soc_pct, bat.w, bat.charge_state.name) == (20.0, 0.0, "EMPTY")
    bat.controls.w_set = -5000.0  # charging is still allowed
    bat.step(3601.0)
    assert bat.w == -5000.0


def test_pv_output_is_a_first_order_lag_to_the_limited_available_power() -> None:
    pv = PvPhysics(PvRatings(5000, 5000, 2200), ConstantProfile(4000), Grid(), tau_s=2.0)
    pv.step(2.0)
    assert pv.w == pytest.approx(4000 * (1 - math.exp(-1)))
    pv.controls.w_lim_pct = 50.0
    pv.step(60.0)
    assert pv.w == pytest.approx(2500)
    assert pv.state.name == "THROTTLED"
    assert pv.wh_injected > 0


def test_pv_reactive_power_from_fixed_pf_within_the_va_rating() -> None:
    pv = PvPhysics(PvRatings(5000, 5000, 2200), ConstantProfile(4000), Grid(), tau_s=0.0)
    pv.controls.pf = -0.9
    pv.step(1.0)
    assert pv.var == pytest.approx(-4000 * math.tan(math.acos(0.9)))
    pv.controls.pf, pv.controls.var_set = None, 4000.0
    pv.step(2.0)
    assert pv.var == pytest.approx(2200)  # clamped to the var rating


def test_profiles() -> None:
    table = TableProfile(((0.0, 0.0), (10.0, 1000.0)))
    assert (table.available_w(5.0), table.available_w(15.0)) == (500.0, 500.0)
    day = ClearSkyProfile(peak_w=1000, day_s=240, start_h=0)
    assert day.available_w(0.0) == 0.0  # midnight
    assert day.available_w(120.0) == pytest.approx(1000)  # noon


def test_grid_noise_is_seeded() -> None:
    a, b = Grid(noise_v=1.0, seed=7), Grid(noise_v=1.0, seed=7)
    assert [a.sample() for _ in range(3)] == [b.sample() for _ in range(3)]


def image() -> SunSpecImage:
    img = SunSpecImage([Model(1), Model(123)], base=0)
    img.update(123, {"WMaxLimPct_SF": -1, "WMaxLimPct": 100, "WMaxLim_Ena": 0})
    return img


def test_image_decodes_a_write_into_engineering_units() -> None:
    img = image()
    address = img.model_range(123).start + img.models[123].points["WMaxLimPct"].offset
    assert img.apply_write(address, [455]) == [PointChange(123, "WMaxLimPct", 45.5)]
    assert img.get(123, "WMaxLimPct") == 45.5


@pytest.mark.parametrize(
    ("point", "raw", "code"),
    [("WMaxLimPct", 1001, ExcCodes.ILLEGAL_VALUE), ("WMaxLim_Ena", 2, ExcCodes.ILLEGAL_VALUE),
     ("WMaxLimPct_SF", 0, ExcCodes.ILLEGAL_ADDRESS)],
)  # fmt: skip
def test_image_refuses_bad_writes_and_keeps_its_state(point: str, raw: int, code: int) -> None:
    img = image()
    before = list(img.registers)
    address = img.model_range(123).start + img.models[123].points[point].offset
    with pytest.raises(WriteRefused) as err:
        img.apply_write(address, [raw])
    assert err.value.code == code
    assert img.registers == before
    assert img.get(123, "WMaxLimPct") == 100


def test_image_clamps_values_to_the_point_type() -> None:
    img = image()
    img.set(1, "DA", 70000)
    assert img.get(1, "DA") == 0xFFFE
