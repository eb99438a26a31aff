"""The codec against pysunspec2 as the independent reference, and encode's checks."""

from __future__ import annotations

import ipaddress
import math
import random
import string
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sunspec2
import sunspec2.device as ps
from hypothesis import given, settings
from hypothesis import strategies as st
from sunspec2 import mb
from sunspec2.file.client import FileClientDevice

from derms_edge.devices.sunspec import (
    ModelLayout,
    PointValue,
    build_layout,
    decode,
    encode,
    model_definition,
)
from derms_edge.errors import GatewayError, PointError

MODELS = [1, 101, 102, 103, 111, 112, 113, 120, 121, 122, 123, 124, 126, 160]
MODELS += [201, 202, 203, 204, 701, 702, 703, 704, 705, 712, 713, 715, 802]
MODELS += [63001]  # pysunspec2's test model: one point of every type, fixed and sunssf scales
DEVICE_1547 = Path(sunspec2.__file__).parent / "tests" / "test_data" / "device_1547.json"


# --- pysunspec2 side: build images with its encoder, read values with its decoder -------------


def ps_points(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every pysunspec2 point of a model or group with our path for it."""
    for name, point in group.points.items():
        yield prefix + name, point
    for name, sub in group.groups.items():
        if isinstance(sub, list):
            for index, instance in enumerate(sub):
                yield from ps_points(instance, f"{prefix}{name}[{index}].")
        else:
            yield from ps_points(sub, f"{prefix}{name}.")


def reference(model: Any) -> dict[str, PointValue]:
    """pysunspec2's decoded values, adjusted for the differences the codec documents."""
    values: dict[str, PointValue] = {}
    for path, point in ps_points(model):
        kind = point.pdef["type"]
        if kind == "pad":
            continue
        sf = point.pdef.get("sf")
        if isinstance(sf, str):
            sf_point = point.group.points.get(sf) or model.points[sf]
            if sf_point.value is None:  # pysunspec2 returns the raw value; we return None
                values[path] = None
                continue
        value = point.cvalue
        if value is not None and kind == "string":  # we also end at NUL and strip spaces
            value = value.split("\0")[0].rstrip(" ")
        if value is not None and kind == "ipaddr":  # we give dotted text, pysunspec2 an int
            value = str(ipaddress.IPv4Address(value))
        if value is not None and kind == "ipv6addr":  # we use the standard notation
            value = str(ipaddress.IPv6Address(bytes.fromhex(value.replace(":", ""))))
        values[path] = value
    return values


def to_registers(data: bytes) -> list[int]:
    """Big-endian bytes as 16-bit registers."""
    return list(struct.unpack(f">{len(data) // 2}H", data))


def same(ours: PointValue, theirs: PointValue) -> bool:
    """Equal with the same type; floats may differ in the last bit, as pysunspec2 computes
    raw * 0.01 where we divide raw / 100 exactly (visible only for 64-bit raws past 2**53)."""
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, float) and isinstance(theirs, float):
        return math.isclose(ours, theirs, rel_tol=1e-15, abs_tol=0.0)
    return ours == theirs


def assert_same(ours: Mapping[str, PointValue], expected: Mapping[str, PointValue]) -> None:
    """Same paths, same values and same Python types (int stays int, float stays float)."""
    assert set(ours) == set(expected)
    wrong = {p: (ours[p], v) for p, v in expected.items() if not same(ours[p], v)}
    assert not wrong, wrong


def random_raw(pdef: Mapping[str, Any], rng: random.Random) -> Any:
    """A raw value for a point, not implemented one time in six."""
    kind = pdef["type"]
    if kind in ("pad", "eui48") or rng.random() < 1 / 6:
        return None
    size = pdef.get("size") or mb.point_type_info[kind].len
    bits = 16 * size
    if kind == "sunssf":
        return rng.randint(-4, 4)
    if kind == "ipv6addr":
        return rng.randbytes(16).hex().upper()
    if kind == "string":
        alphabet = string.ascii_letters + string.digits + " .-"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 2 * size)))
    if kind.startswith("float"):
        return struct.unpack(">f", struct.pack(">f", rng.uniform(-1e5, 1e5)))[0]
    if kind.startswith("enum") and pdef.get("symbols") and rng.random() < 0.8:
        return rng.choice(pdef["symbols"])["value"]
    if kind.startswith("acc") or kind == "ipaddr":
        return rng.randint(1, (1 << bits) - 1)
    if kind.startswith("int"):
        return rng.randint(-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1)
    return rng.randint(0, (1 << bits) - 2)


