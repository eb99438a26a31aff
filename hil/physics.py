"""Pure DER physics (PV and battery inverters, site meter) stepped to times read from a clock.

Sign convention: positive W is delivered to the grid (generation, battery discharge) and
positive var is injected (over-excited). Units are SI: W, var, VA, V, Hz, s, Wh, %.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

MAX_STEP_S = 1.0  # longest sub-step when integrating a long interval
MAX_SUBSTEPS = 1000
IDLE_W = 0.5  # below this |W| a device counts as idle


class SimClock:
    """Simulated seconds since creation, running `speed` times faster than `source`.

    ``paused``: it stands at 0 until `resume` (a scenario's time starts once everything it
    needs is up).
    """

    def __init__(
        self,
        speed: float = 1.0,
        source: Callable[[], float] = time.monotonic,
        *,
        paused: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._source = source
        self._t0 = source()
        self._held: float | None = 0.0 if paused else None

    def resume(self) -> None:
        """Run on from the instant the clock stands at (no-op when it runs)."""
        if self._held is not None:
            self._t0 = self._source() - self._held / self.speed
            self._held = None

    def now(self) -> float:
        """Simulated time, s."""
        if self._held is not None:
            return self._held
        return (self._source() - self._t0) * self.speed

    @contextlib.contextmanager
    def held(self, at: float | None = None) -> Iterator[float]:
        """Hold simulated time still inside the block (re-entrant), yielding that instant:
        now, or ``at`` (a step scheduled for that time that runs a little late).

        Whatever steps to now() inside the block steps to the same time, e.g. a meter and the
        devices it measures.
        """
        if self._held is not None:
            yield self._held
            return
        self._held = self.now() if at is None else at
        try:
            yield self._held
        finally:
            self._held = None


class Profile(Protocol):
    """A power as a function of simulated time: available PV (DC) power, or a house load, W."""

    def available_w(self, t: float) -> float: ...


@dataclass(frozen=True, slots=True)
class ConstantProfile:
    """The same available power at all times."""

    w: float

    def available_w(self, t: float) -> float:
        return self.w


@dataclass(frozen=True, slots=True)
class TableProfile:
    """Linear interpolation through (t_s, W) points, optionally looped with the last t as period."""

    points: tuple[tuple[float, float], ...]
    loop: bool = True

    def __post_init__(self) -> None:
        times = [p[0] for p in self.points]
        if not self.points or times != sorted(times):
            raise ValueError("profile points must be a non-empty list sorted by time")

    def available_w(self, t: float) -> float:
        times = [p[0] for p in self.points]
        period = times[-1]
        if self.loop and period > 0:
            t = t % period
        return interpolate(self.points, t)


@dataclass(frozen=True, slots=True)
class ClearSkyProfile:
    """A clear-sky day (sin^1.5 between sunrise and sunset) compressed into `day_s` seconds."""

    peak_w: float
    day_s: float = 86400.0
    start_h: float = 6.0
    sunrise_h: float = 6.0
    sunset_h: float = 18.0

    def available_w(self, t: float) -> float:
        hour = (self.start_h + t / self.day_s * 24.0) % 24.0
        if not self.sunrise_h < hour < self.sunset_h:
            return 0.0
        x = (hour - self.sunrise_h) / (self.sunset_h - self.sunrise_h)
        return self.peak_w * float(math.sin(math.pi * x) ** 1.5)


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Piecewise-linear y(x) through sorted points, flat outside them."""
    xs = [p[0] for p in points]
    if x <= xs[0]:
        return points[0][1]
    if x >= xs[-1]:
        return points[-1][1]
    i = bisect.bisect_right(xs, x)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def lag(y: float, target: float, h: float, tau: float) -> tuple[float, float]:
    """First-order response over h seconds: the new value and its exact integral (W·s)."""
    if tau <= 0:
        return target, target * h
    decay = math.exp(-h / tau)
    return target + (y - target) * decay, target * h + (y - target) * tau * (1.0 - decay)


def substeps(dt: float) -> tuple[int, float]:
    """Split dt into n equal steps of at most MAX_STEP_S (at most MAX_SUBSTEPS of them)."""
    n = min(max(1, math.ceil(dt / MAX_STEP_S)), MAX_SUBSTEPS)
    return n, dt / n


@dataclass
class Grid:
    """Grid voltage and frequency at the point of connection, with optional seeded noise."""

    v_nom: float = 230.0
    hz_nom: float = 50.0
    noise_v: float = 0.0
    noise_hz: float = 0.0
    seed: int = 0
    v_set: float | None = None  # overrides v_nom, e.g. for volt-var tests
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def sample(self) -> tuple[float, float]:
        """(V, Hz) now."""
        v = self.v_nom if self.v_set is None else self.v_set
        hz = self.hz_nom
        if self.noise_v:
            v += self._rng.gauss(0.0, self.noise_v)
        if self.noise_hz:
            hz += self._rng.gauss(0.0, self.noise_hz)
        return v, hz


