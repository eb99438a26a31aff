"""The rig's devices with `dynamics: opender`: what the gateway writes reaches EPRI's OpenDER 2.2
and the P, Q and SoC the device reports are OpenDER's.

Each test builds the device as the rig does (build_device / build_opcua_device) on a SimClock
moved by hand, writes points through the device's own Modbus write path (answer_write, the
registers encoded by pysunspec2), moves the clock and reads the physics and the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from opender import DER, DER_PV
from sunspec2.device import Model

from hil.devices import build_device
from hil.devices.base import PhysicsDevice
from hil.opcua.devices import build_opcua_device
from hil.opender_physics import (
    OPENDER_STEP_S,
    OpenDerBatteryPhysics,
    OpenDerPvPhysics,
    set_opender_step,
)
from hil.physics import ChargeState, PvState, SimClock
from hil.spec import RigSpec
from tests.hil.sunspec_client import point

STEP = OPENDER_STEP_S
VA = 10000.0
VAR_MAX = 4400.0  # the spec's default var rating: 44 % of VA
V_NOM = 230.0
# a volt-var curve unlike the power-on Cat B one: V in % of VNom, var in % of VArMax
T90_PER_OLRT = math.log(10) / 2.3
"""OpenDER's lag has tau = OLRT / 2.3, so 90 % comes at 1.0011 OLRT (90.10 s for 90 s)."""
CURVE = ((93.0, 40.0), (97.0, 0.0), (103.0, 0.0), (107.0, -40.0))


class Hand:
    """A SimClock whose source the test sets."""

    def __init__(self) -> None:
        self.t = 0.0
        self.clock = SimClock(source=lambda: self.t)


def device(hand: Hand, **spec: Any) -> Any:
    rig = RigSpec.model_validate({"devices": [{"id": "dev", "dynamics": "opender", **spec}]})
    return build_device(rig.devices[0], hand.clock)  # type: ignore[arg-type]


def write(dev: PhysicsDevice, model_id: int, values: dict[str, float]) -> None:
    """Write points one by one through the device's Modbus write path; each must be accepted."""
    span = dev.image.model_range(model_id)
    regs = dev.image.read(span.start, len(span))
    model = Model(model_id, model_len=regs[1], data=b"".join(r.to_bytes(2, "big") for r in regs))
    for name, value in values.items():
        p = point(model, name)
        p.cvalue = value
        data = p.get_mb()
        written = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        assert dev.answer_write(dev.image.address(model_id, name), written) is None, name


def run(hand: Hand, dev: PhysicsDevice, until: float) -> Iterator[float]:
    """Move the clock one OpenDER step at a time up to `until`, refreshing the device."""
    while hand.t < until - 1e-9:
        hand.t = round(hand.t + STEP, 9)
        dev.refresh()
        yield hand.t


def write_volt_var(dev: PhysicsDevice, rsp_tms: float) -> None:
    """CURVE into the writable curve 2 of 705, adopted as the active curve 1, enabled."""
    values: dict[str, float] = {"Crv[2].ActPt": 4, "Crv[2].DeptRef": 1, "Crv[2].VRef": 100}
    values["Crv[2].RspTms"] = rsp_tms
    for k, (v, var) in enumerate(CURVE, start=1):
        values |= {f"Crv[2].Pt[{k}].V": v, f"Crv[2].Pt[{k}].Var": var}
    write(dev, 705, values)
    write(dev, 705, {"AdptCrvReq": 2})
    write(dev, 705, {"Ena": 1})


def write_volt_watt(dev: PhysicsDevice) -> None:
    """(103 %, 100 %), (107 %, 20 %) with RspTms 5 s into curve 2 of 706, adopted, enabled."""
    values: dict[str, float] = {"Crv[2].ActPt": 2, "Crv[2].RspTms": 5}
    values |= {"Crv[2].Pt[1].V": 103, "Crv[2].Pt[1].W": 100}
    values |= {"Crv[2].Pt[2].V": 107, "Crv[2].Pt[2].W": 20}
    write(dev, 706, values)
    write(dev, 706, {"AdptCrvReq": 2})
    write(dev, 706, {"Ena": 1})


