"""The site meter (models 1, 203): power balance, sign convention and energy counters."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hil.devices import DeviceState, Meter
from hil.devices.meter import site_power
from hil.rig import Rig, RigThread
from hil.spec import load_rig_spec
from tests.hil.harness import HOST, HandClock, rig, run
from tests.hil.sunspec_client import SunSpecClient

RIGS = Path(__file__).parents[2] / "hil" / "rigs"


def pv(w: float) -> dict[str, Any]:
    """A legacy PV inverter with a constant w of sun and no lag."""
    return {"id": "pv", "type": "pv_legacy", "tau_s": 0, "profile": {"kind": "constant", "w": w}}


def meter(load_w: float, *site: str) -> dict[str, Any]:
    """A meter with a constant house load."""
    load = {"kind": "constant", "w": load_w}
    return {"id": "m", "type": "meter", "site": list(site), "load": load}


def set_load(rt: RigThread, w: float | None) -> None:
    """Force meter m's house load, or return it to its profile."""

    def force(r: Rig) -> None:
        device = r.device("m")
        assert isinstance(device, Meter)
        device.set_load(w)

    rt.call(force)


def test_meter_power_is_the_load_minus_the_site() -> None:
    clock = HandClock()
    battery = {"id": "bat", "type": "battery", "tau_s": 0}
    with RigThread(rig(pv(4000), battery, meter(3000, "pv", "bat")), clock=clock) as rt:

        async def check() -> None:
            async with (
                SunSpecClient(HOST, rt.port("m")) as m,
                SunSpecClient(HOST, rt.port("pv")) as inv,
                SunSpecClient(HOST, rt.port("bat")) as bat,
            ):
                assert await m.scan() == [1, 203]
                await inv.scan()
                await bat.scan()
                await inv.write_points(123, {"OutPFSet": 0.9, "OutPFSet_Ena": 1})  # injects var
                await bat.write_points(124, {"InWRte": 50, "StorCtl_Mod": 1})  # charges 2500 W
                clock.t = 5.0
                reading = await m.model(203)
                pv_state, bat_state, m_state = (rt.state(i) for i in ("pv", "bat", "m"))
                imported = 3000 - pv_state.w - bat_state.w
                assert imported == pytest.approx(1500)
                assert reading.W.cvalue == pytest.approx(imported, abs=0.5)  # W_SF 0
                assert reading.VAR.cvalue == pytest.approx(-pv_state.var, abs=0.5)
                assert pv_state.var > 1000
                pf = 100 * imported / math.hypot(imported, pv_state.var)
                assert reading.PF.cvalue == pytest.approx(pf, abs=0.1)
                assert (reading.PhV.cvalue, reading.Hz.cvalue) == (230.0, 50.0)
                assert reading.WphA.cvalue == pytest.approx(imported / 3, abs=0.5)
                assert (m_state.w, m_state.load_w, m_state.state) == (-imported, 3000, "IMPORT")
                set_load(rt, 500)
                clock.t = 6.0
                assert await m.value(203, "W") == pytest.approx(-1000, abs=0.5)
                assert await m.value(203, "PF") < 0  # exporting
                assert rt.state("m").state == "EXPORT"
                set_load(rt, None)
                clock.t = 7.0
                assert await m.value(203, "W") == pytest.approx(1500, abs=0.5)

        run(check)


def test_meter_energy_counters_integrate() -> None:
    clock = HandClock()
    with RigThread(rig(pv(1000), meter(3000, "pv")), clock=clock) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("m")) as m:
                await m.scan()

                async def counters() -> tuple[DeviceState, dict[str, Any]]:
                    return rt.state("m"), await m.values(203, ["TotWhImp", "TotWhExp"])

                clock.t = 1.0  # the PV reaches 1000 W
                start, _ = await counters()
                clock.t = 361.0  # 2000 W imported for 360 s
                state, read = await counters()
                assert state.wh_absorbed - start.wh_absorbed == pytest.approx(200.0)
                assert state.wh_injected == start.wh_injected == 0.0
                assert read["TotWhImp"] == round(state.wh_absorbed)
                set_load(rt, 0)
                clock.t = 361.0 + 720.0  # 1000 W exported for 720 s
                end, read = await counters()
                assert end.wh_injected == pytest.approx(200.0)
                assert end.wh_absorbed == state.wh_absorbed
                assert read == {"TotWhImp": round(end.wh_absorbed), "TotWhExp": 200}

        run(check)


def test_demo_meter_balances_the_whole_site() -> None:
    spec = load_rig_spec(RIGS / "demo.yaml")
    devices = [d.model_copy(update={"port": 0}) for d in spec.devices]
    clock = HandClock()
    with RigThread(spec.model_copy(update={"devices": devices}), clock=clock) as rt:

        def balance(r: Rig) -> tuple[float, list[float], float]:
            site_ids = ("inv1", "bat1", "inv2", "ev2", "bat2", "ev1")  # Modbus and OPC UA
            with r.clock.held():
                site = [site_power(r.device(i))[0] for i in site_ids]
                state = r.physics_device("meter1").snapshot()
            assert state.load_w is not None
            return state.w, site, state.load_w

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("meter1")) as m:
                await m.scan()
                clock.t = 100.0
                w, site_w, load_w = rt.call(balance)
                assert site_w[-1] < 0  # the EV charges
                assert w == pytest.approx(sum(site_w) - load_w)
                assert await m.value(203, "W") == pytest.approx(-w, abs=5)  # W_SF 1

        run(check)


@pytest.mark.parametrize(
    ("devices", "error"),
    [
        ([meter(0, "nobody")], "not a DER of the rig"),
        ([meter(0, "m")], "not a DER of the rig"),
        ([pv(1), meter(0, "pv", "pv")], "twice"),
        ([{**meter(0), "grid": {"split_phase": True}}], "wye"),
    ],
)
def test_meter_spec_is_checked(devices: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        rig(*devices)
