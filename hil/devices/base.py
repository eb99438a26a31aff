"""The device contract: fault and state types, SimulatedDevice and the physics-backed base."""

from __future__ import annotations

import abc
import enum
import time
from collections import deque
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException

from hil.devices.models import as_float, model
from hil.devices.revert import RevertRule, RevertTimers
from hil.image import PointChange, RegisterImage, SunSpecImage, WriteRefused
from hil.opender_physics import battery_physics
from hil.physics import (
    BatteryPhysics,
    BatteryRatings,
    ClearSkyProfile,
    ConstantProfile,
    Grid,
    MeterPhysics,
    Profile,
    PvPhysics,
    SimClock,
    TableProfile,
)
from hil.spec import (
    BatterySpec,
    GridSpec,
    MeterSpec,
    ModbusSpec,
    OpcUaBatterySpec,
    ProfileSpec,
    Pv1547Spec,
    PvLegacySpec,
)


class Fault(enum.Enum):
    """How a device currently misbehaves on the bus."""

    NONE = "none"
    SILENT = "silent"  # never answers: clients time out
    EXCEPTION = "exception"  # answers every request with DEVICE_FAILURE (4)
    HANG_UP = "hang_up"  # closes the TCP connection on every request, without an answer
    SHORT = "short"  # answers reads with one register fewer than asked (a wrong byte count)


ACCESS_LOG = 10_000
"""Requests a device remembers (`SimulatedDevice.accesses`)."""


@dataclass(frozen=True, slots=True)
class Access:
    """One request a device got: when (time.monotonic(), wall s), what, and whether it was
    answered normally (False: a fault kept it from being, or it was refused)."""

    at: float
    write: bool
    address: int
    count: int
    ok: bool


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A snapshot of a physics-backed device, SI units, positive W delivered to the grid."""

    id: str
    kind: str
    t_s: float
    w: float
    var: float
    v: float
    hz: float
    state: str
    connected: bool
    fault: Fault
    wh_injected: float
    wh_absorbed: float
    soc_pct: float | None = None
    available_w: float | None = None
    w_lim_pct: float | None = None
    pf: float | None = None
    var_set: float | None = None
    w_set: float | None = None
    reverts: int = 0  # revert timers (RvrtTms) that expired since power-on
    controller_hb_age_s: float | None = None  # since the last ControllerHb write (715), s
    load_w: float | None = None  # a meter's house load, W


def make_grid(spec: GridSpec) -> Grid:
    """The simulated grid a spec describes."""
    return Grid(spec.v_nom, spec.hz_nom, spec.noise_v, spec.noise_hz, spec.seed)


def make_battery_physics(
    spec: BatterySpec | OpcUaBatterySpec, va_rtg: float, t0: float
) -> BatteryPhysics:
    """The battery physics a spec describes, simple or OpenDER's as its `dynamics` says."""
    ratings = BatteryRatings(
        wh_rtg=spec.wh_rtg,
        w_cha_max=spec.w_cha_max,
        w_discha_max=spec.w_discha_max,
        va_rtg=va_rtg,
        efficiency=spec.efficiency,
        soc_min_pct=spec.soc_min_pct,
        soc_max_pct=spec.soc_max_pct,
    )
    grid = make_grid(spec.grid)
    return battery_physics(spec.dynamics, ratings, grid, spec.soc_pct, tau_s=spec.tau_s, t0=t0)


def make_profile(spec: ProfileSpec | None, default_w: float) -> Profile:
    """The power profile a spec describes: constant at default_w without one, which is also a
    clear-sky profile's default peak, W."""
    if spec is None:
        return ConstantProfile(default_w)
    if spec.kind == "constant":
        return ConstantProfile(spec.w)
    if spec.kind == "table":
        return TableProfile(tuple(spec.points), spec.loop)
    peak = default_w if spec.peak_w is None else spec.peak_w
    return ClearSkyProfile(peak, spec.day_s, spec.start_h, spec.sunrise_h, spec.sunset_h)


