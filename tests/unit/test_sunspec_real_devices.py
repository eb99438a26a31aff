"""Discovery and decoding over register images captured from real devices (tests/data)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sunspec2.device as ps

from derms_edge.devices.registers import plan_reads
from derms_edge.devices.sunspec import (
    DiscoveryResult,
    ModelHeader,
    PointValue,
    build_layout,
    decode,
    discover,
    model_spans,
)
from derms_edge.devices.sunspec.mapping import power_factor, to_state
from derms_edge.errors import DeviceException
from derms_edge.model import DeviceKind

from .test_sunspec_codec import assert_same, reference

DATA = Path(__file__).parent.parent / "data" / "sunspec-real"
IMAGES = sorted(p.name for p in DATA.glob("*.json"))


class Image:
    """A device's register image served like a real device: exception 2 outside the image."""

    def __init__(self, name: str) -> None:
        document: dict[str, Any] = json.loads((DATA / name).read_text())
        self.base: int = document["base"]
        self.registers: list[int] = document["registers"]
        self.reads: list[tuple[int, int]] = []

    async def read(self, address: int, count: int) -> Sequence[int]:
        """Read holding registers."""
        self.reads.append((address, count))
        start = address - self.base
        if start < 0 or start + count > len(self.registers):
            raise DeviceException(2, f"read {count} at {address}")
        return self.registers[start : start + count]

    def model(self, header: ModelHeader) -> list[int]:
        """The registers of one model, from its ID register on."""
        start = header.address - self.base
        return self.registers[start : start + header.length + 2]


def scan(name: str) -> tuple[Image, DiscoveryResult, dict[int, dict[str, PointValue]]]:
    """Discover an image's models and decode every model that has a definition."""
    image = Image(name)
    result = asyncio.run(discover(image.read))
    values = {}
    for header in result.models:
        registers = image.model(header)
        layout = build_layout(header.model_id, header.length, registers)
        if layout is not None:
            values[header.model_id] = decode(layout, registers)
    return image, result, values


def chain(result: DiscoveryResult) -> list[tuple[int, int]]:
    """(model ID, L) of every model found."""
    return [(m.model_id, m.length) for m in result.models]


def test_accuenergy_meter_at_base_50000_with_short_model_204() -> None:
    image, result, values = scan("accuenergy-acuvim-ii-204.json")
    assert result.base == 50000
    assert chain(result) == [(1, 65), (204, 81)]
    assert result.warnings == ()
    layout = build_layout(204, 81, image.model(result.models[1]))
    assert layout is not None
    assert layout.mismatch == (
        "model 204: device reports length 81, definition says 105; "
        "decoding the 81 registers present"
    )
    assert max(p.offset + p.size for p in layout.points.values()) <= 83
    common, meter = values[1], values[204]
    assert (common["Mn"], common["Md"], common["SN"]) == ("ACCUENERGY", "Acuvim II", "AH17122035")
    assert common["Vr"] == "H:2.32 S:3.66"
    assert meter["W"] == 0.0
    assert meter["Hz"] == 0.0
    assert meter["PhVphA"] == 0.0
    assert meter["A"] == 0.0
    assert meter["PF"] == 1.0
    assert meter["TotWhExp"] is None
    assert "Evt" not in meter  # past the 81 registers the device reports