def standalone_q(rsp_tms: float, before: int, after: int) -> list[float]:
    """Q of a DER_PV with the same nameplate and curve: `before` steps at 1 pu, then 1.06."""
    DER.t_s = STEP
    der = DER_PV(
        NP_NORMAL_OP_CAT="CAT_B",
        NP_P_MAX=VA,
        NP_P_MAX_OVER_PF=VA,
        NP_P_MAX_UNDER_PF=VA,
        NP_VA_MAX=VA,
        NP_Q_MAX_INJ=VAR_MAX,
        NP_Q_MAX_ABS=VAR_MAX,
        NP_V_DC=2 * V_NOM * math.sqrt(3),
        NP_AC_V_NOM=V_NOM * math.sqrt(3),
        NP_PRIO_OUTSIDE_MIN_Q_REQ="REACTIVE",
    )
    settings: dict[str, object] = {"QV_OLRT": rsp_tms, "QV_MODE_ENABLE": True}
    for k, (v, var) in enumerate(CURVE, start=1):
        settings |= {f"QV_CURVE_V{k}": v / 100, f"QV_CURVE_Q{k}": var / 100 * VAR_MAX / VA}
    for name, value in settings.items():
        setattr(der.der_file, name, value)
    qs = []
    for i in range(before + after):
        der.update_der_input(v_pu=1.0 if i < before else 1.06, f=60, p_dc_w=VA)
        qs.append(float(der.run()[1]))
    return qs[before:]


@pytest.mark.parametrize("rsp_tms", [1, 5, 10, 90])
def test_native_volt_var_is_opender_s_with_the_written_response_time(rsp_tms: float) -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA)
    assert isinstance(dev.physics, OpenDerPvPhysics)
    write_volt_var(dev, rsp_tms)
    list(run(hand, dev, 20.0))  # at 1 pu (Q = 0 in the deadband): OpenDER's mode change ends
    t_step = hand.t
    dev.physics.grid.v_set = 1.06 * V_NOM  # a feeder would set its bus voltage here
    qs = [dev.physics.var for _ in run(hand, dev, t_step + 4 * rsp_tms + 1)]

    expected = standalone_q(rsp_tms, round(t_step / STEP), len(qs))
    assert max(abs(a - b) for a, b in zip(qs, expected, strict=True)) < 1e-6 * VA
    q_curve = (1.06 - 1.03) / (1.07 - 1.03) * -0.40 * VAR_MAX  # on the written curve, var
    assert qs[-1] == pytest.approx(q_curve, abs=1e-3 * VA)
    k90 = next(k for k, q in enumerate(qs, start=1) if q <= 0.9 * q_curve)
    assert abs(k90 * STEP - rsp_tms * T90_PER_OLRT) <= STEP + 1e-9
    assert dev.image.get(701, "Var") == pytest.approx(qs[-1], abs=1)


@pytest.mark.parametrize("pct", [66, 33, 0])
def test_limit_active_power_settles_within_opender_s_response_time(pct: float) -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA)
    list(run(hand, dev, 1.0))
    assert dev.physics.w == pytest.approx(VA)
    write(dev, 704, {"WMaxLimPct": pct, "WMaxLimPctEna": 1})
    ws = [dev.physics.w for _ in run(hand, dev, 1.0 + 15.0 + STEP)]  # OpenDER's AP_RT: 15 s
    assert ws[0] > pct / 100 * VA + 0.01 * VA  # a ramp, not a jump
    assert ws[-1] == pytest.approx(pct / 100 * VA, abs=1e-6 * VA)
    assert dev.physics.state is PvState.THROTTLED


def test_legacy_limit_active_power_reaches_opender() -> None:
    hand = Hand()
    dev = device(hand, type="pv_legacy", w_rtg=VA)
    write(dev, 123, {"WMaxLimPct": 50, "WMaxLim_Ena": 1})
    list(run(hand, dev, 20.0))
    assert dev.physics.w == pytest.approx(0.5 * VA, abs=1e-6 * VA)
    assert dev.image.get(103, "W") == pytest.approx(0.5 * VA, abs=10)


