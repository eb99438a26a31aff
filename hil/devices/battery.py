"""The battery inverter speaking SunSpec models 1, 103, 124, 713 and 802."""

from __future__ import annotations

import dataclasses

from hil.devices.base import DeviceState, PhysicsDevice, make_battery_physics
from hil.devices.models import inverter_103_ac, inverter_103_fixed, model, nameplate, scale_factor
from hil.devices.revert import RevertRule, fixed
from hil.image import PointChange, SunSpecImage
from hil.opender_physics import OpenDerBatteryPhysics
from hil.physics import BatteryControls, BatteryPhysics, ChargeState, SimClock
from hil.spec import BatterySpec


class BatteryInverter(PhysicsDevice):
    """Battery inverter speaking SunSpec models 1, 103, 124, 713, 802."""

    kind = "battery"
    spec: BatterySpec
    physics: BatteryPhysics

    def __init__(self, spec: BatterySpec, clock: SimClock) -> None:
        self.physics = make_battery_physics(
            spec, spec.va_rtg or max(spec.w_cha_max, spec.w_discha_max), clock.now()
        )
        self.ratings = self.physics.ratings
        w_max = max(spec.w_cha_max, spec.w_discha_max, self.ratings.va_rtg)
        self.w_sf = scale_factor(w_max * 1.2, 0)
        self.wh_sf = scale_factor(spec.wh_rtg, 0, signed=False)
        self.frozen_soc_pct: float | None = None
        """A BMS that stopped updating: the SoC points keep this value (None: they follow)."""
        super().__init__(spec, clock)

    def freeze_soc(self) -> None:
        """The BMS stops updating: the SoC the device reports stays where it is now, while the
        battery charges or discharges on."""
        self.refresh()
        self.frozen_soc_pct = min(max(self.physics.soc_pct, 0.0), 100.0)

    def clear_faults(self) -> None:
        """Answer normally again, with a SoC that follows the battery."""
        super().clear_faults()
        self.frozen_soc_pct = None

    def _reset_controls(self) -> None:
        self.physics.controls = BatteryControls()
        if isinstance(self.physics, OpenDerBatteryPhysics):
            self.physics.power_on()

    def _revert_rules(self) -> tuple[RevertRule, ...]:
        """124 InOutWRte_RvrtTms: charge/discharge rate and mode fall back to idle."""
        return (
            RevertRule(
                124,
                ("StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte"),
                "InOutWRte_RvrtTms",
                "StorCtl_Mod",
                fixed({"StorCtl_Mod": 0, "InWRte": 0, "OutWRte": 0}),
                enable_mask=0b11,  # CHARGE, DISCHARGE
            ),
        )

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        image = SunSpecImage([model(1), model(103), model(124), model(713), model(802)], s.base)
        w_sf = self.w_sf
        a_dc_max = max(s.w_cha_max, s.w_discha_max) / s.v_bat
        image.update(1, nameplate(s))
        a_sf = scale_factor(r.va_rtg / s.grid.v_nom * 1.2, -2, signed=False)
        image.update(103, inverter_103_fixed(a_sf=a_sf, w_sf=w_sf, dca_sf=-1))
        image.update(
            124,
            {
                "WChaMax_SF": w_sf,
                "WChaDisChaGra_SF": 0,
                "MinRsvPct_SF": -1,
                "ChaState_SF": -1,
                "StorAval_SF": -1,
                "InBatV_SF": -1,
                "InOutWRte_SF": -1,
                "WChaMax": s.w_cha_max,
                "WChaGra": 100,
                "WDisChaGra": 100,
                "StorCtl_Mod": 0,
                "MinRsvPct": s.soc_min_pct,
                "InBatV": s.v_bat,
                "OutWRte": 0,
                "InWRte": 0,
                "InOutWRte_WinTms": 0,
                "InOutWRte_RvrtTms": 0,
                "InOutWRte_RmpTms": 0,
                "ChaGriSet": 1,
            },
        )
        image.update(
            713, {"WH_SF": self.wh_sf, "Pct_SF": -1, "WHRtg": s.wh_rtg, "SoH": 100, "Sta": 0}
        )
        image.update(
            802,
            {
                "AHRtg_SF": scale_factor(s.wh_rtg / s.v_bat, -1, signed=False),
                "WHRtg_SF": self.wh_sf,
                "WChaDisChaMax_SF": scale_factor(a_dc_max * s.v_bat, 0, signed=False),
                "SoC_SF": -1,
                "DoD_SF": -1,
                "SoH_SF": -1,
                "V_SF": -1,
                "CellV_SF": -3,
                "A_SF": -1,
                "AMax_SF": -1,
                "W_SF": w_sf,
                "AHRtg": s.wh_rtg / s.v_bat,
                "WHRtg": s.wh_rtg,
                "WChaRteMax": s.w_cha_max,
                "WDisChaRteMax": s.w_discha_max,
                "SoCMax": s.soc_max_pct,
                "SoCMin": s.soc_min_pct,
                "SocRsvMax": s.soc_max_pct,
                "SoCRsvMin": s.soc_min_pct,
                "SoH": 100,
                "NCyc": 0,
                "LocRemCtl": 0,
                "Hb": 0,
                "CtrlHb": 0,
                "AlmRst": 0,
                "Typ": 4,
                "Evt1": 0,
                "Evt2": 0,
                "EvtVnd1": 0,
                "EvtVnd2": 0,
                "V": s.v_bat,
                "AChaMax": a_dc_max,
                "ADisChaMax": a_dc_max,
                "SetOp": 1,
                "SetInvState": 3,
            },
        )
        return image

    def _publish(self) -> None:
        p, s = self.physics, self.spec
        a = abs(p.w) / (self.phases * p.v)
        soc = min(max(p.soc_pct, 0.0), 100.0)
        if self.frozen_soc_pct is not None:
            soc = self.frozen_soc_pct
        low, _ = p.soc_limits()
        blocked = p.blocked()
        st = 1 if not p.controls.connected else 5 if blocked else 4 if abs(p.w) > 0.5 else 8
        self.image.update(
            103,
            {
                **inverter_103_ac(a, self.phases, p.v),
                "W": p.w,
                "Hz": p.hz,
                "VA": abs(p.w),
                "VAr": 0,
                "PF": 100,
                "WH": p.wh_injected,
                "DCA": abs(p.w) / s.v_bat,
                "DCV": s.v_bat,
                "DCW": p.w,
                "TmpCab": 25.0 + 10.0 * abs(p.w) / self.ratings.va_rtg,
                "St": st,
            },
        )
        avail_ah = p.wh_available / s.v_bat
        self.image.update(
            124, {"ChaState": soc, "StorAval": avail_ah, "ChaSt": int(p.charge_state)}
        )
        self.image.update(713, {"WHAvail": p.wh_available, "SoC": soc})
        state = 1 if not p.controls.connected else 5 if blocked or soc <= low else 3
        self.image.update(
            802,
            {
                "SoC": soc,
                "DoD": 100.0 - soc,
                "ChaSt": int(p.charge_state),
                "Hb": int(p.t) % 0xFFFF,
                "State": state,
                "A": p.w / s.v_bat,
                "W": p.w,
                "CellVMax": 3.30 + 0.0015 * soc,
                "CellVMin": 3.28 + 0.0015 * soc,
                "CellVAvg": 3.29 + 0.0015 * soc,
            },
        )

    def _apply(self, changes: list[PointChange]) -> None:
        if not any(ch.model_id in (124, 802) for ch in changes):
            return
        c, r, get = self.physics.controls, self.ratings, self._value
        c.w_cha_max = get(124, "WChaMax")
        mode = int(get(124, "StorCtl_Mod"))
        charge = get(124, "InWRte") / 100.0 * c.w_cha_max if mode & 1 else 0.0
        discharge = get(124, "OutWRte") / 100.0 * r.w_discha_max if mode & 2 else 0.0
        c.w_set = discharge - charge
        c.soc_rsv_min_pct = max(get(802, "SoCRsvMin"), get(124, "MinRsvPct"))
        c.soc_rsv_max_pct = get(802, "SocRsvMax")
        c.connected = get(802, "SetOp") == 1  # CONNECT
        if isinstance(self.physics, OpenDerBatteryPhysics):
            self.physics.ramp_s = get(124, "InOutWRte_RmpTms")

    def snapshot(self) -> DeviceState:
        self.refresh()
        p, c = self.physics, self.physics.controls
        return dataclasses.replace(
            self._state(
                var=0.0,
                state=ChargeState(p.charge_state).name,
                connected=c.connected,
                wh_absorbed=p.wh_absorbed,
            ),
            soc_pct=p.soc_pct,
            w_set=c.w_set,
        )
