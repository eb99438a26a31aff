"""The control core with a fake clock: lifecycle, authorization, arbitration, SoC guard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from derms_edge.control import Controller, Decision, DeviceView, Record, Role
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.model import (
    Capability,
    Control,
    ControlType,
    DeviceState,
    Event,
    FixedPf,
    Quality,
    Reason,
    Response,
    SetpointName,
    Status,
    VoltVarCurve,
)
from derms_edge.runtime.schedule_store import ScheduleStore

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
ALL = frozenset(ControlType)
ROLES = {
    "dso": Role("dso", 1, ALL),
    "aggregator": Role("aggregator", 2, frozenset({ControlType.STORAGE_W, ControlType.EVSE_MAX_A})),
    "customer": Role("customer", 3, frozenset({ControlType.MAX_W_PCT, ControlType.STORAGE_W})),
}
PV = DeviceView(
    "inv1",
    "inverter",
    Quality.OK,
    DeviceState(w=4000.0, v=230.0),
    Capability(w_max=5000.0, va_max=5000.0, v_nom=230.0),
    frozenset({SetpointName.MAX_W_PCT, SetpointName.VAR, SetpointName.FIXED_PF}),
)
BATTERY = DeviceView(
    "bat1",
    "battery",
    Quality.OK,
    DeviceState(w=0.0, soc_pct=50.0),
    Capability(
        wh_rtg=10000.0,
        charge_w_max=5000.0,
        discharge_w_max=5000.0,
        soc_min_pct=5.0,
        soc_max_pct=95.0,
        w_max=5000.0,
    ),
    frozenset({SetpointName.STORAGE_W, SetpointName.MAX_W_PCT}),
    reserve_soc_pct=20.0,
    efficiency=0.95,
)


def views(*overrides: DeviceView) -> dict[str, DeviceView]:
    devices = {PV.id: PV, BATTERY.id: BATTERY}
    devices.update({d.id: d for d in overrides})
    return devices


def controller(**kwargs: object) -> Controller:
    settings: dict[str, object] = {
        "roles": ROLES,
        "dispatcher_timeout_s": 900.0,
        "limiter": ExportLimiter(0.5, 10.0, 50.0),
    }
    settings.update(kwargs)
    core = Controller(**settings)  # type: ignore[arg-type]
    core.restore([], T0)
    return core


def event(mrid: str, role: str = "dso", **changes: object) -> Event:
    base = Event(
        mrid=mrid,
        role=role,
        primacy=ROLES[role].primacy,
        creation_time=T0,
        start=T0,
        duration_s=3600.0,
        control=Control(max_w_pct=50.0),
        body=mrid,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def statuses(responses: list[Response]) -> list[tuple[str, Status, str | None]]:
    return [(r.mrid, r.status, r.reason) for r in responses]


def accept(
    core: Controller, ev: Event, devices: Mapping[str, DeviceView] | None = None, now: datetime = T0
) -> list[Response]:
    return core.accept(ev, devices or views(), now)[0]


def step(
    core: Controller,
    at: datetime,
    devices: Mapping[str, DeviceView] | None = None,
    elapsed: float | None = None,
) -> Decision:
    return core.step(devices or views(), at, elapsed)


def test_lifecycle_received_scheduled_started_completed() -> None:
    core = controller()
    ev = event("e1", start=T0 + timedelta(minutes=5), duration_s=600)
    assert statuses(accept(core, ev)) == [
        ("e1", Status.RECEIVED, None),
        ("e1", Status.SCHEDULED, None),
    ]
    assert statuses(step(core, T0 + timedelta(minutes=1)).responses) == []
    started = step(core, T0 + timedelta(minutes=5))
    assert statuses(started.responses) == [("e1", Status.STARTED, None)]
    assert started.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 50.0}
    assert started.active["inv1"][ControlType.MAX_W_PCT].source.mrid == "e1"
    assert statuses(step(core, T0 + timedelta(minutes=10)).responses) == []
    done = step(core, T0 + timedelta(minutes=15))
    assert statuses(done.responses) == [("e1", Status.COMPLETED, None)]
    assert done.setpoints["inv1"] == {}


def test_expired_duplicate_and_repeat() -> None:
    core = controller()
    late = event("late", start=T0 - timedelta(hours=2), duration_s=3600)
    (rejected,) = accept(core, late)
    assert (rejected.status, rejected.reason) == (Status.REJECTED, Reason.EXPIRED)
    assert "ended at 2026-11-21T09:00:00Z" in (rejected.detail or "")
    accept(core, event("e1"))
    (repeat,) = accept(core, event("e1"))
    assert repeat.status is Status.SCHEDULED and repeat.reason is None
    (dup,) = accept(core, event("e1", body="other", control=Control(max_w_pct=10.0)))
    assert (dup.status, dup.reason) == (Status.REJECTED, Reason.DUPLICATE)


def test_unauthorized_control_type_and_primacy() -> None:
    core = controller()
    (r1,) = accept(core, event("a1", role="aggregator", primacy=2))
    assert (r1.status, r1.reason) == (Status.REJECTED, Reason.UNAUTHORIZED)
    assert "may not send max_w_pct" in (r1.detail or "")
    (r2,) = accept(
        core, event("a2", role="aggregator", primacy=1, control=Control(storage_w=1000.0))
    )
    assert r2.reason == Reason.UNAUTHORIZED and "primacy 1 is stronger" in (r2.detail or "")


def test_not_applicable() -> None:
    core = controller()
    (unknown,) = accept(core, event("x", devices=("nope",)))
    assert unknown.reason == Reason.NOT_APPLICABLE and "nope" in (unknown.detail or "")
    (no_meter,) = accept(core, event("y", control=Control(export_limit_w=1000.0)))
    assert no_meter.reason == Reason.NOT_APPLICABLE and "meter" in (no_meter.detail or "")
    (pv_storage,) = accept(core, event("z", devices=("inv1",), control=Control(storage_w=1.0)))
    assert pv_storage.reason == Reason.NOT_APPLICABLE
    (too_big,) = accept(core, event("w", control=Control(storage_w=-8000.0)))
    assert too_big.reason == Reason.NOT_APPLICABLE and "5000 W" in (too_big.detail or "")


def test_primacy_then_creation_time_and_superseded() -> None:
    core = controller()
    accept(core, event("old", control=Control(max_w_pct=70.0)))
    step(core, T0)
    newer = event("new", creation_time=T0 + timedelta(seconds=1), control=Control(max_w_pct=30.0))
    accept(core, newer)
    decision = step(core, T0 + timedelta(seconds=1))
    assert ("old", Status.SUPERSEDED, "superseded_by:new") in statuses(decision.responses)
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 30.0


def test_partial_overlap_is_not_superseded() -> None:
    core = controller()
    accept(core, event("long", control=Control(max_w_pct=70.0)))
    short = event(
        "short",
        creation_time=T0 + timedelta(seconds=1),
        start=T0 + timedelta(minutes=10),
        duration_s=60,
        control=Control(max_w_pct=30.0),
    )
    accept(core, short)
    step(core, T0)
    mid = step(core, T0 + timedelta(minutes=10))
    assert mid.setpoints["inv1"][SetpointName.MAX_W_PCT] == 30.0
    assert "long" not in [r.mrid for r in mid.responses]
    after = step(core, T0 + timedelta(minutes=11))
    assert after.setpoints["inv1"][SetpointName.MAX_W_PCT] == 70.0
    assert core.records["long"].status is Status.STARTED


def test_limits_from_roles_combine_most_restrictively() -> None:
    core = controller()
    accept(core, event("dso", control=Control(max_w_pct=60.0)))
    accept(core, event("cust", role="customer", primacy=3, control=Control(max_w_pct=40.0)))
    decision = step(core, T0)
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 40.0
    assert core.records["dso"].status is Status.STARTED  # both hold: nobody is superseded


def test_aggregator_discharge_never_exceeds_dso_curtailment() -> None:
    core = controller()
    accept(core, event("cap", devices=("bat1",), control=Control(max_w_pct=20.0)))
    accept(
        core,
        event(
            "agg", role="aggregator", primacy=2, duration_s=600, control=Control(storage_w=4000.0)
        ),
    )
    decision = step(core, T0)
    assert decision.setpoints["bat1"][SetpointName.STORAGE_W] == pytest.approx(1000.0)


def test_soc_projection_rejects_at_acceptance_with_numbers() -> None:
    core = controller()
    # 50 % of 10 kWh, reserve 20 %: 3 kWh usable at 95 % -> 2850 Wh at the AC side
    (ok,) = accept(core, event("d1", duration_s=1800, control=Control(storage_w=5000.0)))[1:]
    assert ok.status is Status.SCHEDULED
    late = event(
        "d2", start=T0 + timedelta(minutes=30), duration_s=1800, control=Control(storage_w=2000.0)
    )
    (rejected,) = accept(core, late)
    assert (rejected.status, rejected.reason) == (Status.REJECTED, Reason.SOC_LIMIT)
    assert "bat1" in (rejected.detail or "") and "20" in (rejected.detail or "")


def test_soc_unknown_refuses_stale_waits_and_running_stops() -> None:
    """A battery that answers without a state of charge is refused at once; one whose SoC is
    stale (it does not answer now) is accepted and waits, unstarted and unwritten, until its
    SoC is fresh; a running one whose SoC goes unknown stops."""
    core = controller()
    no_soc = replace(BATTERY, state=DeviceState(w=0.0, soc_pct=None))
    (r,) = accept(core, event("n", control=Control(storage_w=-1000.0)), views(no_soc))
    assert (r.status, r.reason) == (Status.REJECTED, Reason.SOC_UNKNOWN)
    stale = replace(BATTERY, quality=Quality.STALE)
    waiting = accept(
        core, event("s", duration_s=600, control=Control(storage_w=-1000.0)), views(stale)
    )
    assert statuses(waiting)[-1] == ("s", Status.SCHEDULED, None)
    held = step(core, T0, views(stale))
    assert statuses(held.responses) == [] and SetpointName.STORAGE_W not in held.setpoints["bat1"]
    fresh = step(core, T0 + timedelta(seconds=1))
    assert statuses(fresh.responses) == [("s", Status.STARTED, None)]
    assert fresh.setpoints["bat1"] == {SetpointName.STORAGE_W: -1000.0}
    decision = step(core, T0 + timedelta(seconds=2), views(no_soc))
    assert ("s", Status.ABORTED, Reason.SOC_UNKNOWN) in statuses(decision.responses)
    assert SetpointName.STORAGE_W not in decision.setpoints["bat1"]


def test_a_storage_event_that_waited_its_whole_window_is_aborted_device_offline() -> None:
    core = controller()
    offline = replace(BATTERY, quality=Quality.OFFLINE)
    accept(core, event("w", duration_s=600, control=Control(storage_w=1000.0)), views(offline))
    assert statuses(step(core, T0, views(offline)).responses) == []
    decision = step(core, T0 + timedelta(seconds=600), views(offline))
    assert statuses(decision.responses) == [("w", Status.ABORTED, Reason.DEVICE_OFFLINE)]
    assert "bat1" in (decision.responses[0].detail or "")


def test_activation_rechecks_measured_soc() -> None:
    core = controller()
    accept(
        core,
        event(
            "later",
            start=T0 + timedelta(minutes=5),
            duration_s=600,
            control=Control(storage_w=5000.0),
        ),
    )
    low = replace(BATTERY, state=DeviceState(w=0.0, soc_pct=22.0))
    decision = step(core, T0 + timedelta(minutes=5), views(low))
    assert ("later", Status.REJECTED, Reason.SOC_LIMIT) in statuses(decision.responses)
    assert SetpointName.STORAGE_W not in decision.setpoints["bat1"]


def test_stops_at_the_reserve_while_active() -> None:
    core = controller()
    accept(core, event("d", duration_s=600, control=Control(storage_w=3000.0)))
    assert step(core, T0).setpoints["bat1"][SetpointName.STORAGE_W] == 3000.0
    at_reserve = replace(BATTERY, state=DeviceState(w=3000.0, soc_pct=20.0))
    decision = step(core, T0 + timedelta(seconds=60), views(at_reserve))
    assert ("d", Status.ABORTED, Reason.SOC_LIMIT) in statuses(decision.responses)
    assert decision.setpoints["bat1"].get(SetpointName.STORAGE_W, 0.0) == 0.0


def test_cancel_and_default_control() -> None:
    core = controller(config_default=Control(max_w_pct=90.0))
    accept(core, event("e"))
    assert step(core, T0).setpoints["inv1"][SetpointName.MAX_W_PCT] == 50.0
    (wrong,) = core.cancel("e", "customer", T0)[0]
    assert wrong.reason == Reason.UNAUTHORIZED
    (missing,) = core.cancel("nope", "dso", T0)[0]
    assert missing.reason == Reason.UNKNOWN_EVENT
    (cancelled,) = core.cancel("e", "dso", T0)[0]
    assert cancelled.status is Status.CANCELLED
    decision = step(core, T0 + timedelta(seconds=1))
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 90.0
    assert decision.active["inv1"][ControlType.MAX_W_PCT].source.kind == "default"
    core.set_default("dso", Control(max_w_pct=80.0))
    assert step(core, T0 + timedelta(seconds=2)).setpoints["inv1"][SetpointName.MAX_W_PCT] == 80.0


def test_dispatcher_timeout_falls_back_to_default() -> None:
    core = controller(dispatcher_timeout_s=60.0, config_default=Control(max_w_pct=100.0))
    core.hear("dso", T0)
    accept(core, event("e"))
    step(core, T0)
    core.hear("dso", T0 + timedelta(seconds=50))
    assert statuses(step(core, T0 + timedelta(seconds=100)).responses) == []
    decision = step(core, T0 + timedelta(seconds=111))
    assert ("e", Status.ABORTED, Reason.DISPATCHER_TIMEOUT) in statuses(decision.responses)
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 100.0


def test_volt_var_native_when_the_device_can_else_edge() -> None:
    curve = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)))
    core = controller()
    accept(core, event("vv", control=Control(volt_var=curve)))
    native = replace(PV, supports=PV.supports | {SetpointName.VOLT_VAR})  # type: ignore[operator]
    assert step(core, T0, views(native)).setpoints["inv1"] == {SetpointName.VOLT_VAR: curve}
    high = replace(PV, state=DeviceState(w=4000.0, v=1.08 * 230.0))
    edge = step(core, T0 + timedelta(seconds=1), views(high)).setpoints["inv1"]
    assert set(edge) == {SetpointName.VAR}
    for second in range(2, 40):
        edge = step(core, T0 + timedelta(seconds=second), views(high)).setpoints["inv1"]
    assert edge[SetpointName.VAR] == pytest.approx(-0.44 * 5000.0, rel=0.01)


def test_reactive_modes_are_exclusive_stronger_source_wins() -> None:
    core = controller(config_default=Control(fixed_pf=FixedPf(0.95, "absorb")))
    curve = VoltVarCurve(((0.92, 44.0), (1.08, -44.0)))
    assert SetpointName.FIXED_PF in step(core, T0).setpoints["inv1"]
    accept(core, event("vv", control=Control(volt_var=curve)))
    decision = step(core, T0 + timedelta(seconds=1))
    assert SetpointName.FIXED_PF not in decision.setpoints["inv1"]
    assert ControlType.VOLT_VAR in decision.active["inv1"]


def test_restart_resumes_without_second_started(tmp_path: Path) -> None:
    store = ScheduleStore(tmp_path / "schedule.sqlite")
    core = controller()
    changed: list[Record] = []
    for ev in (
        event("running"),
        event("short", duration_s=60, devices=("bat1",), control=Control(max_w_pct=10.0)),
    ):
        changed += core.accept(ev, views(), T0)[1]
    store.save(changed, T0)
    store.save(step(core, T0).changed, T0)
    store.close()

    reopened = ScheduleStore(tmp_path / "schedule.sqlite")
    again = controller()
    again.restore(reopened.load(T0 + timedelta(minutes=5)), T0 + timedelta(minutes=5))
    decision = step(again, T0 + timedelta(minutes=5))
    assert statuses(decision.responses) == [("short", Status.COMPLETED, None)]
    assert decision.setpoints["inv1"][SetpointName.MAX_W_PCT] == 50.0
    reopened.close()


def test_store_keeps_every_control_field(tmp_path: Path) -> None:
    control = Control(
        max_w_pct=50.0,
        export_limit_w=5000.0,
        volt_var=VoltVarCurve(((0.92, 44.0), (1.08, -44.0)), 1.01, 7.0, "edge"),
        fixed_pf=FixedPf(0.95, "absorb"),
        storage_w=-3000.0,
        evse_max_a=16.0,
        evse_max_w=4200.0,
    )
    store = ScheduleStore(tmp_path / "schedule.sqlite")
    store.save([Record(event("all", control=control), Status.SCHEDULED)], T0)
    store.save_default("dso", control)
    (record,) = store.load(T0)
    assert record.event == event("all", control=control)
    assert store.load_defaults() == {"dso": control}
    store.close()


def test_a_limit_for_an_offline_device_starts_pending_and_is_decided_for_it() -> None:
    """Never refused because a device cannot be reached: started, the detail names it, and
    its setpoint is decided (the coordinator writes it as soon as the device answers)."""
    core = controller()
    accept(core, event("e", devices=("inv1",)))
    offline = replace(PV, quality=Quality.OFFLINE)
    decision = step(core, T0, views(offline))
    assert statuses(decision.responses) == [("e", Status.STARTED, None)]
    assert "inv1 (offline)" in (decision.responses[0].detail or "")
    assert decision.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 50.0}


CHARGER = DeviceView(
    "ev1",
    "evse",
    Quality.OK,
    DeviceState(w=-22000.0, v=231.0),
    Capability(w_max=22000.0, max_a=32.0, phases=3),
    frozenset({SetpointName.EVSE_MAX_A}),
    max_a=32.0,
    phases=3,
)


def charger_amps(control: Control, device: DeviceView = CHARGER, role: str = "dso") -> object:
    core = controller()
    accept(core, event("ev", role, control=control, devices=("ev1",)), views(device))
    return step(core, T0, views(device)).setpoints["ev1"].get(SetpointName.EVSE_MAX_A)


@pytest.mark.parametrize(
    ("watts", "phases", "volts", "amps"),
    [
        (4200.0, 3, 231.0, 6.0),  # 4200 / (3 x 231) = 6.06 A, rounded down
        (11000.0, 3, 230.0, 15.9),  # 15.94 A: down, so the cap holds
        (4200.0, 1, 230.0, 18.2),  # 18.26 A on one phase
        (4000.0, 3, 231.0, 0.0),  # 5.77 A cannot be signalled: pause
        (50000.0, 3, 230.0, 32.0),  # above the rating: the charger's max_a
        (0.0, 3, 230.0, 0.0),
    ],
)
def test_evse_max_w_becomes_a_current_at_the_measured_voltage(
    watts: float, phases: int, volts: float, amps: float
) -> None:
    device = replace(CHARGER, phases=phases, state=DeviceState(v=volts))
    assert charger_amps(Control(evse_max_w=watts), device) == amps
    if amps:
        assert phases * volts * amps <= watts or amps == 32.0


def test_evse_max_w_without_a_fresh_voltage_assumes_nominal_plus_ten_percent() -> None:
    stale = replace(CHARGER, quality=Quality.STALE)
    # 4200 / (3 x 253 V) = 5.53 A: under 6 A at the top of the band, so pause
    assert charger_amps(Control(evse_max_w=4200.0), stale) == 0.0
    unknown = replace(CHARGER, state=DeviceState(v=None), capability=Capability(v_nom=230.0))
    assert charger_amps(Control(evse_max_w=11000.0), unknown) == 14.4  # 11000 / 759 V


def test_the_lowest_of_current_power_and_curtailment_caps_holds() -> None:
    assert charger_amps(Control(evse_max_a=16.0, evse_max_w=4200.0)) == 6.0
    assert charger_amps(Control(evse_max_a=10.0, evse_max_w=11000.0)) == 10.0
    assert charger_amps(Control(max_w_pct=25.0, evse_max_w=11000.0)) == 8.0  # 25 % of 32 A
    core = controller()
    devices = views(CHARGER)
    accept(core, event("dso-cap", control=Control(evse_max_w=7000.0)), devices)
    accept(core, event("agg-a", "aggregator", control=Control(evse_max_a=32.0)), devices)
    # the aggregator's 32 A cannot lift the grid operator's 7 kW (10.1 A at 231 V)
    assert step(core, T0, devices).setpoints["ev1"][SetpointName.EVSE_MAX_A] == 10.1


def test_evse_max_w_is_not_applicable_to_inverters() -> None:
    core = controller()
    responses = accept(core, event("w", control=Control(evse_max_w=4200.0), devices=("inv1",)))
    assert (
        "w",
        Status.REJECTED,
        Reason.NOT_APPLICABLE,
    ) in statuses(responses)


def test_an_event_on_two_batteries_at_their_reserve_is_aborted_once() -> None:
    """Both batteries of one event reach the reserve in the same step: one aborted answer
    (the event stops once), and both hold at 0 W."""
    core = controller()
    second = replace(BATTERY, id="bat2")
    accept(core, event("d", duration_s=600, control=Control(storage_w=3000.0)), views(second))
    step(core, T0, views(second))
    low = DeviceState(w=3000.0, soc_pct=20.0)
    decision = step(
        core,
        T0 + timedelta(seconds=60),
        views(replace(BATTERY, state=low), replace(second, state=low)),
    )
    assert statuses(decision.responses) == [("d", Status.ABORTED, Reason.SOC_LIMIT)]
    for battery in ("bat1", "bat2"):
        assert decision.setpoints[battery].get(SetpointName.STORAGE_W, 0.0) == 0.0
