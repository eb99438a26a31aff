"""Setpoints written by the SunSpec driver over Modbus TCP to the rig's simulated devices.

Each test starts a `hil.rig.Rig` on a free port in its own event loop, connects the real
driver through a real `ModbusLink`, and checks the simulated physics and registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from derms_edge.config import parse_config
from derms_edge.control.volt_var import volt_var
from derms_edge.devices.modbus import ModbusLink
from derms_edge.devices.sunspec import driver as driver_module
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.errors import ControlRefused, DeviceChanged, DeviceError
from derms_edge.model import CATEGORY_CURVES, FixedPf, SetpointName, VoltVarCurve
from derms_edge.runtime.gateway import Gateway
from hil.devices import PhysicsDevice
from hil.rig import Rig
from hil.spec import RigSpec

pytestmark = pytest.mark.integration

S = SetpointName
HOST = "127.0.0.1"
V_NOM = 230.0
# tau_s 0: the physics reaches each new target at its next step
PV_LEGACY = {"id": "pv", "type": "pv_legacy", "w_rtg": 5000, "va_rtg": 6000, "tau_s": 0}
PV_1547 = {"id": "pv", "type": "pv_1547", "w_rtg": 10000, "va_rtg": 12000, "tau_s": 0}
BATTERY = {"id": "bat", "type": "battery", "w_cha_max": 4000, "w_discha_max": 5000, "tau_s": 0}
PVS = pytest.mark.parametrize("device", [PV_LEGACY, PV_1547], ids=["pv_legacy", "pv_1547"])


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@contextlib.asynccontextmanager
async def connected(
    device: dict[str, Any], **options: Any
) -> AsyncIterator[tuple[PhysicsDevice, SunSpecDriver]]:
    """The simulated device served on a free port, and a driver connected to it."""
    kind = "battery" if device["type"] == "battery" else "inverter"
    device = dict(device)
    speed = device.pop("speed", 1.0)
    async with Rig(RigSpec.model_validate({"speed": speed, "devices": [device]})) as rig:
        link = ModbusLink.tcp(HOST, rig.port(device["id"]), timeout_s=1.0)
        driver = SunSpecDriver(link.unit(1), kind, device["id"], **options)
        await driver.connect()
        try:
            yield rig.physics_device(device["id"]), driver
        finally:
            await driver.close()


async def settled(device: PhysicsDevice) -> Any:
    """The device's physics once it has stepped past the last write."""
    await asyncio.sleep(0.02)
    return device.snapshot()


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (PV_LEGACY, {S.MAX_W_PCT, S.VAR, S.VOLT_VAR, S.FIXED_PF}),
        (PV_1547, {S.MAX_W_PCT, S.VAR, S.VOLT_VAR, S.FIXED_PF}),
        (BATTERY, {S.STORAGE_W}),
    ],
    ids=["pv_legacy", "pv_1547", "battery"],
)
@in_loop
async def test_supports_what_the_models_carry(
    device: dict[str, Any], expected: set[SetpointName]
) -> None:
    async with connected(device) as (_, driver):
        assert driver.supports() == expected


@in_loop
async def test_supports_nothing_before_connect() -> None:
    driver = SunSpecDriver(ModbusLink.tcp(HOST, 1, 1.0).unit(1), "inverter", "pv")
    assert driver.supports() == frozenset()


@in_loop
async def test_unsupported_setpoint_is_refused() -> None:
    async with connected(BATTERY) as (_, driver):
        with pytest.raises(ControlRefused, match="not supported by this device"):
            await driver.write(S.MAX_W_PCT, 50.0)


@PVS
@in_loop
async def test_max_w_pct_limits_the_pv_and_release_restores_it(device: dict[str, Any]) -> None:
    async with connected(device) as (pv, driver):
        assert (await settled(pv)).w == pytest.approx(device["w_rtg"])
        await driver.write(S.MAX_W_PCT, 40.0)
        state = await settled(pv)
        assert (state.w, state.w_lim_pct, state.state) == (0.4 * device["w_rtg"], 40.0, "THROTTLED")
        await driver.write(S.MAX_W_PCT, None)
        state = await settled(pv)
        assert (state.w, state.w_lim_pct) == (device["w_rtg"], None)


@PVS
@in_loop
async def test_var_setpoint_and_release(device: dict[str, Any]) -> None:
    async with connected(device) as (pv, driver):
        await driver.write(S.VAR, -1000.0)
        # 123 VArMaxPct has 0.1 % steps of VArMax (2640 var)
        assert (await settled(pv)).var == pytest.approx(-1000.0, abs=2.7)
        await driver.write(S.VAR, None)
        state = await settled(pv)
        assert (state.var, state.var_set) == (0.0, None)