def _reactive_room(w: float, va_rtg: float, var_rtg: float) -> float:
    """Largest |var| the inverter can add at active power w."""
    return min(var_rtg, math.sqrt(max(va_rtg**2 - w**2, 0.0)))


class PvState(enum.Enum):
    """Operating state of a PV inverter."""

    OFF = "OFF"
    SLEEPING = "SLEEPING"
    MPPT = "MPPT"
    THROTTLED = "THROTTLED"


@dataclass(frozen=True, slots=True)
class PvRatings:
    """PV inverter nameplate."""

    w_rtg: float
    va_rtg: float
    var_rtg: float


@dataclass
class PvControls:
    """Setpoints a PV inverter obeys; None means the function is disabled."""

    w_max: float
    w_lim_pct: float | None = None  # % of w_max
    w_set: float | None = None  # W cap (fixed active power)
    pf: float | None = None  # signed: > 0 injects var
    var_set: float | None = None  # var
    volt_var: tuple[tuple[float, float], ...] | None = None  # (V, var) points
    connected: bool = True


class PvPhysics:
    """A PV inverter: output follows min(available, limits) through a first-order lag."""

    def __init__(
        self,
        ratings: PvRatings,
        profile: Profile,
        grid: Grid,
        tau_s: float = 1.0,
        t0: float = 0.0,
    ) -> None:
        self.ratings = ratings
        self.profile = profile
        self.grid = grid
        self.tau_s = tau_s
        self.controls = PvControls(w_max=ratings.w_rtg)
        self.t = t0
        self.w = 0.0
        self.var = 0.0
        self.v, self.hz = grid.sample()
        self.available_w = max(profile.available_w(t0), 0.0)
        self.wh_injected = 0.0

    def w_cap(self) -> float:
        """The active-power ceiling set by the rating and the controls, W."""
        c = self.controls
        cap = min(self.ratings.w_rtg, c.w_max)
        if c.w_lim_pct is not None:
            cap = min(cap, c.w_max * c.w_lim_pct / 100.0)
        if c.w_set is not None:
            cap = min(cap, c.w_set)
        return max(cap, 0.0) if c.connected else 0.0

    def _var_target(self, w: float) -> float:
        c = self.controls
        if not c.connected:
            return 0.0
        if c.var_set is not None:
            q = c.var_set
        elif c.pf is not None and c.pf != 0:
            pf = min(abs(c.pf), 1.0)
            q = math.copysign(abs(w) * math.sqrt(1.0 / pf**2 - 1.0), c.pf)
        elif c.volt_var:
            q = interpolate(c.volt_var, self.v)
        else:
            q = 0.0
        room = _reactive_room(w, self.ratings.va_rtg, self.ratings.var_rtg)
        return min(max(q, -room), room)

    def step(self, t: float) -> None:
        """Advance to simulated time t (no-op if t is not later than the last step)."""
        dt = t - self.t
        if dt <= 0:
            return
        self.v, self.hz = self.grid.sample()
        n, h = substeps(dt)
        for i in range(1, n + 1):
            self.available_w = max(self.profile.available_w(self.t + h * i), 0.0)
            target = min(self.available_w, self.w_cap())
            self.w, energy = lag(self.w, target, h, self.tau_s)
            self.var, _ = lag(self.var, self._var_target(target), h, self.tau_s)
            self.wh_injected += max(energy, 0.0) / 3600.0
        self.t = t

    @property
    def state(self) -> PvState:
        """OFF when disconnected, SLEEPING without sun, THROTTLED when a limit binds."""
        if not self.controls.connected:
            return PvState.OFF
        if self.available_w < IDLE_W:
            return PvState.SLEEPING
        if self.w_cap() < self.available_w:
            return PvState.THROTTLED
        return PvState.MPPT


class ChargeState(enum.IntEnum):
    """Battery charge state, numbered like SunSpec ChaSt (models 124 and 802)."""

    OFF = 1
    EMPTY = 2
    DISCHARGING = 3
    CHARGING = 4
    FULL = 5
    HOLDING = 6


@dataclass(frozen=True, slots=True)
class BatteryRatings:
    """Battery inverter nameplate; the SoC range is the manufacturer's."""

    wh_rtg: float
    w_cha_max: float
    w_discha_max: float
    va_rtg: float
    efficiency: float = 0.95  # one-way
    soc_min_pct: float = 0.0
    soc_max_pct: float = 100.0


@dataclass
class BatteryControls:
    """Setpoints a battery inverter obeys."""

    w_set: float = 0.0  # W, > 0 discharges
    w_cha_max: float | None = None  # W, a lower charge ceiling than the rating
    soc_rsv_min_pct: float | None = None
    soc_rsv_max_pct: float | None = None
    connected: bool = True


