"""The rig's physics step on a feeder (or straight on the source), and the samples a scenario
records.

Every `physics_step_s` of simulated time, with the clock held still: every DER is stepped to
that instant, the feeder's power flow is solved with their P and Q, the scenario's load level,
irradiance and upstream voltage, and each device's terminal voltage becomes its bus voltage for
the next step. Every `sample_s` the devices' physics (the truth, not what the gateway reads)
and the buses are recorded. It runs as a task on the rig's event loop, so a solve delays the
rig's Modbus and OPC UA answers by its duration (about 15 ms on the CIGRE LV feeder).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hil.physics import TableProfile
from hil.records import BusSample, Recording, Sample

if TYPE_CHECKING:
    from hil.feeder import Feeder
    from hil.rig import Rig


@dataclass(frozen=True, slots=True)
class Series:
    """A profile of the scenario: [t_s, value] points, linear between, flat beyond."""

    points: tuple[tuple[float, float], ...]

    def at(self, t: float) -> float:
        return TableProfile(self.points, loop=False).available_w(t)


@dataclass(frozen=True, slots=True)
class Drive:
    """What drives the feeder besides the DERs."""

    load: Series
    upstream_v_pu: Series
    irradiance: Series


class Stepper:
    """Steps the rig on its feeder (or on its fixed grid without one) and records it."""

    def __init__(
        self,
        rig: Rig,
        feeder: Feeder | None,
        drive: Drive,
        recording: Recording,
        *,
        physics_step_s: float,
        sample_s: float,
        speed: float,
        external: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.rig = rig
        self.feeder = feeder
        self.drive = drive
        self.recording = recording
        self.physics_step_s = physics_step_s
        self.every = max(1, round(sample_s / physics_step_s))
        self.speed = speed
        self.external: Mapping[str, tuple[float, float]] = external or {}
        """The newest (W, var) of each real device (not in the rig), read by the gateway."""
        self.steps = 0
        self.behind_s = 0.0
        """The longest a step ran late, simulated s (the machine did not keep up)."""
        self.late_steps = 0
        """Steps that ran more than a step late."""
        self.placed: dict[str, str] = (
            {} if feeder is None else {i: feeder.bus_of(i) for i in feeder.spec.devices}
        )
        """Device id -> the feeder bus it is connected to."""
        self.lv_buses: list[str] = [] if feeder is None else feeder.lv_buses
        """The buses recorded: those at the devices' voltage level."""

    async def run(self, until_s: float) -> None:
        """Step from the clock's present to until_s (simulated)."""
        clock = self.rig.clock
        while True:
            t_next = self.steps * self.physics_step_s
            if t_next > until_s + 1e-9:
                return
            wait = t_next - clock.now()
            if wait > 0:
                await asyncio.sleep(wait / clock.speed)
            else:
                self.behind_s = max(self.behind_s, -wait)
                self.late_steps += -wait > self.physics_step_s
            with clock.held(at=t_next) as t:
                self.step(t, record=self.steps % self.every == 0)
            self.steps += 1

    def step(self, t: float, *, record: bool) -> None:
        """One physics step at simulated time t (the clock held there)."""
        devices = self._devices()
        states = {i: d.snapshot() for i, d in devices.items()}  # each stepped to t
        v_pu = {i: s.v / devices[i].physics.grid.v_nom for i, s in states.items()}
        if self.feeder is not None:
            result = self.feeder.solve(
                upstream_v_pu=self.drive.upstream_v_pu.at(t),
                load_scale=self.drive.load.at(t),
                irradiance_pu=self.drive.irradiance.at(t),
                injections={
                    i: _power(states[i]) if i in states else self.external.get(i, (0.0, 0.0))
                    for i in self.placed
                },
            )
            self.recording.solve_s.append(result.solve_s / self.speed)
            for device_id, v in result.device_v_pu.items():
                if device_id not in devices:
                    continue  # a real device: it sees its own grid
                grid = devices[device_id].physics.grid
                grid.v_set = v * grid.v_nom
                v_pu[device_id] = v
            if record:
                self.recording.buses.extend(
                    BusSample(t, bus, result.bus_v_pu[bus]) for bus in self.lv_buses
                )
        else:  # every device straight on the source, as in an IEEE 1547.1 test
            for device in devices.values():
                grid = device.physics.grid
                grid.v_set = self.drive.upstream_v_pu.at(t) * grid.v_nom
        if record:
            self.recording.samples.extend(
                self._sample(t, i, states[i], devices[i].physics, v_pu[i]) for i in devices
            )

    def _devices(self) -> dict[str, Any]:
        """The rig's devices with physics (not replays), by id."""
        rig = self.rig
        found: dict[str, Any] = {}
        for device_id in [*rig.devices, *rig.opcua_devices]:
            device = rig.device(device_id)
            if hasattr(device, "physics"):
                found[device_id] = device
        return found

    def _sample(self, t: float, device_id: str, state: Any, physics: Any, v_pu: float) -> Sample:
        is_battery = state.soc_pct is not None and not hasattr(state, "plugged")
        return Sample(
            t_s=t,
            device=device_id,
            bus=self.placed.get(device_id),
            v_pu=_finite(v_pu),
            p_w=state.w,
            q_var=getattr(state, "var", 0.0),
            soc_pct=state.soc_pct if is_battery else None,
            w_max_lim_pct=getattr(state, "w_lim_pct", None),
            var_pct=_var_pct(state, physics),
            pf=getattr(state, "pf", None),
            storage_w=getattr(state, "w_set", None) if is_battery else None,
            evse_max_a=getattr(state, "applied_a", None),
        )


def _power(state: Any) -> tuple[float, float]:
    """(W, var) the device delivers at its bus; a site meter stands for its house load."""
    load_w = getattr(state, "load_w", None)
    if load_w is not None:
        return -float(load_w), 0.0
    return float(state.w), float(getattr(state, "var", 0.0))


def _var_pct(state: Any, physics: Any) -> float | None:
    var_set = getattr(state, "var_set", None)
    ratings = getattr(physics, "ratings", None)
    var_rtg = getattr(ratings, "var_rtg", None)
    if var_set is None or not var_rtg:
        return None
    return float(var_set) / float(var_rtg) * 100.0


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def series(points: list[tuple[float, float]] | None, default: float) -> Series:
    """A profile of the scenario, or a constant when it has none."""
    return Series(tuple(points) if points else ((0.0, default),))