@PVS
@pytest.mark.parametrize(("excitation", "sign"), [("inject", 1.0), ("absorb", -1.0)])
@in_loop
async def test_fixed_pf_sets_the_power_factor(
    device: dict[str, Any], excitation: str, sign: float
) -> None:
    async with connected(device) as (pv, driver):
        await driver.write(S.FIXED_PF, FixedPf(0.95, excitation))  # type: ignore[arg-type]
        state = await settled(pv)
        assert state.pf == sign * 0.95
        expected_var = sign * state.w * math.tan(math.acos(0.95))
        assert state.var == pytest.approx(expected_var)
        await driver.write(S.FIXED_PF, None)
        state = await settled(pv)
        assert (state.pf, state.var) == (None, 0.0)


@in_loop
async def test_volt_var_native_1547_adopts_our_curve() -> None:
    curve = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)), 1.01, 10.0)
    async with connected(PV_1547) as (pv, driver):
        await driver.write(S.VOLT_VAR, curve)
        get = functools.partial(pv.image.get, 705)
        assert (get("AdptCrvRslt"), get("Ena")) == (1, 1)  # COMPLETED, enabled
        active = {name: get(f"Crv[1].{name}") for name in ("ActPt", "DeptRef", "VRef", "RspTms")}
        assert active == {"ActPt": 4, "DeptRef": 3, "VRef": 101.0, "RspTms": 10}
        points = [(get(f"Crv[1].Pt[{k}].V"), get(f"Crv[1].Pt[{k}].Var")) for k in range(1, 5)]
        assert points == [pytest.approx((v * 100, q)) for v, q in curve.points]

        pv.set_voltage(V_NOM * 1.09)
        expected = volt_var(1.09, curve) / 100 * PV_1547["va_rtg"]  # -44 % of VA
        assert (await settled(pv)).var == pytest.approx(expected)
        await driver.write(S.VOLT_VAR, None)
        assert (await settled(pv)).var == 0.0


@in_loop
async def test_volt_var_legacy_126_runs_our_curve() -> None:
    curve = CATEGORY_CURVES["cat_b"]
    async with connected(PV_LEGACY) as (pv, driver):
        await driver.write(S.VOLT_VAR, curve)
        get = functools.partial(pv.image.get, 126)
        assert (get("ActCrv"), get("ModEna"), get("curve[2].DeptRef")) == (2, 1, 2)
        va, var_max = PV_LEGACY["va_rtg"], 0.44 * PV_LEGACY["va_rtg"]
        assert pv.physics.controls.volt_var == tuple(
            pytest.approx((v * V_NOM, round(q * va / var_max) / 100 * var_max))
            for v, q in curve.points
        )
        pv.set_voltage(V_NOM * 1.08)
        assert (await settled(pv)).var == pytest.approx(-0.44 * va)
        await driver.write(S.VOLT_VAR, None)
        assert (await settled(pv)).var == 0.0


@in_loop
async def test_curve_the_device_fails_to_adopt_is_refused_and_not_enabled() -> None:
    falling = VoltVarCurve(((1.08, -44.0), (0.92, 44.0)))  # voltages must rise
    async with connected(PV_1547) as (pv, driver):
        with pytest.raises(ControlRefused) as err:
            await driver.write(S.VOLT_VAR, falling)
        assert err.value.point == "705.AdptCrvRslt"
        assert (pv.image.get(705, "AdptCrvRslt"), pv.image.get(705, "Ena")) == (2, 0)
        assert pv.physics.controls.volt_var is None


@in_loop
async def test_curve_never_adopted_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "ADOPT_TIMEOUT_S", 0.3)
    async with connected(PV_1547) as (pv, driver):
        # a device that takes the request but stays IN_PROGRESS
        monkeypatch.setattr(pv, "_adopt", lambda *_: pv.image.set(705, "AdptCrvRslt", 0))
        with pytest.raises(ControlRefused) as err:
            await driver.write(S.VOLT_VAR, CATEGORY_CURVES["cat_b"])
        assert err.value.point == "705.AdptCrvRslt"
        assert err.value.reason == "curve 2 not adopted within 0.3 s (AdptCrvRslt 0)"
        assert pv.image.get(705, "Ena") == 0


@pytest.mark.parametrize(
    ("device", "name", "value", "model_id", "point"),
    [
        (
            PV_1547,
            S.VOLT_VAR,
            VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -400.0))),
            705,
            "705.Crv[1].Pt[3].Var",
        ),
        (BATTERY, S.STORAGE_W, 6000.0, 124, "124.OutWRte"),
    ],
    ids=["curve_point_out_of_range", "storage_above_rating"],
)
@in_loop
async def test_refused_value_writes_nothing(
    device: dict[str, Any], name: SetpointName, value: Any, model_id: int, point: str
) -> None:
    async with connected(device) as (sim, driver):
        span = sim.image.model_range(model_id)
        before = sim.image.read(span.start, len(span))
        with pytest.raises(ControlRefused) as err:
            await driver.write(name, value)
        assert err.value.point == point
        assert sim.image.read(span.start, len(span)) == before


