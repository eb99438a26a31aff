"""A Modbus EV charger with a vendor register map modelled on the Alfen NG9xx socket.

Holding registers from 1200, 32-bit values with the high word first:

    1200 uint16  Mode-3 state: 0 no vehicle (A), 1 connected (B), 2 charging (C)
    1201 float32 voltage line to neutral, V (mean of the phases)
    1203 float32 current per phase, A
    1205 float32 active power, W, positive = consumed
    1207 float32 EV state of charge, %
    1209 uint32  energy delivered to the EV since power-on, Wh
    1211 float32 applied max current, A (what the charger signals)
    1213 uint32  remaining validity of the written limit, s (0: expired)
    1215 float32 current limit, A (RW): 0 or 6..max_a; a write restarts the validity
    1217 float32 safe current, A (RW, same range): signalled once the validity expires
    1219 uint16  phases in use (1 or 3)

Writes to read-only registers, or to part of a value, answer ILLEGAL_ADDRESS (2); a
current outside 0 or 6..max_a answers ILLEGAL_VALUE (3) and changes nothing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pymodbus.constants import ExcCodes

from hil.devices.base import Fault, SimulatedDevice, make_grid
from hil.devices.models import as_float
from hil.evse_physics import MIN_SIGNAL_A, EvsePhysics, EvseRatings, Vehicle
from hil.image import PointChange, RegisterImage, WriteRefused
from hil.physics import SimClock
from hil.spec import EvseSpec

BASE = 1200
NO_MODEL = 0
"""PointChange.model_id of a vendor register: this map has no SunSpec models."""


@dataclass(frozen=True, slots=True)
class Register:
    """One value of the map."""

    name: str
    address: int
    type: Literal["uint16", "uint32", "float32"]
    writable: bool = False

    @property
    def size(self) -> int:
        """Registers the value takes."""
        return 1 if self.type == "uint16" else 2


REGISTERS = (
    Register("state", 1200, "uint16"),
    Register("v", 1201, "float32"),
    Register("a", 1203, "float32"),
    Register("w", 1205, "float32"),
    Register("soc_pct", 1207, "float32"),
    Register("wh", 1209, "uint32"),
    Register("applied_a", 1211, "float32"),
    Register("validity_s", 1213, "uint32"),
    Register("limit_a", 1215, "float32", writable=True),
    Register("safe_a", 1217, "float32", writable=True),
    Register("phases", 1219, "uint16"),
)
_BY_NAME = {r.name: r for r in REGISTERS}


def _encode(register: Register, value: float) -> list[int]:
    if register.type == "float32":
        return list(struct.unpack(">2H", struct.pack(">f", value)))
    high = 0xFFFF if register.type == "uint16" else 0xFFFFFFFF
    raw = min(max(round(value), 0), high)
    return [raw] if register.type == "uint16" else [raw >> 16, raw & 0xFFFF]


def _decode(register: Register, registers: Sequence[int]) -> float:
    if register.type == "float32":
        value: float = struct.unpack(">f", struct.pack(">2H", *registers))[0]
        return value
    return float(registers[0] if register.type == "uint16" else registers[0] << 16 | registers[1])


class EvseImage(RegisterImage):
    """The charger's registers, by name; vets client writes as the charger does."""

    def __init__(self, max_a: float) -> None:
        self.max_a = max_a
        super().__init__(BASE, [0] * sum(r.size for r in REGISTERS))

    def model_ids(self) -> list[int]:
        """None: the map is not SunSpec."""
        return []

    def get(self, name: str) -> float:
        """A value by register name."""
        register = _BY_NAME[name]
        return _decode(register, self.read(register.address, register.size))

    def update(self, values: Mapping[str, float]) -> None:
        """Set values by register name."""
        for name, value in values.items():
            register = _BY_NAME[name]
            offset = register.address - self.base
            self.registers[offset : offset + register.size] = _encode(register, value)

    def apply_write(self, address: int, values: Sequence[int]) -> list[PointChange]:
        """Decode a client write into the currents it sets, or refuse it whole."""
        end = address + len(values)
        hit = [r for r in REGISTERS if r.address < end and address < r.address + r.size]
        if not hit or hit[0].address != address or hit[-1].address + hit[-1].size != end:
            reason = f"{address}+{len(values)}: part of a value"
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, reason)
        changes = []
        for register in hit:
            if not register.writable:
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{register.address} is read-only")
            offset = register.address - address
            amps = _decode(register, values[offset : offset + register.size])
            if not (amps == 0 or MIN_SIGNAL_A <= amps <= self.max_a):  # NaN fails both
                raise WriteRefused(
                    ExcCodes.ILLEGAL_VALUE,
                    f"{register.address}: {amps} A is not 0 or {MIN_SIGNAL_A}..{self.max_a} A",
                )
            changes.append(PointChange(NO_MODEL, register.name, amps))
        self.registers[address - self.base : end - self.base] = values
        return changes


