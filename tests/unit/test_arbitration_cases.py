"""Arbitration cases docs/mqtt-api.md states that no other test pins down.

Each test asserts the exact value that must win and the answers the contract promises:
lower primacy within a role, `storage_w` from two roles (and a curtailment under it), the
reactive-mode tie inside one event, defaults from several roles and a refused default,
`randomize_start_s` (drawn once, stored, the same after a restart), and an event whose
devices are partly offline when it starts. The control core is driven directly; the cases
that live in the control loop (a default's payload, the random draw) drive the loop with
`ControlLoop.handle`, without a broker or devices.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from derms_edge.config import parse_config
from derms_edge.control import Decision, DeviceView, InForce, Role, Source, SourceKind
from derms_edge.control.arbitration import Defaults
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.model import (
    CATEGORY_CURVES,
    Control,
    ControlType,
    DeviceState,
    FixedPf,
    Quality,
    Reason,
    SetpointName,
    Status,
)
from derms_edge.northbound.commands import Command, parse_command
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.control_loop import ControlLoop, Tick
from derms_edge.runtime.gateway import build_control_loop
from tests.unit.test_control_loop import Recorder
from tests.unit.test_engine import (
    ALL,
    BATTERY,
    CHARGER,
    PV,
    ROLES,
    T0,
    accept,
    controller,
    event,
    statuses,
    step,
    views,
)

NATIVE = replace(PV, supports=PV.supports | {SetpointName.VOLT_VAR})  # type: ignore[operator]
"""An inverter that runs volt-var curves itself."""
INV2 = replace(PV, id="inv2")
CAT_A = CATEGORY_CURVES["cat_a"]
CAT_B = CATEGORY_CURVES["cat_b"]


# -- within a role, the lower primacy wins -----------------------------------------------------

STRONG_DSO = {**ROLES, "dso": Role("dso", 0, ALL)}
"""A dso that may send primacy 0 (and weaker)."""


@pytest.mark.parametrize("strong_first", [True, False], ids=["strong-first", "weak-first"])
def test_within_a_role_the_lower_primacy_wins_over_a_newer_creation_time(
    strong_first: bool,
) -> None:
    """Within a role a limit is not combined most-restrictively: the primacy-0 event's 70 %
    holds on inv1 over the newer primacy-1 event's 30 %, whichever arrived first; the weaker
    event is not superseded (it also targets bat1, where it holds alone)."""
    core = controller(roles=STRONG_DSO)
    strong = event("strong", primacy=0, devices=("inv1",), control=Control(max_w_pct=70.0))
    weak = event(
        "weak",
        primacy=1,
        creation_time=T0 + timedelta(minutes=1),
        devices=("inv1", "bat1"),
        control=Control(max_w_pct=30.0),
    )
    for ev in (strong, weak) if strong_first else (weak, strong):
        assert [r.status for r in accept(core, ev)] == [Status.RECEIVED, Status.SCHEDULED]
    decision = step(core, T0)
    assert sorted(statuses(decision.responses)) == [
        ("strong", Status.STARTED, None),
        ("weak", Status.STARTED, None),
    ]
    assert decision.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 70.0}
    assert decision.active["inv1"][ControlType.MAX_W_PCT].source == Source(
        SourceKind.EVENT, "dso", "strong"
    )
    assert decision.setpoints["bat1"] == {SetpointName.MAX_W_PCT: 30.0}
    later = step(core, T0 + timedelta(minutes=10))
    assert statuses(later.responses) == []
    assert later.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 70.0}


def test_within_a_role_a_lower_primacy_covering_all_of_an_event_supersedes_it() -> None:
    core = controller(roles=STRONG_DSO)
    accept(core, event("strong", primacy=0, control=Control(max_w_pct=70.0)))
    weak = event(
        "weak",
        primacy=1,
        creation_time=T0 + timedelta(minutes=1),
        duration_s=600.0,
        control=Control(max_w_pct=30.0),
    )
    accept(core, weak)
    decision = step(core, T0)
    assert statuses(decision.responses) == [
        ("strong", Status.STARTED, None),
        ("weak", Status.SUPERSEDED, "superseded_by:strong"),
    ]
    assert decision.responses[1].detail == (
        "event strong (primacy 0) takes over every device and control of this one"
    )
    assert decision.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 70.0}


# -- storage_w from two roles ----------------------------------------------------------------


def test_storage_w_from_two_roles_goes_to_the_stronger_role_not_the_lower_value() -> None:
    """storage_w is a setpoint: the dso's (primacy 1) discharge holds over the aggregator's
    newer charge request, neither combined nor the lower of the two; the aggregator's longer
    event is not superseded and takes over when the dso's window ends."""
    core = controller(dispatcher_timeout_s=7200.0)
    accept(core, event("dso-w", duration_s=1800.0, control=Control(storage_w=2000.0)))
    agg = event(
        "agg-w",
        role="aggregator",
        creation_time=T0 + timedelta(seconds=30),
        control=Control(storage_w=-1000.0),
    )
    assert [r.status for r in accept(core, agg)] == [Status.RECEIVED, Status.SCHEDULED]
    decision = step(core, T0)
    assert statuses(decision.responses) == [
        ("dso-w", Status.STARTED, None),
        ("agg-w", Status.STARTED, None),
    ]
    assert decision.setpoints["bat1"] == {SetpointName.STORAGE_W: 2000.0}
    assert decision.active["bat1"][ControlType.STORAGE_W].source == Source(
        SourceKind.EVENT, "dso", "dso-w"
    )
    after = step(core, T0 + timedelta(seconds=1800))
    assert statuses(after.responses) == [("dso-w", Status.COMPLETED, None)]
    assert after.setpoints["bat1"] == {SetpointName.STORAGE_W: -1000.0}
    assert after.active["bat1"][ControlType.STORAGE_W].source.mrid == "agg-w"