@in_loop
async def test_device_refusing_a_value_names_the_point() -> None:
    async with connected(PV_LEGACY) as (pv, driver):
        with pytest.raises(ControlRefused) as err:
            await driver.write(S.VAR, 5000.0)  # 189 % of VArMax
        assert err.value.point == "123.VArMaxPct"
        assert "Modbus exception 3" in err.value.reason
        assert not err.value.retryable
        assert pv.snapshot().var_set is None


@in_loop
async def test_exception_answer_is_refused_and_silence_is_a_device_error() -> None:
    async with connected(PV_1547) as (pv, driver):
        pv.answer_exceptions()
        with pytest.raises(ControlRefused) as err:
            await driver.write(S.MAX_W_PCT, 40.0)
        assert err.value.point == "704.WMaxLimPctEna..WMaxLimPct"
        assert "Modbus exception 4" in err.value.reason
        assert err.value.retryable  # failing, not a wrong value: the coordinator tries again
        pv.go_silent()
        with pytest.raises(DeviceError):
            await driver.write(S.MAX_W_PCT, 40.0)


@in_loop
async def test_read_back_that_differs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async with connected(PV_1547) as (pv, driver):
        apply = pv._apply

        def stubborn(changes: Any) -> None:  # a device that keeps its own limit
            apply(changes)
            pv.image.set(704, "WMaxLimPct", 50)

        monkeypatch.setattr(pv, "_apply", stubborn)
        with pytest.raises(ControlRefused) as err:
            await driver.write(S.MAX_W_PCT, 40.0)
        assert (err.value.point, err.value.reason) == (
            "704.WMaxLimPct",
            "wrote 40.0, read back 50.0",
        )


@in_loop
async def test_storage_w_charges_discharges_holds_and_releases() -> None:
    async with connected(BATTERY) as (bat, driver):
        await driver.write(S.STORAGE_W, -2000.0)
        state = await settled(bat)
        assert (state.w, state.state) == (-2000.0, "CHARGING")
        await driver.write(S.STORAGE_W, 3000.0)
        state = await settled(bat)
        assert (state.w, state.state) == (3000.0, "DISCHARGING")
        await driver.write(S.STORAGE_W, 0.0)
        assert ((await settled(bat)).w, bat.image.get(124, "StorCtl_Mod")) == (0.0, 3)
        await driver.write(S.STORAGE_W, None)
        assert (bat.image.get(124, "StorCtl_Mod"), bat.snapshot().w_set) == (0, 0.0)


@pytest.mark.parametrize(
    ("device", "name", "value", "model_id", "timer"),
    [
        (PV_LEGACY, S.MAX_W_PCT, 40.0, 123, "WMaxLimPct_RvrtTms"),
        (PV_1547, S.MAX_W_PCT, 40.0, 704, "WMaxLimPctRvrtTms"),
        (PV_1547, S.VOLT_VAR, CATEGORY_CURVES["cat_b"], 705, "RvrtTms"),
        (BATTERY, S.STORAGE_W, -1000.0, 124, "InOutWRte_RvrtTms"),
    ],
    ids=["123", "704", "705", "124"],
)
@in_loop
async def test_keepalive_rewrites_revert_timers_and_the_heartbeat(
    device: dict[str, Any], name: SetpointName, value: Any, model_id: int, timer: str
) -> None:
    async with connected(device, revert_s=30) as (sim, driver):
        heartbeat = 715 in sim.model_ids()

        def beats() -> Any:
            return sim.image.get(715, "ControllerHb") if heartbeat else None

        await driver.write(name, value)
        assert sim.image.get(model_id, timer) == 30
        sim.image.set(model_id, timer, 0)  # as if it had been counting down
        before = beats()
        await driver.keepalive()
        assert sim.image.get(model_id, timer) == 30
        assert beats() == (before + 1 if heartbeat else None)

        await driver.write(name, None)  # released: its timer is left alone
        sim.image.set(model_id, timer, 0)
        await driver.keepalive()
        assert sim.image.get(model_id, timer) == 0
        assert beats() == (before + 2 if heartbeat else None)


