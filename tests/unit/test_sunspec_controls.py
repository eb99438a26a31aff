"""Setpoint write planning without I/O, on pysunspec2's 1547 test device and the rig's images."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sunspec2
from sunspec2.file.client import FileClientDevice

from derms_edge.devices.sunspec import build_layout, decode
from derms_edge.devices.sunspec.controls import (
    AwaitAdoption,
    ControlTarget,
    WritePlan,
    adoption_done,
    plan_heartbeat,
    plan_setpoint,
    supported,
)
from derms_edge.devices.sunspec.models import PointValue
from derms_edge.devices.sunspec.writes import PointWrite, differing, group_writes
from derms_edge.errors import ControlRefused
from derms_edge.model import CATEGORY_CURVES, FixedPf, SetpointName, SetpointValue, VoltVarCurve
from hil.devices import build_device
from hil.physics import SimClock
from hil.spec import RigSpec

S = SetpointName
DEVICE_1547 = Path(sunspec2.__file__).parent / "tests" / "test_data" / "device_1547.json"
PV_LEGACY = {"type": "pv_legacy", "w_rtg": 5000, "va_rtg": 6000}  # VArMax 2640 (44 % of VA)
PV_1547 = {"type": "pv_1547", "w_rtg": 10000, "va_rtg": 12000}
BATTERY = {"type": "battery", "w_cha_max": 4000, "w_discha_max": 5000}


def target(models: dict[int, list[int]], **options: Any) -> ControlTarget:
    """A control target from each model's registers (ID register on)."""
    layouts = {}
    for model_id, registers in models.items():
        layout = build_layout(model_id, registers[1], registers)
        if layout is not None:
            layouts[model_id] = layout
    values = {m: decode(layout, models[m]) for m, layout in layouts.items()}
    return ControlTarget(
        device="dev", models=tuple(models), layouts=layouts, values=values, **options
    )


def rig_target(spec: dict[str, Any], **options: Any) -> ControlTarget:
    """A control target from a rig device's power-on image."""
    device_spec = RigSpec.model_validate({"devices": [{"id": "dev", **spec}]}).devices[0]
    registers = build_device(device_spec, SimClock()).image.registers
    models = {}
    offset = 2  # past "SunS"
    while registers[offset] != 0xFFFF:
        length = registers[offset + 1]
        models[registers[offset]] = registers[offset : offset + length + 2]
        offset += length + 2
    return target(models, **options)


def device_1547_target(**options: Any) -> ControlTarget:
    device = FileClientDevice(str(DEVICE_1547))
    device.scan()
    models = {}
    for model in device.model_list:
        data = model.get_mb()
        models[model.model_id] = list(struct.unpack(f">{len(data) // 2}H", data))
    return target(models, **options)


def with_values(t: ControlTarget, model_id: int, changes: dict[str, PointValue]) -> ControlTarget:
    values = {m: dict(v) for m, v in t.values.items()}
    values[model_id].update(changes)
    return dataclasses.replace(t, values=values)


def writes(plan: WritePlan) -> list[tuple[str, float]]:
    """(model.path, value) of every write of a plan, in order."""
    return [
        (w.point, w.value)
        for step in plan.steps
        if not isinstance(step, AwaitAdoption)
        for w in step
    ]


def only_step(plan: WritePlan) -> tuple[PointWrite, ...]:
    (step,) = plan.steps
    assert not isinstance(step, AwaitAdoption)
    return step


def refused(t: ControlTarget, name: SetpointName, value: SetpointValue | None) -> ControlRefused:
    with pytest.raises(ControlRefused) as err:
        plan_setpoint(t, name, value)
    return err.value


# --- what each device supports -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "storage", "expected"),
    [
        (PV_LEGACY, False, {S.MAX_W_PCT, S.VAR, S.VOLT_VAR, S.FIXED_PF}),
        (PV_1547, False, {S.MAX_W_PCT, S.VAR, S.VOLT_VAR, S.FIXED_PF}),
        (PV_1547, True, {S.MAX_W_PCT, S.VAR, S.VOLT_VAR, S.FIXED_PF, S.STORAGE_W}),
        (BATTERY, True, {S.STORAGE_W}),
        (BATTERY, False, set()),
    ],
)
def test_supported_follows_the_models(
    spec: dict[str, Any], storage: bool, expected: set[SetpointName]
) -> None:
    assert supported(rig_target(spec, storage=storage)) == expected