def test_fimer_inverter_keeps_vendor_models_and_walks_on() -> None:
    _, result, values = scan("fimer-pvs-3q58.json")
    assert result.base == 40000
    assert chain(result) == [
        (1, 66), (103, 50), (120, 26), (121, 30), (122, 44), (123, 24), (126, 226), (127, 10),
        (129, 60), (130, 60), (132, 226), (135, 60), (136, 60), (139, 60), (140, 60), (145, 8),
        (160, 248), (65230, 1), (65232, 20),
    ]  # fmt: skip
    assert [m.address for m in result.models][-2:] == [41354, 41357]
    assert result.warnings == ()
    assert 65230 not in values and 65232 not in values  # no definition: not decoded
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "FIMER",
        "-3Q58-",
        "118747-3Q58-4221",
    )
    inverter = values[103]
    assert inverter["W"] == 141380.0
    assert inverter["Hz"] == 49.99
    assert inverter["PhVphA"] == 442.3
    assert inverter["A"] == 320.1
    assert inverter["PF"] == -1.0
    assert inverter["WH"] == 459493000.0
    assert inverter["St"] == 4
    assert "curve[3].V1" in values[126] and "curve[4].V1" not in values[126]  # 4 curves
    assert "module[11].DCW" in values[160] and "module[12].DCW" not in values[160]  # 12 MPPTs


def test_fronius_eco_cut_off_end_marker_is_a_warning() -> None:
    image, result, values = scan("fronius-eco-27.0-3-s-float113.json")
    assert result.base == 40000
    assert chain(result) == [
        (1, 65),
        (113, 60),
        (120, 26),
        (121, 30),
        (122, 44),
        (123, 24),
        (160, 48),
    ]
    assert result.warnings == (
        "end model at 40313 has no length register "
        "(Modbus exception 2 (ILLEGAL DATA ADDRESS) on read 1 at 40314); ignored",
    )
    assert image.reads[-2:] == [(40313, 1), (40314, 1)]
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "Fronius",
        "FRONIUS Eco 27.0-3-S",
        "32091797",
    )
    inverter = values[113]
    assert inverter["W"] == 22520.0
    assert round(inverter["Hz"], 3) == 49.97  # type: ignore[arg-type]
    assert round(inverter["PhVphA"], 3) == 235.7  # type: ignore[arg-type]
    assert round(inverter["A"], 3) == 95.24  # type: ignore[arg-type]
    assert round(inverter["PF"], 3) == -99.998  # type: ignore[arg-type]
    assert inverter["WH"] == 39170800.0
    assert inverter["St"] == 4
    assert inverter["DCA"] is None  # 0x7FC00000 on the wire
    assert inverter["TmpCab"] is None
    assert [values[160][f"module[{i}].IDStr"] for i in range(2)] == ["String 1", "String 2"]


def test_fronius_symo_float_inverter() -> None:
    _, result, values = scan("fronius-symo-3.0-3-s-float113.json")
    assert result.base == 40000
    assert chain(result) == [
        (1, 65),
        (113, 60),
        (120, 26),
        (121, 30),
        (122, 44),
        (123, 24),
        (160, 48),
    ]
    assert result.warnings == ()
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "Fronius",
        "Symo 3.0-3-S",
        "29251001150340235",
    )
    inverter = values[113]
    assert inverter["W"] == 70.0
    assert round(inverter["Hz"], 3) == 50.05  # type: ignore[arg-type]
    assert round(inverter["PhVphA"], 3) == 247.4  # type: ignore[arg-type]
    assert round(inverter["A"], 3) == 0.7  # type: ignore[arg-type]
    assert inverter["PF"] == 100.0
    assert inverter["WH"] == 11937020.0
    assert inverter["St"] == 4


