"""OpenDER 2.2.0's steady-state volt-var answer: the reactive power an IEEE 1547-2018 DER
(`DER_PV` in volt-var mode) settles to at a voltage, for a given curve.

OpenDER has no stand-alone curve function (the curve is computed inside
`reactive_power_support_funcs.volt_var.VoltVAR`), so each voltage asked is one snapshot
step (`DER.t_s` = 100000 s: its low-pass filters are bypassed) of one `DER_PV`, which is
memoryless there. The model is set so that only the curve decides Q: reactive capability
equal to the VA rating both ways, var priority (P is cut, Q kept), DC power at half the
rating, and its trip thresholds out of reach so that no step latches a trip (at 1.1 pu and
above OpenDER ceases to inject, as IEEE 1547-2018 momentary cessation says: Q = 0).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from opender import DER, DER_PV  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from hil.judge.columns import Floats
    from hil.judge.specs import VoltVarCurve

SNAPSHOT_S = 100000.0
"""OpenDER's steady-state step (its class default)."""
GRID_PU = 1e-5
"""OpenDER is asked at the points of this voltage grid next to a judged voltage, pu."""


def _der(curve: VoltVarCurve, v_ref_pu: float) -> DER_PV:
    v1, v2, v3, v4 = curve.v_pu
    q1, q2, q3, q4 = curve.q_pu
    saved = logging.root.manager.disable
    logging.disable(logging.WARNING)  # OpenDER warns that the trip settings leave 1547's range
    try:
        return DER_PV(
            NP_VA_MAX=1.0,
            NP_P_MAX=1.0,
            NP_Q_MAX_INJ=1.0,
            NP_Q_MAX_ABS=1.0,
            NP_PRIO_OUTSIDE_MIN_Q_REQ="REACTIVE",
            OV1_TRIP_V=10.0,
            OV2_TRIP_V=10.0,
            UV1_TRIP_V=0.0,
            UV2_TRIP_V=0.0,
            QV_MODE_ENABLE=True,
            QV_VREF=v_ref_pu,
            QV_CURVE_V1=v1,
            QV_CURVE_V2=v2,
            QV_CURVE_V3=v3,
            QV_CURVE_V4=v4,
            QV_CURVE_Q1=q1,
            QV_CURVE_Q2=q2,
            QV_CURVE_Q3=q3,
            QV_CURVE_Q4=q4,
        )
    finally:
        logging.disable(saved)


def opender_q_pu(curve: VoltVarCurve, v_ref_pu: float, v_pu: Floats) -> Floats:
    """OpenDER's steady-state Q, pu of the VA rating (positive injecting), at each voltage.

    OpenDER is asked once per point of a GRID_PU grid next to a voltage (the two around it),
    and Q interpolated linearly between them: exact where the curve is linear, off by at
    most slope x GRID_PU / 4 (1.8e-5 pu for IEEE 1547 category B) in a grid cell holding a
    corner of the curve.
    """
    cells = np.floor(v_pu / GRID_PU)
    grid = np.unique(np.concatenate((cells, cells + 1))) * GRID_PU
    saved = DER.t_s
    DER.t_s = SNAPSHOT_S  # class-wide: a rig in this process may have set its own step
    try:
        der = _der(curve, v_ref_pu)
        answers = np.empty(len(grid))
        for i, v in enumerate(grid):
            der.update_der_input(v_pu=float(v), f=60, p_dc_pu=0.5)
            der.run()
            answers[i] = der.q_out_pu
    finally:
        DER.t_s = saved
    result: Floats = np.interp(v_pu, grid, answers)
    return result