def test_a_stronger_roles_storage_w_covering_another_roles_event_supersedes_it() -> None:
    """Only a limit from another role never supersedes; a setpoint is taken over whole."""
    core = controller()
    accept(
        core,
        event(
            "agg-w",
            role="aggregator",
            duration_s=600.0,
            creation_time=T0 + timedelta(seconds=30),
            control=Control(storage_w=-1000.0),
        ),
    )
    accept(core, event("dso-w", control=Control(storage_w=2000.0)))
    decision = step(core, T0)
    assert statuses(decision.responses) == [
        ("agg-w", Status.SUPERSEDED, "superseded_by:dso-w"),
        ("dso-w", Status.STARTED, None),
    ]
    assert decision.setpoints["bat1"] == {SetpointName.STORAGE_W: 2000.0}


@pytest.mark.parametrize("role", ["aggregator", "customer"])
@pytest.mark.parametrize(
    ("asked_w", "written_w"),
    [
        (5000.0, 1000.0),  # the whole rating: 20 % of 5000 W
        (2500.0, 1000.0),
        (1000.0, 1000.0),
        (400.0, 400.0),  # under the cap: as asked
        (-3000.0, -3000.0),  # charging is not discharge: not capped
    ],
)
def test_a_dso_curtailment_caps_the_discharge_another_role_asks(
    role: str, asked_w: float, written_w: float
) -> None:
    core = controller()
    accept(core, event("cap", devices=("bat1",), control=Control(max_w_pct=20.0)))
    ask = event("ask", role=role, duration_s=600.0, control=Control(storage_w=asked_w))
    assert [r.status for r in accept(core, ask)] == [Status.RECEIVED, Status.SCHEDULED]
    decision = step(core, T0)
    assert sorted(statuses(decision.responses)) == [
        ("ask", Status.STARTED, None),
        ("cap", Status.STARTED, None),
    ]
    assert decision.setpoints["bat1"][SetpointName.STORAGE_W] == pytest.approx(written_w)
    assert decision.setpoints["bat1"][SetpointName.MAX_W_PCT] == 20.0


def test_active_shows_the_discharge_a_curtailment_lets_through() -> None:
    core = controller()
    accept(core, event("cap", devices=("bat1",), control=Control(max_w_pct=20.0)))
    accept(
        core, event("ask", role="aggregator", duration_s=600.0, control=Control(storage_w=4000.0))
    )
    decision = step(core, T0)
    assert decision.setpoints["bat1"][SetpointName.STORAGE_W] == pytest.approx(1000.0)
    assert decision.active["bat1"][ControlType.STORAGE_W].value == pytest.approx(1000.0)
    assert decision.active["bat1"][ControlType.STORAGE_W].source.mrid == "ask"  # still its


