"""Site export limit: the closed loop against a plant with lagging inverters and a late meter.

The plant: each inverter follows min(available power, its limit) with a first-order lag
(tau 1-2 s); the house load steps; the meter reading the loop gets is one control interval
old. The loop runs with the configuration defaults (ExportLimitSection).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derms_edge.config import ExportLimitSection
from derms_edge.control.export_limit import (
    ExportLimiter,
    Inverter,
    allowed_w_at,
    level_pct,
    share,
)

DEFAULTS = ExportLimitSection()
DT_S = 1.0
LIMIT_W = 2000.0
TARGET_W = LIMIT_W - DEFAULTS.deadband_w / 2
OVERSHOOT_TOLERANCE_W = 1.0
"""Export may exceed the limit after settling by this much (arithmetic noise only)."""


@dataclass
class PlantInverter:
    w_max: float
    available_w: float
    tau_s: float
    w: float
    limit_pct: float = 100.0

    def advance(self, dt_s: float) -> None:
        target = min(self.available_w, self.w_max * self.limit_pct / 100.0)
        self.w = target + (self.w - target) * math.exp(-dt_s / self.tau_s)


@dataclass
class Site:
    """Inverters, a house load and a meter that reports the previous interval's export."""

    inverters: dict[str, PlantInverter]
    load_w: float
    meter_delayed: bool = True
    caps: dict[str, float] = field(default_factory=dict)
    reading_w: float | None = None
    exports: list[float] = field(default_factory=list)
    """True export at each interval, W."""
    limits: list[dict[str, float]] = field(default_factory=list)

    @property
    def export_w(self) -> float:
        return sum(i.w for i in self.inverters.values()) - self.load_w

    def views(self) -> dict[str, Inverter]:
        return {
            name: Inverter(i.w_max, i.w, self.caps.get(name, 100.0))
            for name, i in self.inverters.items()
        }

    def run(
        self,
        limiter: ExportLimiter,
        intervals: int,
        meter_ok: Callable[[int], bool] = lambda k: True,
        limit_w: float = LIMIT_W,
    ) -> None:
        if self.reading_w is None:  # the site ran steadily before the loop started
            self.reading_w = self.export_w
        for k in range(intervals):
            if not self.meter_delayed:
                self.reading_w = self.export_w
            reading = self.reading_w if meter_ok(k) else None
            self.reading_w = self.export_w
            self.exports.append(self.export_w)
            limits = limiter.step(reading, limit_w, self.views(), DT_S)
            self.limits.append(limits)
            for name, pct in limits.items():
                self.inverters[name].limit_pct = pct
            for inverter in self.inverters.values():
                inverter.advance(DT_S)


def limiter(gain: float = DEFAULTS.gain) -> ExportLimiter:
    return ExportLimiter(gain, DEFAULTS.max_step_pct, DEFAULTS.deadband_w, interval_s=DT_S)


def site(tau_s: float, load_w: float = 3000.0, available: float = 0.8) -> Site:
    return Site(
        {
            "inv1": PlantInverter(10000.0, 10000.0 * available, tau_s, 10000.0 * available),
            "inv2": PlantInverter(5000.0, 5000.0 * available, tau_s * 0.75, 5000.0 * available),
        },
        load_w,
    )


def settled_at(exports: list[float]) -> int:
    """The first interval at which export is inside the deadband under the limit."""
    return next(k for k, e in enumerate(exports) if LIMIT_W - DEFAULTS.deadband_w <= e <= LIMIT_W)


def sign_changes(values: list[float]) -> int:
    signs = [v > 0 for v in values if v != 0]
    return sum(a != b for a, b in itertools.pairwise(signs))


def intervals_to_settle(error_w: float, gain: float, step_w: float, tau_s: float) -> int:
    """Upper bound on the intervals for export to come within deadband/2 of the target.

    The command moves at the rate limit while gain x error exceeds a step, then shrinks by
    (1 - gain) per interval; the meter adds one interval and the slowest inverter needs
    tau x ln(lag / tolerance) more to follow the last, rate-limited, movement.
    """
    tolerance_w = DEFAULTS.deadband_w / 2
    n_rate = max(0, math.ceil((error_w - step_w / gain) / step_w))
    n_gain = 0 if gain == 1 else math.ceil(math.log(tolerance_w * gain / step_w, 1 - gain))
    n_plant = 1 + math.ceil(tau_s / DT_S * math.log(step_w * tau_s / DT_S / tolerance_w))
    return n_rate + n_gain + n_plant


