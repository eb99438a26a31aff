"""Revert timers (RvrtTms), curve reversion and adoption, the controller heartbeat and curve
indexes, over Modbus TCP with a simulated clock moved by hand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from hil.physics import BatteryPhysics, PvPhysics
from hil.rig import Rig, RigThread
from tests.hil.harness import HOST, HandClock, rig, run
from tests.hil.sunspec_client import ModbusError, SunSpecClient

TMS = 10  # RvrtTms written by every timer test, s


class InForce:
    """Equal to any control value but None (disabled)."""

    def __eq__(self, other: object) -> bool:
        return other is not None

    def __hash__(self) -> int:
        return 0


@dataclass(frozen=True)
class Timer:
    """One revert timer: the writes that put its control in force and what it falls back to."""

    kind: str
    model: int
    tms: str
    control: dict[str, float]  # written in order; writing the last point again refreshes it
    reverted: dict[str, float]  # the points as read back once the timer ran out
    physics: tuple[str, object, object] | None  # a controls attribute: in force, reverted
    rem: str | None = None  # the remaining-time point


TIMERS = [
    Timer(
        "pv_1547",
        704,
        "WMaxLimPctRvrtTms",
        {"WMaxLimPctRvrt": 70, "WMaxLimPctEnaRvrt": 1, "WMaxLimPct": 40, "WMaxLimPctEna": 1},
        {"WMaxLimPct": 70, "WMaxLimPctEna": 1},
        ("w_lim_pct", 40, 70),
        "WMaxLimPctRvrtRem",
    ),
    Timer(
        "pv_1547",
        704,
        "PFWInjRvrtTms",
        {"PFWInjRvrt.PF": 0.95, "PFWInjEnaRvrt": 1, "PFWInj.PF": 0.9, "PFWInjEna": 1},
        {"PFWInj.PF": 0.95, "PFWInjEna": 1},
        ("pf", 0.9, 0.95),
        "PFWInjRvrtRem",
    ),
    Timer(
        "pv_1547",
        704,
        "PFWAbsRvrtTms",
        {"PFWAbs.PF": 0.95, "PFWAbsEna": 1},
        {"PFWAbsEna": 0},
        None,  # PV never absorbs active power
        "PFWAbsRvrtRem",
    ),
    Timer(
        "pv_1547",
        704,
        "WSetRvrtTms",
        {"WSetMod": 1, "WSet": 3000, "WSetEna": 1},
        {"WSetEna": 0},  # WSetEnaRvrt stays 0
        ("w_set", 3000, None),
        "WSetRvrtRem",
    ),
    Timer(
        "pv_1547",
        704,
        "VarSetRvrtTms",
        {"VarSetMod": 4, "VarSetRvrt": -500, "VarSetEnaRvrt": 1, "VarSet": 1000, "VarSetEna": 1},
        {"VarSet": -500, "VarSetEna": 1},
        ("var_set", 1000, -500),
        "VarSetRvrtRem",
    ),
    Timer(
        "pv_1547",
        705,
        "RvrtTms",
        {"RvrtCrv": 0, "Ena": 1},
        {"Ena": 0},
        ("volt_var", InForce(), None),
        "RvrtRem",
    ),
    Timer(
        "pv_legacy",
        123,
        "WMaxLimPct_RvrtTms",
        {"WMaxLimPct": 40, "WMaxLim_Ena": 1},
        {"WMaxLim_Ena": 0},
        ("w_lim_pct", 40, None),
    ),
    Timer(
        "pv_legacy",
        123,
        "OutPFSet_RvrtTms",
        {"OutPFSet": 0.9, "OutPFSet_Ena": 1},
        {"OutPFSet_Ena": 0},
        ("pf", 0.9, None),
    ),
    Timer(
        "pv_legacy",
        123,
        "VArPct_RvrtTms",
        {"VArPct_Mod": 2, "VArMaxPct": 50, "VArPct_Ena": 1},
        {"VArPct_Ena": 0},
        ("var_set", 0.5 * 0.44 * 5000, None),  # 50 % of VArMaxQ1
    ),
    Timer("pv_legacy", 126, "RvrtTms", {"ModEna": 1}, {"ModEna": 0}, ("volt_var", InForce(), None)),
    Timer(
        "battery",
        124,
        "InOutWRte_RvrtTms",
        {"InWRte": 50, "StorCtl_Mod": 1},
        {"StorCtl_Mod": 0, "InWRte": 0, "OutWRte": 0},
        ("w_set", -2500, 0.0),  # charging at 50 % of WChaMax, then idle
    ),
]


def controls(rt: RigThread, device_id: str, attr: str) -> Any:
    """An attribute of the controls a device's physics obeys now."""

    def get(r: Rig) -> Any:
        physics = r.physics_device(device_id).physics
        assert isinstance(physics, PvPhysics | BatteryPhysics)
        return getattr(physics.controls, attr)

    return rt.call(get)