def test_active_shows_what_the_soc_guard_lets_through_and_none_once_it_stops() -> None:
    small = replace(BATTERY, capability=replace(BATTERY.capability, wh_rtg=1000.0))

    def at(soc_pct: float) -> dict[str, DeviceView]:
        return views(replace(small, state=DeviceState(w=5000.0, soc_pct=soc_pct)))

    core = controller()
    accept(core, event("d", duration_s=60, control=Control(storage_w=5000.0)), at(50.0))
    assert step(core, T0, at(50.0)).active["bat1"][ControlType.STORAGE_W].value == 5000.0
    decision = step(core, T0 + timedelta(seconds=1), at(20.2))  # 2 Wh over the reserve
    tapered = decision.setpoints["bat1"][SetpointName.STORAGE_W]
    assert 0 < tapered < 5000.0
    assert decision.active["bat1"][ControlType.STORAGE_W].value == tapered
    decision = step(core, T0 + timedelta(seconds=2), at(20.0))
    assert ("d", Status.ABORTED, Reason.SOC_LIMIT) in statuses(decision.responses)
    assert decision.active["bat1"][ControlType.STORAGE_W].value == 0.0  # held at 0 W
    later = step(core, T0 + timedelta(seconds=3), at(20.0))
    assert ControlType.STORAGE_W not in later.active["bat1"]


# -- the reactive-mode tie inside one event ---------------------------------------------------


@pytest.mark.parametrize(
    ("device", "expected"),
    [(NATIVE, {SetpointName.VOLT_VAR}), (PV, {SetpointName.VAR})],
    ids=["native", "edge"],
)
def test_volt_var_and_fixed_pf_in_one_event_means_volt_var(
    device: DeviceView, expected: set[SetpointName]
) -> None:
    """Accepted (not invalid), started, and volt-var runs: written to a device that runs
    curves, else computed by the gateway as a var setpoint; the PF is not written."""
    core = controller()
    both = event(
        "both", devices=("inv1",), control=Control(volt_var=CAT_B, fixed_pf=FixedPf(0.9, "inject"))
    )
    assert statuses(accept(core, both, views(device))) == [
        ("both", Status.RECEIVED, None),
        ("both", Status.SCHEDULED, None),
    ]
    decision = step(core, T0, views(device))
    assert statuses(decision.responses) == [("both", Status.STARTED, None)]
    assert set(decision.setpoints["inv1"]) == expected
    if SetpointName.VOLT_VAR in expected:
        assert decision.setpoints["inv1"][SetpointName.VOLT_VAR] == CAT_B
    held = decision.active["inv1"]
    assert set(held) == {ControlType.VOLT_VAR}
    assert held[ControlType.VOLT_VAR].value == CAT_B
    assert held[ControlType.VOLT_VAR].source == Source(SourceKind.EVENT, "dso", "both")


def test_volt_var_and_fixed_pf_in_one_default_means_volt_var() -> None:
    core = controller()
    assert core.set_default("dso", Control(volt_var=CAT_A, fixed_pf=FixedPf(0.9, "absorb"))) is None
    decision = step(core, T0, views(NATIVE))
    assert decision.setpoints["inv1"] == {SetpointName.VOLT_VAR: CAT_A}
    assert set(decision.active["inv1"]) == {ControlType.VOLT_VAR}


# -- defaults from several roles ---------------------------------------------------------------