def test_fixed_power_factor_over_excited() -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA, profile={"kind": "constant", "w": 5000})
    write(dev, 704, {"PFWInj.PF": 0.9, "PFWInj.Ext": 0, "PFWInjEna": 1})
    list(run(hand, dev, 40.0))  # OpenDER: 15 s mode transition, CONST_PF_RT 5 s
    p = dev.physics
    assert p.w == pytest.approx(5000, abs=1e-6 * VA)
    assert p.var / p.w == pytest.approx(math.sqrt(1 / 0.9**2 - 1), abs=1e-6)
    assert dev.image.get(701, "PF") == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize("pct", [25, -25])
def test_var_setpoint_is_constant_q(pct: float) -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA, profile={"kind": "constant", "w": 5000})
    write(dev, 704, {"VarSetMod": 1, "VarSetPct": pct, "VarSetEna": 1})  # % of VarMaxInj
    list(run(hand, dev, 40.0))
    assert dev.physics.var == pytest.approx(pct / 100 * VAR_MAX, abs=1e-6 * VA)
    assert dev.physics.w == pytest.approx(5000, abs=1e-6 * VA)


def test_disconnected_pv_trips_and_enters_service_after_703_s_delay() -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA)
    write(dev, 703, {"ESDlyTms": 10, "ESRmpTms": 20})
    write(dev, 715, {"OpCtl": 0})  # STOP
    list(run(hand, dev, 1.0))
    assert dev.physics.w == 0 and dev.physics.state is PvState.OFF
    write(dev, 715, {"OpCtl": 1})  # START
    ws = [dev.physics.w for _ in run(hand, dev, 1.0 + 10.0 + 21.0)]
    k_first = next(k for k, w in enumerate(ws, start=1) if w > 0)
    assert abs(k_first * STEP - 10.0) <= 2 * STEP  # ESDlyTms
    assert ws[-1] == pytest.approx(VA)
    assert 0 < ws[k_first + round(10.0 / STEP)] < VA  # ramping over ESRmpTms


def test_battery_discharge_stops_at_the_reserve_soc_from_opender() -> None:
    hand = Hand()
    dev = device(hand, type="battery", wh_rtg=1000, soc_pct=20.0, w_discha_max=5000)
    p = dev.physics
    assert isinstance(p, OpenDerBatteryPhysics)
    write(dev, 124, {"MinRsvPct": 10, "OutWRte": 50, "StorCtl_Mod": 2})  # 2500 W out
    list(run(hand, dev, 60.0))
    assert p.w == pytest.approx(2500)
    dropped = 2500 * (60.0 - STEP) / 3600 / 1000 * 100  # OpenDER integrates last step's P
    assert p.soc_pct == pytest.approx(20.0 - dropped, abs=1e-6)
    assert p.wh_injected == pytest.approx(2500 * 60.0 / 3600, abs=1e-6)
    list(run(hand, dev, 200.0))  # the reserve is reached at 144 s
    assert p.w == 0
    assert p.soc_pct == pytest.approx(10.0, abs=1e-6)
    assert p.charge_state is ChargeState.EMPTY
    assert dev.image.get(124, "ChaState") == pytest.approx(10.0, abs=0.1)


def test_opcua_battery_runs_on_opender() -> None:
    hand = Hand()
    spec = RigSpec.model_validate(
        {"devices": [{"id": "b", "type": "opcua_battery", "dynamics": "opender"}]}
    ).devices[0]
    dev = build_opcua_device(spec, hand.clock)  # type: ignore[arg-type]
    assert isinstance(dev.physics, OpenDerBatteryPhysics)
    dev.accept("PowerSetpoint", "Int32", 2000)  # BMS sign: charge 2000 W
    hand.t = 10.0
    dev.refresh()
    values = dev.values()
    assert values["ActivePower"] == pytest.approx(2000)
    soc = 50.0 + 2000 * 0.95 * (10.0 - STEP) / 3600 / 10000 * 100  # efficiency on charge
    assert values["SoC"] == pytest.approx(soc, abs=1e-6)


