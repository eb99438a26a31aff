"""Sans-I/O SunSpec codec: model registers in, point values out; a point write in, registers out.

Decoding follows pysunspec2's ``Point.cvalue`` (``sunspec2/device.py``, ``sunspec2/mb.py``):

- A point holding its type's not-implemented value (``sunspec2.mb.unimpl_value``) decodes as None.
  That includes accumulators (acc16/32/64) reading 0: pysunspec2 treats 0 as "not implemented"
  for them, as the SunSpec spec says, so a counter that really is at 0 also reads None.
- value = raw * 10**sf. With no scale factor, or sf 0, integers stay int; otherwise the value is the
  float nearest the decimal (raw / 10**-sf), which is what pysunspec2's ``round(raw * 10**sf, -sf)``
  gives.
- float32/float64: any NaN (0x7FC00000 is the sentinel) decodes as None; float32 values are widened
  to Python floats exactly as pysunspec2 does (49.97 reads 49.96999740600586).

Where we differ from pysunspec2, on purpose:

- A point whose scale factor is not implemented (0x8000), outside the spec's -10..10, or missing
  from the registers decodes as None; pysunspec2 returns the raw, unscaled integer.
- Strings end at the first NUL and lose trailing spaces ("SolarEdge " -> "SolarEdge"); pysunspec2
  strips only trailing NULs. Bytes that are not UTF-8 are replaced, not an error.
- ipaddr decodes as dotted text ("192.168.1.10") and ipv6addr in standard notation; pysunspec2
  gives an int and a non-standard hex grouping.
- Pad points are left out.
"""

from __future__ import annotations

import ipaddress
import math
import struct
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import sunspec2.mb

from derms_edge.devices.sunspec.models import ModelLayout, PointDef, PointValue
from derms_edge.errors import PointError

_SF_MIN, _SF_MAX = -10, 10  # the range SunSpec allows a sunssf
_POW10 = {e: 10**e for e in range(_SF_MAX + 1)}
_NEVER = 1 << 62  # a register count no model reaches: the point always decodes as None


class _Kind(IntEnum):
    """How a point's unpacked value becomes a point value."""

    INT = 0
    FLOAT = 1
    STRING = 2
    IPADDR = 3
    IPV6ADDR = 4
    EUI48 = 5


@dataclass(frozen=True, slots=True)
class _Type:
    """How one SunSpec type unpacks (struct code), decodes, and range-checks on writes."""

    code: str
    kind: _Kind
    low: int = 0
    high: int = 0