class BatteryPhysics:
    """A battery inverter: SoC integrates power with one-way efficiency and stops at its limits."""

    def __init__(
        self,
        ratings: BatteryRatings,
        grid: Grid,
        soc_pct: float,
        tau_s: float = 1.0,
        t0: float = 0.0,
    ) -> None:
        self.ratings = ratings
        self.grid = grid
        self.tau_s = tau_s
        self.controls = BatteryControls()
        self.t = t0
        self.w = 0.0
        self.soc_pct = soc_pct
        self.v, self.hz = grid.sample()
        self.wh_injected = 0.0
        self.wh_absorbed = 0.0

    def soc_limits(self) -> tuple[float, float]:
        """(lowest, highest) SoC allowed now, %: manufacturer range narrowed by reserves."""
        c, r = self.controls, self.ratings
        low, high = r.soc_min_pct, r.soc_max_pct
        if c.soc_rsv_min_pct is not None:
            low = max(low, c.soc_rsv_min_pct)
        if c.soc_rsv_max_pct is not None:
            high = min(high, c.soc_rsv_max_pct)
        return low, high

    def blocked(self) -> bool:
        """Whether the commanded direction is stopped by a SoC limit."""
        low, high = self.soc_limits()
        w_set = self.controls.w_set
        return (w_set > 0 and self.soc_pct <= low) or (w_set < 0 and self.soc_pct >= high)

    def w_target(self) -> float:
        """The setpoint clipped to the ratings, 0 when disconnected or blocked, W."""
        c, r = self.controls, self.ratings
        if not c.connected or self.blocked():
            return 0.0
        w_cha_max = r.w_cha_max if c.w_cha_max is None else min(c.w_cha_max, r.w_cha_max)
        return min(max(c.w_set, -w_cha_max), r.w_discha_max)

    def step(self, t: float) -> None:
        """Advance to simulated time t (no-op if t is not later than the last step)."""
        dt = t - self.t
        if dt <= 0:
            return
        self.v, self.hz = self.grid.sample()
        n, h = substeps(dt)
        capacity_ws = self.ratings.wh_rtg * 3600.0
        eta = self.ratings.efficiency
        for _ in range(n):
            if self.blocked() or not self.controls.connected:
                self.w = 0.0
            target = self.w_target()
            self.w, energy = lag(self.w, target, h, self.tau_s)
            stored = -energy / eta if energy > 0 else -energy * eta
            self.soc_pct += stored / capacity_ws * 100.0
            self.wh_injected += max(energy, 0.0) / 3600.0
            self.wh_absorbed += max(-energy, 0.0) / 3600.0
            low, high = self.soc_limits()
            if self.soc_pct <= low and self.w > 0:
                self.soc_pct, self.w = low, 0.0
            elif self.soc_pct >= high and self.w < 0:
                self.soc_pct, self.w = high, 0.0
        self.t = t

    @property
    def charge_state(self) -> ChargeState:
        """What the battery is doing now."""
        low, high = self.soc_limits()
        if not self.controls.connected:
            return ChargeState.OFF
        if self.w > IDLE_W:
            return ChargeState.DISCHARGING
        if self.w < -IDLE_W:
            return ChargeState.CHARGING
        if self.soc_pct >= high:
            return ChargeState.FULL
        if self.soc_pct <= low:
            return ChargeState.EMPTY
        return ChargeState.HOLDING

    @property
    def wh_available(self) -> float:
        """Energy that can still be discharged above the lower SoC limit, Wh."""
        low, _ = self.soc_limits()
        return max(self.soc_pct - low, 0.0) / 100.0 * self.ratings.wh_rtg


class MeterPhysics:
    """A site meter at the grid connection: a house load plus the devices behind the meter.

    `site` returns the (W, var) those devices deliver to the grid now. w and var follow this
    module's convention, so w = Σ device W - load is positive when the site exports. Energy
    integrates the load profile and the site power (linear between steps), split by the sign of
    the net power every sub-step: wh_injected is exported, wh_absorbed imported, Wh.
    """

    def __init__(
        self,
        load: Profile,
        grid: Grid,
        site: Callable[[], tuple[float, float]],
        t0: float = 0.0,
    ) -> None:
        self.load = load
        self.grid = grid
        self.site = site
        self.load_set: float | None = None  # forces the load, W
        self.t = t0
        self.load_w = self._load_at(t0)
        self.site_w, self.var = site()
        self.w = self.site_w - self.load_w
        self.v, self.hz = grid.sample()
        self.wh_injected = 0.0
        self.wh_absorbed = 0.0

    def _load_at(self, t: float) -> float:
        return max(self.load.available_w(t), 0.0) if self.load_set is None else self.load_set

    def step(self, t: float) -> None:
        """Advance to simulated time t (no-op if t is not later than the last step)."""
        dt = t - self.t
        if dt <= 0:
            return
        self.v, self.hz = self.grid.sample()
        site_w, self.var = self.site()
        n, h = substeps(dt)
        for i in range(n):
            mid = (i + 0.5) / n  # midpoint rule: exact while load and site power are linear
            net_w = self.site_w + (site_w - self.site_w) * mid - self._load_at(self.t + mid * dt)
            if net_w > 0:
                self.wh_injected += net_w * h / 3600.0
            else:
                self.wh_absorbed -= net_w * h / 3600.0
        self.site_w = site_w
        self.load_w = self._load_at(t)
        self.w = site_w - self.load_w
        self.t = t