class SimulatedDevice(abc.ABC):
    """One Modbus unit: answers reads from its image and turns accepted writes into controls."""

    kind: str

    def __init__(self, spec: ModbusSpec, clock: SimClock) -> None:
        self.spec = spec
        self.id = spec.id
        self.unit_id = spec.unit_id
        self.clock = clock
        self.fault = Fault.NONE
        self.image = self._power_on_image()
        self.misreported: dict[int, int] = {}
        """Registers read with another value than the image holds (address: value)."""
        self.accesses: deque[Access] = deque(maxlen=ACCESS_LOG)
        """The latest requests, oldest first."""

    @abc.abstractmethod
    def _power_on_image(self) -> RegisterImage:
        """The register image as the device shows it after power-on."""

    @abc.abstractmethod
    def refresh(self) -> None:
        """Step the physics to now and write the measurements into the image."""

    @abc.abstractmethod
    def _apply(self, changes: list[PointChange]) -> None:
        """Put the controls the changed points set in force."""

    def _accept(self, changes: list[PointChange]) -> None:
        """React to accepted client writes."""
        self._apply(changes)

    @abc.abstractmethod
    def _reset_controls(self) -> None:
        """Forget every control a client set (power cycle)."""

    @property
    def base(self) -> int:
        """Address of the 'SunS' marker."""
        return self.image.base

    def model_ids(self) -> list[int]:
        """The model chain as a client discovers it."""
        return self.image.model_ids()

    def answer_read(self, address: int, count: int) -> list[int] | ExcCodes:
        """Serve a read from the image, as the current fault lets it.

        SILENT raises NoSuchIdException (the server then does not answer); EXCEPTION answers
        DEVICE_FAILURE; SHORT leaves the last register out; misreported registers read
        their false value.
        """
        refused = self._refusal(False, address, count)
        if refused is not None:
            return refused
        self.refresh()
        registers = self.image.read(address, count)
        for at, value in self.misreported.items():
            if address <= at < address + count:
                registers[at - address] = value
        if self.fault is Fault.SHORT:
            self._log(False, address, count, ok=False)
            return registers[:-1]
        self._log(False, address, count, ok=True)
        return registers

    def answer_write(self, address: int, values: list[int]) -> ExcCodes | None:
        """Vet a write against the image and put the controls it sets in force; a refused
        write answers its exception code and changes nothing."""
        refused = self._refusal(True, address, len(values))
        if refused is not None:
            return refused
        self.refresh()
        try:
            changes = self.image.apply_write(address, values)
        except WriteRefused as exc:
            self._log(True, address, len(values), ok=False)
            return exc.code
        self._accept(changes)
        self._log(True, address, len(values), ok=True)
        return None

    def _refusal(self, write: bool, address: int, count: int) -> ExcCodes | None:
        """The exception a request is answered with (a fault, or outside the image), or
        None; raise NoSuchIdException for a request that gets no answer at all."""
        refused = None
        if self.fault in (Fault.SILENT, Fault.HANG_UP):
            self._log(write, address, count, ok=False)
            raise NoSuchIdException(f"{self.id}: {self.fault.value}")
        if self.fault is Fault.EXCEPTION:
            refused = ExcCodes.DEVICE_FAILURE
        elif not self.image.base <= address <= self.image.end - count:
            refused = ExcCodes.ILLEGAL_ADDRESS
        if refused is not None:
            self._log(write, address, count, ok=False)
        return refused

    def _log(self, write: bool, address: int, count: int, *, ok: bool) -> None:
        self.accesses.append(Access(time.monotonic(), write, address, count, ok))

    def first_answer_after(self, t: float) -> Access | None:
        """The first request answered normally at or after ``t`` (time.monotonic())."""
        return next((a for a in self.accesses if a.at >= t and a.ok), None)

    def go_silent(self) -> None:
        """Stop answering (requests time out) until clear_faults()."""
        self.fault = Fault.SILENT

    def answer_exceptions(self) -> None:
        """Answer every request with exception 4 (DEVICE_FAILURE) until clear_faults()."""
        self.fault = Fault.EXCEPTION

    def hang_up(self) -> None:
        """Close the client's TCP connection on every request, unanswered, until
        clear_faults() (the listener stays open: clients connect again, and are hung up on
        again). Every unit behind the same port loses its connection with it."""
        self.fault = Fault.HANG_UP

    def answer_short(self) -> None:
        """Answer every read with one register fewer than asked until clear_faults()."""
        self.fault = Fault.SHORT

    def misreport_length(self, model_id: int, length: int) -> None:
        """Show ``length`` in a model's L register (a firmware bug) until clear_faults() or
        restart(); the model itself stays where it is."""
        image = self.image
        if not isinstance(image, SunSpecImage):
            raise TypeError(f"{self.id}: a {self.kind} has no SunSpec models")
        self.misreported[image.model_range(model_id).start + 1] = length

    def clear_faults(self) -> None:
        """Answer normally again."""
        self.fault = Fault.NONE
        self.misreported = {}

    def restart(self, *, base: int | None = None, insert_model: int | None = None) -> None:
        """Power-cycle: registers and controls back to power-on defaults, faults cleared.

        Physical state (energy counters, SoC) survives, as it would on a real device. After
        a firmware update a device may come back with its map moved: ``base`` moves the SunS
        marker (40000, 0 or 50000 are the addresses clients look at unless told another),
        ``insert_model`` puts that model (12, IPv4, say) right after model 1, so every later
        model moves. The next restart without them goes back to the spec's layout.
        """
        self._reset_controls()
        image = self._power_on_image()
        if base is not None or insert_model is not None:
            if not isinstance(image, SunSpecImage):
                raise TypeError(f"{self.id}: a {self.kind} has no SunSpec model chain to move")
            inserted = None if insert_model is None else model(insert_model)
            image = image.relaid(image.base if base is None else base, inserted)
        self.image = image
        self.clear_faults()
        self.refresh()