@pytest.mark.parametrize(
    ("gain", "meter_delayed"), [(0.5, True), (1.0, True), (0.5, False)], ids=str
)
@pytest.mark.parametrize("tau_s", [1.0, 2.0])
def test_export_settles_under_the_limit_without_oscillating(
    gain: float, meter_delayed: bool, tau_s: float
) -> None:
    plant = site(tau_s)
    plant.meter_delayed = meter_delayed
    plant.run(limiter(gain), 40)
    step_w = DEFAULTS.max_step_pct / 100 * 15000.0
    error_w = plant.exports[0] - TARGET_W
    n = intervals_to_settle(error_w, gain, step_w, tau_s)
    if not meter_delayed:  # the loop counts the last interval's change twice: a lag more
        n += intervals_to_settle(0.0, 1.0, step_w, tau_s)
    k = settled_at(plant.exports)
    after = plant.exports[k:]
    print(
        f"\nexport limit, cut {error_w:.0f} W, gain {gain}, step {step_w:.0f} W, tau {tau_s} s, "
        f"meter {'one interval late' if meter_delayed else 'fresh'}: in the deadband after "
        f"{k} intervals (bound {n}), then max {max(after):.1f} W, "
        f"final {after[-1]:.1f} W, sign changes {sign_changes([e - TARGET_W for e in after])}"
    )
    assert k <= n
    assert max(after) <= LIMIT_W + OVERSHOOT_TOLERANCE_W
    assert LIMIT_W - DEFAULTS.deadband_w <= after[-1] <= LIMIT_W
    assert sign_changes([e - TARGET_W for e in after]) <= 1


@pytest.mark.parametrize("tau_s", [1.0, 2.0])
def test_load_steps_down_and_up(tau_s: float) -> None:
    plant = site(tau_s)
    loop = limiter()
    plant.run(loop, 30)
    plant.load_w = 1000.0  # load falls: export jumps over the limit, the loop cuts again
    plant.run(loop, 30)
    plant.load_w = 8000.0  # load rises: the loop gives generation back, up to the limit
    plant.run(loop, 30)
    step_w = DEFAULTS.max_step_pct / 100 * 15000.0
    for start, error_w, what in ((30, 2000.0, "cut"), (60, 7000.0, "release")):
        segment = plant.exports[start : start + 30]
        k = settled_at(segment[1:]) + 1  # the step itself lands at the first interval
        n = intervals_to_settle(error_w, DEFAULTS.gain, step_w, tau_s)
        after = segment[k:]
        print(
            f"\nload step ({what} {error_w:.0f} W), tau {tau_s} s: in the deadband after {k} "
            f"intervals (bound {n}), then max {max(after):.1f} W, "
            f"sign changes {sign_changes([e - TARGET_W for e in after])}"
        )
        assert k <= n
        assert max(after) <= LIMIT_W + OVERSHOOT_TOLERANCE_W
        assert sign_changes([e - TARGET_W for e in after]) <= 1
        assert LIMIT_W - DEFAULTS.deadband_w <= segment[-1] <= LIMIT_W
    assert max(plant.exports[60:]) <= LIMIT_W + OVERSHOOT_TOLERANCE_W  # release: no overshoot


def test_releases_to_full_output_when_the_load_takes_it() -> None:
    plant = site(1.5)
    loop = limiter()
    plant.run(loop, 30)
    assert plant.limits[-1]["inv1"] < 50
    plant.load_w = 14000.0  # more than the inverters can make: export stays under the limit
    plant.run(loop, 15)
    n = 1 + math.ceil((100 - plant.limits[29]["inv1"]) / DEFAULTS.max_step_pct)  # +1: meter
    released = [k for k, limits in enumerate(plant.limits[30:]) if limits["inv1"] == 100.0]
    print(f"\nrelease: 100 % after {released[0]} intervals (bound: meter + rate = {n})")
    assert released
    assert released[0] <= n
    assert plant.limits[-1] == {"inv1": 100.0, "inv2": 100.0}


def test_passing_cloud_does_not_wind_up() -> None:
    plant = site(1.5, available=1.0)
    loop = limiter()
    plant.run(loop, 30)
    for inverter in plant.inverters.values():
        inverter.available_w *= 0.2  # a cloud: production falls far below the limits
    plant.run(loop, 30)
    cloud_limits = plant.limits[-1]
    for inverter in plant.inverters.values():
        inverter.available_w = inverter.w_max  # the sun is back at once
    plant.run(loop, 30)
    print(
        f"\ncloud: limits {cloud_limits['inv1']:.1f} % under the cloud; "
        f"export after the sun returns max {max(plant.exports[60:]):.1f} W"
    )
    assert cloud_limits["inv1"] < 100
    assert max(plant.exports[60:]) <= LIMIT_W + OVERSHOOT_TOLERANCE_W


def test_without_a_meter_reading_the_limits_fall_to_the_open_loop_cap_never_higher() -> None:
    """Meter lost: at once the limits at which the inverters cannot export more than the
    limit even with no load, or the held ones where lower; never raised without a reading."""
    plant = site(1.5)
    loop = limiter()
    plant.run(loop, 30)
    held = plant.limits[-1]
    plant.load_w = 14000.0  # would release the inverters, but nobody can see it
    plant.run(loop, 10, meter_ok=lambda k: False)
    for limits in plant.limits[30:]:
        assert all(limits[name] <= held[name] for name in held)
        allowed_w = sum(plant.inverters[n].w_max * pct / 100.0 for n, pct in limits.items())
        assert allowed_w <= LIMIT_W + 1e-6
    plant.run(loop, 20)  # the meter is back: now the loop releases
    assert plant.limits[-1]["inv1"] > plant.limits[39]["inv1"]


