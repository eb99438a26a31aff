"""The HIL rig over real Modbus TCP, read with pymodbus and decoded with pysunspec2."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import sunspec2

from hil.physics import interpolate
from hil.rig import RigThread
from hil.spec import RigSpec, load_rig_spec
from tests.hil.harness import HOST, rig, run
from tests.hil.sunspec_client import ModbusError, SunSpecClient, times_out

FIXTURES = Path("/work/shared/fixtures/sunspec-real")
RIGS = Path(__file__).parents[2] / "hil" / "rigs"


@pytest.mark.parametrize(
    ("kind", "base", "models"),
    [
        ("pv_legacy", 40000, [1, 103, 120, 121, 123, 126]),
        ("pv_1547", 0, [1, 701, 702, 703, 704, 705, 712, 715]),
        ("battery", 50000, [1, 103, 124, 713, 802]),
    ],
)
def test_marker_and_model_chain(kind: str, base: int, models: list[int]) -> None:
    with RigThread(rig({"id": "d", "type": kind, "base": base})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("d")) as c:
                assert await c.scan(base) == models
                for model_id in models:
                    await c.model(model_id)  # pysunspec2 decodes every model cleanly
                assert (await c.model(1)).SN.cvalue == "d"
                with pytest.raises(ModbusError) as err:
                    await c.read(base - 1, 2) if base else await c.read(base + 5000, 1)
                assert err.value.code == 2

        run(check)


def test_legacy_126_has_the_requested_curves() -> None:
    with RigThread(rig({"id": "d", "type": "pv_legacy", "vv_curves": 3})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("d")) as c:
                await c.scan()
                vv = await c.model(126)
                assert vv.NCrv.cvalue == 3
                assert len(vv.groups["curve"]) == 3

        run(check)


def test_pv_output_follows_the_profile() -> None:
    points = [(0.0, 0.0), (40.0, 4000.0)]
    profile = {"kind": "table", "points": points, "loop": False}
    spec = rig({"id": "pv", "type": "pv_legacy", "profile": profile, "tau_s": 0.2}, speed=20)
    with RigThread(spec) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                for _ in range(3):
                    await asyncio.sleep(0.4)
                    w = await c.value(103, "W")
                    t = rt.state("pv").t_s
                    assert w == pytest.approx(interpolate(points, t), abs=200)

        run(check)


@pytest.mark.parametrize(
    ("kind", "limit_model", "limit", "enable", "measure_model"),
    [
        ("pv_legacy", 123, "WMaxLimPct", "WMaxLim_Ena", 103),
        ("pv_1547", 704, "WMaxLimPct", "WMaxLimPctEna", 701),
    ],
)
def test_w_limit_written_over_modbus(
    kind: str, limit_model: int, limit: str, enable: str, measure_model: int
) -> None:
    device = {"id": "pv", "type": kind, "w_rtg": 8000, "tau_s": 0.5}
    with RigThread(rig(device, speed=10)) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                await asyncio.sleep(0.5)  # 10 time constants
                assert await c.value(measure_model, "W") == pytest.approx(8000, rel=0.01)
                await c.write_points(limit_model, {limit: 40.0, enable: 1})
                await asyncio.sleep(0.3)  # 6 time constants
                assert await c.value(measure_model, "W") == pytest.approx(3200, rel=0.01)
                state = rt.state("pv")
                assert (state.w_lim_pct, state.state) == (40.0, "THROTTLED")

        run(check)


def soc_rate_pct_per_s(w: float, wh_rtg: float, efficiency: float) -> float:
    """dSoC/dt for a power w (> 0 discharging), %/s."""
    drawn = w / efficiency if w > 0 else w * efficiency
    return -drawn / (wh_rtg * 3600.0) * 100.0


def test_battery_soc_integrates_power_with_efficiency() -> None:
    battery = {"id": "bat", "type": "battery", "wh_rtg": 1000, "w_cha_max": 4000,
               "w_discha_max": 4000, "soc_pct": 50, "tau_s": 0.05}  # fmt: skip
    with RigThread(rig(battery, speed=20)) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("bat")) as c:
                await c.scan()
                for mode, rate, expected_w in ((1, "InWRte", -2000.0), (2, "OutWRte", 2000.0)):
                    await c.write_points(124, {"StorCtl_Mod": mode, rate: 50.0})
                    await asyncio.sleep(0.1)  # 40 time constants
                    first = rt.state("bat")
                    await asyncio.sleep(0.5)
                    second = rt.state("bat")
                    assert first.soc_pct is not None and second.soc_pct is not None
                    assert first.w == pytest.approx(expected_w, rel=1e-3)
                    slope = (second.soc_pct - first.soc_pct) / (second.t_s - first.t_s)
                    assert slope == pytest.approx(
                        soc_rate_pct_per_s(expected_w, 1000, 0.95), rel=0.01
                    )
                    assert await c.value(802, "SoC") == pytest.approx(
                        rt.state("bat").soc_pct, abs=0.3
                    )
                    assert await c.value(103, "W") == pytest.approx(expected_w, rel=0.01)
                    assert await c.value(802, "ChaSt") == (4 if expected_w < 0 else 3)

        run(check)


def test_battery_stops_at_its_soc_limits() -> None:
    common = {"type": "battery", "wh_rtg": 500, "w_cha_max": 5000, "w_discha_max": 5000,
              "tau_s": 0.05, "soc_min_pct": 5}  # fmt: skip
    spec = rig(
        {"id": "hi", "soc_pct": 50, **common}, {"id": "lo", "soc_pct": 7, **common}, speed=20
    )
    with RigThread(spec) as rt:

        async def check() -> None:
            async with (
                SunSpecClient(HOST, rt.port("hi")) as hi,
                SunSpecClient(HOST, rt.port("lo")) as lo,
            ):
                await hi.scan()
                await lo.scan()
                await hi.write_points(802, {"SocRsvMax": 52.0})
                await hi.write_points(124, {"StorCtl_Mod": 1, "InWRte": 100.0})
                await lo.write_points(124, {"StorCtl_Mod": 2, "OutWRte": 100.0})
                await asyncio.sleep(1.0)  # 20 s simulated: either limit is reached in < 10 s
                for client, soc, cha_st in ((hi, 52.0, 5), (lo, 5.0, 2)):
                    assert await client.value(802, "SoC") == pytest.approx(soc, abs=0.1)
                    assert await client.value(103, "W") == 0
                    assert await client.value(802, "ChaSt") == cha_st  # FULL / EMPTY
                    assert await client.value(802, "State") == 5  # SOC PROTECTION
                assert rt.state("hi").w == 0.0
                assert rt.state("lo").soc_pct == pytest.approx(5.0)

        run(check)


def test_refused_writes() -> None:
    with RigThread(rig({"id": "a", "type": "pv_legacy"}, {"id": "b", "type": "pv_1547"})) as rt:

        async def check() -> None:
            async with (
                SunSpecClient(HOST, rt.port("a")) as a,
                SunSpecClient(HOST, rt.port("b")) as b,
            ):
                await a.scan()
                await b.scan()
                refused = [
                    (a.write(a.addresses[103] + 14, [100]), 2),  # 103 W is read-only
                    (a.write(40000, [0, 0]), 2),  # the SunS marker
                    (a.write_points(123, {"WMaxLimPct": 150.0}), 3),
                    (a.write_points(123, {"WMaxLim_Ena": 7}), 3),  # not an enum symbol
                    (b.write_points(704, {"WMaxLimPct": 100.5}), 3),
                ]
                for call, code in refused:
                    with pytest.raises(ModbusError) as err:
                        await call
                    assert err.value.code == code
                assert await a.value(123, "WMaxLim_Ena") == 0  # a refused write changes nothing

        run(check)


def test_1547_volt_var_curve_adoption() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_1547"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                vv = await c.model(705)
                assert vv.NCrv.cvalue >= 2 and vv.NPt.cvalue == 4
                crv1, crv2 = vv.groups["Crv"][0], vv.groups["Crv"][1]
                with pytest.raises(ModbusError) as err:  # curve 1 is read-only
                    await c.write(c.addresses[705] + crv1.Pt[0].V.offset, [10000])
                assert err.value.code == 2
                new_v = [95.0, 99.0, 101.0, 105.0]
                for pt, v in zip(crv2.Pt, new_v, strict=True):
                    pt.V.cvalue = v
                    await c.write(c.addresses[705] + pt.V.offset, [pt.V.value])
                await c.write_points(705, {"AdptCrvReq": 2})
                adopted = await c.model(705)
                assert adopted.AdptCrvRslt.cvalue == 1  # COMPLETED
                assert [p.V.cvalue for p in adopted.groups["Crv"][0].Pt] == new_v

        run(check)


def test_twenty_units_on_one_port_answer_with_their_own_identity() -> None:
    spec = load_rig_spec(RIGS / "commercial.yaml")
    devices = [d.model_copy(update={"port": 0, "gateway": "gw"}) for d in spec.devices]
    with RigThread(spec.model_copy(update={"devices": devices})) as rt:
        port = rt.port("inv01")
        assert all(rt.port(f"inv{i:02d}") == port for i in range(1, 21))

        async def check() -> None:
            for unit in range(1, 21):
                async with SunSpecClient(HOST, port, unit=unit) as c:
                    await c.scan()
                    assert (await c.model(1)).SN.cvalue == f"CI-{unit:04d}"
            async with SunSpecClient(HOST, port, unit=21) as c:
                with pytest.raises(ModbusError) as err:
                    await c.read(40000, 2)
                assert err.value.code == 0x0B  # GATEWAY_NO_RESPONSE

        run(check)


def test_fault_hooks() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv"), timeout_s=0.3) as c:
                await c.scan()
                await c.write_points(123, {"WMaxLimPct": 40.0, "WMaxLim_Ena": 1})
                rt.call(lambda r: r.device("pv").answer_exceptions())
                with pytest.raises(ModbusError) as err:
                    await c.read(40000, 2)
                assert err.value.code == 4
                rt.call(lambda r: r.device("pv").go_silent())
                assert await times_out(c, 40000)
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                rt.call(lambda r: r.device("pv").clear_faults())
                await c.scan()
                assert await c.value(123, "WMaxLim_Ena") == 1
                rt.call(lambda r: r.device("pv").restart())
                assert await c.value(123, "WMaxLim_Ena") == 0
                assert await c.value(123, "WMaxLimPct") == 100
                assert rt.state("pv").w_lim_pct is None

        run(check)


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_replay_serves_a_real_capture_byte_exact(fixture: Path) -> None:
    capture = json.loads(fixture.read_text())
    spec = rig({"id": "real", "type": "replay", "file": str(fixture)})
    with RigThread(spec) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("real")) as c:
                base, registers = capture["base"], capture["registers"]
                assert await c.read(base, len(registers)) == registers
                for address, count in ((base + len(registers), 1), (base, 1 + len(registers))):
                    with pytest.raises(ModbusError) as err:
                        await c.read(address, count) if count < 100 else await c.read(base, count)
                    assert err.value.code == 2
                with pytest.raises(ModbusError) as err:
                    await c.write(base + 4, [0])
                assert err.value.code == 2

        run(check)


def test_replay_serves_pysunspec2s_1547_test_device() -> None:
    spec = rig({"id": "t", "type": "replay", "file": "sunspec2:tests/test_data/device_1547.json"})
    expected = json.loads(
        (Path(sunspec2.__file__).parent / "tests/test_data/device_1547.json").read_text()
    )
    with RigThread(spec) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("t")) as c:
                ids = await c.scan()
                assert ids == [m["ID"] for m in expected["models"][:-1]]
                common = await c.model(1)
                assert (common.Mn.cvalue, common.SN.cvalue) == ("SunSpecTest", "sn-123456789")
                assert (await c.model(701)).W.value == expected["models"][1]["W"]

        run(check)


def test_cli_prints_each_device_and_stops_on_sigint(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(
        "devices:\n  - {id: inv1, type: pv_legacy}\n  - {id: bat1, type: battery, base: 50000}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil", "--rig", str(rig_file), "--speed", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().split() for _ in range(2)]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert [line[:2] for line in lines] == [["inv1", "pv_legacy"], ["bat1", "battery"]]
    assert lines[1][3:] == ["unit=1", "base=50000", "models=1,103,124,713,802"]
    assert lines[0][2].startswith("127.0.0.1:") and not lines[0][2].endswith(":0")


def test_demo_rig_is_valid() -> None:
    spec = load_rig_spec(RIGS / "demo.yaml")
    assert [(d.id, d.type, d.port) for d in spec.devices] == [
        ("inv1", "pv_legacy", 1502),
        ("bat1", "battery", 1503),
        ("inv2", "pv_1547", 1504),
        ("ev1", "evse", 1506),
        ("ev2", "opcua_evse", 4841),
        ("bat2", "opcua_battery", 4842),
        ("meter1", "meter", 1505),
    ]


def test_tick_steps_devices_without_clients() -> None:
    spec = RigSpec.model_validate(
        {"speed": 10, "tick_s": 0.05, "devices": [{"id": "pv", "type": "pv_legacy"}]}
    )
    with RigThread(spec) as rt:
        time.sleep(0.3)
        assert rt.call(lambda r: r.physics_device("pv").physics.t) > 1.0


@pytest.mark.parametrize(
    ("kind", "model", "enable", "measure_model", "var_point"),
    [("pv_legacy", 126, "ModEna", 103, "VAr"), ("pv_1547", 705, "Ena", 701, "Var")],
)
def test_volt_var_follows_a_forced_grid_voltage(
    kind: str, model: int, enable: str, measure_model: int, var_point: str
) -> None:
    device = {"id": "pv", "type": kind, "w_rtg": 5000, "va_rtg": 6000, "tau_s": 0.2}
    with RigThread(rig(device, speed=10)) as rt:
        rt.call(lambda r: r.physics_device("pv").set_voltage(230 * 1.08))

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                await c.write_points(model, {enable: 1})
                await asyncio.sleep(0.3)  # 15 time constants
                # Cat B curve at 108 % of VRef: 44 % of VArMax (0.44 * 6000 VA) absorbed
                expected = -0.44 * 0.44 * 6000
                assert await c.value(measure_model, var_point) == pytest.approx(expected, abs=2)

        run(check)
