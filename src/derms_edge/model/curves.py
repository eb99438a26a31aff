"""Reactive power characteristics: the volt-var curve, constant power factor, and the
IEEE 1547-2018 default curves of categories A and B."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VoltVarMode = Literal["auto", "native", "edge"]
"""Where a volt-var curve runs: in the device (native), in the gateway (edge), or native
where the device can (auto)."""
Excitation = Literal["inject", "absorb"]


@dataclass(frozen=True, slots=True)
class VoltVarCurve:
    """A volt-var characteristic: points are (V in pu of nominal, Q in % of nameplate VA)."""

    points: tuple[tuple[float, float], ...]
    v_ref_pu: float = 1.0
    response_time_s: float = 5.0
    """Open-loop response time: 90 % of a step is reached after this many seconds."""
    mode: VoltVarMode = "auto"


@dataclass(frozen=True, slots=True)
class FixedPf:
    """Constant power factor: displacement PF and whether the device injects or absorbs var."""

    pf: float
    excitation: Excitation


CATEGORY_CURVES: dict[str, VoltVarCurve] = {
    "cat_a": VoltVarCurve(((0.90, 25.0), (1.00, 0.0), (1.00, 0.0), (1.10, -25.0)), 1.0, 10.0),
    "cat_b": VoltVarCurve(((0.92, 44.0), (0.98, 0.0), (1.02, 0.0), (1.08, -44.0)), 1.0, 5.0),
}
"""IEEE 1547-2018 default volt-var curves (V pu, Q % of VA) and open-loop response times."""
