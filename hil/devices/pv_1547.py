"""The IEEE 1547 PV inverter speaking SunSpec models 1, 701-705, 712 and 715 (and 706 with
OpenDER dynamics)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hil.devices.base import DeviceState
from hil.devices.curves import curve_reversion, stored_curve
from hil.devices.models import ENABLED, as_float, line_voltage, model, nameplate, scale_factor
from hil.devices.pv import CAT_B_VOLT_VAR, PvInverter
from hil.devices.revert import RevertRule, copied
from hil.devices.volt_watt import CAT_B_VOLT_WATT, VOLT_WATT_OLRT_S, active_volt_watt
from hil.image import PointChange, SunSpecImage, Value
from hil.opender_physics import EnterService, OpenDerPvPhysics, VoltVarPu
from hil.physics import PvState, SimClock
from hil.spec import Pv1547Spec

# 701 InvSt for each PV operating state
_INVST_701 = {PvState.OFF: 0, PvState.SLEEPING: 1, PvState.MPPT: 3, PvState.THROTTLED: 4}
# Cat B watt-var curve, generation side: W in % of WMax, var in % of VArMax
_CAT_B_WATT_VAR = ((20.0, 0.0), (50.0, 0.0), (100.0, -44.0))
# per curve model: (x, y) point names, IEEE 1547 Cat B points, scale factors, and the values
# every curve starts with
_CURVE_MODELS: dict[
    int,
    tuple[
        tuple[str, str], tuple[tuple[float, float], ...], Mapping[str, Value], Mapping[str, Value]
    ],
] = {
    705: (
        ("V", "Var"),
        CAT_B_VOLT_VAR,
        {"V_SF": -2, "RspTms_SF": 0},
        {
            "DeptRef": 1,
            "Pri": 1,
            "VRef": 100,
            "VRefAuto": 100,
            "VRefAutoEna": 0,
            "VRefAutoTms": 0,
            "RspTms": 5,
        },
    ),
    706: (  # DeptRef W_MAX_PCT
        ("V", "W"),
        CAT_B_VOLT_WATT,
        {"V_SF": -2, "RspTms_SF": 0},
        {"DeptRef": 0, "RspTms": VOLT_WATT_OLRT_S},
    ),
    712: (("W", "Var"), _CAT_B_WATT_VAR, {"W_SF": 0}, {"DeptRef": 1, "Pri": 1}),
}
# 704 controls and the points that take their reversion values when the control's RvrtTms
# expires (besides <control>Ena <- <control>EnaRvrt)
_REVERSION_704 = {
    "PFWInj": {"PFWInj.PF": "PFWInjRvrt.PF", "PFWInj.Ext": "PFWInjRvrt.Ext"},
    "PFWAbs": {"PFWAbs.PF": "PFWAbsRvrt.PF", "PFWAbs.Ext": "PFWAbsRvrt.Ext"},
    "WMaxLimPct": {"WMaxLimPct": "WMaxLimPctRvrt"},
    "WSet": {"WSet": "WSetRvrt", "WSetPct": "WSetPctRvrt"},
    "VarSet": {"VarSet": "VarSetRvrt", "VarSetPct": "VarSetPctRvrt"},
}


class Pv1547Inverter(PvInverter):
    """IEEE 1547 PV inverter speaking SunSpec models 1, 701-705, 712, 715."""

    kind = "pv_1547"
    spec: Pv1547Spec

    def __init__(self, spec: Pv1547Spec, clock: SimClock) -> None:
        self.controller_hb_t: float | None = None  # simulated time of the last ControllerHb write
        self._volt_watt = spec.dynamics == "opender"
        """Model 706 (volt-watt) is served only where OpenDER carries it out."""
        super().__init__(spec, clock)

    def _reset_controls(self) -> None:
        super()._reset_controls()
        self.controller_hb_t = None

    def _revert_rules(self) -> tuple[RevertRule, ...]:
        """704 <control>RvrtTms: the control takes its reversion values; 705 RvrtTms: the
        volt-var curve reverts to RvrtCrv (any write to 705 restarts that timer)."""
        rules = [
            RevertRule(
                704,
                (ctl,),
                f"{ctl}RvrtTms",
                f"{ctl}Ena",
                copied(704, {f"{ctl}Ena": f"{ctl}EnaRvrt", **points}),
                rem=f"{ctl}RvrtRem",
            )
            for ctl, points in _REVERSION_704.items()
        ]
        for curve_model in (705, 706) if self._volt_watt else (705,):
            fallback = curve_reversion(curve_model)
            rules.append(RevertRule(curve_model, ("",), "RvrtTms", "Ena", fallback, rem="RvrtRem"))
        return tuple(rules)

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        n_crv = s.vv_curves
        curve_ids = (705, 706, 712) if self._volt_watt else (705, 712)
        curve_models = [model(m, NCrv=n_crv, NPt=len(_CURVE_MODELS[m][1])) for m in curve_ids]
        image = SunSpecImage(
            [
                model(1),
                model(701),
                model(702),
                model(703),
                model(704),
                *curve_models,
                model(715),
            ],
            s.base,
        )
        v_nom, hz_nom, w_sf = s.grid.v_nom, s.grid.hz_nom, self.w_sf
        a_max = r.va_rtg / v_nom / self.phases
        image.update(1, nameplate(s))
        image.update(
            701,
            {
                "A_SF": self.a_sf,
                "V_SF": -1,
                "Hz_SF": -3,
                "W_SF": w_sf,
                "PF_SF": -3,
                "VA_SF": w_sf,
                "Var_SF": w_sf,
                "TotWh_SF": 0,
                "Tmp_SF": -1,
                "ACType": 1 if s.grid.split_phase else 2,
                "Alrm": 0,
                "DERMode": 1,
                "TotWhAbs": 0,
                "ThrotSrc": 0,
            },
        )
        image.update(
            702,
            {
                "W_SF": scale_factor(r.w_rtg * 1.1, 0, signed=False),
                "PF_SF": -3,
                "VA_SF": scale_factor(r.va_rtg * 1.1, 0, signed=False),
                "Var_SF": scale_factor(r.var_rtg * 1.1, 0, signed=False),
                "V_SF": -1,
                "A_SF": self.a_sf,
                "WMaxRtg": r.w_rtg,
                "WOvrExtRtg": r.w_rtg,
                "WOvrExtRtgPF": 0.9,
                "WUndExtRtg": r.w_rtg,
                "WUndExtRtgPF": 0.9,
                "VAMaxRtg": r.va_rtg,
                "VarMaxInjRtg": r.var_rtg,
                "VarMaxAbsRtg": r.var_rtg,
                "VNomRtg": v_nom,
                "VMaxRtg": 1.1 * v_nom,
                "VMinRtg": 0.88 * v_nom,
                "AMaxRtg": a_max,
                "PFOvrExtRtg": 0.9,
                "PFUndExtRtg": 0.9,
                "NorOpCatRtg": 1,
                "AbnOpCatRtg": 1,
                "CtrlModes": 0b10_0001_1111,
                "IntIslandCatRtg": 1,
                "WMax": r.w_rtg,
                "VAMax": r.va_rtg,
                "VarMaxInj": r.var_rtg,
                "VarMaxAbs": r.var_rtg,
                "VNom": v_nom,
                "VMax": 1.1 * v_nom,
                "VMin": 0.88 * v_nom,
                "AMax": a_max,
            },
        )
        image.update(
            703,
            {
                "V_SF": -1,
                "Hz_SF": -2,
                "ES": 1,
                "ESVHi": 105.0,
                "ESVLo": 91.7,
                "ESHzHi": hz_nom + 0.1,
                "ESHzLo": hz_nom - 0.5,
                "ESDlyTms": 300,
                "ESRndTms": 0,
                "ESRmpTms": 300,
                "ESDlyRemTms": 0,
            },
        )
        controls: dict[str, Value] = {
            "PF_SF": -3,
            "WMaxLimPct_SF": -1,
            "WSet_SF": w_sf,
            "WSetPct_SF": -1,
            "VarSet_SF": w_sf,
            "VarSetPct_SF": -1,
        }
        controls.update(
            (name, 0)
            for name in image.point_names(704)[2:]
            if not name.endswith("_SF") and not name.startswith(("WRmp", "VarRmp"))
        )
        controls.update(
            {
                "WMaxLimPct": 100,
                "WMaxLimPctRvrt": 100,
                "VarSetMod": 1,
                "VarSetPri": 1,
                "AntiIslEna": 1,
                "PFWInj.PF": 1,
                "PFWInjRvrt.PF": 1,
                "PFWAbs.PF": 1,
                "PFWAbs.Ext": 1,
                "PFWAbsRvrt.PF": 1,
                "PFWAbsRvrt.Ext": 1,
            }
        )
        image.update(704, controls)
        for model_id in curve_ids:
            self._curves(image, model_id)
        if self._volt_watt:
            for c in range(1, n_crv + 1):  # OpenDER's volt-watt P is pu of the W rating
                image.bound(706, f"Crv[{c}].DeptRef", 0, 0)
            image.bound(706, "RvrtCrv", 0, n_crv)
        image.update(
            715, {"LocRemCtl": 0, "DERHb": 0, "ControllerHb": 0, "AlarmReset": 0, "OpCtl": 1}
        )
        image.bound(705, "RvrtCrv", 0, n_crv)
        return image

    @staticmethod
    def _curves(image: SunSpecImage, model_id: int) -> None:
        """Fill a 705/706/712 curve model as _CURVE_MODELS says: every curve the same, curve 1
        active and read-only, the others writable."""
        axes, points, sfs, per_curve = _CURVE_MODELS[model_id]
        n_crv = int(as_float(image.get(model_id, "NCrv")))
        values: dict[str, Value] = {**sfs, "DeptRef_SF": -2}
        values.update({"Ena": 0, "AdptCrvReq": 0, "AdptCrvRslt": 1, "RvrtTms": 0, "RvrtRem": 0})
        values["RvrtCrv"] = 0
        x, y = axes
        for c in range(1, n_crv + 1):
            crv = f"Crv[{c}]"
            values[f"{crv}.ActPt"] = len(points)
            values.update({f"{crv}.{name}": value for name, value in per_curve.items()})
            for k, (x_pct, y_pct) in enumerate(points, start=1):
                values[f"{crv}.Pt[{k}].{x}"] = x_pct
                values[f"{crv}.Pt[{k}].{y}"] = y_pct
            values[f"{crv}.ReadOnly"] = 1 if c == 1 else 0
        image.update(model_id, values)

    def _publish(self) -> None:
        p = self.physics
        ac = self._ac()
        n = self.phases
        v_ll = line_voltage(p.v, n)
        phase_share = 1.0 / n
        values: dict[str, Value] = {
            "St": int(p.controls.connected),
            "InvSt": _INVST_701[p.state],
            "ConnSt": int(p.controls.connected),
            "W": p.w,
            "VA": ac["va"],
            "Var": p.var,
            "PF": ac["pf"],
            "A": ac["a_phase"],
            "LLV": v_ll,
            "LNV": p.v,
            "Hz": p.hz,
            "TotWhInj": p.wh_injected,
            "TmpCab": 30.0 + 15.0 * p.w / self.ratings.w_rtg,
            "ThrotPct": 100.0 * p.w_cap() / self.ratings.w_rtg
            if p.state is PvState.THROTTLED
            else 100,
            "ThrotSrc": 1 if p.state is PvState.THROTTLED else 0,
        }
        for k in range(1, n + 1):
            values.update(
                {
                    f"WL{k}": p.w * phase_share,
                    f"VAL{k}": ac["va"] * phase_share,
                    f"VarL{k}": p.var * phase_share,
                    f"PFL{k}": ac["pf"],
                    f"AL{k}": ac["a_phase"],
                    f"VL{k}": p.v,
                }
            )
        values.update({"VL1L2": v_ll, "VL2L3": v_ll if n == 3 else None})
        values["VL3L1"] = v_ll if n == 3 else None
        self.image.update(701, values)
        self.image.set(715, "DERHb", int(p.t))

    def _apply(self, changes: list[PointChange]) -> None:
        for ch in changes:
            if ch.name == "AdptCrvReq" and ch.model_id in (705, 706, 712):
                self._adopt(ch.model_id, int(as_float(ch.value)))
            if (ch.model_id, ch.name) == (715, "ControllerHb"):
                self.controller_hb_t = self.physics.t
        c, get = self.physics.controls, self._value
        c.w_max = get(702, "WMax")
        var_max = get(702, "VarMaxInj")
        # var reference for each VarSetMod / DeptRef: W, var (injected) twice, VA
        var_ref = {0: c.w_max, 1: var_max, 2: var_max, 3: get(702, "VAMax")}
        op = int(get(715, "OpCtl"))
        c.connected = op in (1, 3)  # START, EXIT_STANDBY
        c.w_lim_pct = get(704, "WMaxLimPct") if get(704, "WMaxLimPctEna") == ENABLED else None
        c.w_set = None
        if get(704, "WSetEna") == ENABLED:
            by_mode = get(704, "WSet") if get(704, "WSetMod") == 1 else None
            c.w_set = by_mode if by_mode is not None else get(704, "WSetPct") / 100.0 * c.w_max
        c.pf = None
        if get(704, "PFWInjEna") == ENABLED:
            sign = 1.0 if get(704, "PFWInj.Ext") == 0 else -1.0  # OVER_EXCITED injects var
            c.pf = sign * get(704, "PFWInj.PF")
        c.var_set = None
        if get(704, "VarSetEna") == ENABLED:
            mode = int(get(704, "VarSetMod"))
            if mode == 4:  # VARS
                c.var_set = get(704, "VarSet")
            else:
                c.var_set = get(704, "VarSetPct") / 100.0 * var_ref[mode]
        k = get(702, "VNom") / self.spec.grid.v_nom  # % of VNom -> pu of the grid's nominal
        curve = None
        if get(705, "Ena") == ENABLED:
            ref = var_ref.get(int(get(705, "Crv[1].DeptRef")), var_max) / self.ratings.va_rtg
            curve = VoltVarPu(
                tuple(
                    (
                        get(705, f"Crv[1].Pt[{i}].V") / 100.0 * k,
                        get(705, f"Crv[1].Pt[{i}].Var") / 100.0 * ref,
                    )
                    for i in range(1, int(get(705, "Crv[1].ActPt")) + 1)
                ),
                v_ref=1.0 + (get(705, "Crv[1].VRef") / 100.0 - 1.0) * k,
                olrt_s=get(705, "Crv[1].RspTms"),
            )
        self._set_volt_var(curve)
        if isinstance(self.physics, OpenDerPvPhysics):
            self.physics.enter_service = self._enter_service(k)
            self.physics.volt_watt_pu = active_volt_watt(
                self.image, k, c.w_max / self.ratings.w_rtg
            )

    def _enter_service(self, k: float) -> EnterService:
        """703 as OpenDER's enter-service settings (ESVHi/Lo in % of VNom)."""
        get = self._value
        return EnterService(
            enabled=get(703, "ES") == ENABLED,
            v_low=get(703, "ESVLo") / 100.0 * k,
            v_high=get(703, "ESVHi") / 100.0 * k,
            hz_low=get(703, "ESHzLo"),
            hz_high=get(703, "ESHzHi"),
            delay_s=get(703, "ESDlyTms"),
            random_s=get(703, "ESRndTms"),
            ramp_s=get(703, "ESRmpTms"),
        )

    def _adopt(self, model_id: int, n: int) -> None:
        """AdptCrvReq=n: copy curve n into the active curve 1 if it is valid, then report."""
        if n == 0:
            return
        curve = stored_curve(self.image, model_id, n)
        if curve is not None:
            self.image.update(model_id, curve)
        self.image.set(model_id, "AdptCrvRslt", 2 if curve is None else 1)  # FAILED / COMPLETED

    def snapshot(self) -> DeviceState:
        state = super().snapshot()
        hb_t = self.controller_hb_t
        return dataclasses.replace(
            state, controller_hb_age_s=None if hb_t is None else state.t_s - hb_t
        )
