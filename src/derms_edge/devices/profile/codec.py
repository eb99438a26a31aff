"""Sans-I/O codec of register profiles: a point's registers in, its value out, and back.

value = raw x scale, in SI units. 32-bit values take two registers in the profile's word
order ("big": high word first). A float32 reading NaN or infinite means "no value" (None);
integers have no such sentinel in vendor maps and always decode.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TypeVar

from derms_edge.config import RegisterPoint, RegisterType
from derms_edge.devices.registers import MAX_READ_REGISTERS, plan_reads
from derms_edge.errors import DeviceProtocolError, RegisterValueError

WordOrder = Literal["big", "little"]
MAX_GAP = 8
"""Unmapped registers a read may bridge rather than being split in two."""

K = TypeVar("K")

_STRUCT: dict[RegisterType, str] = {
    "uint16": "H",
    "int16": "h",
    "uint32": "I",
    "int32": "i",
    "float32": "f",
}


def _described(point: RegisterPoint) -> str:
    return f"{point.address} ({point.type}, scale {point.scale:g})"


def size(point: RegisterPoint) -> int:
    """Registers the point takes."""
    return 1 if point.type.endswith("16") else 2


def decode(point: RegisterPoint, registers: Sequence[int], word_order: WordOrder) -> float | None:
    """The point's value from exactly its registers; None for a float that is not a number."""
    if len(registers) != size(point):
        raise ValueError(f"register {point.address}: {size(point)} registers, got {registers!r}")
    words = registers if word_order == "big" else registers[::-1]
    raw = struct.unpack(">" + _STRUCT[point.type], struct.pack(f">{len(words)}H", *words))[0]
    if point.type == "float32" and not math.isfinite(raw):
        return None
    return float(raw * point.scale)


def encode(point: RegisterPoint, value: float, word_order: WordOrder) -> list[int]:
    """The registers that make the point read ``value``; RegisterValueError if it cannot."""
    if not math.isfinite(value):
        raise RegisterValueError(_described(point), point.address, value, "must be a finite number")
    code = ">" + _STRUCT[point.type]
    raw: float = value / point.scale
    if not math.isfinite(raw):  # a tiny scale: the raw value is past every register type
        raise RegisterValueError(
            _described(point), point.address, value, f"raw {raw} does not fit {point.type}"
        )
    if point.type != "float32":
        raw = round(raw)
    try:
        data = struct.pack(code, raw)
    except (struct.error, OverflowError):
        raise RegisterValueError(
            _described(point), point.address, value, _out_of_range(point.type, raw)
        ) from None
    words = list(struct.unpack(f">{size(point)}H", data))
    return words if word_order == "big" else words[::-1]


def _out_of_range(register_type: RegisterType, raw: float) -> str:
    """Why a raw value does not fit its register type."""
    if register_type == "float32":
        return "out of range for float32"
    bits = 8 * struct.calcsize(_STRUCT[register_type])
    if register_type.startswith("u"):
        low, high = 0, (1 << bits) - 1
    else:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return f"out of range for {register_type}: raw {raw} is not in {low}..{high}"


def plan(points: Iterable[RegisterPoint], max_gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """(address, count) reads covering every point: as few as possible, <= 125 registers each,
    bridging gaps of up to ``max_gap`` unmapped registers."""
    spans = [(point.address, size(point)) for point in points]
    return plan_reads(spans, max_count=MAX_READ_REGISTERS, max_gap=max_gap)


def decode_reads(
    points: Mapping[K, RegisterPoint],
    blocks: Sequence[tuple[int, Sequence[int]]],
    word_order: WordOrder,
) -> dict[K, float | None]:
    """Every point's value out of the (address, registers) blocks a plan's reads returned."""
    joined = _join(blocks)
    values: dict[K, float | None] = {}
    for key, point in points.items():
        end = point.address + size(point)
        block = next(
            (
                registers[point.address - start : end - start]
                for start, registers in joined
                if start <= point.address and end <= start + len(registers)
            ),
            None,
        )
        if block is None:
            raise DeviceProtocolError(f"register {point.address} was not read")
        values[key] = decode(point, block, word_order)
    return values


def _join(blocks: Sequence[tuple[int, Sequence[int]]]) -> list[tuple[int, list[int]]]:
    """The blocks with those that touch joined: a read may end inside a 32-bit point."""
    joined: list[tuple[int, list[int]]] = []
    for start, registers in sorted(blocks, key=lambda block: block[0]):
        if joined and joined[-1][0] + len(joined[-1][1]) == start:
            joined[-1][1].extend(registers)
        else:
            joined.append((start, list(registers)))
    return joined