def test_outback_der_models_and_vendor_model_64122() -> None:
    image, result, values = scan("outback-oghi8048a-der.json")
    assert result.base == 40000
    assert chain(result) == [
        (1, 66), (202, 105), (701, 153), (702, 50), (703, 17), (704, 65), (705, 67), (706, 40),
        (707, 141), (708, 105), (709, 135), (710, 135), (711, 42), (712, 60), (713, 7), (714, 43),
        (715, 7), (64122, 45),
    ]  # fmt: skip
    assert result.models[-1].address == 41274
    assert result.warnings == ()
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "OutBack Power",
        "OGHI8048A",
        "OGHI2232F0100079",
    )
    assert values[1]["Opt"] == "prototype"
    meter = values[202]
    assert meter["W"] == 0
    assert meter["Hz"] == 0.0
    assert meter["PhVphA"] == 0.0
    assert meter["A"] is None
    assert meter["PF"] is None
    assert meter["TotWhExp"] is None
    der = values[701]
    assert der["W"] == 0
    assert der["Hz"] == 60.0
    assert der["VL1"] == 120.04
    assert der["LNV"] == 120.0
    assert der["A"] == 0.0
    assert der["PF"] == 0.0
    assert der["TotWhInj"] == 0  # uint64, not an accumulator type: 0 is a real 0
    assert der["St"] == 1
    assert values[713]["SoC"] == 100
    volt_var = values[705]
    assert (volt_var["NCrv"], volt_var["NPt"]) == (3, 4)
    assert "Crv[2].Pt[3].Var" in volt_var and "Crv[3].ActPt" not in volt_var
    for header in result.models:  # every 7xx layout fills its model exactly
        layout = build_layout(header.model_id, header.length, image.model(header))
        assert layout is None or layout.mismatch is None, layout.mismatch


def test_sma_inverter_with_many_unimplemented_points() -> None:
    _, result, values = scan("sma-sb3.6-1av-41.json")
    assert result.base == 40000
    assert chain(result) == [
        (1, 66), (11, 13), (12, 98), (101, 50), (120, 26), (121, 30), (122, 44), (123, 24),
        (124, 24), (126, 64), (127, 10), (128, 14), (131, 64), (132, 64), (160, 128), (129, 60),
        (130, 60),
    ]  # fmt: skip
    assert result.warnings == ()
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "SMA",
        "SB3.6-1AV-41",
        "3005067415",
    )
    assert values[11]["St"] == 2
    inverter = values[101]
    assert inverter["W"] == 3680.0
    assert inverter["Hz"] == 49.99
    assert inverter["PhVphA"] == 244.0
    assert inverter["A"] == 15.1
    assert inverter["PF"] == -1.0
    assert inverter["WH"] == 30388530.0
    assert inverter["St"] == 4


def test_solaredge_at_base_0_with_padded_manufacturer() -> None:
    image, result, values = scan("solaredge-se33.3k-103.json")
    assert image.reads[0] == (40000, 2)  # refused, then base 0
    assert result.base == 0
    assert chain(result) == [(1, 65), (103, 50)]
    assert result.warnings == ()
    assert values[1]["Mn"] == "SolarEdge"  # "SolarEdge " on the wire
    assert values[1]["Md"] == "SE33.3K"
    assert values[1]["SN"] == "7E1240CC"
    inverter = values[103]
    assert inverter["W"] == 24767
    assert type(inverter["W"]) is int  # W_SF is 0
    assert inverter["Hz"] == 59.99
    assert inverter["PhVphA"] == 284.9
    assert inverter["A"] == 86.89
    assert inverter["PF"] == -99.87  # the device's PF_SF is -2 where the spec implies -4
    assert inverter["WH"] == 17534384
    assert inverter["St"] == 4


def test_veris_meter() -> None:
    _, result, values = scan("veris-e51c2-203.json")
    assert result.base == 40000
    assert chain(result) == [(1, 65), (203, 105)]
    assert result.warnings == ()
    assert (values[1]["Mn"], values[1]["Md"], values[1]["SN"]) == (
        "Veris Industries",
        "E51C2",
        "4E4C3699",
    )
    assert values[1]["Opt"] == "None"  # literally
    meter = values[203]
    assert meter["W"] == 6540.0
    assert meter["Hz"] == 60.01
    assert meter["PhVphA"] == 123.0
    assert meter["A"] == 53.48
    assert meter["PF"] == 0.9925  # INDEX.md rounds it to 0.993
    assert meter["TotWhExp"] is None


