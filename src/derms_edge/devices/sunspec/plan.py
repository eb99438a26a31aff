"""Read planning for SunSpec: the register spans of the models a poll needs (merged into
requests by `devices.registers.plan_reads`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from derms_edge.devices.sunspec.discovery import ModelHeader


def model_spans(
    models: Iterable[ModelHeader], wanted_ids: Collection[int]
) -> list[tuple[int, int]]:
    """(address, L + 2) of every discovered model whose ID is wanted, ID register included."""
    return [(m.address, m.length + 2) for m in models if m.model_id in wanted_ids]