class PhysicsDevice(SimulatedDevice):
    """A SunSpec device whose measured points come from a physics model, with revert timers."""

    image: SunSpecImage
    physics: PvPhysics | BatteryPhysics | MeterPhysics

    def __init__(
        self, spec: PvLegacySpec | Pv1547Spec | BatterySpec | MeterSpec, clock: SimClock
    ) -> None:
        self.phases = 2 if spec.grid.split_phase else 3
        super().__init__(spec, clock)
        self.timers = RevertTimers(self._revert_rules())
        self.refresh()

    def _revert_rules(self) -> tuple[RevertRule, ...]:
        """The revert timers of the device's controls (none by default)."""
        return ()

    @abc.abstractmethod
    def _publish(self) -> None:
        """Write the physics' measurements into the image."""

    def refresh(self) -> None:
        """Step the physics to now, reverting on the way every control whose timer runs out
        (at its expiry time), and publish the measurements."""
        with self.clock.held() as now:
            for expired_at, changes in self.timers.expire(self.image, now):
                self.physics.step(expired_at)
                self._apply(changes)
            self.physics.step(now)
            self.timers.show_remaining(self.image, now)
            self._publish()

    def _accept(self, changes: list[PointChange]) -> None:
        """Restart the revert timers the writes touch, then apply them."""
        self.timers.restart(self.image, changes, self.physics.t)
        self._apply(changes)

    def restart(self, *, base: int | None = None, insert_model: int | None = None) -> None:
        """Power-cycle (see SimulatedDevice.restart); revert timers stop, their count resets."""
        self.timers = RevertTimers(self.timers.rules)
        super().restart(base=base, insert_model=insert_model)

    def set_voltage(self, v: float | None) -> None:
        """Force the grid voltage (V), or None to return to nominal."""
        self.refresh()
        self.physics.grid.v_set = v

    @abc.abstractmethod
    def snapshot(self) -> DeviceState:
        """The physics state now."""

    def _state(self, *, var: float, state: str, connected: bool, wh_absorbed: float) -> DeviceState:
        """What every physics device reports; kinds add the rest with dataclasses.replace."""
        p = self.physics
        return DeviceState(
            id=self.id,
            kind=self.kind,
            t_s=p.t,
            w=p.w,
            var=var,
            v=p.v,
            hz=p.hz,
            state=state,
            connected=connected,
            fault=self.fault,
            wh_injected=p.wh_injected,
            wh_absorbed=wh_absorbed,
            reverts=self.timers.expired,
        )

    def _value(self, model_id: int, name: str) -> float:
        """A point of the image as a number (unset reads 0)."""
        return as_float(self.image.get(model_id, name))
