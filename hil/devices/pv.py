"""What both PV inverters share: ratings, PV physics from the spec, AC quantities and snapshots."""

from __future__ import annotations

import dataclasses
import math

from hil.devices.base import DeviceState, PhysicsDevice, make_grid, make_profile
from hil.devices.models import scale_factor
from hil.opender_physics import OpenDerPvPhysics, VoltVarPu, pv_physics
from hil.physics import PvControls, PvPhysics, PvRatings, SimClock
from hil.spec import Pv1547Spec, PvLegacySpec

# Cat B volt-var curve (IEEE 1547-2018): V in % of VRef, var in % of VArMax
CAT_B_VOLT_VAR = ((92.0, 44.0), (98.0, 0.0), (102.0, 0.0), (108.0, -44.0))


class PvInverter(PhysicsDevice):
    """A PV inverter of either model family: PV physics, scale factors, AC quantities."""

    spec: PvLegacySpec | Pv1547Spec
    physics: PvPhysics

    def __init__(self, spec: PvLegacySpec | Pv1547Spec, clock: SimClock) -> None:
        va = spec.va_rtg or spec.w_rtg
        self.ratings = PvRatings(spec.w_rtg, va, spec.var_rtg or 0.44 * va)
        self.physics = pv_physics(
            spec.dynamics,
            self.ratings,
            make_profile(spec.profile, spec.w_rtg),
            make_grid(spec.grid),
            tau_s=spec.tau_s,
            t0=clock.now(),
        )
        self.w_sf = scale_factor(max(va, self.ratings.var_rtg) * 1.2, 0)
        self.a_sf = scale_factor(va / spec.grid.v_nom * 1.2, -2, signed=False)
        super().__init__(spec, clock)

    def _reset_controls(self) -> None:
        self.physics.controls = PvControls(w_max=self.ratings.w_rtg)
        if isinstance(self.physics, OpenDerPvPhysics):
            self.physics.power_on()

    def _set_volt_var(self, curve: VoltVarPu | None) -> None:
        """Put a volt-var curve (or none) in force, in both dynamics' terms; a curve without
        points (ActPt 0) is none."""
        if curve is not None and not curve.points:
            curve = None
        p = self.physics
        p.controls.volt_var = (
            None if curve is None else curve.absolute(p.grid.v_nom, self.ratings.va_rtg)
        )
        if isinstance(p, OpenDerPvPhysics):
            p.volt_var_pu = curve

    def _ac(self) -> dict[str, float]:
        """AC quantities now: VA, PF (signed by var), current per phase."""
        p = self.physics
        va = math.hypot(p.w, p.var)
        pf = math.copysign(p.w / va, p.var) if va > 0 else 1.0
        return {"va": va, "pf": pf, "a_phase": va / (self.phases * p.v)}

    def snapshot(self) -> DeviceState:
        self.refresh()
        p, c = self.physics, self.physics.controls
        return dataclasses.replace(
            self._state(var=p.var, state=p.state.name, connected=c.connected, wh_absorbed=0.0),
            available_w=p.available_w,
            w_lim_pct=c.w_lim_pct,
            pf=c.pf,
            var_set=c.var_set,
            w_set=c.w_set,
        )
