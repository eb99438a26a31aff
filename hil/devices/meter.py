"""The site meter speaking SunSpec models 1 and 203 (three-phase wye meter, integer + SF).

Model 203 follows the SunSpec meter convention: W and VAR are positive when the site imports
from the grid; PF (%) takes the sign of W. Phases are balanced: each carries a third of the
power at the grid voltage.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from hil.devices.base import DeviceState, PhysicsDevice, SimulatedDevice, make_grid, make_profile
from hil.devices.evse import EvCharger
from hil.devices.models import line_voltage, model, nameplate, scale_factor
from hil.image import PointChange, SunSpecImage, Value
from hil.physics import IDLE_W, MeterPhysics, SimClock
from hil.spec import MeterSpec

PHASES = ("A", "B", "C")


@runtime_checkable
class PowerSource(Protocol):
    """A rig device that is not a Modbus unit but can be metered (the OPC UA devices)."""

    id: str

    def grid_power(self) -> tuple[float, float]:
        """The (W, var) delivered to the grid now, its physics refreshed to now."""
        ...


def site_power(device: SimulatedDevice | PowerSource) -> tuple[float, float]:
    """The (W, var) a device delivers to the grid now, its physics refreshed to now."""
    if isinstance(device, PhysicsDevice):
        state = device.snapshot()
        return state.w, state.var
    if isinstance(device, EvCharger):
        return device.snapshot().w, 0.0  # the charger draws at unity power factor
    if isinstance(device, PowerSource):
        return device.grid_power()
    raise TypeError(f"{device.id}: a {device.kind} device has no power to meter")


class Meter(PhysicsDevice):
    """A three-phase wye meter at the grid connection of a site: the house load and the rig
    devices behind it (models 1, 203)."""

    kind = "meter"
    spec: MeterSpec
    physics: MeterPhysics

    def __init__(
        self,
        spec: MeterSpec,
        clock: SimClock,
        devices: Mapping[str, SimulatedDevice | PowerSource],
    ) -> None:
        missing = [d for d in spec.site if d not in devices]
        if missing:
            raise ValueError(f"{spec.id}: site devices {missing} are not built")
        self.site = [devices[d] for d in spec.site]
        load = make_profile(spec.load, 0.0)
        with clock.held() as t0:
            self.physics = MeterPhysics(load, make_grid(spec.grid), self._site_power, t0)
        v_max = 1.1 * spec.grid.v_nom
        self.w_sf = scale_factor(3 * v_max * spec.a_max, 0)
        self.a_sf = scale_factor(3 * spec.a_max, -2)
        super().__init__(spec, clock)

    def _site_power(self) -> tuple[float, float]:
        powers = [site_power(device) for device in self.site]
        return sum(w for w, _ in powers), sum(var for _, var in powers)

    def _power_on_image(self) -> SunSpecImage:
        s = self.spec
        image = SunSpecImage([model(1), model(203)], s.base)
        image.update(1, nameplate(s))
        image.update(
            203,
            {
                "A_SF": self.a_sf,
                "V_SF": -1,
                "Hz_SF": -2,
                "W_SF": self.w_sf,
                "VA_SF": self.w_sf,
                "VAR_SF": self.w_sf,
                "PF_SF": -1,
                "TotWh_SF": 0,
                "Evt": 0,
            },
        )
        return image

    def _reset_controls(self) -> None:
        """A meter has no controls; a forced load is the site's, and survives a restart."""

    def _apply(self, changes: list[PointChange]) -> None:
        """Nothing to control: accepted writes (model 1 DA) only change the image."""

    def set_load(self, w: float | None) -> None:
        """Force the house load (W), or None to return to the load profile."""
        self.refresh()
        self.physics.load_set = w

    def _publish(self) -> None:
        p = self.physics
        w, var = -p.w, -p.var  # imported
        va = math.hypot(w, var)
        pf = 100.0 * w / va if va > 0 else 100.0
        a = va / (3 * p.v)
        v_ll = line_voltage(p.v, 3)
        values: dict[str, Value] = {
            "A": 3 * a,
            "PhV": p.v,
            "PPV": v_ll,
            "PhVphAB": v_ll,
            "PhVphBC": v_ll,
            "PhVphCA": v_ll,
            "Hz": p.hz,
            "W": w,
            "VA": va,
            "VAR": var,
            "PF": pf,
            "TotWhExp": p.wh_injected,
            "TotWhImp": p.wh_absorbed,
        }
        for ph in PHASES:
            values.update(
                {
                    f"Aph{ph}": a,
                    f"PhVph{ph}": p.v,
                    f"Wph{ph}": w / 3,
                    f"VAph{ph}": va / 3,
                    f"VARph{ph}": var / 3,
                    f"PFph{ph}": pf,
                }
            )
        self.image.update(203, values)

    def snapshot(self) -> DeviceState:
        self.refresh()
        p = self.physics
        state = "EXPORT" if p.w > IDLE_W else "IMPORT" if p.w < -IDLE_W else "IDLE"
        return dataclasses.replace(
            self._state(var=p.var, state=state, connected=True, wh_absorbed=p.wh_absorbed),
            load_w=p.load_w,
        )
