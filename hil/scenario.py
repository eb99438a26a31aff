"""A scenario file: what to run on the rig, for how long, what the DSO sends, what goes wrong,
and which tests judge the run (YAML, validated here; docs/hil.md documents it).

Times are simulated seconds from the scenario's start (`at_s`), which is the moment the gateway
has connected to every device: the rig's clock stands still until then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.judge import TestSpecs

Points = list[tuple[float, float]]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sorted_points(points: Points, what: str) -> Points:
    times = [t for t, _ in points]
    if times != sorted(times):
        raise ValueError(f"{what}: points must be sorted by time (equal times make a step)")
    return points


class Profiles(_Spec):
    """Time series as [t_s, value] points, linear in between, flat beyond the ends; two
    points at the same time make a step."""

    irradiance: Points | None = Field(
        default=None,
        description="available PV power, pu of each PV device's W rating (replaces the rig "
        "file's profiles); also scales the feeder's background PV",
    )
    load: Points = Field(
        default=[(0.0, 1.0)], description="the feeder's loads, pu of their nominal power"
    )
    upstream_v_pu: Points = Field(
        default=[(0.0, 1.0)], description="the substation (external grid) voltage, pu"
    )

    @model_validator(mode="after")
    def _sorted(self) -> Profiles:
        for name in ("irradiance", "load", "upstream_v_pu"):
            points = getattr(self, name)
            if points is not None:
                _sorted_points(points, name)
        return self


class _Step(_Spec):
    at_s: float = Field(ge=0, description="simulated s from the scenario's start")


class EventStep(_Step):
    """A DSO event published on controls/{role} (the gateway's event payload)."""

    do: Literal["event"]
    role: str = "dso"
    mrid: str
    control: dict[str, Any] = Field(description="the control object (docs/mqtt-api.md)")
    duration_s: float = Field(gt=0)
    devices: list[str] | None = None
    start_in_s: float = Field(
        default=0.0, ge=0, description="the window opens this long after sending"
    )
    primacy: int | None = None


class CancelStep(_Step):
    """A cancellation on controls/{role}/cancel."""

    do: Literal["cancel"]
    role: str = "dso"
    mrid: str


class DefaultControlStep(_Step):
    """A role's retained default control (an empty control clears it)."""

    do: Literal["default_control"]
    role: str = "dso"
    control: dict[str, Any]


class HeartbeatStep(_Step):
    """A role's heartbeat every every_s from at_s until until_s (dispatcher silence after)."""

    do: Literal["heartbeat"]
    role: str = "dso"
    every_s: float = Field(gt=0)
    until_s: float | None = Field(default=None, description="default: the end of the run")


class FaultStep(_Step):
    """Something goes wrong for duration_s: the broker stops; a device reboots (forgets its
    controls, unreachable meanwhile); the site meter stops answering."""

    do: Literal["fault"]
    fault: Literal["broker_outage", "device_restart", "meter_loss"]
    device: str | None = Field(default=None, description="device_restart and meter_loss")
    duration_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _device(self) -> FaultStep:
        if (self.fault == "broker_outage") != (self.device is None):
            raise ValueError(f"{self.fault}: device is {'not ' if self.device else ''}taken")
        return self


class MarkStep(_Step):
    """A named instant in the report (a load step, the start of a phase)."""

    do: Literal["mark"]
    label: str


Step = Annotated[
    EventStep | CancelStep | DefaultControlStep | HeartbeatStep | FaultStep | MarkStep,
    Field(discriminator="do"),
]


class Scenario(_Spec):
    """One scenario: rig, feeder and gateway files (relative to the scenario file), profiles,
    timeline and tests."""

    name: str
    description: str = ""
    duration_s: float = Field(gt=0)
    speed: float = Field(
        default=1.0, gt=0, le=1000, description="simulated s per wall s (--speed overrides)"
    )
    seed: int = 0
    rig: Path
    feeder: Path | None = None
    gateway: Path = Field(
        description="the gateway's configuration; the runner sets the "
        "broker, the devices' ports and the state directory"
    )
    dynamics: Literal["simple", "opender"] = Field(
        default="opender",
        description="the DERs' dynamics: OpenDER's IEEE 1547 model or the rig's first-order lag",
    )
    physics_step_s: float = Field(
        default=1.0, gt=0, le=60, description="power-flow (and OpenDER) step, simulated s"
    )
    sample_s: float = Field(default=1.0, gt=0, description="recording period, simulated s")
    profiles: Profiles = Profiles()
    timeline: list[Step] = Field(default_factory=list)
    tests: TestSpecs = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.sample_s < self.physics_step_s:
            raise ValueError("sample_s must not be shorter than physics_step_s")
        for step in self.timeline:
            if step.at_s > self.duration_s:
                raise ValueError(f"a {step.do} step at {step.at_s} s is after the end")
        if any(test.kind == "every_control_answered" for test in self.tests):
            self._events_end_in_the_run()
        return self

    def _events_end_in_the_run(self) -> None:
        """Every event that is not cancelled ends before the run does: its final status
        (``completed``) must be heard for every_control_answered to be judged."""
        cancelled = {step.mrid for step in self.timeline if isinstance(step, CancelStep)}
        for step in self.timeline:
            if isinstance(step, EventStep) and step.mrid not in cancelled:
                end = step.at_s + step.start_in_s + step.duration_s
                if end >= self.duration_s:
                    raise ValueError(
                        f"event {step.mrid} ends at {end:g} s, not before the run's end "
                        f"({self.duration_s:g} s): every_control_answered could not hear its "
                        "final status; end it earlier or run longer"
                    )


class ScenarioError(ValueError):
    """A scenario file that cannot be run, with where and why."""


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; its rig, feeder and gateway paths come back
    resolved against the file's directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
        scenario = Scenario.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ScenarioError(f"{path}: {error}") from error
    here = path.parent

    def resolved(file: Path) -> Path:
        full = file if file.is_absolute() else here / file
        if not full.is_file():
            raise ScenarioError(f"{path}: {file} (resolved to {full}) does not exist")
        return full

    return scenario.model_copy(
        update={
            "rig": resolved(scenario.rig),
            "feeder": None if scenario.feeder is None else resolved(scenario.feeder),
            "gateway": resolved(scenario.gateway),
        }
    )
