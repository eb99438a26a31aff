"""The register-profile codec: values from registers and back, and read planning."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from derms_edge.config import RegisterPoint, RegisterType
from derms_edge.devices.profile.codec import (
    WordOrder,
    decode,
    decode_reads,
    encode,
    plan,
)
from derms_edge.errors import DeviceProtocolError, GatewayError, RegisterValueError


def point(address: int = 1215, type: RegisterType = "uint16", scale: float = 1.0) -> RegisterPoint:
    return RegisterPoint(address=address, type=type, scale=scale)


def f32(value: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">f", value)))


@pytest.mark.parametrize(
    ("type", "registers", "word_order", "value"),
    [
        ("uint16", [0xFFFF], "big", 65535.0),
        ("int16", [0xFFFF], "big", -1.0),
        ("int16", [0x8000], "little", -32768.0),  # one register: no word order
        ("uint32", [0x0001, 0x0002], "big", 65538.0),
        ("uint32", [0x0001, 0x0002], "little", 131073.0),
        ("int32", [0xFFFF, 0xFFFE], "big", -2.0),
        ("int32", [0xFFFE, 0xFFFF], "little", -2.0),
        ("float32", f32(16.5), "big", 16.5),
        ("float32", f32(16.5)[::-1], "little", 16.5),
        ("float32", f32(-230.25), "big", -230.25),
    ],
)
def test_decode_types_and_word_order(
    type: RegisterType, registers: list[int], word_order: WordOrder, value: float
) -> None:
    assert decode(point(type=type), registers, word_order) == value


@pytest.mark.parametrize(
    ("type", "registers", "scale", "value"),
    [
        ("uint16", [2305], 0.1, 230.5),
        ("int16", [0xFFFB], -10.0, 50.0),
        ("float32", f32(11040.0), -1.0, -11040.0),  # consumption counted positive
        ("uint32", [0, 1500], 1000.0, 1_500_000.0),  # kWh -> Wh
        ("int32", [0xFFFF, 0xFC18], 0.001, -1.0),
    ],
)
def test_decode_scales(
    type: RegisterType, registers: list[int], scale: float, value: float
) -> None:
    assert decode(point(type=type, scale=scale), registers, "big") == pytest.approx(value)


@pytest.mark.parametrize(
    "registers", [[0x7FC0, 0], [0xFFC0, 0], [0x7FA0, 1], [0x7F80, 0], [0xFF80, 0]]
)
def test_a_float_that_is_not_a_number_is_no_value(registers: list[int]) -> None:
    assert decode(point(type="float32"), registers, "big") is None
    assert decode(point(type="float32"), registers[::-1], "little") is None


def test_integers_have_no_sentinel() -> None:
    assert decode(point(type="uint16"), [0xFFFF], "big") == 65535
    assert decode(point(type="int16"), [0x8000], "big") == -32768


def test_decode_wants_exactly_the_points_registers() -> None:
    with pytest.raises(ValueError, match="register 1215: 2 registers"):
        decode(point(type="float32"), [0], "big")


@pytest.mark.parametrize(
    ("type", "scale", "value", "registers"),
    [
        ("uint16", 1.0, 16, [16]),
        ("uint16", 0.1, 16.04, [160]),  # rounded to the register's resolution
        ("int16", 1.0, -1, [0xFFFF]),
        ("int16", -1.0, 5, [0xFFFB]),
        ("uint32", 1.0, 65538, [1, 2]),
        ("int32", 1.0, -2, [0xFFFF, 0xFFFE]),
        ("float32", 1.0, 16.5, f32(16.5)),
        ("float32", -1.0, 16.5, f32(-16.5)),
        ("float32", 0.001, 16.0, f32(16000.0)),
    ],
)
def test_encode(type: RegisterType, scale: float, value: float, registers: list[int]) -> None:
    assert encode(point(type=type, scale=scale), value, "big") == registers
    little = registers if len(registers) == 1 else registers[::-1]
    assert encode(point(type=type, scale=scale), value, "little") == little


@pytest.mark.parametrize(
    ("type", "scale", "value", "message"),
    [
        ("uint16", 1.0, 65536, r"out of range for uint16: raw 65536 is not in 0\.\.65535"),
        ("uint16", 1.0, -1, r"raw -1 is not in 0\.\.65535"),
        ("uint16", 0.1, 6553.6, r"raw 65536 is not in"),
        ("uint16", -1.0, 5, r"raw -5 is not in 0\.\.65535"),  # negative scale, unsigned
        ("int16", 1.0, 32768, r"raw 32768 is not in -32768\.\.32767"),
        ("uint32", 1.0, 2**32, r"is not in 0\.\.4294967295"),
        ("int32", 1.0, -(2**31) - 1, r"is not in -2147483648\.\.2147483647"),
        ("float32", 1.0, 1e39, "out of range for float32"),
        ("float32", 1.0, math.nan, "must be a finite number"),
        ("uint16", 1.0, math.inf, "must be a finite number"),
        # found by tests/fuzz: value / scale is infinite (OverflowError before it was checked)
        ("uint16", 5e-324, 1.0, "raw inf does not fit uint16"),
        ("float32", 1e-300, 1e10, "raw inf does not fit float32"),
    ],
)
def test_encode_refuses_what_the_register_cannot_hold(
    type: RegisterType, scale: float, value: float, message: str
) -> None:
    with pytest.raises(RegisterValueError, match=message) as caught:
        encode(point(type=type, scale=scale), value, "big")
    assert str(caught.value).startswith(f"register 1215 ({type}, scale {scale:g}): cannot write")
    assert (caught.value.address, caught.value.value) == (1215, value) or math.isnan(value)
    assert isinstance(caught.value, GatewayError)


_RANGES: dict[RegisterType, tuple[int, int]] = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFFFFFF),
    "int32": (-0x80000000, 0x7FFFFFFF),
}


@given(
    type=st.sampled_from(list(_RANGES)),
    data=st.data(),
    scale=st.sampled_from([1.0, 0.1, 0.01, -1.0, 10.0, -0.5]),
    word_order=st.sampled_from(["big", "little"]),
)
def test_integers_round_trip(
    type: RegisterType, data: Any, scale: float, word_order: WordOrder
) -> None:
    raw = data.draw(st.integers(*_RANGES[type]))
    p = point(type=type, scale=scale)
    registers = encode(p, raw * scale, word_order)
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(p, registers, word_order) == pytest.approx(raw * scale)


@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    word_order=st.sampled_from(["big", "little"]),
)
def test_floats_round_trip_exactly(value: float, word_order: WordOrder) -> None:
    p = point(type="float32")
    assert decode(p, encode(p, value, word_order), word_order) == value


def test_a_32_bit_point_must_fit_below_65536() -> None:
    with pytest.raises(ValidationError, match="65535 is the last address"):
        RegisterPoint(address=65535, type="uint32")
    assert RegisterPoint(address=65535, type="int16").address == 65535


ALFEN_LIKE = {
    "v": point(1201, "float32"),
    "a": point(1203, "float32"),
    "w": point(1205, "float32", -1.0),
    "soc_pct": point(1207, "float32"),
    "wh": point(1209, "uint32"),
    "validity": point(1213, "uint32"),
    "limit": point(1215, "float32"),
}


def test_plan_reads_a_contiguous_map_at_once() -> None:
    assert plan(ALFEN_LIKE.values()) == [(1201, 16)]


@pytest.mark.parametrize(
    ("addresses", "max_gap", "reads"),
    [
        ([100, 109], 8, [(100, 11)]),  # a gap of 7 registers is read through
        ([100, 110], 8, [(100, 12)]),  # of 8 too...
        ([100, 111], 8, [(100, 2), (111, 2)]),  # ...of 9 split
        ([100, 103], 0, [(100, 2), (103, 2)]),
        ([100, 101], 0, [(100, 3)]),  # overlapping points
        ([0, 124], 8, [(0, 2), (124, 2)]),
        (list(range(0, 126, 2)), 8, [(0, 125), (125, 1)]),  # at most 125 registers a read
        ([110, 100], 8, [(100, 12)]),  # any order
    ],
)
def test_plan_groups_nearby_registers(
    addresses: list[int], max_gap: int, reads: list[tuple[int, int]]
) -> None:
    points = [point(address, "uint32") for address in addresses]
    assert plan(points, max_gap=max_gap) == reads


def test_plan_of_a_far_apart_map() -> None:
    points = [point(0), point(1000, "float32"), point(1004), point(40000, "int32")]
    assert plan(points) == [(0, 1), (1000, 5), (40000, 2)]


def test_decode_reads_takes_each_point_from_its_block() -> None:
    registers = [0] * 16
    registers[0:2] = f32(230.0)
    registers[4:6] = f32(11040.0)
    registers[8:10] = [0, 1234]
    registers[14:16] = f32(16.0)
    values = decode_reads(ALFEN_LIKE, [(1201, registers)], "big")
    assert values == {
        "v": 230.0,
        "a": 0.0,
        "w": -11040.0,
        "soc_pct": 0.0,
        "wh": 1234.0,
        "validity": 0.0,
        "limit": 16.0,
    }


def test_decode_reads_from_several_blocks() -> None:
    points = {"x": point(10), "y": point(500, "float32")}
    values = decode_reads(points, [(500, f32(6.0)), (8, [0, 0, 7])], "big")
    assert values == {"x": 7.0, "y": 6.0}


def test_a_point_split_over_two_reads_is_joined() -> None:
    points = {"x": point(123, "float32"), "y": point(125, "uint16")}
    high, low = f32(6.5)
    blocks = [(0, [0] * 123 + [high]), (124, [low, 9])]  # a read ended inside "x"
    assert decode_reads(points, blocks, "big") == {"x": 6.5, "y": 9.0}


def test_a_point_outside_every_block_is_a_protocol_error() -> None:
    with pytest.raises(DeviceProtocolError, match="register 1216 was not read"):
        decode_reads({"x": point(1216, "float32")}, [(1201, [0] * 16)], "big")