def test_pysunspec2_1547_device_supports_only_what_it_implements() -> None:
    # Its 704 predates WMaxLimPct and VarSet: those points read "not implemented".
    assert supported(device_1547_target()) == {S.VOLT_VAR, S.FIXED_PF}


def test_unsupported_setpoint_is_refused_naming_the_models() -> None:
    error = refused(rig_target(BATTERY, storage=True), S.MAX_W_PCT, 50.0)
    assert error.point == "max_w_pct"
    assert error.reason == "not supported by this device (models 1, 103, 124, 713, 802)"
    assert refused(rig_target(PV_1547), S.EVSE_MAX_A, 16.0).point == "evse_max_a"


# --- MAX_W_PCT ---------------------------------------------------------------------------------


def test_704_limit_with_revert_timer_and_fallback_goes_in_one_request() -> None:
    plan = plan_setpoint(rig_target(PV_1547, revert_s=30, max_w_pct_fallback=80), S.MAX_W_PCT, 40)
    assert writes(plan) == [
        ("704.WMaxLimPct", 40.0),
        ("704.WMaxLimPctRvrt", 80.0),
        ("704.WMaxLimPctEnaRvrt", 1),
        ("704.WMaxLimPctRvrtTms", 30),
        ("704.WMaxLimPctEna", 1),
    ]
    (request,) = group_writes(only_step(plan))
    # WMaxLimPctEna, WMaxLimPct (SF -1), WMaxLimPctRvrt, WMaxLimPctEnaRvrt, RvrtTms (uint32)
    assert request.registers == (1, 400, 800, 1, 0, 30)
    assert request.label == "704.WMaxLimPctEna..WMaxLimPctRvrtTms"
    assert [w.point for w in plan.refresh] == ["704.WMaxLimPctRvrtTms"]


def test_704_limit_reverts_to_100_pct_without_a_fallback() -> None:
    plan = plan_setpoint(rig_target(PV_1547, revert_s=30), S.MAX_W_PCT, 40)
    assert ("704.WMaxLimPctRvrt", 100.0) in writes(plan)


def test_123_limit_sends_value_then_timer_then_enable() -> None:
    plan = plan_setpoint(rig_target(PV_LEGACY, revert_s=60), S.MAX_W_PCT, 40)
    requests = group_writes(only_step(plan))
    assert [(r.label, r.registers) for r in requests] == [
        ("123.WMaxLimPct", (400,)),
        ("123.WMaxLimPct_RvrtTms", (60,)),
        ("123.WMaxLim_Ena", (1,)),
    ]
    assert [w.point for w in plan.refresh] == ["123.WMaxLimPct_RvrtTms"]


@pytest.mark.parametrize(
    ("spec", "name", "expected"),
    [
        (PV_1547, S.MAX_W_PCT, [("704.WMaxLimPctEna", 0)]),
        (PV_LEGACY, S.MAX_W_PCT, [("123.WMaxLim_Ena", 0)]),
        (PV_1547, S.VAR, [("704.VarSetEna", 0)]),
        (PV_LEGACY, S.VAR, [("123.VArPct_Ena", 0)]),
        (PV_1547, S.VOLT_VAR, [("705.Ena", 0)]),
        (PV_LEGACY, S.VOLT_VAR, [("126.ModEna", 0)]),
        (PV_1547, S.FIXED_PF, [("704.PFWInjEna", 0)]),
        (PV_LEGACY, S.FIXED_PF, [("123.OutPFSet_Ena", 0)]),
        (BATTERY, S.STORAGE_W, [("124.StorCtl_Mod", 0), ("124.OutWRte", 0), ("124.InWRte", 0)]),
    ],
)
def test_release_only_disables(
    spec: dict[str, Any], name: SetpointName, expected: list[tuple[str, float]]
) -> None:
    plan = plan_setpoint(rig_target(spec, storage=spec is BATTERY, revert_s=30), name, None)
    assert writes(plan) == expected
    assert plan.refresh == ()


