"""Property: whatever storage events arrive, the rig's battery SoC stays in [reserve, max].

The control core runs against the rig's own battery physics (hil.physics.BatteryPhysics,
the model behind the simulated SunSpec battery) in simulated time. The physics is given no
limits of its own (0..100 %), and its true efficiency may be worse than the one the gateway
projects with: only the gateway's SoC guard (acceptance, activation, continuous watch) keeps
SoC inside the customer's reserve and the device's maximum.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derms_edge.control import Controller, DeviceView, Role
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.model import (
    Capability,
    Control,
    ControlType,
    DeviceState,
    Event,
    Quality,
    SetpointName,
)
from hil.physics import BatteryPhysics, BatteryRatings, Grid

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STEP_S = 5.0
"""Control interval of the simulation, s."""
HORIZON_S = 3 * 3600.0
RATED_W = 5000.0
ROLES = {
    "dso": Role("dso", 1, frozenset(ControlType)),
    "aggregator": Role("aggregator", 2, frozenset({ControlType.STORAGE_W})),
}

storage_event = st.tuples(
    st.sampled_from(["dso", "aggregator"]),
    st.floats(0, 7200),  # start offset, s
    st.floats(60, 7200),  # duration, s
    st.floats(-RATED_W, RATED_W),  # W, + = discharge
    st.floats(0, 1800),  # arrival offset, s (events also arrive while others run)
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    capacity_wh=st.floats(2000, 20000),
    reserve_pct=st.floats(5, 40),
    max_pct=st.floats(60, 98),
    soc_offset=st.floats(0, 1),
    projected_efficiency=st.floats(0.85, 1.0),
    true_efficiency=st.floats(0.80, 1.0),
    events=st.lists(storage_event, min_size=1, max_size=8),
)
def test_soc_never_leaves_reserve_and_max(
    capacity_wh: float,
    reserve_pct: float,
    max_pct: float,
    soc_offset: float,
    projected_efficiency: float,
    true_efficiency: float,
    events: list[tuple[str, float, float, float, float]],
) -> None:
    soc0 = reserve_pct + soc_offset * (max_pct - reserve_pct)
    battery = BatteryPhysics(
        BatteryRatings(capacity_wh, RATED_W, RATED_W, RATED_W, true_efficiency, 0.0, 100.0),
        Grid(230.0, 50.0, 0.0, 0.0, 0),
        soc0,
        tau_s=1.0,
    )
    capability = Capability(
        wh_rtg=capacity_wh,
        charge_w_max=RATED_W,
        discharge_w_max=RATED_W,
        soc_min_pct=5.0,
        soc_max_pct=max_pct,
        w_max=RATED_W,
    )
    core = Controller(ROLES, 1e9, ExportLimiter(0.5, 10, 50), interval_s=STEP_S)
    core.restore([], T0)
    arrivals = sorted(
        (T0 + timedelta(seconds=arrive), i, role, start, duration, w)
        for i, (role, start, duration, w, arrive) in enumerate(events)
    )

    def view() -> dict[str, DeviceView]:
        state = DeviceState(w=battery.w, soc_pct=battery.soc_pct)
        return {
            "bat1": DeviceView(
                "bat1",
                "battery",
                Quality.OK,
                state,
                capability,
                frozenset({SetpointName.STORAGE_W}),
                reserve_soc_pct=reserve_pct,
                efficiency=projected_efficiency,
            )
        }

    t = 0.0
    while t <= HORIZON_S:
        now = T0 + timedelta(seconds=t)
        while arrivals and arrivals[0][0] <= now:
            _, i, role, start, duration, w = arrivals.pop(0)
            core.accept(
                Event(
                    mrid=f"e{i}",
                    role=role,
                    primacy=ROLES[role].primacy,
                    creation_time=now,
                    start=now + timedelta(seconds=start),
                    duration_s=duration,
                    control=Control(storage_w=w),
                    body=str(i),
                ),
                view(),
                now,
            )
        decision = core.step(view(), now)
        setpoint = decision.setpoints["bat1"].get(SetpointName.STORAGE_W, 0.0)
        assert isinstance(setpoint, float)
        battery.controls.w_set = setpoint
        t += STEP_S
        battery.step(t)
        assert reserve_pct - 1e-9 <= battery.soc_pct <= max_pct + 1e-9, (
            f"SoC {battery.soc_pct:.4f} % left [{reserve_pct:.4f}, {max_pct:.4f}] at t={t:.0f} s"
        )
