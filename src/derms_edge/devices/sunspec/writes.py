"""Point writes without I/O: one encoded point, the FC16 requests that carry several, the check.

A `PointWrite` is a point already encoded by the codec, so its raw registers are both what is
sent and what must read back. `group_writes` merges writes to adjacent points of one model into
as few Write Multiple Registers requests as possible; `differing` compares read-back registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from derms_edge.devices.registers import MAX_WRITE_REGISTERS
from derms_edge.devices.sunspec.codec import encode
from derms_edge.devices.sunspec.models import ModelLayout, PointValue
from derms_edge.errors import ControlRefused, PointError


@dataclass(frozen=True, slots=True)
class PointWrite:
    """One point to write: its value and the raw registers it encodes to (and must read back)."""

    model_id: int
    path: str
    value: int | float
    """In engineering units, as given to the codec."""
    offset: int
    """From the model's ID register."""
    registers: tuple[int, ...]
    verify: bool = True
    """False for a trigger the device may clear once acted on (705 AdptCrvReq)."""

    @property
    def point(self) -> str:
        """``model.path``, as a refusal names it (``704.WMaxLimPct``)."""
        return f"{self.model_id}.{self.path}"


def encode_write(
    device: str,
    layout: ModelLayout,
    values: Mapping[str, PointValue],
    path: str,
    value: int | float,
    *,
    verify: bool = True,
) -> PointWrite:
    """Encode one point write; a value the codec refuses is a ControlRefused naming the point."""
    try:
        offset, registers = encode(layout, path, value, values)
    except PointError as exc:
        raise ControlRefused(device, f"{layout.model_id}.{path}", str(exc)) from exc
    return PointWrite(layout.model_id, path, value, offset, tuple(registers), verify)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One FC16 request: contiguous registers of one model, covering whole points."""

    model_id: int
    offset: int
    registers: tuple[int, ...]
    points: tuple[PointWrite, ...]

    @property
    def label(self) -> str:
        """The points it writes, as a refusal names them (``704.WMaxLimPctEna..WMaxLimPct``)."""
        first, last = self.points[0], self.points[-1]
        return first.point if first is last else f"{first.point}..{last.path}"


def group_writes(
    writes: Sequence[PointWrite], max_count: int = MAX_WRITE_REGISTERS
) -> list[WriteRequest]:
    """Merge writes to adjacent points of one model into requests of <= ``max_count`` registers.

    Registers between two written points are never filled in (they may be read-only), so only
    points that touch are merged. Requests come in the order of their earliest write, so a
    value written before its enable point stays before it unless both go in one request.
    """
    if not 1 <= max_count <= MAX_WRITE_REGISTERS:
        raise ValueError(f"max_count must be 1..{MAX_WRITE_REGISTERS}, got {max_count}")
    ranked = sorted(enumerate(writes), key=lambda item: (item[1].model_id, item[1].offset))
    runs: list[list[tuple[int, PointWrite]]] = []
    for rank, write in ranked:
        run = runs[-1] if runs else None
        if run is not None and run[-1][1].model_id == write.model_id:
            last = run[-1][1]
            end = last.offset + len(last.registers)
            if write.offset < end:
                raise ValueError(f"writes to {last.point} and {write.point} overlap")
            size = end - run[0][1].offset + len(write.registers)
            if write.offset == end and size <= max_count:
                run.append((rank, write))
                continue
        runs.append([(rank, write)])
    runs.sort(key=lambda run: min(rank for rank, _ in run))
    return [_request([write for _, write in run]) for run in runs]


def _request(points: list[PointWrite]) -> WriteRequest:
    registers = tuple(r for point in points for r in point.registers)
    return WriteRequest(points[0].model_id, points[0].offset, registers, tuple(points))


def differing(writes: Iterable[PointWrite], registers: Sequence[int]) -> list[PointWrite]:
    """The verified writes whose registers in a model (from its ID register on) hold otherwise."""
    return [
        write
        for write in writes
        if write.verify
        and tuple(registers[write.offset : write.offset + len(write.registers)]) != write.registers
    ]