@pytest.fixture
def half_second_steps() -> Iterator[None]:
    set_opender_step(0.5)
    yield
    set_opender_step(STEP)


@pytest.mark.usefixtures("half_second_steps")
def test_steps_are_whole_increments_with_the_remainder_carried() -> None:
    hand = Hand()
    dev = device(hand, type="battery", wh_rtg=10000, w_discha_max=5000)
    write(dev, 124, {"OutWRte": 72, "StorCtl_Mod": 2})  # 3600 W out
    hand.t = 0.7
    dev.refresh()
    assert dev.physics.t == 0.7
    assert dev.physics.wh_injected == pytest.approx(0.5)  # one 0.5 s step: 0.5 Wh
    hand.t = 1.0
    dev.refresh()
    assert dev.physics.wh_injected == pytest.approx(1.0)  # the 0.2 s left over counted


def test_opender_step_must_be_positive() -> None:
    with pytest.raises(ValueError, match="OpenDER time step 0 s"):
        set_opender_step(0)


def test_volt_watt_706_is_served_with_opender_only_and_limits_p() -> None:
    hand = Hand()
    simple = RigSpec.model_validate({"devices": [{"id": "s", "type": "pv_1547"}]}).devices[0]
    assert 706 not in build_device(simple, hand.clock).model_ids()  # type: ignore[arg-type]
    dev = device(hand, type="pv_1547", w_rtg=VA)
    assert dev.model_ids() == [1, 701, 702, 703, 704, 705, 706, 712, 715]
    w_aval_pct = [1]  # DeptRef W_AVAL_PCT: OpenDER's volt-watt P is pu of the rating only
    assert dev.answer_write(dev.image.address(706, "Crv[2].DeptRef"), w_aval_pct) is not None
    write_volt_watt(dev)
    list(run(hand, dev, 1.0))
    assert dev.physics.w == pytest.approx(VA)  # at 1 pu: below V1
    dev.physics.grid.v_set = 1.05 * V_NOM
    t_step = hand.t
    ws = [dev.physics.w for _ in run(hand, dev, t_step + 30.0)]
    p_curve = (1 - (1.05 - 1.03) / (1.07 - 1.03) * 0.8) * VA  # 6000 W
    assert ws[-1] == pytest.approx(p_curve, abs=1e-3 * VA)
    k90 = next(k for k, w in enumerate(ws, start=1) if w <= VA - 0.9 * (VA - p_curve))
    assert abs(k90 * STEP - 5 * T90_PER_OLRT) <= STEP + 1e-9
    assert dev.physics.state is PvState.THROTTLED


def test_volt_watt_powers_are_percent_of_wmax() -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA)
    write(dev, 702, {"WMax": 8000})
    write_volt_watt(dev)
    dev.physics.grid.v_set = 1.05 * V_NOM
    list(run(hand, dev, 60.0))
    assert dev.physics.w == pytest.approx(0.6 * 8000, abs=1e-3 * VA)  # halfway 100 % -> 20 %


def test_legacy_ramp_time_is_opender_s_limit_ramp() -> None:
    hand = Hand()
    dev = device(hand, type="pv_legacy", w_rtg=VA)
    list(run(hand, dev, 1.0))
    write(dev, 123, {"WMaxLimPct_RmpTms": 4, "WMaxLimPct": 50, "WMaxLim_Ena": 1})
    list(run(hand, dev, 2.0))
    assert dev.physics.w == pytest.approx(0.75 * VA, abs=0.1 * STEP / 4 * VA)  # 1 pu per 4 s
    list(run(hand, dev, 3.0 + STEP))
    assert dev.physics.w == pytest.approx(0.5 * VA, abs=1e-6 * VA)