@dataclass(frozen=True, slots=True)
class EvseState:
    """A snapshot of the charger and its car; positive W is delivered to the grid."""

    id: str
    t_s: float
    state: str
    """IEC 61851 state: "A" no vehicle, "B" connected, "C" charging."""
    plugged: bool
    w: float
    """Active power, W: negative while charging."""
    a: float
    """Current per phase, A."""
    v: float
    hz: float
    soc_pct: float
    """The car's state of charge, %."""
    wh: float
    """Energy delivered to the car since power-on, Wh."""
    limit_a: float
    safe_a: float
    applied_a: float
    """The current the charger signals, A per phase."""
    validity_s: float
    """Remaining validity of the written limit, s."""
    fault: Fault


def evse_state(device_id: str, p: EvsePhysics, fault: Fault) -> EvseState:
    """A snapshot of a charger's physics (W positive delivered to the grid)."""
    return EvseState(
        id=device_id,
        t_s=p.t,
        state=p.state.name,
        plugged=p.plugged(),
        w=-p.w,
        a=p.a,
        v=p.v,
        hz=p.hz,
        soc_pct=p.soc_pct,
        wh=p.wh,
        limit_a=p.limit_a,
        safe_a=p.safe_a,
        applied_a=p.applied_a,
        validity_s=p.validity_s,
        fault=fault,
    )


class EvCharger(SimulatedDevice):
    """An EV charger (not SunSpec) whose written current limit expires after validity_s."""

    kind = "evse"
    spec: EvseSpec
    image: EvseImage

    def __init__(self, spec: EvseSpec, clock: SimClock) -> None:
        self.physics = EvsePhysics(
            EvseRatings(spec.phases, spec.max_a, spec.validity_s),
            Vehicle(spec.ev_wh, spec.ev_max_a),
            make_grid(spec.grid),
            soc_pct=spec.ev_soc_pct,
            safe_a=spec.safe_a,
            plugged_at=spec.plugged_at_s,
            tau_s=spec.tau_s,
            t0=clock.now(),
        )
        super().__init__(spec, clock)
        self.refresh()

    def _power_on_image(self) -> EvseImage:
        return EvseImage(self.spec.max_a)

    def _reset_controls(self) -> None:
        self.physics.step(self.clock.now())
        self.physics.power_on()

    def refresh(self) -> None:
        p = self.physics
        p.step(self.clock.now())
        self.image.update(
            {
                "state": p.state,
                "v": p.v,
                "a": p.a,
                "w": p.w,
                "soc_pct": p.soc_pct,
                "wh": p.wh,
                "applied_a": p.applied_a,
                "validity_s": math.ceil(p.validity_s),
                "limit_a": p.limit_a,
                "safe_a": p.safe_a,
                "phases": p.ratings.phases,
            }
        )

    def _apply(self, changes: list[PointChange]) -> None:
        for change in changes:
            if change.name == "limit_a":
                self.physics.write_limit(as_float(change.value))
            else:
                self.physics.safe_a = as_float(change.value)

    def plug(self, plugged: bool) -> None:
        """Plug the car in now, or unplug it."""
        self.refresh()
        self.physics.plug(plugged)

    def set_voltage(self, v: float | None) -> None:
        """Force the grid voltage (V), or None to return to nominal."""
        self.refresh()
        self.physics.grid.v_set = v

    def snapshot(self) -> EvseState:
        """The charger and its car now."""
        self.refresh()
        return evse_state(self.id, self.physics, self.fault)
