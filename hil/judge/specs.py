"""The tests a scenario file lists under `tests:`: one pydantic model per kind, told apart by
`kind`. Every field carries its description: the scenario schema's documentation is made
from them. Times are simulated seconds since the scenario started; units are SI."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Signal = Literal["p_w", "q_var", "v_pu", "soc_pct"]
"""A column of the recorded samples (`hil.records.Sample`)."""

FINAL_STATUSES = ("completed", "superseded", "cancelled", "rejected", "aborted")
"""The gateway's final statuses (docs/mqtt-api.md, Lifecycle)."""


class _Test(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, description="Unique within the scenario: the test's name in the report."
    )


class _Window(_Test):
    from_s: float = Field(default=0.0, ge=0, description="Judged from this simulated time, s.")
    to_s: float | None = Field(
        default=None, description="Judged up to this simulated time, s; default: the run's end."
    )

    @model_validator(mode="after")
    def _ordered(self) -> _Window:
        if self.to_s is not None and self.to_s <= self.from_s:
            raise ValueError(f"to_s ({self.to_s}) must be after from_s ({self.from_s})")
        return self


class VoltageWithin(_Window):
    """Every sample's terminal voltage stays within [low_pu, high_pu] (ANSI C84.1 range A by
    default)."""

    kind: Literal["voltage_within"]
    devices: list[str] | None = Field(
        default=None,
        description="Devices judged; default: every device whose samples carry a voltage.",
    )
    low_pu: float = Field(default=0.95, gt=0, description="Lowest allowed voltage, pu.")
    high_pu: float = Field(default=1.05, gt=0, description="Highest allowed voltage, pu.")
    settle_s: float = Field(
        default=0.0, ge=0, description="Samples before from_s + settle_s are not judged, s."
    )

    @model_validator(mode="after")
    def _band(self) -> VoltageWithin:
        if self.high_pu <= self.low_pu:
            raise ValueError(f"high_pu ({self.high_pu}) must be above low_pu ({self.low_pu})")
        return self


class VoltageExceeds(_Window):
    """The baseline that proves a case real: the device's voltage goes above above_pu at
    least once (e.g. the far end of a high-PV feeder without volt-var)."""

    kind: Literal["voltage_exceeds"]
    device: str = Field(description="The device whose terminal voltage is judged.")
    above_pu: float = Field(
        default=1.05, gt=0, description="Passes if the highest voltage is above this, pu."
    )


class VoltVarCurve(BaseModel):
    """A four-point volt-var curve (IEEE 1547-2018 Table 8), before the VRef shift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v_pu: tuple[float, float, float, float] = Field(
        description="V1..V4, pu of nominal, ascending (V2 = V3 allowed: no deadband)."
    )
    q_pu: tuple[float, float, float, float] = Field(
        description="Q1..Q4, pu of the VA rating, positive injecting."
    )

    @model_validator(mode="after")
    def _shape(self) -> VoltVarCurve:
        v1, v2, v3, v4 = self.v_pu
        if not (v1 < v2 <= v3 < v4):
            raise ValueError(f"v_pu must be V1 < V2 <= V3 < V4, got {list(self.v_pu)}")
        if any(abs(q) > 1 for q in self.q_pu):
            raise ValueError(f"q_pu must be within [-1, 1] of the VA rating, got {self.q_pu}")
        return self


class VoltVarSteadyState(_Window):
    """In steady state, Q is within tolerance_pct_va of the VA rating of OpenDER 2.2.0's
    answer for the same curve at the same voltage."""

    kind: Literal["volt_var_steady_state"]
    device: str = Field(description="The inverter judged.")
    va_rtg: float = Field(gt=0, description="Its apparent power rating, VA.")
    curve: VoltVarCurve = Field(description="The volt-var curve the device was given.")
    v_ref_pu: float = Field(
        default=1.0, ge=0.95, le=1.05, description="VRef: the curve's voltages shift by VRef - 1."
    )
    tolerance_pct_va: float = Field(
        default=1.0, gt=0, description="Largest allowed |Q - Q OpenDER|, % of va_rtg."
    )
    settled_s: float = Field(
        gt=0,
        description=(
            "A sample is in steady state when the voltage moved less than settled_band_pu over "
            "the settled_s before it (e.g. 4 x the open-loop response time), s."
        ),
    )
    settled_band_pu: float = Field(
        default=0.001, gt=0, description="Largest voltage change allowed in steady state, pu."
    )


class ResponseTime(_Test):
    """The 90 % response time of P or Q to a step (IEEE 1547.1 open-loop response time)."""

    kind: Literal["response_time"]
    device: str = Field(description="The device judged.")
    signal: Literal["q_var", "p_w"] = Field(description="The signal that responds.")
    step_at_s: float = Field(ge=0, description="When the step (voltage, setpoint) was applied, s.")
    tr_s: float = Field(gt=0, description="The response time the device is set to, s.")
    tolerance_pct: float = Field(
        default=10.0, gt=0, description="Largest allowed |measured - tr_s|, % of tr_s."
    )
    window_s: float | None = Field(
        default=None, gt=0, description="Length judged after the step, s; default: 4 x tr_s."
    )
    rating: float = Field(
        gt=0, description="The signal's rating (W for p_w, VA for q_var): scales min_change_pct."
    )
    min_change_pct: float = Field(
        default=1.0,
        gt=0,
        description="A change smaller than this % of rating is no step: the test fails.",
    )


class Settling(_Test):
    device: str = Field(description="The device judged.")
    signal: Signal = Field(description="The sample column judged.")
    within_s: float = Field(ge=0, description="Settling time allowed, s.")
    hold_until_s: float = Field(description="Must stay settled up to this simulated time, s.")
    target: float | None = Field(
        default=None, description="The value to settle to, in the signal's unit."
    )
    target_pct: float | None = Field(
        default=None, description="Or the value to settle to as % of rating."
    )
    rating: float | None = Field(
        default=None, gt=0, description="The rating target_pct and tolerance_pct are % of."
    )
    tolerance: float | None = Field(
        default=None, ge=0, description="Allowed deviation, in the signal's unit."
    )
    tolerance_pct: float | None = Field(
        default=None, ge=0, description="Or the allowed deviation as % of rating."
    )
    bound: Literal["within", "at_most"] = Field(
        default="within",
        description=(
            "within: |value - target| <= tolerance; at_most: value <= target + tolerance "
            "(a PV inverter whose sun is below the limit)."
        ),
    )

    @model_validator(mode="after")
    def _target_and_tolerance(self) -> Settling:
        for value, pct, what in (
            (self.target, self.target_pct, "target"),
            (self.tolerance, self.tolerance_pct, "tolerance"),
        ):
            if (value is None) == (pct is None):
                raise ValueError(f"give exactly one of {what} and {what}_pct")
            if pct is not None and self.rating is None:
                raise ValueError(f"{what}_pct needs rating (the W, var or VA it is % of)")
        return self

    def target_value(self) -> float:
        """The target in the signal's unit."""
        if self.target is not None:
            return self.target
        assert self.target_pct is not None and self.rating is not None
        return self.target_pct / 100 * self.rating

    def tolerance_value(self) -> float:
        """The tolerance in the signal's unit."""
        if self.tolerance is not None:
            return self.tolerance
        assert self.tolerance_pct is not None and self.rating is not None
        return self.tolerance_pct / 100 * self.rating