def test_no_revert_timers_when_revert_s_is_0() -> None:
    for spec in (PV_1547, PV_LEGACY):
        plan = plan_setpoint(rig_target(spec), S.MAX_W_PCT, 40)
        assert not any("Rvrt" in point for point, _ in writes(plan))
        assert plan.refresh == ()


# --- values the device cannot take: refused before anything is written -----------------------


BAD_CURVE = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -400.0)))
LONG_CURVE = VoltVarCurve(((0.9, 44.0), (0.95, 20.0), (1.0, 0.0), (1.05, -20.0), (1.1, -44.0)))


@pytest.mark.parametrize(
    ("target_of", "name", "value", "point", "reason"),
    [
        (lambda: rig_target(PV_1547), S.MAX_W_PCT, -5.0, "704.WMaxLimPct", "range for uint16"),
        (
            lambda: rig_target(PV_LEGACY, revert_s=70000),
            S.MAX_W_PCT,
            40.0,
            "123.WMaxLimPct_RvrtTms",
            "out of range for uint16",
        ),
        (
            lambda: rig_target(PV_1547),
            S.VOLT_VAR,
            BAD_CURVE,
            "705.Crv[1].Pt[3].Var",
            "out of range for int16",
        ),
        (
            lambda: rig_target(BATTERY, storage=True),
            S.STORAGE_W,
            6000.0,
            "124.OutWRte",
            "discharging 6000 W is above the device's rating of 5000 W",
        ),
        (
            lambda: rig_target(BATTERY, storage=True),
            S.STORAGE_W,
            -4500.0,
            "124.InWRte",
            "charging 4500 W is above the device's rating of 4000 W",
        ),
        (
            lambda: rig_target(PV_LEGACY),
            S.VOLT_VAR,
            LONG_CURVE,
            "126.NPt",
            "the curve has 5 points; the device takes at most 4",
        ),
    ],
)
def test_refused_values_produce_no_plan(
    target_of: Callable[[], ControlTarget],
    name: SetpointName,
    value: SetpointValue,
    point: str,
    reason: str,
) -> None:
    error = refused(target_of(), name, value)
    assert error.point == point
    assert reason in error.reason


def test_wrong_value_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="max_w_pct takes a number"):
        plan_setpoint(rig_target(PV_1547), S.MAX_W_PCT, FixedPf(0.9, "inject"))
    with pytest.raises(TypeError, match="volt_var takes a VoltVarCurve"):
        plan_setpoint(rig_target(PV_1547), S.VOLT_VAR, 1.0)


# --- VAR ---------------------------------------------------------------------------------------


def test_704_var_in_vars_mode() -> None:
    plan = plan_setpoint(rig_target(PV_1547, revert_s=20), S.VAR, -1500.0)
    assert writes(plan) == [
        ("704.VarSet", -1500.0),
        ("704.VarSetMod", 4),
        ("704.VarSetRvrt", 0.0),
        ("704.VarSetEnaRvrt", 1),
        ("704.VarSetRvrtTms", 20),
        ("704.VarSetEna", 1),
    ]
    # VarSet and its reversion value go first, then mode and enable, then the timer
    labels = [r.label for r in group_writes(only_step(plan))]
    assert labels == [
        "704.VarSet..VarSetRvrt",
        "704.VarSetEna..VarSetMod",
        "704.VarSetEnaRvrt..VarSetRvrtTms",
    ]


def test_704_var_in_pct_of_vamax_when_varset_is_not_implemented() -> None:
    t = with_values(rig_target(PV_1547), 704, {"VarSet": None})
    assert writes(plan_setpoint(t, S.VAR, 3000.0)) == [
        ("704.VarSetPct", 25.0),  # of 702 VAMax 12000
        ("704.VarSetMod", 3),
        ("704.VarSetEna", 1),
    ]


