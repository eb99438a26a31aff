"""Read planning: merging model spans into as few Modbus reads as possible."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derms_edge.devices.registers import plan_reads
from derms_edge.devices.sunspec import ModelHeader, model_spans


def test_adjacent_and_overlapping_spans_merge() -> None:
    assert plan_reads([(40002, 68), (40070, 52)]) == [(40002, 120)]
    assert plan_reads([(100, 10), (105, 10), (90, 12)]) == [(90, 25)]


def test_order_does_not_matter() -> None:
    assert plan_reads([(40070, 52), (40002, 68)]) == [(40002, 120)]


def test_reads_are_capped_at_125_registers() -> None:
    assert plan_reads([(40000, 300)]) == [(40000, 125), (40125, 125), (40250, 50)]
    assert plan_reads([(40002, 68), (40070, 52), (40122, 28)]) == [(40002, 125), (40127, 23)]


def test_smaller_cap() -> None:
    assert plan_reads([(0, 10)], max_count=4) == [(0, 4), (4, 4), (8, 2)]


def test_gaps_are_not_bridged_by_default() -> None:
    assert plan_reads([(0, 10), (11, 5)]) == [(0, 10), (11, 5)]


def test_gaps_up_to_max_gap_are_bridged() -> None:
    assert plan_reads([(0, 10), (13, 5)], max_gap=3) == [(0, 18)]
    assert plan_reads([(0, 10), (14, 5)], max_gap=3) == [(0, 10), (14, 5)]


def test_a_bridged_span_that_overflows_continues_in_the_next_read() -> None:
    assert plan_reads([(0, 100), (102, 50)], max_gap=2) == [(0, 125), (125, 27)]


def test_nothing_to_read() -> None:
    assert plan_reads([]) == []


@pytest.mark.parametrize(
    ("spans", "max_count", "max_gap", "message"),
    [
        ([(0, 0)], 125, 0, r"bad span \(0, 0\)"),
        ([(-1, 5)], 125, 0, r"bad span \(-1, 5\)"),
        ([(65530, 10)], 125, 0, r"bad span \(65530, 10\)"),
        ([(0, 5)], 126, 0, "max_count must be 1..125"),
        ([(0, 5)], 0, 0, "max_count must be 1..125"),
        ([(0, 5)], 125, -1, "max_gap must be >= 0"),
    ],
)
def test_bad_arguments(
    spans: list[tuple[int, int]], max_count: int, max_gap: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_reads(spans, max_count=max_count, max_gap=max_gap)


@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=12),
    st.integers(1, 125),
    st.integers(0, 20),
)
def test_reads_cover_exactly_the_wanted_registers_and_bridged_gaps(
    spans: list[tuple[int, int]], max_count: int, max_gap: int
) -> None:
    reads = plan_reads(spans, max_count=max_count, max_gap=max_gap)
    wanted = {a for address, count in spans for a in range(address, address + count)}
    read = [a for address, count in reads for a in range(address, address + count)]
    assert len(read) == len(set(read))  # no register twice
    assert wanted <= set(read)
    assert all(1 <= count <= max_count for _, count in reads)
    assert reads == sorted(reads)
    for address, count in reads:  # every read starts and ends on a wanted register
        assert address in wanted and address + count - 1 in wanted
    if max_gap == 0:  # nothing extra, and each contiguous run takes ceil(run / max_count) reads
        assert set(read) == wanted
        starts = [a for a in sorted(wanted) if a - 1 not in wanted]
        ends = [a + 1 for a in sorted(wanted) if a + 1 not in wanted]
        assert len(reads) == sum(
            -(-(e - s) // max_count) for s, e in zip(starts, ends, strict=True)
        )


def test_model_spans_picks_the_wanted_models() -> None:
    models = (
        ModelHeader(1, 40002, 66),
        ModelHeader(103, 40070, 50),
        ModelHeader(160, 40122, 48),
        ModelHeader(160, 40172, 48),
    )
    assert model_spans(models, {103, 160}) == [(40070, 52), (40122, 50), (40172, 50)]
    assert model_spans(models, ()) == []