def test_a_meter_lost_with_the_load_falling_to_nothing_keeps_export_under_the_limit() -> None:
    """The inverters run free under a large load; the meter goes, and while it is gone the
    load drops to 0: export stays under the limit (the open-loop cap), and it stays there,
    with no overshoot, when the meter comes back."""
    plant = site(1.5)
    plant.load_w = 20000.0
    loop = limiter()
    plant.run(loop, 40)
    assert plant.limits[-1]["inv1"] == 100.0
    plant.run(loop, 10, meter_ok=lambda k: False)  # the inverters follow the cap down
    plant.load_w = 0.0
    plant.run(loop, 30, meter_ok=lambda k: False)
    assert max(plant.exports[50:]) <= LIMIT_W + OVERSHOOT_TOLERANCE_W
    plant.run(loop, 40)
    assert max(plant.exports[80:]) <= LIMIT_W + OVERSHOOT_TOLERANCE_W


def test_without_any_reading_assumes_no_house_load() -> None:
    loop = limiter()
    inverters = {"inv1": Inverter(10000.0, 8000.0), "inv2": Inverter(5000.0, 4000.0)}
    limits = loop.step(None, LIMIT_W, inverters, DT_S)
    assert allowed_w_at(limits["inv1"], inverters) == pytest.approx(TARGET_W)  # open loop
    assert loop.step(None, LIMIT_W, inverters, DT_S) == limits


def test_a_dso_cap_is_never_exceeded() -> None:
    plant = site(1.5)
    plant.caps["inv1"] = 30.0
    loop = limiter()
    plant.run(loop, 30)
    assert LIMIT_W - DEFAULTS.deadband_w <= plant.exports[-1] <= LIMIT_W
    plant.load_w = 14000.0
    plant.run(loop, 20)
    assert max(limits["inv1"] for limits in plant.limits) <= 30.0
    assert plant.limits[-1] == {"inv1": 30.0, "inv2": 100.0}


def test_reset_starts_afresh() -> None:
    loop = limiter()
    inverters = {"inv1": Inverter(10000.0, 8000.0)}
    loop.step(9000.0, LIMIT_W, inverters, DT_S)
    loop.reset()
    assert loop.step(None, LIMIT_W, inverters, DT_S) == {"inv1": 100 * TARGET_W / 10000.0}


caps = st.sampled_from([100.0, 100.0, 60.0, 30.0, 0.0])
fleet = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.builds(Inverter, st.floats(1000, 20000), st.floats(0, 20000), caps),
    min_size=1,
)
readings = st.one_of(st.none(), st.floats(-20000, 20000))


@given(st.data(), fleet)
def test_limits_move_at_most_one_step_per_interval(
    data: st.DataObject, inverters: dict[str, Inverter]
) -> None:
    """While the meter reads; without a reading a limit may only fall (the open-loop cap)."""
    loop = limiter()
    previous = loop.step(data.draw(readings), LIMIT_W, inverters, DT_S)
    for _ in range(data.draw(st.integers(1, 10))):
        outputs = data.draw(st.lists(st.floats(0, 20000), min_size=3, max_size=3))
        inverters = {
            name: Inverter(i.w_max, w_now, i.cap_pct)
            for (name, i), w_now in zip(inverters.items(), outputs, strict=False)
        }
        reading = data.draw(readings)
        limits = loop.step(reading, LIMIT_W, inverters, DT_S)
        for name, pct in limits.items():
            if reading is None:
                assert pct <= previous[name] + 1e-9
            else:
                assert abs(pct - previous[name]) <= DEFAULTS.max_step_pct + 1e-9
        previous = limits


@given(st.lists(st.tuples(readings, fleet), min_size=1, max_size=12))
def test_limits_respect_caps_and_never_rise_without_a_reading(
    steps: list[tuple[float | None, dict[str, Inverter]]],
) -> None:
    loop = limiter()
    previous: dict[str, float] | None = None
    for reading, inverters in steps:  # inverters come and go, caps change
        limits = loop.step(reading, LIMIT_W, inverters, DT_S)
        assert limits.keys() == inverters.keys()
        for name, pct in limits.items():
            assert 0.0 <= pct <= inverters[name].cap_pct
            if previous is not None and reading is None:
                assert pct <= previous.get(name, 0.0)
        previous = limits


@given(fleet, st.floats(-5000, 80000))
def test_level_shares_the_allowed_power_in_proportion_to_wmax(
    inverters: Mapping[str, Inverter], allowed_w: float
) -> None:
    ceiling_w = sum(i.w_max * i.cap_pct / 100 for i in inverters.values())
    level = level_pct(allowed_w, inverters)
    assert 0.0 <= level <= 100.0
    assert allowed_w_at(level, inverters) == pytest.approx(
        min(max(allowed_w, 0.0), ceiling_w), abs=1e-6
    )
    limits = share(level, inverters)
    below_cap = {pct for name, pct in limits.items() if pct < inverters[name].cap_pct}
    assert len(below_cap) <= 1  # all inverters not at their cap share one level