def test_123_var_in_pct_of_varmax() -> None:
    plan = plan_setpoint(rig_target(PV_LEGACY, revert_s=20), S.VAR, -1320.0)
    assert writes(plan) == [
        ("123.VArMaxPct", -50.0),  # of 121 VArMaxQ1 2640
        ("123.VArPct_Mod", 2),
        ("123.VArPct_RvrtTms", 20),
        ("123.VArPct_Ena", 1),
    ]


# --- VOLT_VAR ----------------------------------------------------------------------------------


def test_705_stages_curve_2_adopts_it_then_enables() -> None:
    curve = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)), 1.01, 10.0)
    plan = plan_setpoint(rig_target(PV_1547, revert_s=30), S.VOLT_VAR, curve)
    staged, adopt, enable = plan.steps
    assert isinstance(adopt, AwaitAdoption)
    assert not isinstance(staged, AwaitAdoption) and not isinstance(enable, AwaitAdoption)
    assert [(w.point, w.value) for w in staged] == [
        ("705.Crv[1].ActPt", 4),
        ("705.Crv[1].DeptRef", 3),  # %VAMax: q is % of nameplate VA
        ("705.Crv[1].VRef", 101.0),
        ("705.Crv[1].VRefAutoEna", 0),
        ("705.Crv[1].RspTms", 10.0),
        *[
            (f"705.Crv[1].Pt[{k}].{x}", pytest.approx(value))
            for k, (v, q) in enumerate(curve.points)
            for x, value in (("V", v * 100), ("Var", q))
        ],
        ("705.AdptCrvReq", 2),
    ]
    assert not staged[-1].verify  # a device may clear the request once acted on
    assert adopt.curve == 2
    assert [w.path for w in adopt.active] == [
        w.path.replace("Crv[1]", "Crv[0]") for w in staged[:-1]
    ]
    assert [(w.point, w.value) for w in enable] == [("705.RvrtTms", 30), ("705.Ena", 1)]
    assert [w.point for w in plan.refresh] == ["705.RvrtTms"]


def test_705_on_pysunspec2_device_skips_what_it_does_not_implement() -> None:
    # Its curves have VRef (V_SF -2) but no RspTms_SF and no VRefAutoEna.
    plan = plan_setpoint(device_1547_target(), S.VOLT_VAR, CATEGORY_CURVES["cat_b"])
    staged = plan.steps[0]
    assert not isinstance(staged, AwaitAdoption)
    points = [w.point for w in staged]
    assert points[:3] == ["705.Crv[1].ActPt", "705.Crv[1].DeptRef", "705.Crv[1].VRef"]
    assert "705.Crv[1].RspTms" not in points and "705.Crv[1].VRefAutoEna" not in points
    assert staged[3].registers == (9200,)  # Pt[0].V 92 % with V_SF -2


def test_705_without_vref_folds_the_reference_into_the_points() -> None:
    t = with_values(rig_target(PV_1547), 705, {"Crv[1].VRef": None})
    curve = VoltVarCurve(((0.92, 44.0), (1.08, -44.0)), v_ref_pu=1.02)
    values = dict(writes(plan_setpoint(t, S.VOLT_VAR, curve)))
    assert "705.Crv[1].VRef" not in values
    assert values["705.Crv[1].Pt[0].V"] == pytest.approx(94.0)
    assert values["705.Crv[1].Pt[1].V"] == pytest.approx(110.0)


def test_705_skips_read_only_curves() -> None:
    t = with_values(rig_target(PV_1547), 705, {"Crv[1].ReadOnly": 1})
    plan = plan_setpoint(t, S.VOLT_VAR, CATEGORY_CURVES["cat_b"])
    assert writes(plan)[0] == ("705.Crv[2].ActPt", 4)
    assert ("705.AdptCrvReq", 3) in writes(plan)
    assert supported(with_values(t, 705, {"Crv[2].ReadOnly": 1})) == {
        S.MAX_W_PCT,
        S.VAR,
        S.FIXED_PF,
    }