@pytest.mark.parametrize("timer", TIMERS, ids=lambda t: f"{t.model}-{t.tms}")
def test_revert_timer(timer: Timer) -> None:
    clock = HandClock()
    names = list(timer.reverted)
    in_force = {name: timer.control.get(name, value) for name, value in timer.reverted.items()}
    refresh = dict([list(timer.control.items())[-1]])
    with RigThread(rig({"id": "d", "type": timer.kind}), clock=clock) as rt:

        def check_device(points: dict[str, float], reverts: int, physics_index: int) -> None:
            assert rt.state("d").reverts == reverts
            if timer.physics is not None:
                attr = timer.physics[0]
                assert pytest.approx(timer.physics[physics_index]) == controls(rt, "d", attr)
            assert points == pytest.approx(in_force if physics_index == 1 else timer.reverted)

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("d")) as c:
                await c.scan()
                await c.write_points(timer.model, {**timer.control, timer.tms: TMS})
                clock.t = 6.0
                await c.write_points(timer.model, refresh)  # restarts the timer: ends at 16 s
                clock.t = 15.5
                check_device(await c.values(timer.model, names), 0, 1)
                if timer.rem is not None:
                    assert await c.value(timer.model, timer.rem) == 1
                clock.t = 16.5
                check_device(await c.values(timer.model, names), 1, 2)
                if timer.rem is not None:
                    assert await c.value(timer.model, timer.rem) == 0
                clock.t = 20.0
                await c.write_points(timer.model, {**timer.control, timer.tms: 0})
                clock.t = 1e6  # RvrtTms = 0: no timer
                check_device(await c.values(timer.model, names), 1, 1)

        run(check)


CAT_A = [(90.0, 25.0), (100.0, 0.0), (100.0, 0.0), (110.0, -25.0)]  # V2 = V3 = VRef
CAT_B = [(92.0, 44.0), (98.0, 0.0), (102.0, 0.0), (108.0, -44.0)]


async def store_curve(c: SunSpecClient, n: int, points: list[tuple[float, float]]) -> None:
    """Write the points of 705 curve n."""
    values = {}
    for k, (v, var) in enumerate(points, start=1):
        values.update({f"Crv[{n}].Pt[{k}].V": v, f"Crv[{n}].Pt[{k}].Var": var})
    await c.write_points(705, values)


async def active_curve(c: SunSpecClient) -> list[tuple[float, float]]:
    """The points of 705 curve 1, the active curve."""
    crv = (await c.model(705)).groups["Crv"][0]
    return [(pt.V.cvalue, pt.Var.cvalue) for pt in crv.groups["Pt"]]


def test_1547_adopts_a_cat_a_volt_var_curve() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_1547"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                await store_curve(c, 2, CAT_A)
                await c.write_points(705, {"AdptCrvReq": 2})
                assert await c.value(705, "AdptCrvRslt") == 1  # COMPLETED
                assert await active_curve(c) == CAT_A
                await store_curve(c, 3, [(90.0, 25.0), (100.0, 0.0), (99.0, 0.0), (110.0, -25.0)])
                await c.write_points(705, {"AdptCrvReq": 3})
                assert await c.value(705, "AdptCrvRslt") == 2  # FAILED: V decreases
                assert await active_curve(c) == CAT_A

        run(check)


def test_1547_volt_var_reverts_to_the_reversion_curve() -> None:
    clock = HandClock()
    with RigThread(rig({"id": "pv", "type": "pv_1547", "vv_curves": 3}), clock=clock) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                with pytest.raises(ModbusError) as err:
                    await c.write_points(705, {"RvrtCrv": 4})  # NCrv is 3
                assert err.value.code == 3
                await store_curve(c, 2, CAT_A)
                await c.write_points(705, {"RvrtCrv": 2, "Ena": 1, "RvrtTms": 30})
                clock.t = 12.2
                assert await c.value(705, "RvrtRem") == 18
                assert await active_curve(c) == CAT_B
                clock.t = 30.5
                assert await c.values(705, ["Ena", "RvrtRem"]) == {"Ena": 1, "RvrtRem": 0}
                assert await active_curve(c) == CAT_A
                volt_var = controls(rt, "pv", "volt_var")
                assert [v for v, _ in volt_var] == pytest.approx([207.0, 230.0, 230.0, 253.0])
                assert rt.state("pv").reverts == 1

        run(check)


def test_1547_controller_heartbeat_age() -> None:
    clock = HandClock()
    with RigThread(rig({"id": "pv", "type": "pv_1547"}), clock=clock) as rt:
        assert rt.state("pv").controller_hb_age_s is None

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                clock.t = 5.0
                await c.write_points(715, {"ControllerHb": 1})
                clock.t = 12.5
                assert rt.state("pv").controller_hb_age_s == pytest.approx(7.5)
                await c.write_points(715, {"ControllerHb": 2})
                assert rt.state("pv").controller_hb_age_s == 0.0
                rt.call(lambda r: r.device("pv").restart())
                assert rt.state("pv").controller_hb_age_s is None

        run(check)


def test_legacy_126_refuses_an_active_curve_it_does_not_have() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy", "vv_curves": 2})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                await c.write_points(126, {"ModEna": 1})
                for bad in (3, 1000):
                    with pytest.raises(ModbusError) as err:
                        await c.write_points(126, {"ActCrv": bad})
                    assert err.value.code == 3  # ILLEGAL DATA VALUE
                assert await c.value(126, "ActCrv") == 1
                await c.write_points(126, {"ActCrv": 2})
                assert controls(rt, "pv", "volt_var") is not None
                await c.write_points(126, {"ActCrv": 0})  # no active curve
                assert controls(rt, "pv", "volt_var") is None

        run(check)