def random_data(
    gdef: Mapping[str, Any], rng: random.Random, counts: Mapping[str, int], legacy: int
) -> dict[str, Any]:
    """pysunspec2 dict data (raw values) for a group, with the given repeat counts."""
    data: dict[str, Any] = {}
    for pdef in gdef.get("points", ()):
        name = pdef["name"]
        if name in ("ID", "L"):
            continue
        data[name] = counts[name] if name in counts else random_raw(pdef, rng)
    for sub in gdef.get("groups", ()):
        count = sub.get("count")
        if count is None:
            data[sub["name"]] = random_data(sub, rng, counts, legacy)
        else:
            repeat = counts[count] if isinstance(count, str) else legacy
            data[sub["name"]] = [random_data(sub, rng, counts, legacy) for _ in range(repeat)]
    return data


def definition_length(gdef: Mapping[str, Any]) -> int:
    """Registers of a group's own points (nested groups excluded)."""
    return sum(p.get("size") or mb.point_type_info[p["type"]].len for p in gdef["points"])


def random_image(model_id: int, rng: random.Random) -> tuple[int, list[int]]:
    """(L, registers) of a pysunspec2-encoded instance of a model filled with random values."""
    top = model_definition(model_id)["group"]  # type: ignore[index]
    count_names = {g["count"] for g in _all_groups(top) if isinstance(g.get("count"), str)}
    counts = {name: rng.randint(1, 4) for name in sorted(count_names)}
    legacy = rng.randint(1, 4)
    data = random_data(top, rng, counts, legacy)
    legacy_groups = [g for g in top.get("groups", ()) if g.get("count") == 0]
    model_len = 0
    if legacy_groups:
        model_len = definition_length(top) - 2 + legacy * definition_length(legacy_groups[0])
    model = ps.Model(model_id, model_len=model_len, data=data)
    assert not model.error_info
    registers = to_registers(model.get_mb())
    return registers[1], registers