def _int_type(code: str) -> _Type:
    """An integer type with the range its struct code can hold."""
    bits = struct.calcsize(code) * 8
    if code.islower():
        return _Type(code, _Kind.INT, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return _Type(code, _Kind.INT, 0, (1 << bits) - 1)


_TYPES: dict[str, _Type] = {
    "int16": _int_type("h"),
    "sunssf": _int_type("h"),
    "uint16": _int_type("H"),
    "count": _int_type("H"),
    "acc16": _int_type("H"),
    "enum16": _int_type("H"),
    "bitfield16": _int_type("H"),
    "int32": _int_type("i"),
    "uint32": _int_type("I"),
    "acc32": _int_type("I"),
    "enum32": _int_type("I"),
    "bitfield32": _int_type("I"),
    "int64": _int_type("q"),
    "uint64": _int_type("Q"),
    "acc64": _int_type("Q"),
    "float32": _Type("f", _Kind.FLOAT),
    "float64": _Type("d", _Kind.FLOAT),
    "ipaddr": _Type("I", _Kind.IPADDR),
    "ipv6addr": _Type("16s", _Kind.IPV6ADDR),
    "eui48": _Type("8s", _Kind.EUI48),
}
_ENUMS = frozenset({"enum16", "enum32"})
_EUI48_UNIMPLEMENTED = sunspec2.mb.SUNS_UNIMPL_EUI48


# One decode step: path, index into the unpacked tuple, kind, not-implemented value, registers
# the point needs, scale factor (index into the unpacked tuple, or -1), registers it needs, and
# a fixed exponent used when there is no sunssf point.
_Step = tuple[str, int, _Kind, object, int, int, int, int]


@dataclass(frozen=True, slots=True)
class _Decoder:
    """A layout compiled for decoding: one struct for the whole model, then per-point steps."""

    registers: int
    words: struct.Struct
    body: struct.Struct
    steps: tuple[_Step, ...]


_decoders: weakref.WeakKeyDictionary[ModelLayout, dict[frozenset[str] | None, _Decoder]] = (
    weakref.WeakKeyDictionary()
)


def decode(
    layout: ModelLayout, registers: Sequence[int], points: frozenset[str] | None = None
) -> dict[str, PointValue]:
    """Decode a model's registers (from its ID register on) into point values by path:
    every point, or only those in ``points`` (paths the model lacks are left out)."""
    decoder = _decoder(layout, points)
    have = len(registers)
    need = decoder.registers
    if have >= need:
        buffer = decoder.words.pack(*registers[:need])
    else:
        buffer = decoder.words.pack(*registers, *([0] * (need - have)))
    raw = decoder.body.unpack(buffer)
    values: dict[str, PointValue] = {}
    for path, index, kind, unimplemented, end, sf_index, sf_end, fixed_exponent in decoder.steps:
        if end > have:
            values[path] = None
            continue
        value = raw[index]
        if kind is _Kind.INT:
            if value == unimplemented:
                values[path] = None
                continue
            exponent = fixed_exponent
            if sf_index >= 0:
                exponent = raw[sf_index]
                if sf_end > have or not _SF_MIN <= exponent <= _SF_MAX:
                    values[path] = None
                    continue
            if exponent == 0:
                values[path] = value
            elif exponent < 0:
                values[path] = value / _POW10[-exponent]
            else:
                values[path] = float(value * _POW10[exponent])
        else:
            values[path] = _convert(kind, value)
    return values


def _decoder(layout: ModelLayout, points: frozenset[str] | None) -> _Decoder:
    """The layout's decoder for these points (None: all), compiled on first use."""
    compiled = _decoders.get(layout)  # not setdefault: that makes a weak reference each call
    if compiled is None:
        compiled = _decoders[layout] = {}
    decoder = compiled.get(points)
    if decoder is None:
        decoder = compiled[points] = _compile(layout, points)
    return decoder


def _convert(kind: _Kind, value: Any) -> PointValue:
    """Decode the unpacked value of a point that is not an integer."""
    if kind is _Kind.FLOAT:
        return None if math.isnan(value) else float(value)
    if kind is _Kind.IPADDR:
        return str(ipaddress.IPv4Address(value)) if value else None
    if kind is _Kind.STRING:
        if not value or value[0] == 0:
            return None
        text: str = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        return text.rstrip(" ")
    if not any(value):
        return None
    if kind is _Kind.IPV6ADDR:
        return str(ipaddress.IPv6Address(value))
    text = ":".join(f"{byte:02X}" for byte in value[2:])  # EUI-48 sits in the last 6 bytes
    return None if text == _EUI48_UNIMPLEMENTED else text


def _compile(layout: ModelLayout, points: frozenset[str] | None) -> _Decoder:
    """Compile a layout into one struct for the whole model and a decode step per point:
    every point, or those in ``points``; the rest is skipped like pad, unless it is the
    scale factor of a point decoded."""
    wanted = layout.points.keys() if points is None else points & layout.points.keys()
    unpacked = {*wanted, *(layout.points[path].sf for path in wanted)}
    codes: list[str] = []
    indexes: dict[str, int] = {}
    offset = 0
    for point in layout.points.values():
        if point.offset > offset:
            codes.append(f"{2 * (point.offset - offset)}x")
        offset = point.offset + point.size
        if point.type == "pad" or point.path not in unpacked:
            codes.append(f"{2 * point.size}x")
        else:
            indexes[point.path] = len(indexes)  # each non-pad code unpacks to one item
            codes.append(_struct_code(layout, point))
    steps: list[_Step] = []
    for path, index in indexes.items():
        if path not in wanted:
            continue
        point = layout.points[path]
        kind = _kind(layout, point)
        end = point.offset + point.size
        sf_index, sf_end, exponent = -1, 0, 0
        if isinstance(point.sf, int):
            exponent = point.sf
        elif point.sf in indexes:
            sf_index = indexes[point.sf]
            sf_end = layout.points[point.sf].offset + 1
        elif point.sf is not None:  # its sunssf lies past the reported length: never decodable
            end = _NEVER
        unimplemented = sunspec2.mb.unimpl_value[point.type] if kind is _Kind.INT else None
        steps.append((path, index, kind, unimplemented, end, sf_index, sf_end, exponent))
    return _Decoder(
        registers=offset,
        words=struct.Struct(f">{offset}H"),
        body=struct.Struct(">" + "".join(codes)),
        steps=tuple(steps),
    )


def _kind(layout: ModelLayout, point: PointDef) -> _Kind:
    """How a point decodes; only integer points may have a scale factor."""
    kind = _Kind.STRING if point.type == "string" else _TYPES[point.type].kind
    if kind is not _Kind.INT and point.sf is not None:
        raise ValueError(f"model {layout.model_id}: {point.type} point {point.path} has an sf")
    return kind


def _struct_code(layout: ModelLayout, point: PointDef) -> str:
    """The struct code of one point, checked against its size in registers."""
    if point.type == "string":
        return f"{2 * point.size}s"
    known = _TYPES.get(point.type)
    if known is None or struct.calcsize(">" + known.code) != 2 * point.size:
        raise ValueError(
            f"model {layout.model_id}: cannot decode {point.path} "
            f"(type {point.type}, {point.size} registers)"
        )
    return known.code


def encode(
    layout: ModelLayout,
    path: str,
    value: int | float | str,
    values: Mapping[str, PointValue],
) -> tuple[int, list[int]]:
    """Encode a point write as (offset from the ID register, registers); ``values`` gives the sf."""
    point = layout.points.get(path)
    if point is None:
        raise PointError(layout.model_id, path, value, "no such point in this model")
    if point.access != "RW":
        raise PointError(layout.model_id, path, value, "the point is read-only")
    if point.type == "string":
        data = _encode_string(layout, point, value)
    elif point.type == "ipaddr":
        data = _encode_ipaddr(layout, point, value)
    elif point.type in _TYPES and _TYPES[point.type].kind in (_Kind.INT, _Kind.FLOAT):
        data = _encode_number(layout, point, value, values)
    else:
        raise PointError(layout.model_id, path, value, f"writing {point.type} is not supported")
    return point.offset, list(struct.unpack(f">{point.size}H", data))


def _encode_string(layout: ModelLayout, point: PointDef, value: object) -> bytes:
    """Encode a string point: UTF-8, NUL-padded to the point's size."""
    if not isinstance(value, str):
        raise PointError(layout.model_id, point.path, value, "expected a str")
    data = value.encode("utf-8")
    if b"\0" in data or len(data) > 2 * point.size:
        raise PointError(
            layout.model_id,
            point.path,
            value,
            f"must be at most {2 * point.size} bytes of UTF-8 without NUL",
        )
    return data.ljust(2 * point.size, b"\0")


def _encode_ipaddr(layout: ModelLayout, point: PointDef, value: object) -> bytes:
    """Encode an ipaddr point from dotted text."""
    try:
        address = ipaddress.IPv4Address(value) if isinstance(value, str) else None
    except ipaddress.AddressValueError:
        address = None
    if address is None or int(address) == sunspec2.mb.SUNS_UNIMPL_IPADDR:
        raise PointError(layout.model_id, point.path, value, "expected a dotted IPv4 address")
    return address.packed


def _encode_number(
    layout: ModelLayout, point: PointDef, value: object, values: Mapping[str, PointValue]
) -> bytes:
    """Encode a numeric point: unscale, round to the nearest raw integer, check the range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PointError(layout.model_id, point.path, value, "expected a number")
    if not math.isfinite(value):
        raise PointError(layout.model_id, point.path, value, "must be a finite number")
    known = _TYPES[point.type]
    if known.kind is _Kind.FLOAT:  # float points never have a scale factor (see _kind)
        try:
            return struct.pack(">" + known.code, value)
        except OverflowError:
            raise PointError(
                layout.model_id, point.path, value, f"out of range for {point.type}"
            ) from None
    exponent = _write_exponent(layout, point, value, values)
    if exponent < 0:
        raw = round(value * _POW10[-exponent])
    elif exponent > 0:
        raw = round(value / _POW10[exponent])
    else:
        raw = round(value)
    if not known.low <= raw <= known.high or raw == sunspec2.mb.unimpl_value[point.type]:
        scaled = f" (raw {raw} with scale factor {exponent})" if exponent else ""
        raise PointError(
            layout.model_id,
            point.path,
            value,
            f"out of range for {point.type}{scaled}: raw values {known.low}..{known.high} "
            f"except the not-implemented {sunspec2.mb.unimpl_value[point.type]}",
        )
    if point.type in _ENUMS and point.symbols and raw not in point.symbols.values():
        allowed = ", ".join(f"{v} {k}" for k, v in point.symbols.items())
        raise PointError(layout.model_id, point.path, value, f"not one of {allowed}")
    return struct.pack(">" + known.code, raw)


def _write_exponent(
    layout: ModelLayout, point: PointDef, value: object, values: Mapping[str, PointValue]
) -> int:
    """The scale factor exponent to unscale a written value with."""
    if point.sf is None:
        return 0
    if isinstance(point.sf, int):
        return point.sf
    exponent = values.get(point.sf)
    if not isinstance(exponent, int) or not _SF_MIN <= exponent <= _SF_MAX:
        raise PointError(
            layout.model_id,
            point.path,
            value,
            f"its scale factor {point.sf} is unknown or not implemented ({exponent!r})",
        )
    return exponent
