"""SunSpec 706 (DERVoltWatt) on the IEEE 1547 PV inverter: its IEEE 1547-2018 Cat B power-on
curve, and the active curve 1 as OpenDER's volt-watt settings (served with OpenDER dynamics
only: the simple physics has no volt-watt)."""

from __future__ import annotations

from hil.devices.models import ENABLED, as_float
from hil.image import SunSpecImage
from hil.opender_physics import VoltWattPu

CAT_B_VOLT_WATT = ((106.0, 100.0), (110.0, 20.0))
"""IEEE 1547-2018 default volt-watt curve for generation: V in % of VNom, W in % of WMax."""
VOLT_WATT_OLRT_S = 10.0
"""IEEE 1547-2018 default volt-watt open-loop response time, s."""


def active_volt_watt(image: SunSpecImage, k: float, w_max_pu: float) -> VoltWattPu | None:
    """706's active curve 1 when 706 is enabled, else None. `k` turns % of VNom into pu of
    the grid's nominal; `w_max_pu` is 702 WMax in pu of the W rating (DeptRef is W_MAX_PCT,
    the only reference the device accepts). OpenDER takes two points: a one-point curve
    repeats it, further points are left out (706 here has NPt 2)."""

    def get(name: str) -> float:
        return as_float(image.get(706, name))

    if 706 not in image.model_ids() or get("Ena") != ENABLED:
        return None
    n = max(int(get("Crv[1].ActPt")), 1)
    points = [
        (get(f"Crv[1].Pt[{i}].V") / 100.0 * k, get(f"Crv[1].Pt[{i}].W") / 100.0 * w_max_pu)
        for i in (1, min(n, 2))
    ]
    return VoltWattPu((points[0], points[1]), olrt_s=get("Crv[1].RspTms"))
