"""Property: in each of the six DSO models, the grid operator's limits hold against every
role, the customer's reserve holds against every role, and market dispatch runs inside what
the grid operator allows.

The roles are the ones ``control.dso_model`` resolves from the configuration. Random
histories: events from every role of the model (any control type: a type the role may not
send is refused), default controls set and cleared, cancels; the control core runs them in
5 s steps against the rig's battery physics (hil.physics.BatteryPhysics, which has no SoC
limits of its own here), two inverters and a site meter. At every step, from what was sent
(computed here, independently of the controller):

- an inverter's power limit is never looser than the grid operator's (``dgo``) in force:
  its winning event on that device, else its default; the site's export limit in force is
  never looser than dgo's;
- a battery's discharge is never more than dgo's curtailment of it allows (``max_w_pct`` of
  its discharge rating), whoever sent the storage setpoint;
- the battery never discharges below the effective reserve: the highest of the device's
  minimum, the configured reserve and the customer's in force (its winning event, else its
  default). SoC at or above it stays at or above it; under it (the customer raised it above
  the SoC) the battery is told to discharge no more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derms_edge.config import parse_config
from derms_edge.config.dso_models import CUSTOMER, GRID_OPERATOR, DsoModel
from derms_edge.control import Controller, DeviceView, Role
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.model import (
    Capability,
    Control,
    ControlType,
    DeviceKind,
    DeviceState,
    Event,
    Quality,
    SetpointName,
    Status,
    number,
)
from hil.physics import BatteryPhysics, BatteryRatings, Grid
from tests.property.test_grid_operator_limits import Sent

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STEP_S = 5.0
CAPACITY_WH = 5000.0
RATED_W = 5000.0
DEVICE_MIN_PCT = 5.0
CONFIGURED_RESERVE_PCT = 10.0
INVERTERS = ("inv1", "inv2")
SITE = "site"


def resolved_roles(model: DsoModel) -> dict[str, Role]:
    """The roles as the configuration resolves them, built as the gateway builds them."""
    data = {
        "gateway": {"id": "site-001"},
        "devices": [{"id": "bat1", "kind": "battery", "protocol": "sunspec", "host": "127.0.0.1"}],
        "control": {"dso_model": str(model)},
    }
    roles = parse_config(data).control.roles
    return {name: Role(name, r.primacy, frozenset(r.allow)) for name, r in roles.items()}


ROLES = {model: resolved_roles(model) for model in DsoModel}
CAPABILITY = Capability(
    wh_rtg=CAPACITY_WH,
    charge_w_max=RATED_W,
    discharge_w_max=RATED_W,
    soc_min_pct=DEVICE_MIN_PCT,
    soc_max_pct=100.0,
    w_max=RATED_W,
)


def control_of(kind: str, value: float) -> Control:
    """A control of one type from a draw in 0..100."""
    match kind:
        case "max_w_pct":
            return Control(max_w_pct=value)
        case "storage_w":
            return Control(storage_w=(value - 30.0) / 70.0 * RATED_W)  # mostly discharge
        case "export_limit_w":
            return Control(export_limit_w=value * 50.0)
        case _:
            return Control(reserve_soc_pct=value)


@dataclass
class Run:
    """One random history in one model."""

    model: DsoModel
    core: Controller = field(init=False)
    battery: BatteryPhysics = field(init=False)
    now: datetime = T0
    sent: dict[str, Sent] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)
    defaults: dict[str, Control] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.core = Controller(
            ROLES[self.model],
            dispatcher_timeout_s=900.0,
            limiter=ExportLimiter(0.5, 10.0, 50.0),
            meter="meter",
            interval_s=STEP_S,
        )
        self.core.restore([], T0)
        self.battery = BatteryPhysics(
            BatteryRatings(CAPACITY_WH, RATED_W, RATED_W, RATED_W, 0.95, 0.0, 100.0),
            Grid(230.0, 50.0, 0.0, 0.0, 0),
            40.0,
            tau_s=1.0,
        )

    @property
    def roles(self) -> list[str]:
        return list(ROLES[self.model])

    def views(self) -> dict[str, DeviceView]:
        views = {
            name: DeviceView(
                name,
                DeviceKind.INVERTER,
                Quality.OK,
                DeviceState(w=3000.0, v=230.0),
                Capability(w_max=5000.0, va_max=5000.0, v_nom=230.0),
                frozenset({SetpointName.MAX_W_PCT}),
            )
            for name in INVERTERS
        }
        views["bat1"] = DeviceView(
            "bat1",
            DeviceKind.BATTERY,
            Quality.OK,
            DeviceState(w=self.battery.w, soc_pct=self.battery.soc_pct),
            CAPABILITY,
            frozenset({SetpointName.STORAGE_W}),
            reserve_soc_pct=CONFIGURED_RESERVE_PCT,
        )
        views["meter"] = DeviceView("meter", DeviceKind.METER, Quality.OK, DeviceState(w=-800.0))
        return views

    def send(self, index: int, op: tuple[int, int, int, int, str, float, object]) -> None:
        which, extra, start_s, duration_s, kind, value, devices = op
        role = self.roles[which % len(self.roles)]
        event = Event(
            mrid=f"e{index}",
            role=role,
            primacy=ROLES[self.model][role].primacy + extra,
            creation_time=self.now,
            start=self.now + timedelta(seconds=start_s),
            duration_s=duration_s,
            control=control_of(kind, value),
            devices=devices,  # type: ignore[arg-type]
            body=f"e{index}",
        )
        _, changed = self.core.accept(event, self.views(), self.now)
        arrival = self.core.records[event.mrid].event.arrival if changed else 0
        self.sent[event.mrid] = Sent(event, bool(changed), arrival)

    def set_default(self, which: int, kind: str, value: float | None) -> None:
        role = self.roles[which % len(self.roles)]
        control = None if value is None else control_of(kind, value)
        if self.core.set_default(role, control) is None:
            if control is None:
                self.defaults.pop(role, None)
            else:
                self.defaults[role] = control

    def cancel(self, which: int) -> None:
        if not self.sent:
            return
        target = list(self.sent.values())[which % len(self.sent)]
        responses, _ = self.core.cancel(target.event.mrid, target.event.role, self.now)
        target.cancelled |= any(r.status is Status.CANCELLED for r in responses)

    def in_force(self, role: str, kind: ControlType, device: str | None) -> float | None:
        """``role``'s value of ``kind`` in force (on ``device``; None: site-wide): its
        winning live event that sets it, else its default."""
        live = [
            s
            for s in self.sent.values()
            if s.accepted
            and not s.cancelled
            and not s.finished
            and s.event.mrid not in self.superseded
            and s.event.role == role
            and kind in s.event.control.types
            and (device is None or s.event.devices is None or device in s.event.devices)
            and s.event.start <= self.now < s.event.end
        ]
        winner: Sent | None = None
        for candidate in live:
            if winner is None or candidate.beats(winner):
                winner = candidate
        control = winner.event.control if winner is not None else self.defaults.get(role)
        value = control.items().get(kind) if control is not None else None
        return None if value is None else number(value)

    def step(self, index: int) -> None:
        for role in self.roles:
            self.core.hear(role, self.now)
        decision = self.core.step(self.views(), self.now, STEP_S)
        for response in decision.responses:
            if response.status is Status.SUPERSEDED:
                self.superseded.add(response.mrid)
        where = f"in {self.model} at step {index}"
        for inverter in INVERTERS:
            limit = self.in_force(GRID_OPERATOR, ControlType.MAX_W_PCT, inverter)
            written = decision.setpoints[inverter].get(SetpointName.MAX_W_PCT)
            if limit is not None:
                assert written is not None and number(written) <= limit + 1e-9, (
                    f"{inverter} at {written} % under the grid operator's {limit} % {where}"
                )
        export = self.in_force(GRID_OPERATOR, ControlType.EXPORT_LIMIT_W, None)
        if export is not None:
            site = decision.active[SITE][ControlType.EXPORT_LIMIT_W]
            assert number(site.value) <= export, (
                f"site export limit {site.value} W under the grid operator's {export} W {where}"
            )
        storage = number(decision.setpoints["bat1"].get(SetpointName.STORAGE_W, 0.0))
        curtailed = self.in_force(GRID_OPERATOR, ControlType.MAX_W_PCT, "bat1")
        if curtailed is not None:
            assert storage <= curtailed / 100.0 * RATED_W + 1e-6, (
                f"bat1 discharging {storage:.0f} W under the grid operator's {curtailed} % {where}"
            )
        customer = self.in_force(CUSTOMER, ControlType.RESERVE_SOC_PCT, "bat1") or 0.0
        reserve = max(DEVICE_MIN_PCT, CONFIGURED_RESERVE_PCT, customer)
        before = self.battery.soc_pct
        self.battery.controls.w_set = storage
        self.now += timedelta(seconds=STEP_S)
        self.battery.step((self.now - T0).total_seconds())
        if before < reserve:  # a reserve raised above SoC: no more discharge
            assert storage <= 0.0, (
                f"bat1 told to discharge {storage:.0f} W at SoC {before:.3f} % under the "
                f"reserve {reserve:g} % (customer's {customer:g} %) {where}"
            )
        else:
            assert self.battery.soc_pct >= reserve - 1e-9, (
                f"SoC {before:.3f} -> {self.battery.soc_pct:.3f} % below the reserve "
                f"{reserve:g} % (customer's {customer:g} %) {where}"
            )
        for item in self.sent.values():
            item.finished |= self.now >= item.event.end


role_index = st.integers(0, 7)
kind = st.sampled_from(
    ["max_w_pct", "max_w_pct", "storage_w", "storage_w", "export_limit_w", "reserve_soc_pct"]
)
value = st.sampled_from([0.0, 20.0, 35.0, 50.0, 65.0, 80.0, 100.0])
operation = st.one_of(
    st.tuples(
        st.just("event"),
        st.tuples(
            role_index,
            st.integers(0, 2),  # primacy above the role's
            st.integers(-30, 600),  # start offset, s
            st.integers(60, 3600),  # duration, s
            kind,
            value,
            st.sampled_from([None, None, ("bat1",), ("inv1",), ("inv1", "inv2", "bat1")]),
        ),
    ),
    st.tuples(st.just("default"), role_index, kind, st.none() | value),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(list(DsoModel)),
    operations=st.lists(st.tuples(operation, st.integers(1, 40)), min_size=5, max_size=40),
)
def test_grid_limits_and_the_customers_reserve_hold_in_every_dso_model(
    model: DsoModel, operations: list[tuple[tuple[object, ...], int]]
) -> None:
    run = Run(model)
    index = 0
    for op, steps in operations:
        match op:
            case ("event", params):
                run.send(index, params)  # type: ignore[arg-type]
            case ("default", which, kind_, value_):
                run.set_default(int(str(which)), str(kind_), value_)  # type: ignore[arg-type]
            case ("cancel", which):
                run.cancel(int(str(which)))
        for _ in range(steps):
            run.step(index)
            index += 1