def _all_groups(gdef: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for sub in gdef.get("groups", ()):
        yield sub
        yield from _all_groups(sub)


# --- decode against pysunspec2 ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("model_id", MODELS)
def test_decode_matches_pysunspec2(model_id: int, seed: int) -> None:
    rng = random.Random(model_id * 100 + seed)
    length, registers = random_image(model_id, rng)
    layout = build_layout(model_id, length, registers)
    assert layout is not None
    assert layout.mismatch is None

    parsed = ps.Model(
        model_id, model_len=length, data=bytes(struct.pack(">" + "H" * len(registers), *registers))
    )

    assert_same(decode(layout, registers), reference(parsed))


def test_common_model_with_legacy_length_65_matches_pysunspec2() -> None:
    model = ps.Model(1, model_len=65, data={"Mn": "Acme", "Md": "X1", "SN": "42", "DA": 7})
    registers = to_registers(model.get_mb())
    layout = build_layout(1, 65)
    assert layout is not None
    assert layout.mismatch is None
    assert len(registers) == 67
    assert_same(decode(layout, registers), reference(model))


def test_device_1547_image_matches_pysunspec2_file_client() -> None:
    device = FileClientDevice(str(DEVICE_1547))
    device.scan()
    seen = []
    for model in device.model_list:
        registers = to_registers(model.get_mb())
        layout = build_layout(model.model_id, registers[1], registers)
        assert layout is not None
        assert layout.mismatch is None
        values = decode(layout, registers)
        assert_same(values, reference(model))
        seen.append(model.model_id)
        if model.model_id == 705:
            assert values["NCrv"] == 3
            assert [values[f"Crv[{i}].ActPt"] for i in range(3)] == [4, 4, 4]
            assert "Crv[2].Pt[3].Var" in values
    assert seen == [1, 701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711, 712, 713]


def test_values_set_through_pysunspec2_cvalue_decode_back() -> None:
    model = ps.Model(103, model_len=50)
    for sf, value in (("A_SF", -2), ("V_SF", -1), ("W_SF", 1), ("Hz_SF", -2), ("WH_SF", 0)):
        getattr(model, sf).value = value
    model.A.cvalue = 12.34
    model.PhVphA.cvalue = 230.1
    model.W.cvalue = 4560
    model.Hz.cvalue = 50.02
    model.WH.cvalue = 123456
    model.St.value = 4
    layout = build_layout(103, 50)
    assert layout is not None

    values = decode(layout, to_registers(model.get_mb()))

    assert values["A"] == 12.34
    assert values["PhVphA"] == 230.1
    assert values["W"] == 4560.0
    assert values["Hz"] == 50.02
    assert values["WH"] == 123456
    assert type(values["WH"]) is int
    assert values["St"] == 4
    assert values["PhVphB"] is None
    assert values["VA_SF"] is None
    assert "Pad" not in values


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([(103, 50), (203, 105), (701, 153), (704, 65)]),
    st.lists(st.integers(0, 0xFFFF), min_size=153, max_size=153),
)
def test_arbitrary_numeric_registers_match_pysunspec2(
    model: tuple[int, int], body: list[int]
) -> None:
    model_id, length = model
    layout = build_layout(model_id, length)
    assert layout is not None
    registers = [model_id, length, *body[:length]]
    for point in layout.points.values():  # keep scale factors sane, as real devices do
        if point.type == "sunssf" and registers[point.offset] != 0x8000:
            registers[point.offset] = registers[point.offset] % 9 - 4 & 0xFFFF
        elif point.type == "string":
            registers[point.offset : point.offset + point.size] = [0x4142] * point.size
    parsed = ps.Model(
        model_id, model_len=length, data=struct.pack(f">{len(registers)}H", *registers)
    )

    assert_same(decode(layout, registers), reference(parsed))


# --- decode details ----------------------------------------------------------------------------


def layout_of(model_id: int, length: int, registers: list[int] | None = None) -> ModelLayout:
    layout = build_layout(model_id, length, registers)
    assert layout is not None
    return layout


def image_103(**raw: int) -> list[int]:
    """A model 103 image with the given raw register values at their points' offsets."""
    layout = layout_of(103, 50)
    registers = [103, 50] + [0] * 50
    for name, value in raw.items():
        point = layout.point(name)
        words = struct.unpack(">2H", struct.pack(">i", value)) if point.size == 2 else [value]
        for i, word in enumerate(words):
            registers[point.offset + i] = word & 0xFFFF
    return registers


def test_not_implemented_values_decode_as_none() -> None:
    registers = image_103(A=0xFFFF, W=-0x8000, WH=0, St=0xFFFF, Evt1=-1, A_SF=0, W_SF=0)
    values = decode(layout_of(103, 50), registers)
    assert values["A"] is None  # uint16 0xFFFF
    assert values["W"] is None  # int16 0x8000
    assert values["WH"] is None  # acc32 0: not implemented for accumulators, as in pysunspec2
    assert values["St"] is None  # enum16 0xFFFF
    assert values["Evt1"] is None  # bitfield32 0xFFFFFFFF
    assert values["VA"] == 0  # int16 0 is a real 0 (VA_SF is 0 here)
    assert values["Evt2"] == 0  # bitfield32 0 is a real 0


def test_point_with_unimplemented_or_absurd_scale_factor_is_none() -> None:
    layout = layout_of(103, 50)
    assert decode(layout, image_103(W=1234, W_SF=0x8000))["W"] is None
    assert decode(layout, image_103(W=1234, W_SF=11))["W"] is None
    assert decode(layout, image_103(W=1234, W_SF=-10))["W"] == 1234e-10
    assert decode(layout, image_103(W=1234, W_SF=2))["W"] == 123400.0