class SettlesTo(Settling):
    """After after_s, the signal settles within within_s to its target and stays there until
    hold_until_s (e.g. limit active power at 66, 33 and 0 % of nameplate)."""

    kind: Literal["settles_to"]
    after_s: float = Field(ge=0, description="When the change began (e.g. the event's start), s.")


class DefaultControlApplied(Settling):
    """After the dispatcher falls silent at silent_from_s, the default control (e.g. P at most
    50 %) holds from silent_from_s + timeout_s + within_s until hold_until_s."""

    kind: Literal["default_control_applied"]
    silent_from_s: float = Field(ge=0, description="When the dispatcher's silence began, s.")
    timeout_s: float = Field(gt=0, description="The gateway's dispatcher timeout, s.")


class ExportAtMost(_Window):
    """The site's export (the meter's p_w, positive exporting) is never above limit_w +
    tolerance_w, except for settle_s after each event instant of the excused kinds, and never
    excused while the meter is lost."""

    kind: Literal["export_at_most"]
    meter: str = Field(description="The site meter's device id.")
    limit_w: float = Field(description="The export limit, W.")
    tolerance_w: float = Field(default=0.0, ge=0, description="Allowed above limit_w, W.")
    settle_s: float = Field(
        ge=0, description="Time excused after each excusing event instant (a load step), s."
    )
    excused_kinds: list[Literal["mark", "sent", "fault"]] = Field(
        default=["mark", "sent", "fault"],
        description="Event kinds whose instants start an excused settle_s.",
    )
    dropout_fault: str = Field(
        default="meter_loss",
        min_length=1,
        description=(
            "Fault events naming this (in detail or payload) start and end, alternately, a "
            "meter dropout: no excursion is excused in it."
        ),
    )


class SocAtLeast(_Window):
    """The battery's state of charge never goes below the reserve."""

    kind: Literal["soc_at_least"]
    device: str = Field(description="The battery judged.")
    reserve_pct: float = Field(ge=0, le=100, description="The reserve, % state of charge.")


class TelemetryComplete(_Window):
    """Each device's telemetry messages cover the window with no gap above max_gap_s: nothing
    lost, also across a broker outage (buffered messages keep their own ts)."""

    kind: Literal["telemetry_complete"]
    devices: list[str] | None = Field(
        default=None, description="Devices judged; default: every device that sent telemetry."
    )
    period_s: float = Field(gt=0, description="The gateway's telemetry period, s.")
    max_gap_s: float | None = Field(
        default=None, gt=0, description="Largest allowed gap, s; default: 2.5 x period_s."
    )


class EveryControlAnswered(_Window):
    """Every control sent in the window (a `sent` event with an mrid) gets a first response
    within within_s and, by the run's end, a final status."""

    kind: Literal["every_control_answered"]
    final_statuses: list[str] = Field(
        default=list(FINAL_STATUSES),
        min_length=1,
        description="Statuses that end an event (docs/mqtt-api.md, Lifecycle).",
    )
    within_s: float = Field(default=10.0, gt=0, description="First response due within, s.")


TestSpec = Annotated[
    VoltageWithin
    | VoltageExceeds
    | VoltVarSteadyState
    | ResponseTime
    | SettlesTo
    | DefaultControlApplied
    | ExportAtMost
    | SocAtLeast
    | TelemetryComplete
    | EveryControlAnswered,
    Field(discriminator="kind"),
]
"""One test of a scenario, told apart by `kind`."""


def unique_names(tests: list[TestSpec]) -> list[TestSpec]:
    """The tests, if no two share a name; else ValueError naming the repeats."""
    counts = Counter(t.name for t in tests)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        raise ValueError(f"test names must be unique; repeated: {', '.join(repeated)}")
    return tests


TestSpecs = Annotated[list[TestSpec], AfterValidator(unique_names)]
"""A scenario's `tests:`: the names unique."""