def test_126_writes_the_last_writable_curve_in_pct_of_vref_and_varmax() -> None:
    t = rig_target({**PV_LEGACY, "vv_curves": 3}, revert_s=45)
    curve = VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -22.0)), 1.02, 5.0)
    plan = plan_setpoint(t, S.VOLT_VAR, curve)
    expected: list[tuple[str, Any]] = [("126.curve[2].ActPt", 4), ("126.curve[2].DeptRef", 2)]
    for k, (v_pu, q_pct) in enumerate(curve.points, start=1):
        expected.append((f"126.curve[2].V{k}", pytest.approx((v_pu + 0.02) * 100)))
        expected.append((f"126.curve[2].VAr{k}", pytest.approx(q_pct * 6000 / 2640)))
    expected += [("126.ActCrv", 3), ("126.RvrtTms", 45), ("126.ModEna", 1)]
    assert writes(plan) == expected
    # the curve first, then the selection and enable, then the timer
    assert [r.label for r in group_writes(only_step(plan))] == [
        "126.curve[2].ActPt..curve[2].VAr4",
        "126.ActCrv..ModEna",
        "126.RvrtTms",
    ]


def test_126_writes_the_curve_response_time_when_implemented() -> None:
    t = with_values(rig_target(PV_LEGACY), 126, {"curve[1].RmpTms": 0})
    plan = plan_setpoint(t, S.VOLT_VAR, CATEGORY_CURVES["cat_a"])  # response time 10 s
    assert dict(writes(plan))["126.curve[1].RmpTms"] == pytest.approx(13.01, abs=0.01)


def test_126_without_varmax_uses_pct_of_wmax() -> None:
    t = rig_target(PV_LEGACY)
    for model_id, point in ((121, "VArMaxQ1"), (120, "VArRtgQ1")):
        t = with_values(t, model_id, {point: None})
    values = dict(writes(plan_setpoint(t, S.VOLT_VAR, CATEGORY_CURVES["cat_b"])))
    assert values["126.curve[1].DeptRef"] == 1
    assert values["126.curve[1].VAr1"] == pytest.approx(44.0 * 6000 / 5000)


def test_126_skips_read_only_curves() -> None:
    t = with_values(rig_target(PV_LEGACY), 126, {"curve[1].ReadOnly": 1})
    values = dict(writes(plan_setpoint(t, S.VOLT_VAR, CATEGORY_CURVES["cat_b"])))
    assert values["126.ActCrv"] == 1
    assert "126.curve[0].ActPt" in values


# --- FIXED_PF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("excitation", "ext"), [("inject", 0), ("absorb", 1)])
def test_704_pf_sets_excitation_and_on_storage_also_pfwabs(excitation: str, ext: int) -> None:
    t = rig_target(PV_1547, storage=True, revert_s=15)
    plan = plan_setpoint(t, S.FIXED_PF, FixedPf(0.9, excitation))  # type: ignore[arg-type]
    values = dict(writes(plan))
    for group in ("PFWInj", "PFWAbs"):
        assert values[f"704.{group}.PF"] == 0.9
        assert values[f"704.{group}.Ext"] == ext
        assert values[f"704.{group}Ena"] == 1
        assert values[f"704.{group}Rvrt.PF"] == 1.0
        assert values[f"704.{group}EnaRvrt"] == 1
    assert [w.point for w in plan.refresh] == ["704.PFWInjRvrtTms", "704.PFWAbsRvrtTms"]
    # the PF values (one run at the end of the model) go before the enables
    labels = [r.label for r in group_writes(only_step(plan))]
    assert labels[0] == "704.PFWInj.PF..PFWAbsRvrt.Ext"


def test_704_pf_without_storage_leaves_pfwabs_alone() -> None:
    plan = plan_setpoint(rig_target(PV_1547), S.FIXED_PF, FixedPf(0.95, "inject"))
    assert writes(plan) == [("704.PFWInj.PF", 0.95), ("704.PFWInj.Ext", 0), ("704.PFWInjEna", 1)]


@pytest.mark.parametrize(("excitation", "outpfset"), [("inject", 0.95), ("absorb", -0.95)])
def test_123_pf_is_signed_positive_when_injecting(excitation: str, outpfset: float) -> None:
    plan = plan_setpoint(rig_target(PV_LEGACY), S.FIXED_PF, FixedPf(0.95, excitation))  # type: ignore[arg-type]
    assert writes(plan) == [("123.OutPFSet", outpfset), ("123.OutPFSet_Ena", 1)]