def test_scaled_values_are_the_nearest_float_to_the_decimal() -> None:
    values = decode(layout_of(103, 50), image_103(Hz=4999, Hz_SF=-2, PF=-9987, PF_SF=-2))
    assert values["Hz"] == 49.99
    assert values["PF"] == -99.87


def test_registers_short_of_the_model_decode_the_rest_as_none() -> None:
    layout = layout_of(103, 50)
    registers = image_103(A=100, A_SF=-1, W=5, W_SF=0)

    values = decode(layout, registers[:15])  # up to and including W (offset 14), not W_SF

    assert values["A"] == 10.0
    assert values["W"] is None  # its scale factor is past the registers given
    assert values["St"] is None
    assert set(values) == set(decode(layout, registers))


def test_float_model_nan_is_none_and_float32_is_widened_like_pysunspec2() -> None:
    layout = layout_of(113, 60)
    registers = [113, 60, *[0x7FC0, 0] * 30]
    hz = layout.point("Hz").offset
    registers[hz : hz + 2] = struct.unpack(">2H", struct.pack(">f", 49.97))
    values = decode(layout, registers)
    assert values["A"] is None
    assert values["Hz"] == struct.unpack(">f", struct.pack(">f", 49.97))[0]


def test_strings_end_at_nul_and_lose_trailing_spaces() -> None:
    layout = layout_of(1, 66)
    registers = [1, 66] + [0] * 66
    mn, md, opt = (layout.point(p).offset for p in ("Mn", "Md", "Opt"))
    registers[mn : mn + 6] = struct.unpack(">6H", b"SolarEdge   ")
    registers[md : md + 4] = struct.unpack(">4H", b"AB\0junk!")
    registers[opt] = 0x00FF
    values = decode(layout, registers)
    assert values["Mn"] == "SolarEdge"
    assert values["Md"] == "AB"
    assert values["Opt"] is None  # leading NUL: not implemented
    assert values["Vr"] is None


# --- encode ------------------------------------------------------------------------------------


def write(layout: ModelLayout, registers: list[int], offset: int, words: list[int]) -> list[int]:
    """The registers after a write."""
    return registers[:offset] + words + registers[offset + len(words) :]


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 32.0), st.integers(-3, 1))
def test_encode_then_decode_gives_the_nearest_representable_value(
    value: float, exponent: int
) -> None:
    layout = layout_of(704, 65)
    registers = [704, 65] + [0] * 65
    sf = layout.point("PF_SF").offset
    registers[sf] = exponent & 0xFFFF
    values = decode(layout, registers)

    offset, words = encode(layout, "PFWInj.PF", value / 32, values)

    assert offset == layout.point("PFWInj.PF").offset
    decoded = decode(layout, write(layout, registers, offset, words))["PFWInj.PF"]
    assert decoded == pytest.approx(value / 32, abs=10.0**exponent / 2 + 1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 100), st.integers(-2, 0))
def test_encode_agrees_with_pysunspec2_on_scaled_writes(percent: int, exponent: int) -> None:
    model = ps.Model(704, model_len=65)
    model.WMaxLimPct_SF.value = exponent
    model.WMaxLimPct.cvalue = percent / 3
    expected = to_registers(model.get_mb())
    layout = layout_of(704, 65)

    offset, words = encode(layout, "WMaxLimPct", percent / 3, {"WMaxLimPct_SF": exponent})

    assert words == expected[offset : offset + len(words)]


