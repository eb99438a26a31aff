"""SunSpec register images built, read and written through pysunspec2's own encoder and decoder."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from sunspec2 import mb
from sunspec2.device import Group, Model, Point

SUNS_MARKER = (0x5375, 0x6E53)  # b"SunS"
END_MODEL = (mb.SUNS_END_MODEL_ID, 0)

Value = int | float | str | None

# Raw ranges of integer point types; the "not implemented" sentinel is kept out of them.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-32767, 32767),
    "uint16": (0, 0xFFFE),
    "count": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "bitfield16": (0, 0x7FFF),
    "int32": (-(2**31) + 1, 2**31 - 1),
    "uint32": (0, 2**32 - 2),
    "enum32": (0, 2**32 - 2),
    "bitfield32": (0, 2**31 - 1),
    "int64": (-(2**63) + 1, 2**63 - 1),
    "uint64": (0, 2**64 - 2),
    "sunssf": (-10, 10),
}
_ACC_MODULO = {"acc16": 2**16, "acc32": 2**32, "acc64": 2**64}
_PERCENT_OF_RATING_UNITS = {"%WHRtg", "% WChaMax", "% WDisChaMax"}


class WriteRefused(Exception):
    """A client write the device rejects, carrying the Modbus exception code to answer with."""

    def __init__(self, code: ExcCodes, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code


@dataclass(frozen=True, slots=True)
class PointChange:
    """One point a client write changed, in engineering units (scale factor applied)."""

    model_id: int
    name: str
    value: Value


@dataclass(frozen=True, slots=True)
class _Slot:
    address: int
    length: int
    model_id: int
    name: str
    point: Point
    read_only: Point | None  # a curve's ReadOnly flag: 1 makes its points read-only


def _registers(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _walk(
    group: Group, prefix: str = "", read_only: Point | None = None
) -> Iterator[tuple[str, Point, Point | None]]:
    """(name, point, the ReadOnly point of its curve, if any) for every point of a group."""
    read_only = group.points.get("ReadOnly", read_only)
    for name, point in group.points.items():
        yield prefix + name, point, read_only
    for gname, sub in group.groups.items():
        if isinstance(sub, list):
            for index, item in enumerate(sub, start=1):
                yield from _walk(item, f"{prefix}{gname}[{index}].", read_only)
        else:
            yield from _walk(sub, f"{prefix}{gname}.", read_only)


def _percent_limited(pdef: Mapping[str, Any]) -> bool:
    """Whether a point is a share of a rating, which a device keeps within +/-100 %."""
    units = str(pdef.get("units", "")).strip()
    return units in _PERCENT_OF_RATING_UNITS or ("Pct" in pdef["name"] and units != "Secs")


def _check_value(point: Point) -> str | None:
    """Why a freshly decoded written value is out of range, or None if it is acceptable."""
    pdef = point.pdef
    raw = point.value
    symbols = [int(s["value"]) for s in pdef.get("symbols", [])]
    if pdef["type"].startswith("enum") and symbols and raw not in symbols:
        return f"{pdef['name']}={raw} is not one of {symbols}"
    if pdef["type"].startswith("bitfield") and symbols and raw is not None:
        mask = sum(1 << bit for bit in symbols)
        if raw & ~mask:
            return f"{pdef['name']}={raw:#x} sets undefined bits"
    if raw is None or isinstance(raw, str):
        return None
    value = point.cvalue
    if _percent_limited(pdef) and not -100 <= value <= 100:
        return f"{pdef['name']}={value} % is outside +/-100 %"
    if (pdef.get("units") == "cos()" or pdef["name"] == "PF") and not -1 <= value <= 1:
        return f"{pdef['name']}={value} is not a power factor"
    return None


class RegisterImage:
    """A contiguous block of holding registers at a base address, read-only to clients."""

    def __init__(self, base: int, registers: Sequence[int]) -> None:
        self.base = base
        self.registers = list(registers)

    @property
    def end(self) -> int:
        """First address after the image."""
        return self.base + len(self.registers)

    def read(self, address: int, count: int) -> list[int]:
        """Registers [address, address + count)."""
        offset = address - self.base
        return self.registers[offset : offset + count]

    def model_ids(self) -> list[int]:
        """Model ids in chain order, walked from the 'SunS' marker up to the end model."""
        ids: list[int] = []
        offset = len(SUNS_MARKER)
        while offset < len(self.registers) and self.registers[offset] != mb.SUNS_END_MODEL_ID:
            ids.append(self.registers[offset])
            if offset + 1 >= len(self.registers):
                break
            offset += 2 + self.registers[offset + 1]
        return ids

    def apply_write(self, address: int, values: Sequence[int]) -> list[PointChange]:
        """Refuse every write: a plain register image has no writable points."""
        raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{address}: image is read-only")


class SunSpecImage(RegisterImage):
    """'SunS', a chain of pysunspec2 models and the end model, with points addressed by name."""

    def __init__(self, models: Sequence[Model], base: int = mb.SUNS_BASE_ADDR_DEFAULT) -> None:
        registers = list(SUNS_MARKER)
        self.models: dict[int, Model] = {}
        self._ranges: dict[int, range] = {}
        self._slots: dict[tuple[int, str], _Slot] = {}
        for model in models:
            start = base + len(registers)
            self.models[model.model_id] = model
            self._ranges[model.model_id] = range(start, start + model.len)
            for name, point, read_only in _walk(model):
                slot = _Slot(
                    start + point.offset, point.len, model.model_id, name, point, read_only
                )
                self._slots[(model.model_id, name)] = slot
            registers.extend(_registers(model.get_mb()))
        registers.extend(END_MODEL)
        if base + len(registers) > 0x10000:
            raise ValueError(f"a SunSpec map of {len(registers)} registers does not fit at {base}")
        super().__init__(base, registers)
        self._by_address = sorted(self._slots.values(), key=lambda s: s.address)
        self._addresses = [s.address for s in self._by_address]
        self._bounds: dict[tuple[int, str], tuple[float, float]] = {}

    def relaid(self, base: int, inserted: Model | None = None) -> SunSpecImage:
        """The same models and values at another base, with ``inserted`` (if given) right
        after the first model, so every later model moves; point bounds are kept."""
        models = list(self.models.values())
        if inserted is not None:
            if inserted.model_id in self.models:
                raise ValueError(f"model {inserted.model_id} is already in the chain")
            models.insert(1, inserted)
        image = SunSpecImage(models, base)
        image._bounds = dict(self._bounds)
        return image

    def address(self, model_id: int, name: str) -> int:
        """Register address of a point (its first register)."""
        return self._slots[(model_id, name)].address

    def model_range(self, model_id: int) -> range:
        """Addresses of a model, from its ID register to its last point."""
        return self._ranges[model_id]

    def point_names(self, model_id: int) -> list[str]:
        """Point names of a model in register order; groups as 'Crv[2].Pt[1].V'."""
        return [s.name for s in self._by_address if s.model_id == model_id]

    def get(self, model_id: int, name: str) -> Value:
        """A point's value in engineering units, None when not implemented."""
        value: Value = self._slots[(model_id, name)].point.cvalue
        return value

    def set(self, model_id: int, name: str, value: Value) -> None:
        """Set a point in engineering units (clamped to its type) and re-encode its registers."""
        slot = self._slots[(model_id, name)]
        point = slot.point
        ptype = point.pdef["type"]
        if value is None or ptype in ("string", "float32", "float64"):
            point.value = value
        else:
            if point.sf_required:
                point.cvalue = value
            else:
                point.value = round(float(value))
            raw = int(point.value)
            if ptype in _ACC_MODULO:
                point.value = raw % _ACC_MODULO[ptype]
            elif ptype in _INT_RANGES:
                low, high = _INT_RANGES[ptype]
                point.value = min(max(raw, low), high)
        self._encode(slot)

    def bound(self, model_id: int, name: str, low: float, high: float) -> None:
        """Refuse client writes that put a point outside [low, high] (engineering units)."""
        self._bounds[(model_id, name)] = (low, high)

    def _out_of_bounds(self, slot: _Slot) -> str | None:
        """Why a freshly decoded written value is outside the point's bounds, if it is."""
        bounds = self._bounds.get((slot.model_id, slot.name))
        value = slot.point.cvalue
        if bounds is None or value is None or bounds[0] <= value <= bounds[1]:
            return None
        return f"{slot.name}={value} is outside {bounds[0]:g}..{bounds[1]:g}"

    def update(self, model_id: int, values: Mapping[str, Value]) -> None:
        """Set several points of one model, in the mapping's order (scale factors first)."""
        for name, value in values.items():
            self.set(model_id, name, value)

    def _encode(self, slot: _Slot) -> None:
        offset = slot.address - self.base
        self.registers[offset : offset + slot.length] = _registers(slot.point.get_mb())

    def _slots_in(self, start: int, end: int) -> list[_Slot]:
        index = max(bisect.bisect_right(self._addresses, start) - 1, 0)
        found: list[_Slot] = []
        for slot in self._by_address[index:]:
            if slot.address >= end:
                break
            if slot.address + slot.length > start:
                found.append(slot)
        return found

    def apply_write(self, address: int, values: Sequence[int]) -> list[PointChange]:
        """Decode a client write into the points it changes, refusing it as a real device would.

        Registers outside writable points (marker, model headers, access "R", a curve marked
        ReadOnly) give ILLEGAL_ADDRESS; a value out of range, outside the point's bounds or not
        among an enum's symbols gives ILLEGAL_VALUE. A refused write leaves the image untouched.
        """
        end = address + len(values)
        slots = self._slots_in(address, end)
        covered = sum(min(s.address + s.length, end) - max(s.address, address) for s in slots)
        if covered != len(values):
            raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{address}+{len(values)}: not a point")
        for slot in slots:
            if slot.point.pdef.get("access", "R") != "RW" or (
                slot.read_only is not None and slot.read_only.value == 1
            ):
                raise WriteRefused(ExcCodes.ILLEGAL_ADDRESS, f"{slot.name} is read-only")
        previous = [slot.point.value for slot in slots]
        new_registers = list(self.registers)
        new_registers[address - self.base : end - self.base] = values
        for slot in slots:
            offset = slot.address - self.base
            data = b"".join(
                r.to_bytes(2, "big") for r in new_registers[offset : offset + slot.length]
            )
            slot.point.set_mb(data)
            if (reason := _check_value(slot.point) or self._out_of_bounds(slot)) is not None:
                for restored, old in zip(slots, previous, strict=True):
                    restored.point.value = old
                raise WriteRefused(ExcCodes.ILLEGAL_VALUE, reason)
        self.registers[:] = new_registers
        return [PointChange(s.model_id, s.name, s.point.cvalue) for s in slots]