@in_loop
async def test_without_keepalive_the_limit_reverts_to_the_fallback() -> None:
    spec = {**PV_1547, "speed": 20}  # the 2 s revert timer runs out in 0.1 s
    async with connected(spec, revert_s=2, max_w_pct_fallback=80) as (pv, driver):
        await driver.write(S.MAX_W_PCT, 40.0)
        get = functools.partial(pv.image.get, 704)
        assert (get("WMaxLimPctRvrt"), get("WMaxLimPctEnaRvrt"), get("WMaxLimPctRvrtTms")) == (
            80.0,
            1,
            2,
        )
        assert pv.snapshot().w_lim_pct == 40.0
        await asyncio.sleep(0.15)  # 3 simulated s
        state = pv.snapshot()
        assert (state.w_lim_pct, state.w) == (80.0, 8000.0)


@in_loop
async def test_the_configured_default_limit_is_what_a_device_reverts_to(tmp_path: Path) -> None:
    """control.default.max_w_pct reaches the device as 704 WMaxLimPctRvrt through the
    gateway's own wiring: a gateway that falls silent leaves it at the site's default."""
    async with Rig(RigSpec.model_validate({"speed": 20, "devices": [PV_1547]})) as rig:
        config = parse_config(
            {
                "gateway": {"id": "site", "state_dir": str(tmp_path)},
                "devices": [
                    {
                        "id": "pv",
                        "kind": "inverter",
                        "protocol": "sunspec",
                        "host": HOST,
                        "port": rig.port("pv"),
                    }
                ],
                "control": {"revert_s": 2, "default": {"max_w_pct": 80}},
            }
        )
        gateway = Gateway(config)
        coordinator = gateway.coordinators["pv"]
        task = asyncio.create_task(coordinator.run())
        try:
            coordinator.command({S.MAX_W_PCT: 40.0})
            pv = rig.physics_device("pv")
            async with asyncio.timeout(10):
                while coordinator.applied != {S.MAX_W_PCT: 40.0}:
                    await asyncio.sleep(0.01)
            assert pv.image.get(704, "WMaxLimPctRvrt") == 80.0
            task.cancel()  # the gateway falls silent: no keepalive refreshes the timer
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0.15)  # 3 simulated s, past the 2 s revert timer
            assert pv.snapshot().w_lim_pct == 80.0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            gateway.outbox.close()
            gateway.control_loop.close()


@pytest.mark.parametrize(
    ("device", "name", "value", "point"),
    [
        (PV_LEGACY, S.MAX_W_PCT, 40.0, "123.WMaxLimPct"),
        (PV_1547, S.MAX_W_PCT, 40.0, "704.WMaxLimPct"),
        (PV_1547, S.VOLT_VAR, CATEGORY_CURVES["cat_b"], "705.Ena"),
        (BATTERY, S.STORAGE_W, -1000.0, "124.InWRte"),
    ],
    ids=["123", "704", "705", "124"],
)
@in_loop
async def test_keepalive_finds_a_device_that_forgot_its_setpoints(
    device: dict[str, Any], name: SetpointName, value: Any, point: str
) -> None:
    async with connected(device, revert_s=30) as (sim, driver):
        await driver.write(name, value)
        await driver.keepalive()  # still held: nothing to say
        sim.restart()  # power-cycled between two polls: every register back to power-on
        with pytest.raises(DeviceChanged, match=f"{point} reads .* restarted or reverted"):
            await driver.keepalive()
        await driver.connect()
        await driver.write(name, value)
        await driver.keepalive()


@in_loop
async def test_keepalive_finds_a_limit_that_reverted() -> None:
    spec = {**PV_1547, "speed": 20}  # the 2 s revert timer runs out in 0.1 s
    async with connected(spec, revert_s=2) as (_, driver):
        await driver.write(S.MAX_W_PCT, 40.0)
        await asyncio.sleep(0.15)  # the gateway was stuck: 3 simulated s without keepalive
        with pytest.raises(DeviceChanged, match=r"704\.WMaxLimPct reads 100\.0"):
            await driver.keepalive()


@pytest.mark.parametrize(
    "moved", [{"insert_model": 12}, {"base": 50000}], ids=["model-inserted", "base-moved"]
)
@in_loop
async def test_poll_finds_moved_models_and_connect_finds_them_again(moved: dict[str, int]) -> None:
    async with connected(PV_LEGACY) as (pv, driver):
        await driver.poll()
        pv.restart(**moved)
        with pytest.raises(DeviceError) as err:  # stale addresses are never decoded
            await driver.poll()
        if "insert_model" in moved:  # the old addresses still answer, with other registers
            assert isinstance(err.value, DeviceChanged)
            assert "model 103 (length 50) was found at 40070" in str(err.value)
        await driver.connect()
        assert driver.discovery is not None
        assert driver.discovery.base == moved.get("base", 40000)
        assert (await driver.poll()).w == pytest.approx(5000.0)
        await driver.write(S.MAX_W_PCT, 40.0)
        assert (await settled(pv)).w_lim_pct == 40.0
