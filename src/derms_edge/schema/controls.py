"""The control object, as the MQTT contract and the configuration file both write it.

An event's ``control``, a role's default control and ``control.default`` in the
configuration are the same object: any subset of the control functions, validated here and
turned into the model's immutable `Control`.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from derms_edge.model import (
    CATEGORY_CURVES,
    MAX_EVSE_A,
    MIN_EVSE_A,
    Control,
    FixedPf,
    VoltVarCurve,
    can_signal,
)
from derms_edge.schema.base import Strict


class VoltVarPayload(Strict):
    """A volt-var curve: a named IEEE 1547-2018 category curve, or points of its own."""

    curve: Literal["cat_a", "cat_b"] | None = Field(
        None, description="IEEE 1547-2018 default curve of category A or B"
    )
    points: list[tuple[float, float]] | None = Field(
        None,
        min_length=2,
        max_length=10,
        description="[v_pu, q_pct]: V in pu of nominal, Q in % of nameplate VA, + = injecting",
    )
    v_ref_pu: float = Field(1.0, ge=0.95, le=1.05, description="VRef, pu (IEEE 1547: 0.95-1.05)")
    response_time_s: float | None = Field(
        None, ge=1, le=90, description="open-loop response time, s (default: 10 A, 5 B)"
    )
    mode: Literal["auto", "native", "edge"] = Field(
        "auto", description="native: in the device; edge: in the gateway; auto: native if able"
    )

    @field_validator("points")
    @classmethod
    def _points(cls, points: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if points is None:
            return None
        for index, (v, q) in enumerate(points):
            if not (0.5 <= v <= 1.5 and math.isfinite(v)):
                raise ValueError(f"points[{index}]: v_pu {v} is outside 0.5..1.5")
            if not (-100.0 <= q <= 100.0):
                raise ValueError(f"points[{index}]: q_pct {q} is outside -100..100")
        for index, ((v0, _), (v1, _)) in enumerate(itertools.pairwise(points)):
            if v1 < v0:
                raise ValueError(
                    f"points[{index + 1}]: v_pu {v1} is below the previous point's {v0}"
                )
        return points

    @model_validator(mode="after")
    def _curve_or_points(self) -> Self:
        if (self.curve is None) == (self.points is None):
            raise ValueError('give either "curve" (cat_a or cat_b) or "points", not both')
        return self

    def to_curve(self) -> VoltVarCurve:
        """The curve in the control core's terms."""
        if self.curve is not None:
            default = CATEGORY_CURVES[self.curve]
            points = default.points
            response = self.response_time_s or default.response_time_s
        else:
            assert self.points is not None  # the validator allows exactly one
            points = tuple((float(v), float(q)) for v, q in self.points)
            response = self.response_time_s or 5.0
        return VoltVarCurve(points, self.v_ref_pu, response, self.mode)


class FixedPfPayload(Strict):
    """Constant power factor."""

    pf: float = Field(ge=0.8, le=1.0, description="displacement power factor")
    excitation: Literal["inject", "absorb"] = Field(
        description="inject: over-excited (var out); absorb: under-excited (var in)"
    )


class ControlPayload(Strict):
    """Any subset of the control functions."""

    max_w_pct: float | None = Field(
        None, ge=0, le=100, description="curtailment: active power limit, % of WMax"
    )
    export_limit_w: float | None = Field(
        None, ge=0, le=1e9, description="site export limit at the meter, W"
    )
    volt_var: VoltVarPayload | None = None
    fixed_pf: FixedPfPayload | None = None
    storage_w: float | None = Field(
        None, ge=-1e9, le=1e9, description="battery power, W, positive = discharge"
    )
    evse_max_a: float | None = Field(
        None,
        ge=0,
        le=MAX_EVSE_A,
        description=f"EV charger limit per phase, A: 0 (pause) or >= {MIN_EVSE_A:g}",
    )

    evse_max_w: float | None = Field(
        None,
        ge=0,
        le=1e6,
        description="EV charger power cap, W: the current limit becomes "
        "W / (phases x measured V line to neutral), rounded down to 0.1 A; "
        f"under {MIN_EVSE_A:g} A pauses",
    )
    reserve_soc_pct: float | None = Field(
        None,
        ge=0,
        le=100,
        description="batteries: backup reserve, % SoC; no storage dispatch takes SoC below "
        "the highest of this, the configured reserve and the device's minimum",
    )

    @field_validator("evse_max_a")
    @classmethod
    def _evse(cls, value: float | None) -> float | None:
        if value is not None and not can_signal(value):
            raise ValueError(
                f"{value} A cannot be signalled (IEC 61851): use 0 to pause or at least "
                f"{MIN_EVSE_A:g} A"
            )
        return value

    def to_control(self) -> Control:
        """The control in the control core's terms."""
        return Control(
            max_w_pct=self.max_w_pct,
            export_limit_w=self.export_limit_w,
            volt_var=self.volt_var.to_curve() if self.volt_var is not None else None,
            fixed_pf=FixedPf(self.fixed_pf.pf, self.fixed_pf.excitation)
            if self.fixed_pf is not None
            else None,
            storage_w=self.storage_w,
            evse_max_a=self.evse_max_a,
            evse_max_w=self.evse_max_w,
            reserve_soc_pct=self.reserve_soc_pct,
        )