def test_defaults_from_several_roles_limits_most_restrictive_modes_by_primacy() -> None:
    """A limit in a role's default is that role's bound: the lowest of the roles' holds, and
    only the role's own events replace it; a setpoint or mode goes to the strongest role's
    default, and a role's reactive mode beats the configuration's."""
    core = controller(
        config_default=Control(max_w_pct=95.0, evse_max_a=20.0, volt_var=CAT_A),
    )
    assert core.set_default("customer", Control(max_w_pct=60.0)) is None
    assert core.set_default("aggregator", Control(evse_max_a=10.0)) is None
    pf = FixedPf(0.9, "inject")
    assert core.set_default("dso", Control(max_w_pct=80.0, fixed_pf=pf)) is None
    devices = views(NATIVE, CHARGER)

    def held(decision: Decision, device: str) -> dict[ControlType, tuple[object, str | None]]:
        return {
            t: (v.value, v.source.role)
            for t, v in decision.active[device].items()
            if v.source.kind == SourceKind.DEFAULT
        }

    first = step(core, T0, devices)
    assert first.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 60.0, SetpointName.FIXED_PF: pf}
    assert held(first, "inv1") == {
        ControlType.MAX_W_PCT: (60.0, "customer"),  # the lowest limit, not the strongest role
        ControlType.FIXED_PF: (pf, "dso"),  # a mode: the strongest role's
    }
    assert held(first, "ev1") == {
        ControlType.MAX_W_PCT: (60.0, "customer"),
        ControlType.EVSE_MAX_A: (10.0, "aggregator"),
    }
    assert first.setpoints["ev1"] == {SetpointName.EVSE_MAX_A: 10.0}  # under 60 % of 32 A

    core.set_default("dso", None)  # cleared: its mode goes, the configuration's volt-var holds
    second = step(core, T0 + timedelta(seconds=1), devices)
    assert second.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 60.0, SetpointName.VOLT_VAR: CAT_A}
    assert held(second, "inv1") == {
        ControlType.MAX_W_PCT: (60.0, "customer"),
        ControlType.VOLT_VAR: (CAT_A, None),
    }

    core.set_default("dso", Control(max_w_pct=80.0))
    accept(
        core, event("loose", role="customer", devices=("inv1",), control=Control(max_w_pct=90.0))
    )
    third = step(core, T0 + timedelta(seconds=2), devices)
    assert statuses(third.responses) == [("loose", Status.STARTED, None)]
    # the customer's event replaces its own default (60 %), not the dso's 80 %
    assert third.setpoints["inv1"][SetpointName.MAX_W_PCT] == 80.0
    assert third.setpoints["ev1"] == {SetpointName.EVSE_MAX_A: 10.0}


def default_command(role: str, payload: bytes) -> Command:
    command = parse_command(
        Topics("derms", "site"), f"derms/v1/site/default_control/{role}", payload, retained=True
    )
    assert command is not None
    return command


def loop_at(
    state_dir: Path, recorder: Recorder, clock: Callable[[], datetime], **control: object
) -> ControlLoop:
    """A control loop on one inverter that never answers, on a clock the test sets."""
    config = parse_config(
        {
            "gateway": {"id": "site", "state_dir": str(state_dir)},
            "devices": [
                {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}
            ],
            "control": {
                "roles": {
                    "dso": {"primacy": 1},
                    "aggregator": {"primacy": 2, "allow": ["storage_w", "evse_max_a"]},
                },
                **control,
            },
        }
    )
    coordinators = {d.id: build_coordinator(d, LinkPool()) for d in config.devices}
    return build_control_loop(
        config,
        coordinators,
        Topics("derms", "site"),
        respond=recorder.respond,
        publish=recorder.publish,
        clock=clock,
    )


def test_a_default_setpoint_is_the_strongest_roles_then_the_configurations() -> None:
    """Two roles' defaults set the same setpoint: the role of lower primacy holds, whichever
    was set first; the configuration's default holds only a type no role sets."""
    defaults = Defaults(
        ROLES,
        {"customer": Control(storage_w=2000.0), "aggregator": Control(storage_w=-1000.0)},
        Control(storage_w=500.0, max_w_pct=90.0),
    )
    assert defaults.of(ControlType.STORAGE_W) == InForce(
        -1000.0, Source(SourceKind.DEFAULT, "aggregator")
    )
    assert defaults.of(ControlType.MAX_W_PCT) == InForce(90.0, Source(SourceKind.DEFAULT))
    assert defaults.of(ControlType.EVSE_MAX_A) is None
    assert list(defaults.in_force()) == [ControlType.MAX_W_PCT, ControlType.STORAGE_W]


