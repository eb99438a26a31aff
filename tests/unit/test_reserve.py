"""The customer's reserve_soc_pct in the control core: the effective reserve is the highest of
the device's minimum, the configured reserve and the one a role holds; storage events that
would cross it are refused, not started or stopped. And a limit's default is a role's own:
another role's event does not lift it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from derms_edge.control import DeviceView, Role
from derms_edge.model import Control, ControlType, DeviceState, Event, Reason, SetpointName, Status
from tests.unit.test_engine import BATTERY, T0, accept, controller, event, statuses, step, views

CUSTOMER = {ControlType.RESERVE_SOC_PCT, ControlType.STORAGE_W, ControlType.MAX_W_PCT}
ROLES = {
    "dgo": Role("dgo", 0, frozenset({ControlType.MAX_W_PCT, ControlType.EXPORT_LIMIT_W})),
    "aggregator": Role("aggregator", 2, frozenset({ControlType.STORAGE_W})),
    "customer": Role("customer", 3, frozenset(CUSTOMER)),
}
HOUR = timedelta(hours=1)


def at_soc(soc_pct: float) -> dict[str, DeviceView]:
    return views(replace(BATTERY, state=DeviceState(w=0.0, soc_pct=soc_pct)))


def reserve(mrid: str, pct: float, **changes: object) -> Event:
    return event(mrid, "customer", control=Control(reserve_soc_pct=pct), **changes)


def discharge(mrid: str, w: float = 2000.0, **changes: object) -> Event:
    return event(mrid, "aggregator", control=Control(storage_w=w), devices=("bat1",), **changes)


def test_a_discharge_that_would_cross_the_customers_reserve_is_refused() -> None:
    core = controller(roles=ROLES)
    devices = at_soc(65.0)
    accept(core, reserve("r1", 60.0, duration_s=7200), devices)
    step(core, T0, devices)
    # 2 kW for an hour takes about 21 % of 10 kWh: 65 % would end near 44 %, under 60 %
    answer = accept(core, discharge("d1"), devices)
    assert statuses(answer) == [("d1", Status.REJECTED, Reason.SOC_LIMIT)]
    assert "reserve 60" in (answer[0].detail or "")


def test_a_running_discharge_stops_at_the_customers_reserve_not_the_configured_one() -> None:
    core = controller(roles=ROLES)
    accept(core, discharge("d1", duration_s=7200), at_soc(80.0))
    assert step(core, T0, at_soc(80.0)).setpoints["bat1"][SetpointName.STORAGE_W] == 2000.0
    accept(core, reserve("r1", 60.0, start=T0 + timedelta(minutes=1)), at_soc(70.0))
    running = step(core, T0 + timedelta(minutes=1), at_soc(70.0))
    assert running.setpoints["bat1"][SetpointName.STORAGE_W] == 2000.0
    assert running.active["bat1"][ControlType.RESERVE_SOC_PCT].value == 60.0
    held = step(core, T0 + timedelta(minutes=2), at_soc(60.0))
    assert held.setpoints["bat1"][SetpointName.STORAGE_W] == 0.0
    assert statuses(held.responses) == [("d1", Status.ABORTED, Reason.SOC_LIMIT)]
    assert "reserve 60 %" in (held.responses[0].detail or "")


def test_a_reserve_scheduled_for_a_storm_holds_back_a_discharge_before_it() -> None:
    core = controller(roles=ROLES)
    devices = at_soc(65.0)
    accept(core, reserve("storm", 60.0, start=T0 + 3 * HOUR, duration_s=86400), devices)
    assert statuses(accept(core, discharge("d1"), devices))[-1][1:] == (
        Status.REJECTED,
        Reason.SOC_LIMIT,
    )
    assert statuses(accept(core, discharge("d2", 300.0), devices))[-1][1] is Status.SCHEDULED


def test_a_role_cannot_lower_the_configured_reserve() -> None:
    core = controller(roles=ROLES)
    devices = at_soc(25.0)  # the configured reserve is 20 %
    accept(core, reserve("r1", 0.0), devices)
    step(core, T0, devices)
    answer = accept(core, discharge("d1"), devices)
    assert statuses(answer) == [("d1", Status.REJECTED, Reason.SOC_LIMIT)]
    assert "reserve 20" in (answer[0].detail or "")


def test_a_reserve_above_the_devices_maximum_holds_the_battery_from_discharging() -> None:
    core = controller(roles=ROLES)
    assert core.set_default("customer", Control(reserve_soc_pct=100.0)) is None
    devices = at_soc(94.0)  # the device's maximum is 95 %
    answer = accept(core, discharge("d1", 500.0), devices)
    assert statuses(answer) == [("d1", Status.REJECTED, Reason.SOC_LIMIT)]
    assert step(core, T0, devices).active["bat1"][ControlType.RESERVE_SOC_PCT].value == 100.0


def test_the_grid_operators_default_limit_is_not_lifted_by_another_roles_event() -> None:
    core = controller(roles=ROLES)
    assert core.set_default("dgo", Control(max_w_pct=70.0)) is None
    accept(core, event("c1", "customer", control=Control(max_w_pct=100.0)))
    decision = step(core, T0)
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 70.0
    assert decision.active["inv1"][ControlType.MAX_W_PCT].source.role == "dgo"
    accept(core, event("c2", "customer", control=Control(max_w_pct=40.0)))
    assert step(core, T0).setpoints["inv1"][SetpointName.MAX_W_PCT] == 40.0
