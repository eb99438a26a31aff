"""Model layouts built from pysunspec2's definitions, and the package's public names."""

from __future__ import annotations

import os
import types

import pytest
import sunspec2

from derms_edge.devices import sunspec
from derms_edge.devices.sunspec import ModelLayout, build_layout, decode, model_definition
from derms_edge.errors import DeviceProtocolError


def layout_of(model_id: int, length: int, registers: list[int] | None = None) -> ModelLayout:
    layout = build_layout(model_id, length, registers)
    assert layout is not None
    return layout


def test_inverter_103_offsets() -> None:
    layout = layout_of(103, 50)
    offsets = {path: point.offset for path, point in layout.points.items()}
    assert layout.name == "inverter_three_phase"
    assert (layout.length, layout.defined_length, layout.mismatch) == (50, 50, None)
    assert offsets["ID"] == 0 and offsets["L"] == 1 and offsets["A"] == 2 and offsets["A_SF"] == 6
    assert [offsets[p] for p in ("PhVphA", "PhVphB", "PhVphC", "V_SF")] == [10, 11, 12, 13]
    assert [offsets[p] for p in ("W", "W_SF", "Hz", "Hz_SF", "VA", "VAr", "PF")] == [
        14, 15, 16, 17, 18, 20, 22,
    ]  # fmt: skip
    assert (offsets["WH"], layout.point("WH").size, offsets["WH_SF"]) == (24, 2, 26)
    assert offsets["St"] == 38
    assert list(offsets.values()) == sorted(offsets.values())


def test_point_definition_fields() -> None:
    layout = layout_of(103, 50)
    w = layout.point("W")
    assert (w.path, w.name, w.type, w.offset, w.size) == ("W", "W", "int16", 14, 1)
    assert (w.sf, w.access, w.mandatory, w.units) == ("W_SF", "R", True, "W")
    assert dict(w.symbols) == {}
    st = layout.point("St")
    assert st.symbols["MPPT"] == 4 and st.symbols["FAULT"] == 7
    assert layout.point("W_SF").sf is None
    da = layout_of(1, 66).point("DA")
    assert (da.access, da.mandatory, da.units) == ("RW", False, None)


def test_unknown_point_is_a_key_error_naming_model_and_path() -> None:
    with pytest.raises(KeyError, match="model 103 \\(inverter_three_phase\\) has no point 'Watts'"):
        layout_of(103, 50).point("Watts")


def test_common_model_at_legacy_length_65_has_no_pad() -> None:
    long, short = layout_of(1, 66), layout_of(1, 65)
    assert long.point("Pad").offset == 67 and long.mismatch is None
    assert "Pad" not in short.points
    assert (short.defined_length, short.mismatch) == (65, None)
    assert list(short.points) == list(long.points)[:-1]


def test_fixed_scale_factor_is_an_int() -> None:
    layout = layout_of(305, layout_of(305, 0).defined_length)
    assert (layout.point("Lat").sf, layout.point("Long").sf) == (-7, -7)


def test_shorter_model_keeps_the_points_that_fit_and_says_so() -> None:
    layout = layout_of(204, 81)
    assert layout.defined_length == 105
    assert layout.mismatch == (
        "model 204: device reports length 81, definition says 105; "
        "decoding the 81 registers present"
    )
    assert all(p.offset + p.size <= 83 for p in layout.points.values())
    assert list(layout.points) == list(layout_of(204, 105).points)[: len(layout.points)]
    assert layout.point("TotWhExp").offset == 38  # still there


def test_longer_model_keeps_the_defined_points_and_says_so() -> None:
    layout = layout_of(103, 52)
    assert layout.defined_length == 50
    assert layout.mismatch == (
        "model 103: device reports length 52, definition says 50; ignoring the 2 registers past it"
    )
    assert list(layout.points) == list(layout_of(103, 50).points)


def test_legacy_repeating_group_count_comes_from_the_length() -> None:
    mppt = layout_of(160, 48)  # 8 fixed + 2 modules of 20
    assert mppt.mismatch is None
    assert mppt.point("module[1].DCW").offset == 2 + 8 + 20 + 11
    assert mppt.point("module[1].DCW").sf == "DCW_SF"  # resolved outward to the model
    assert "module[2].ID" not in mppt.points
    volt_var = layout_of(126, 226)  # 10 fixed + 4 curves of 54
    assert [p for p in volt_var.points if p.endswith(".ActPt")] == [
        f"curve[{i}].ActPt" for i in range(4)
    ]
    assert volt_var.point("curve[3].V1").sf == "V_SF"


def test_legacy_length_that_is_not_a_whole_number_of_groups() -> None:
    layout = layout_of(160, 50)
    assert layout.defined_length == 48
    assert layout.mismatch is not None and "ignoring the 2 registers" in layout.mismatch
    assert layout_of(160, 8).mismatch is None
    assert "module[0].ID" not in layout_of(160, 8).points