@pytest.mark.parametrize("name", IMAGES)
def test_every_model_decodes_as_pysunspec2_does(name: str) -> None:
    image, result, _ = scan(name)
    for header in result.models:
        registers = image.model(header)
        layout = build_layout(header.model_id, header.length, registers)
        if layout is None:
            continue
        data = struct.pack(f">{len(registers)}H", *registers)
        theirs = reference(ps.Model(header.model_id, model_len=header.length, data=data))
        theirs["L"] = registers[1]  # pysunspec2 overwrites L with the definition's length
        ours = decode(layout, registers)
        missing = {p: v for p, v in theirs.items() if p not in ours}
        assert set(missing.values()) <= {None}  # only points past a short model's length
        assert_same(ours, {p: v for p, v in theirs.items() if p in ours})


@pytest.mark.parametrize("name", IMAGES)
def test_planned_reads_cover_every_model(name: str) -> None:
    image, result, _ = scan(name)
    spans = model_spans(result.models, {m.model_id for m in result.models})
    reads = plan_reads(spans)
    assert all(count <= 125 for _, count in reads)
    covered = {a for address, count in reads for a in range(address, address + count)}
    wanted = {a for address, count in spans for a in range(address, address + count)}
    assert covered == wanted
    assert len(reads) == -(-len(wanted) // 125)  # one contiguous map: the fewest possible
    for address, count in reads:
        asyncio.run(image.read(address, count))


PUBLISHED_PF = {  # image: (kind, the pf published), whatever scale the device used for PF
    "accuenergy-acuvim-ii-204.json": (DeviceKind.METER, 1.0),  # 204 PF sent as a fraction
    "fimer-pvs-3q58.json": (DeviceKind.INVERTER, -1.0),  # 103 PF sent as a fraction
    "fronius-eco-27.0-3-s-float113.json": (DeviceKind.INVERTER, -0.99998),  # percent
    "fronius-symo-3.0-3-s-float113.json": (DeviceKind.INVERTER, 1.0),  # percent
    "outback-oghi8048a-der.json": (DeviceKind.INVERTER, 0.0),  # 701 PF, a fraction
    "sma-sb3.6-1av-41.json": (DeviceKind.INVERTER, -1.0),  # 101 PF sent as a fraction
    "solaredge-se33.3k-103.json": (DeviceKind.INVERTER, -0.9987),  # percent
    "veris-e51c2-203.json": (DeviceKind.METER, 0.9925),  # 203 PF sent as a fraction
}


@pytest.mark.parametrize("name", IMAGES)
def test_the_published_pf_is_a_fraction_that_agrees_with_w_and_va(name: str) -> None:
    kind, published = PUBLISHED_PF[name]
    _, _, values = scan(name)
    state = to_state(kind, values)
    assert state.pf == pytest.approx(published, abs=1e-5)
    if state.w is not None and state.va:
        assert abs(state.pf) == pytest.approx(abs(state.w) / state.va, abs=0.001)


@pytest.mark.parametrize(
    ("reported", "w", "va", "pf"),
    [
        (-95.0, 950.0, 1000.0, -0.95),  # percent, as the legacy models say
        (-0.95, 950.0, 1000.0, -0.95),  # a fraction in a legacy model
        (0.5, 1.0, 200.0, 0.005),  # percent at idle: W and VA tell it from a fraction
        (0.5, None, None, 0.5),  # without W and VA a reading within ±1 is a fraction
        (0.5, 0.0, 0.0, 0.5),  # VA zero measures nothing
        (85.0, None, None, 0.85),
        (150.0, 1000.0, 1000.0, None),  # no scale makes it a power factor
        (None, -800.0, 1000.0, 0.8),  # not implemented: |W|/VA, unsigned
        (None, 1200.0, 1000.0, 1.0),  # W and VA read at different moments: capped
        (None, 800.0, None, None),
    ],
)
def test_power_factor_judges_the_scale_from_the_reading(
    reported: float | None, w: float | None, va: float | None, pf: float | None
) -> None:
    assert power_factor(reported, w, va) == (None if pf is None else pytest.approx(pf))