@pytest.mark.parametrize(
    ("model", "path", "value", "sfs", "expected"),
    [
        ((1, 66), "DA", 247, {}, [247]),
        ((123, 24), "Conn", 1, {}, [1]),
        ((123, 24), "WMaxLimPct", 55.5, {"WMaxLimPct_SF": -1}, [555]),
        ((123, 24), "WMaxLimPct", 55.55, {"WMaxLimPct_SF": -1}, [556]),
        ((704, 65), "WSet", -150_000, {"WSet_SF": 0}, [0xFFFD, 0xB610]),
        ((704, 65), "WSet", 150_000, {"WSet_SF": 1}, [0, 15_000]),
        ((715, 7), "ControllerHb", 0x12345678, {}, [0x1234, 0x5678]),
        ((121, 30), "WMax", 5000, {"WMax_SF": 2}, [50]),
    ],
)
def test_encode_values(
    model: tuple[int, int],
    path: str,
    value: float,
    sfs: dict[str, PointValue],
    expected: list[int],
) -> None:
    layout = layout_of(*model)
    offset, words = encode(layout, path, value, sfs)
    assert (offset, words) == (layout.point(path).offset, expected)


def test_encode_string_pads_with_nul() -> None:
    layout = layout_of(63001, 200, [63001, 200])
    point = next(p for p in layout.points.values() if p.type == "string" and p.access == "RW")
    offset, words = encode(layout, point.path, "ab", {})
    assert offset == point.offset
    assert len(words) == point.size
    assert words[0] == 0x6162
    assert set(words[1:]) == {0}


@pytest.mark.parametrize(
    ("model", "path", "value", "sfs", "message"),
    [
        (
            (103, 50),
            "W",
            5,
            {"W_SF": 0},
            "model 103 point W: cannot write 5: the point is read-only",
        ),
        ((123, 24), "Nope", 5, {}, "model 123 point Nope: cannot write 5: no such point"),
        ((123, 24), "WMaxLimPct", 50, {}, "scale factor WMaxLimPct_SF is unknown"),
        ((123, 24), "WMaxLimPct", 50, {"WMaxLimPct_SF": None}, "unknown or not implemented"),
        ((123, 24), "WMaxLimPct", 655.35, {"WMaxLimPct_SF": -2}, "out of range for uint16"),
        ((123, 24), "WMaxLimPct", 65535, {"WMaxLimPct_SF": 0}, "except the not-implemented 65535"),
        ((123, 24), "WMaxLimPct", -1, {"WMaxLimPct_SF": 0}, "raw values 0..65535"),
        ((123, 24), "WMaxLimPct", "50", {"WMaxLimPct_SF": 0}, "expected a number"),
        ((123, 24), "WMaxLimPct", True, {"WMaxLimPct_SF": 0}, "expected a number"),
        ((123, 24), "WMaxLimPct", math.nan, {"WMaxLimPct_SF": 0}, "must be a finite number"),
        ((123, 24), "Conn", 7, {}, "not one of 0 DISCONNECT, 1 CONNECT"),
        ((704, 65), "WSet", -(2**31), {"WSet_SF": 0}, "except the not-implemented -2147483648"),
        ((1, 66), "DA", 70000, {}, "out of range for uint16"),
    ],
)
def test_encode_rejects(
    model: tuple[int, int],
    path: str,
    value: Any,
    sfs: dict[str, PointValue],
    message: str,
) -> None:
    with pytest.raises(PointError, match=message.replace("(", r"\(")) as caught:
        encode(layout_of(*model), path, value, sfs)
    assert isinstance(caught.value, GatewayError)
    assert caught.value.model_id == model[0]
    assert caught.value.path == path


def test_encode_string_rejects_too_long_and_non_str() -> None:
    layout = layout_of(63001, 200, [63001, 200])
    point = next(p for p in layout.points.values() if p.type == "string" and p.access == "RW")
    with pytest.raises(PointError, match="at most"):
        encode(layout, point.path, "x" * (2 * point.size + 1), {})
    with pytest.raises(PointError, match="expected a str"):
        encode(layout, point.path, 5, {})


def test_encode_float32_point() -> None:
    layout = layout_of(63001, 200, [63001, 200])
    point = next(p for p in layout.points.values() if p.type == "float32" and p.access == "RW")
    offset, words = encode(layout, point.path, 1.5, {})
    assert (offset, words) == (point.offset, [0x3FC0, 0])
    with pytest.raises(PointError, match="out of range for float32"):
        encode(layout, point.path, 1e300, {})