def test_7xx_counts_come_from_the_registers() -> None:
    registers = [705, 67, 0, 0, 0, 4, 3]  # NPt = 4, NCrv = 3
    layout = layout_of(705, 67, registers)
    assert (layout.defined_length, layout.mismatch) == (67, None)
    crv = layout.point("Crv[1].ActPt").offset
    assert crv == 15 + 10 + 4 * 2  # 15 fixed registers, then Crv[0]: 10 + NPt points of 2
    assert layout.point("Crv[1].Pt[0].V").offset == crv + 10
    assert layout.point("Crv[2].Pt[3].Var").offset == 68
    assert layout.point("Crv[0].Pt[0].V").sf == "V_SF"
    assert layout.point("Crv[0].Pt[0].Var").sf == "DeptRef_SF"
    assert layout.point("Crv[0].RspTms").sf == "RspTms_SF"
    other = layout_of(705, 47, [705, 47, 0, 0, 0, 3, 2])
    assert "Crv[1].Pt[2].Var" in other.points and "Crv[2].ActPt" not in other.points


def test_nested_non_repeating_groups_use_dotted_paths() -> None:
    registers = [707, 0, 0, 0, 0, 2, 1]  # NPt = 2, NCrvSet = 1
    layout = layout_of(707, layout_of(707, 0, registers).defined_length, registers)
    assert layout.mismatch is None
    assert "Crv[0].MustTrip.Pt[1].V" in layout.points
    assert "Crv[0].MomCess.ActPt" in layout.points
    assert layout.point("Crv[0].MayTrip.Pt[0].Tms").sf == "Tms_SF"
    inj = layout_of(704, 65).point("PFWInj.PF")
    assert (inj.sf, inj.access) == ("PF_SF", "RW")


def test_count_points_must_be_in_the_registers() -> None:
    with pytest.raises(ValueError, match=r"model 705: need its registers to read .*NCrv"):
        build_layout(705, 67)
    # what the device's registers say is the device's error, not ours (found by tests/fuzz)
    with pytest.raises(DeviceProtocolError, match="count point NCrv, got 4 registers"):
        build_layout(705, 67, [705, 67, 0, 0])
    with pytest.raises(DeviceProtocolError, match=r"offset 6 .* got 2 registers .* L too short"):
        build_layout(705, 0, [705, 0])
    with pytest.raises(DeviceProtocolError, match="model 705: count point NCrv is not implemented"):
        build_layout(705, 67, [705, 67, 0, 0, 0, 4, 0xFFFF])


def test_absurd_counts_do_not_blow_up() -> None:
    with pytest.raises(DeviceProtocolError, match=r"would span .* registers"):
        build_layout(705, 67, [705, 67, 0, 0, 0, 40000, 3])
    layout = layout_of(705, 67, [705, 67, 0, 0, 0, 1, 60000])
    assert layout.defined_length == 13 + 60000 * (10 + 2)
    assert layout.mismatch is not None
    assert max(p.offset for p in layout.points.values()) <= 68


def test_models_without_definitions() -> None:
    for model_id in (64122, 65230, 65232, 999):
        assert model_definition(model_id) is None
        assert build_layout(model_id, 45) is None


def test_model_definition_is_pysunspec2s() -> None:
    definition = model_definition(701)
    assert definition is not None
    assert definition["id"] == 701
    assert definition["group"]["name"] == "DERMeasureAC"
    assert model_definition(701) is definition


def test_layouts_are_built_once_per_id_length_and_counts() -> None:
    assert build_layout(103, 50) is build_layout(103, 50)
    assert build_layout(103, 50) is not build_layout(103, 52)
    a = build_layout(705, 67, [705, 67, 0, 0, 0, 4, 3, 99])
    assert a is build_layout(705, 67, [705, 67, 1, 1, 1, 4, 3])
    assert a is not build_layout(705, 67, [705, 67, 0, 0, 0, 3, 4])


def test_every_pysunspec2_definition_lays_out_and_decodes() -> None:
    folder = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")
    ids = sorted(int(f[6:-5]) for f in os.listdir(folder) if f.startswith("model_"))
    assert len(ids) > 100
    for model_id in ids:
        registers = [1] * 2000  # every count point reads 1
        first = build_layout(model_id, 0, registers)
        assert first is not None
        layout = build_layout(model_id, first.defined_length, registers)
        assert layout is not None
        assert layout.mismatch is None, layout.mismatch
        values = decode(layout, registers[: layout.length + 2])
        assert set(values) == {p.path for p in layout.points.values() if p.type != "pad"}


def test_exported_names() -> None:
    public = sorted(
        name
        for name, value in vars(sunspec).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )
    assert sunspec.__all__ == public
