"""Curves of the IEEE 1547 curve models (705 volt-var, 706 volt-watt, 712 watt-var): which
stored curve may become the active curve 1, by adoption (AdptCrvReq) or by reversion
(RvrtCrv)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hil.devices.models import as_float
from hil.image import SunSpecImage, Value


def stored_curve(image: SunSpecImage, model_id: int, n: int) -> dict[str, Value] | None:
    """Curve n of a 705/706/712 model as values for the active curve 1, or None unless n is a
    stored curve (2..NCrv) with 1..NPt points whose x (V or W) never decreases: IEEE 1547
    Cat A volt-var has V2 = V3 = VRef."""

    def get(name: str) -> float:
        return as_float(image.get(model_id, name))

    if not 2 <= n <= get("NCrv"):
        return None
    act_pt = int(get(f"Crv[{n}].ActPt"))
    if not 1 <= act_pt <= get("NPt"):
        return None
    x = "W" if model_id == 712 else "V"
    xs = [get(f"Crv[{n}].Pt[{k}].{x}") for k in range(1, act_pt + 1)]
    if not all(a <= b for a, b in itertools.pairwise(xs)):
        return None
    prefix = f"Crv[{n}]."
    return {
        f"Crv[1].{name.removeprefix(prefix)}": image.get(model_id, name)
        for name in image.point_names(model_id)
        if name.startswith(prefix) and not name.endswith("ReadOnly")
    }


def curve_reversion(model_id: int) -> Callable[[SunSpecImage], dict[str, Value]]:
    """705/706 RvrtTms expiry: stored curve RvrtCrv becomes the active curve 1; RvrtCrv 1 keeps
    the active curve; 0, or a curve that fails the adoption checks, disables the function."""

    def fallback(image: SunSpecImage) -> dict[str, Value]:
        n = int(as_float(image.get(model_id, "RvrtCrv")))
        if n == 1:
            return {}
        curve = stored_curve(image, model_id, n)
        return {"Ena": 0} if curve is None else curve

    return fallback