def test_a_refused_default_is_answered_naming_the_field_and_the_previous_one_holds(
    tmp_path: Path,
) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_at(tmp_path, recorder, lambda: T0)
        loop.handle([default_command("dso", b'{"max_w_pct": 80}')])
        loop.handle([default_command("aggregator", b'{"evse_max_a": 16}')])
        assert recorder.responses == []
        loop.handle(
            [
                default_command("dso", b'{"max_w_pct": 150}'),
                default_command("dso", b'{"max_w_pct": 50, "bogus": 1}'),
                default_command("aggregator", b'{"max_w_pct": 50}'),
            ]
        )
        answers = [
            (r["mrid"], r["status"], r["reason"], str(r["detail"])) for r in recorder.responses
        ]
        assert [a[:3] for a in answers] == [
            (None, "rejected", "invalid"),
            (None, "rejected", "invalid"),
            (None, "rejected", "unauthorized"),
        ]
        assert answers[0][3] == (
            "default_control/dso: max_w_pct: Input should be less than or equal to 100"
        )
        assert answers[1][3] == "default_control/dso: bogus: unknown field"
        assert answers[2][3] == (
            "default_control/aggregator: role aggregator may not send max_w_pct "
            "(allowed: evse_max_a, storage_w)"
        )
        # the previous defaults hold, in memory and in the store
        kept = {"dso": Control(max_w_pct=80.0), "aggregator": Control(evse_max_a=16.0)}
        assert loop.controller.defaults == kept
        assert loop.store.load_defaults() == kept
        loop.handle([Tick()])
        active = json.loads(recorder.actives[-1])["devices"]["inv1"]
        assert active["max_w_pct"] == {
            "value": 80.0,
            "source": "default",
            "mrid": None,
            "role": "dso",
        }
        loop.close()

    asyncio.run(scenario())


# -- randomize_start_s --------------------------------------------------------------------------


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def spread_event(mrid: str, spread_s: float, start: datetime = T0) -> Command:
    body = {
        "mrid": mrid,
        "start": start.isoformat(),
        "duration_s": 600,
        "randomize_start_s": spread_s,
        "control": {"max_w_pct": 40},
    }
    command = parse_command(
        Topics("derms", "site"),
        "derms/v1/site/controls/dso",
        json.dumps(body).encode(),
        retained=False,
    )
    assert command is not None
    return command


SEED = 20261121


@pytest.fixture
def offset_s() -> float:
    """The delay the seeded draw gives (and the draw a test's loop makes with SEED)."""
    return random.Random(SEED).uniform(0, 300)


def test_randomize_start_s_is_drawn_once_on_receipt_kept_and_survives_a_restart(
    tmp_path: Path, offset_s: float
) -> None:
    """The start is delayed by one draw in [0, randomize_start_s], made when the event
    arrives: a repeat, the steps and a restart (with another random generator) keep it."""
    assert 1.0 < offset_s < 299.0  # the seed gives a delay the steps below can straddle
    recorder = Recorder()
    clock = Clock(T0)

    def said() -> list[tuple[str, str]]:
        return [(str(r["mrid"]), str(r["status"])) for r in recorder.responses]

    async def scenario() -> None:
        loop = loop_at(tmp_path, recorder, clock)
        loop._rng = random.Random(SEED)
        loop.handle([spread_event("spread", 300)])
        assert said() == [("spread", "received"), ("spread", "scheduled")]
        start = loop.controller.records["spread"].event.start
        assert start == T0 + timedelta(seconds=offset_s)
        assert recorder.responses[1]["detail"] == f"from {start.isoformat()} for 600 s".replace(
            "+00:00", "Z"
        )
        loop.handle([spread_event("spread", 300)])  # a repeat: no second draw applies
        assert said()[-1] == ("spread", "scheduled")
        assert loop.controller.records["spread"].event.start == start
        for seconds in (0.0, 1.0, offset_s / 2, offset_s - 1.0):
            clock.now = T0 + timedelta(seconds=seconds)
            loop.handle([Tick()])
            assert loop.controller.records["spread"].event.start == start
        assert ("spread", "started") not in said()
        loop.close()

        restarted = loop_at(tmp_path, recorder, clock)
        restarted._rng = random.Random(SEED + 1)
        restarted._restore()
        assert restarted.controller.records["spread"].event.start == start
        restarted.handle([Tick()])
        assert ("spread", "started") not in said()
        clock.now = start
        restarted.handle([Tick()])
        assert said()[-1] == ("spread", "started")
        assert said().count(("spread", "started")) == 1
        restarted.close()

    asyncio.run(scenario())