# --- STORAGE_W ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "out_pct", "in_pct", "mode"),
    [(2500.0, 50.0, 0.0, 2), (-2000.0, 0.0, 50.0, 1), (0.0, 0.0, 0.0, 3)],
)
def test_124_storage_w_as_rates_and_mode(
    w: float, out_pct: float, in_pct: float, mode: int
) -> None:
    plan = plan_setpoint(rig_target(BATTERY, storage=True, revert_s=10), S.STORAGE_W, w)
    assert writes(plan) == [
        ("124.OutWRte", out_pct),  # of 802 WDisChaRteMax 5000
        ("124.InWRte", in_pct),  # of 124 WChaMax 4000
        ("124.InOutWRte_RvrtTms", 10),
        ("124.StorCtl_Mod", mode),
    ]


def test_704_storage_w_in_watts_checked_against_the_ratings() -> None:
    t = with_values(rig_target(PV_1547, storage=True), 702, {"WDisChaRteMax": 8000})
    plan = plan_setpoint(t, S.STORAGE_W, -3000.0)
    assert writes(plan) == [("704.WSet", -3000.0), ("704.WSetMod", 1), ("704.WSetEna", 1)]
    assert refused(t, S.STORAGE_W, 9000.0).point == "704.WSet"


# --- heartbeat, adoption, grouping -------------------------------------------------------------


def test_heartbeat_counts_up_and_wraps_before_the_not_implemented_value() -> None:
    t = rig_target(PV_1547)
    beat = plan_heartbeat(t)
    assert beat is not None and (beat.point, beat.value) == ("715.ControllerHb", 1)
    last = plan_heartbeat(with_values(t, 715, {"ControllerHb": 0xFFFF_FFFE}))
    assert last is not None and last.value == 0
    assert plan_heartbeat(rig_target(PV_LEGACY)) is None


def test_adoption_done_needs_completed_and_the_active_curve() -> None:
    t = rig_target(PV_1547)
    plan = plan_setpoint(t, S.VOLT_VAR, CATEGORY_CURVES["cat_a"])
    step = plan.steps[1]
    assert isinstance(step, AwaitAdoption)
    registers = [0] * (t.layouts[705].length + 2)
    for write in step.active:
        registers[write.offset : write.offset + len(write.registers)] = write.registers
    assert adoption_done("dev", step, registers, {"AdptCrvRslt": 1})
    assert not adoption_done("dev", step, registers, {"AdptCrvRslt": 0})
    assert not adoption_done("dev", step, [0] * len(registers), {"AdptCrvRslt": 1})  # stale
    with pytest.raises(ControlRefused) as err:
        adoption_done("dev", step, registers, {"AdptCrvRslt": 2})
    assert err.value.point == "705.AdptCrvRslt"


def point(offset: int, size: int = 1, model_id: int = 704) -> PointWrite:
    return PointWrite(model_id, f"P{offset}", offset, offset, tuple(range(offset, offset + size)))


def test_group_writes_merges_only_touching_points_of_one_model() -> None:
    requests = group_writes([point(10), point(5, 2), point(7), point(9, model_id=123)])
    assert [(r.model_id, r.offset, r.registers) for r in requests] == [
        (704, 10, (10,)),
        (704, 5, (5, 6, 7)),
        (123, 9, (9,)),
    ]


def test_group_writes_splits_at_the_request_limit() -> None:
    requests = group_writes([point(o) for o in range(2, 10)], max_count=3)
    assert [r.registers for r in requests] == [(2, 3, 4), (5, 6, 7), (8, 9)]


def test_group_writes_refuses_overlapping_points() -> None:
    with pytest.raises(ValueError, match="overlap"):
        group_writes([point(5, 2), point(6)])


def test_differing_ignores_unverified_writes() -> None:
    checked, trigger = point(2), dataclasses.replace(point(3), verify=False)
    assert differing([checked, trigger], [0, 0, 2, 0]) == []
    assert differing([checked, trigger], [0, 0, 9, 3]) == [checked]
