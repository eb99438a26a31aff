"""Pure physics of a Mode-3 EV charger (IEC 61851) and the car plugged into it.

The charger signals a current per phase: the written limit while its validity runs, the
safe current after it expires, 0 for anything below 6 A (pause). Without a watchdog
(validity_s = math.inf) the limit holds until changed, max_a from power-on. The car draws
the smaller of that and its own maximum through a first-order lag until its battery is full.
Units are SI: A per phase, V line to neutral, W consumed (positive), Wh, %, s.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from hil.physics import Grid, lag, substeps

MIN_SIGNAL_A = 6.0
"""Lowest current a Mode-3 PWM signal can offer; below it the charger pauses (0 A)."""
CHARGING_EFFICIENCY = 0.92
"""Share of the AC energy that reaches the EV battery."""


class Mode3State(enum.IntEnum):
    """IEC 61851 vehicle states, numbered as the charger's register reports them."""

    A = 0  # no vehicle
    B = 1  # vehicle connected, not charging
    C = 2  # charging


@dataclass(frozen=True, slots=True)
class EvseRatings:
    """The charger's nameplate and watchdog settings."""

    phases: int
    max_a: float
    validity_s: float
    """How long a written limit stays in force, s; math.inf: no watchdog."""

    def power_on_expiry(self, t: float) -> float:
        """When the power-on limit expires: at once with a watchdog, never without one."""
        return t if math.isfinite(self.validity_s) else math.inf


@dataclass(frozen=True, slots=True)
class Vehicle:
    """The car: battery capacity (Wh) and the highest current it draws per phase (A)."""

    wh: float
    max_a: float


class EvsePhysics:
    """Charger and car stepped to simulated times; the current lags its target by tau_s."""

    def __init__(
        self,
        ratings: EvseRatings,
        vehicle: Vehicle,
        grid: Grid,
        *,
        soc_pct: float,
        safe_a: float,
        plugged_at: float | None,
        tau_s: float = 1.0,
        t0: float = 0.0,
    ) -> None:
        self.ratings = ratings
        self.vehicle = vehicle
        self.grid = grid
        self.tau_s = tau_s
        self.soc_pct = soc_pct
        self.plugged_at = plugged_at
        """Simulated time the car is plugged in from; None: no car."""
        self.power_on_safe_a = safe_a
        self.t = t0
        self.a = 0.0
        self.v, self.hz = grid.sample()
        self.limit_a = ratings.max_a
        self.safe_a = safe_a
        self.valid_until = ratings.power_on_expiry(t0)
        self.wh = 0.0
        """AC energy delivered to the car since power-on, Wh."""

    def power_on(self) -> None:
        """Settings and the energy counter back to power-on: limit max_a, validity expired
        (or, without a watchdog, max_a in force)."""
        self.limit_a = self.ratings.max_a
        self.safe_a = self.power_on_safe_a
        self.valid_until = self.ratings.power_on_expiry(self.t)
        self.wh = 0.0

    def write_limit(self, amps: float) -> None:
        """A new current limit, A per phase, valid for validity_s from now."""
        self.limit_a = amps
        self.valid_until = self.t + self.ratings.validity_s

    def plug(self, plugged: bool) -> None:
        """Plug the car in now, or unplug it."""
        if not plugged:
            self.plugged_at = None
            self.a = 0.0
        elif not self.plugged():
            self.plugged_at = self.t

    def plugged(self) -> bool:
        """Whether a car is plugged in now."""
        return self.plugged_at is not None and self.t >= self.plugged_at

    @property
    def validity_s(self) -> float:
        """Remaining validity of the written limit, s (0: expired)."""
        return max(self.valid_until - self.t, 0.0)

    @property
    def applied_a(self) -> float:
        """The current the charger signals now, A per phase."""
        signalled = self.limit_a if self.validity_s > 0 else self.safe_a
        return signalled if self.plugged() and signalled >= MIN_SIGNAL_A else 0.0

    def target_a(self) -> float:
        """The current the car draws once settled, A per phase."""
        if self.soc_pct >= 100.0:
            return 0.0
        return min(self.applied_a, self.vehicle.max_a)

    @property
    def w(self) -> float:
        """Active power consumed, W."""
        return self.ratings.phases * self.v * self.a

    @property
    def state(self) -> Mode3State:
        """A without a car, C while the car draws current, B otherwise."""
        if not self.plugged():
            return Mode3State.A
        return Mode3State.C if self.target_a() > 0 else Mode3State.B

    def step(self, t: float) -> None:
        """Advance to simulated time t (no-op if t is not later than the last step)."""
        if t <= self.t:
            return
        self.v, self.hz = self.grid.sample()
        while self.t < t:
            end = t
            for edge in (self.valid_until, self.plugged_at):  # the target jumps there
                if edge is not None and self.t < edge < end:
                    end = edge
            self._integrate(end)

    def _integrate(self, end: float) -> None:
        """Integrate up to end, over which only a full battery changes the target."""
        n, h = substeps(end - self.t)
        capacity_ws = self.vehicle.wh * 3600.0
        for i in range(n):
            self.a, amp_seconds = lag(self.a, self.target_a(), h, self.tau_s)
            energy_ws = self.ratings.phases * self.v * amp_seconds
            self.wh += energy_ws / 3600.0
            self.soc_pct += CHARGING_EFFICIENCY * energy_ws / capacity_ws * 100.0
            if self.soc_pct >= 100.0:
                self.soc_pct, self.a = 100.0, 0.0
            self.t = end if i == n - 1 else self.t + h
