"""The PV inverter speaking the legacy SunSpec models 1, 103, 120, 121, 123 and 126."""

from __future__ import annotations

import math

from hil.devices.models import ENABLED, inverter_103_ac, inverter_103_fixed, model, nameplate
from hil.devices.pv import CAT_B_VOLT_VAR, PvInverter
from hil.devices.revert import RevertRule, disabling
from hil.image import PointChange, SunSpecImage, Value
from hil.opender_physics import OpenDerPvPhysics, ResponseTimes, VoltVarPu
from hil.physics import PvState
from hil.spec import PvLegacySpec

CAT_B_OLRT_S = 5.0  # IEEE 1547-2018 Cat B volt-var open-loop response time, s
PV_DC_V = 400.0  # MPP voltage of the simulated PV string, V
PV_DC_EFFICIENCY = 0.97
# 103 St for each PV operating state
_ST_103 = {PvState.OFF: 1, PvState.SLEEPING: 2, PvState.MPPT: 4, PvState.THROTTLED: 5}


class PvLegacyInverter(PvInverter):
    """PV inverter speaking the legacy SunSpec models 1, 103, 120, 121, 123, 126."""

    kind = "pv_legacy"
    spec: PvLegacySpec

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        n_curves = s.vv_curves
        image = SunSpecImage(
            [
                model(1),
                model(103),
                model(120),
                model(121),
                model(123),
                model(126, model_len=10 + 54 * n_curves),
            ],
            s.base,
        )
        v_nom, w_sf = s.grid.v_nom, self.w_sf
        image.update(1, nameplate(s))
        image.update(103, inverter_103_fixed(a_sf=self.a_sf, w_sf=w_sf, dca_sf=-2))
        image.update(
            120,
            {
                "WRtg_SF": w_sf,
                "VARtg_SF": w_sf,
                "VArRtg_SF": w_sf,
                "ARtg_SF": self.a_sf,
                "PFRtg_SF": -2,
                "DERTyp": 4,
                "WRtg": r.w_rtg,
                "VARtg": r.va_rtg,
                "VArRtgQ1": r.var_rtg,
                "VArRtgQ2": r.var_rtg,
                "VArRtgQ3": -r.var_rtg,
                "VArRtgQ4": -r.var_rtg,
                "ARtg": r.va_rtg / v_nom / 3,
                "PFRtgQ1": 0.9,
                "PFRtgQ2": 0.9,
                "PFRtgQ3": -0.9,
                "PFRtgQ4": -0.9,
            },
        )
        image.update(
            121,
            {
                "WMax_SF": w_sf,
                "VRef_SF": -1,
                "VRefOfs_SF": -1,
                "VMinMax_SF": -1,
                "VAMax_SF": w_sf,
                "VArMax_SF": w_sf,
                "PFMin_SF": -2,
                "ECPNomHz_SF": -2,
                "WMax": r.w_rtg,
                "VRef": v_nom,
                "VRefOfs": 0,
                "VMax": 1.1 * v_nom,
                "VMin": 0.88 * v_nom,
                "VAMax": r.va_rtg,
                "VArMaxQ1": r.var_rtg,
                "VArMaxQ2": r.var_rtg,
                "VArMaxQ3": -r.var_rtg,
                "VArMaxQ4": -r.var_rtg,
                "PFMinQ1": 0.9,
                "PFMinQ2": 0.9,
                "PFMinQ3": -0.9,
                "PFMinQ4": -0.9,
                "ECPNomHz": s.grid.hz_nom,
            },
        )
        controls: dict[str, Value] = {"WMaxLimPct_SF": -1, "OutPFSet_SF": -3, "VArPct_SF": -1}
        controls.update(dict.fromkeys(image.point_names(123)[2:-3], 0))
        controls.update({"Conn": 1, "WMaxLimPct": 100, "OutPFSet": 1, "VArPct_Mod": 2})
        image.update(123, controls)
        image.update(
            126,
            {
                "V_SF": -1,
                "DeptRef_SF": 0,
                "ActCrv": 1,
                "ModEna": 0,
                "WinTms": 0,
                "RvrtTms": 0,
                "RmpTms": 0,
                "NCrv": n_curves,
                "NPt": len(CAT_B_VOLT_VAR),
            },
        )
        for c in range(1, n_curves + 1):
            curve: dict[str, Value] = {"ActPt": len(CAT_B_VOLT_VAR), "DeptRef": 2, "ReadOnly": 0}
            for k, (v_pct, var_pct) in enumerate(CAT_B_VOLT_VAR, start=1):
                curve[f"V{k}"] = v_pct
                curve[f"VAr{k}"] = var_pct
            image.update(126, {f"curve[{c}].{name}": value for name, value in curve.items()})
        image.bound(126, "ActCrv", 0, n_curves)  # 0: no active curve
        if s.dynamics == "opender":  # OpenDER's volt-var curve has 4 points: NPt is the limit
            for c in range(1, n_curves + 1):
                image.bound(126, f"curve[{c}].ActPt", 0, len(CAT_B_VOLT_VAR))
        return image

    def _revert_rules(self) -> tuple[RevertRule, ...]:
        """123 *_RvrtTms and 126 RvrtTms: the control is disabled when its timer runs out."""
        return (
            disabling(123, "WMaxLim", "WMaxLimPct_RvrtTms", "WMaxLim_Ena"),
            disabling(123, "OutPFSet", "OutPFSet_RvrtTms", "OutPFSet_Ena"),
            disabling(123, "VAr", "VArPct_RvrtTms", "VArPct_Ena"),
            disabling(126, "", "RvrtTms", "ModEna"),  # any point of 126
        )

    def _publish(self) -> None:
        p = self.physics
        ac = self._ac()
        dc_w = max(p.w, 0.0) / PV_DC_EFFICIENCY
        self.image.update(
            103,
            {
                **inverter_103_ac(ac["a_phase"], self.phases, p.v),
                "W": p.w,
                "Hz": p.hz,
                "VA": ac["va"],
                "VAr": p.var,
                "PF": ac["pf"] * 100.0,
                "WH": p.wh_injected,
                "DCA": dc_w / PV_DC_V,
                "DCV": PV_DC_V,
                "DCW": dc_w,
                "TmpCab": 30.0 + 15.0 * p.w / self.ratings.w_rtg,
                "St": _ST_103[p.state],
            },
        )

    def _apply(self, changes: list[PointChange]) -> None:
        if not any(ch.model_id in (121, 123, 126) for ch in changes):
            return
        c, r, get = self.physics.controls, self.ratings, self._value
        c.w_max = get(121, "WMax")
        c.connected = get(123, "Conn") == 1
        c.w_lim_pct = get(123, "WMaxLimPct") if get(123, "WMaxLim_Ena") == ENABLED else None
        c.pf = get(123, "OutPFSet") if get(123, "OutPFSet_Ena") == ENABLED else None
        c.var_set = None
        if get(123, "VArPct_Ena") == ENABLED:
            mode = int(get(123, "VArPct_Mod"))
            pct_and_base = {
                1: ("VArWMaxPct", c.w_max),
                2: ("VArMaxPct", get(121, "VArMaxQ1")),
                3: ("VArAvalPct", r.var_rtg),
            }
            if mode in pct_and_base:
                name, ref = pct_and_base[mode]
                c.var_set = get(123, name) / 100.0 * ref
        curve = None
        active = int(get(126, "ActCrv"))
        if int(get(126, "ModEna")) & 1 and active:
            crv = f"curve[{active}]"
            dept = {1: c.w_max, 2: get(121, "VArMaxQ1"), 3: r.var_rtg}.get(
                int(get(126, f"{crv}.DeptRef")), r.var_rtg
            )
            k = get(121, "VRef") / self.spec.grid.v_nom  # % of VRef -> pu of the grid's nominal
            n = int(get(126, f"{crv}.ActPt"))
            curve = VoltVarPu(
                tuple(
                    (
                        get(126, f"{crv}.V{i}") / 100.0 * k,
                        get(126, f"{crv}.VAr{i}") / 100.0 * dept / r.va_rtg,
                    )
                    for i in range(1, n + 1)
                ),
                olrt_s=legacy_olrt(get(126, f"{crv}.RmpTms"), get(126, "RmpTms")),
            )
        self._set_volt_var(curve)
        if isinstance(self.physics, OpenDerPvPhysics):
            self.physics.response_times = ResponseTimes.written(
                get(123, "WMaxLimPct_RmpTms"),
                get(123, "OutPFSet_RmpTms"),
                get(123, "VArPct_RmpTms"),
            )


def legacy_olrt(curve_rmp_tms: float, model_rmp_tms: float) -> float:
    """Open-loop response time (90 %) for a 126 curve: its RmpTms, else the model's, is a
    first-order (PT1) 95 % time, so 90 % comes ln(10)/ln(20) of it; with neither set, IEEE
    1547-2018's Cat B default 5 s."""
    t95 = curve_rmp_tms or model_rmp_tms
    return t95 * math.log(10.0) / math.log(20.0) if t95 > 0 else CAT_B_OLRT_S