def test_randomize_start_s_draws_within_its_bounds_for_each_event(tmp_path: Path) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_at(tmp_path, recorder, lambda: T0)
        loop._rng = random.Random(SEED)
        loop.handle([spread_event(f"s{i}", 60) for i in range(40)])
        loop.handle([spread_event("none", 0)])
        delays = [
            (loop.controller.records[f"s{i}"].event.start - T0).total_seconds() for i in range(40)
        ]
        assert all(0.0 <= d <= 60.0 for d in delays)
        assert len(set(delays)) == 40  # one draw per event
        assert loop.controller.records["none"].event.start == T0
        loop.close()

    asyncio.run(scenario())


# -- an event whose devices are partly offline at its start -------------------------------------


def qualities(*pairs: tuple[DeviceView, Quality]) -> dict[str, DeviceView]:
    return views(*(replace(d, quality=q) for d, q in pairs))


@pytest.mark.parametrize("away", [Quality.OFFLINE, Quality.UNKNOWN])
@pytest.mark.parametrize("named", [("inv1", "inv2"), None], ids=["named", "every-device"])
def test_a_limit_for_devices_partly_offline_starts_and_follows_the_missing_one(
    away: Quality, named: tuple[str, ...] | None
) -> None:
    """Started at once, the detail naming only the device that cannot be reached; the one
    online gets its setpoint in that step; the one away has its setpoint decided in every
    step (the coordinator writes it when it answers and again after each reconnection, see
    test_coordinator), and coming and going changes nothing of the event."""
    core = controller()
    partly = qualities((PV, Quality.OK), (INV2, away))
    assert [r.status for r in accept(core, event("e", devices=named), partly)] == [
        Status.RECEIVED,
        Status.SCHEDULED,
    ]
    decision = step(core, T0, partly)
    assert statuses(decision.responses) == [("e", Status.STARTED, None)]
    assert decision.responses[0].detail == f"pending, written when they answer: inv2 ({away})"
    for device in ("inv1", "inv2"):
        assert decision.setpoints[device] == {SetpointName.MAX_W_PCT: 50.0}
        assert decision.active[device][ControlType.MAX_W_PCT].source.mrid == "e"
    back = qualities((PV, Quality.OK), (INV2, Quality.OK))
    for second, devices in enumerate((back, partly, back, back), start=1):
        later = step(core, T0 + timedelta(seconds=second), devices)
        assert statuses(later.responses) == []
        assert later.setpoints["inv2"] == {SetpointName.MAX_W_PCT: 50.0}
        assert later.setpoints["inv1"] == {SetpointName.MAX_W_PCT: 50.0}
    assert core.records["e"].status is Status.STARTED


def test_storage_for_batteries_partly_offline_waits_whole_then_starts_on_both() -> None:
    """Storage is the exception: one battery without a fresh state of charge holds the
    whole event, unstarted and unwritten on both, until its SoC is fresh."""
    core = controller()
    bat2 = replace(BATTERY, id="bat2")
    partly = views(bat2, replace(BATTERY, quality=Quality.OFFLINE))
    ev = event("s", devices=("bat1", "bat2"), duration_s=600.0, control=Control(storage_w=1000.0))
    assert statuses(accept(core, ev, partly)) == [
        ("s", Status.RECEIVED, None),
        ("s", Status.SCHEDULED, None),
    ]
    held = step(core, T0, partly)
    assert statuses(held.responses) == []
    assert held.setpoints["bat1"] == {} and held.setpoints["bat2"] == {}
    fresh = step(core, T0 + timedelta(seconds=1), views(bat2))
    assert statuses(fresh.responses) == [("s", Status.STARTED, None)]
    assert fresh.responses[0].detail is None
    assert fresh.setpoints["bat1"] == {SetpointName.STORAGE_W: 1000.0}
    assert fresh.setpoints["bat2"] == {SetpointName.STORAGE_W: 1000.0}


def test_a_control_has_a_field_per_control_type_in_order() -> None:
    """Control.items() walks ControlType for the fields: the two must not drift apart."""
    assert [f.name for f in fields(Control)] == list(ControlType)
    full = Control(**{t.value: 1.0 for t in ControlType})
    assert list(full.items()) == list(ControlType)