def test_legacy_var_ramp_time_is_opender_s_constant_q_response_time() -> None:
    hand = Hand()
    dev = device(hand, type="pv_legacy", w_rtg=VA, profile={"kind": "constant", "w": 5000})
    list(run(hand, dev, 1.0))
    write(dev, 123, {"VArPct_RmpTms": 8, "VArPct_Mod": 2, "VArMaxPct": 50, "VArPct_Ena": 1})
    target = 0.5 * VAR_MAX
    qs = [dev.physics.var for _ in run(hand, dev, 60.0)]
    assert qs[-1] == pytest.approx(target, abs=1e-6 * VA)
    k90 = next(k for k, q in enumerate(qs, start=1) if q >= 0.9 * target)
    assert abs(k90 * STEP - 8 * T90_PER_OLRT) <= STEP + 1e-9  # the default would be 5 s


def test_battery_ramp_time_is_opender_s_dispatch_ramp() -> None:
    hand = Hand()
    dev = device(hand, type="battery", w_discha_max=5000)
    list(run(hand, dev, 1.0))  # idle
    write(dev, 124, {"InOutWRte_RmpTms": 10, "OutWRte": 50, "StorCtl_Mod": 2})
    list(run(hand, dev, 3.5))
    assert dev.physics.w == pytest.approx(1250, abs=5000 * STEP / 10)  # 0 -> 5000 W in 10 s
    list(run(hand, dev, 6.0 + STEP))
    assert dev.physics.w == pytest.approx(2500)
    dev.restart()  # setpoint 0 W, ramp time back to 0: a step down
    list(run(hand, dev, hand.t + STEP))
    assert dev.physics.w == 0


def test_restart_forgets_what_was_written_to_opender() -> None:
    hand = Hand()
    dev = device(hand, type="pv_1547", w_rtg=VA, profile={"kind": "constant", "w": 5000})
    write_volt_var(dev, 1)
    write_volt_watt(dev)
    dev.physics.grid.v_set = 1.06 * V_NOM
    list(run(hand, dev, 30.0))
    assert dev.physics.var < -1000 and dev.physics.w < 5000
    dev.restart()
    list(run(hand, dev, 60.0))  # volt-var and volt-watt off: back to unity PF, all the sun
    assert dev.physics.var == pytest.approx(0, abs=1e-6 * VA)
    assert dev.physics.w == pytest.approx(5000, abs=1e-6 * VA)


def test_legacy_126_volt_var_with_its_pt1_time() -> None:
    hand = Hand()
    dev = device(hand, type="pv_legacy", w_rtg=VA)
    curve: dict[str, float] = {"curve[1].ActPt": 4, "curve[1].DeptRef": 2, "curve[1].RmpTms": 10}
    for k, (v, var) in enumerate(CURVE, start=1):
        curve |= {f"curve[1].V{k}": v, f"curve[1].VAr{k}": var}
    write(dev, 126, curve | {"ActCrv": 1, "ModEna": 1})
    list(run(hand, dev, 20.0))
    t_step = hand.t
    dev.physics.grid.v_set = 1.06 * V_NOM
    qs = [dev.physics.var for _ in run(hand, dev, t_step + 60.0)]
    olrt = 10 * math.log(10) / math.log(20)  # RmpTms is a PT1 95 % time: 7.69 s to 90 %
    expected = standalone_q(olrt, round(t_step / STEP), len(qs))
    assert max(abs(a - b) for a, b in zip(qs, expected, strict=True)) < 1e-6 * VA
    q_curve = (1.06 - 1.03) / (1.07 - 1.03) * -0.40 * VAR_MAX
    assert qs[-1] == pytest.approx(q_curve, abs=1e-6 * VA)
    k90 = next(k for k, q in enumerate(qs, start=1) if q <= 0.9 * q_curve)
    assert abs(k90 * STEP - olrt * T90_PER_OLRT) <= 2 * STEP  # an OLRT between two samples


def test_curves_opender_cannot_take_are_refused_or_off() -> None:
    hand = Hand()
    dev = device(hand, type="pv_legacy", w_rtg=VA)
    assert dev.answer_write(dev.image.address(126, "curve[1].ActPt"), [5]) is not None
    write(dev, 126, {"curve[1].ActPt": 0, "ActCrv": 1, "ModEna": 1})  # no points: no volt-var
    dev.physics.grid.v_set = 1.1 * V_NOM
    list(run(hand, dev, 5.0))
    assert dev.physics.var == 0
