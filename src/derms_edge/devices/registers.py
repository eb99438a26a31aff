"""Modbus holding registers without I/O: the protocol's request limits, and read planning.

The SunSpec driver and the register-profile driver plan their reads here; the link
(`devices.modbus`) splits any longer request at the same limits.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_READ_REGISTERS = 125
"""Modbus allows at most 125 holding registers in one read (FC3)."""
MAX_WRITE_REGISTERS = 123
"""Modbus allows at most 123 registers in one write (FC16)."""
_ADDRESS_LIMIT = 0x10000


def plan_reads(
    spans: Iterable[tuple[int, int]], max_count: int = MAX_READ_REGISTERS, max_gap: int = 0
) -> list[tuple[int, int]]:
    """Merge (address, count) spans into the fewest reads of <= max_count, bridging <= max_gap."""
    if not 1 <= max_count <= MAX_READ_REGISTERS:
        raise ValueError(f"max_count must be 1..{MAX_READ_REGISTERS}, got {max_count}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    wanted = _union(spans)
    reads: list[tuple[int, int]] = []
    start = end = -1  # the read being built covers [start, end)
    for low, high in wanted:
        if start >= 0 and (low - end > max_gap or low >= start + max_count):
            reads.append((start, end - start))  # too far to bridge, or no room left to reach it
            start = -1
        covered = low
        while covered < high:
            if start < 0:
                start = covered
            end = covered = min(high, start + max_count)
            if covered < high:  # the read is full; the rest of this span starts a new one
                reads.append((start, end - start))
                start = -1
    if start >= 0:
        reads.append((start, end - start))
    return reads


def _union(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-touching [low, high) intervals covering the spans."""
    intervals: list[tuple[int, int]] = []
    for address, count in sorted(spans):
        if count < 1 or address < 0 or address + count > _ADDRESS_LIMIT:
            raise ValueError(f"bad span ({address}, {count}): registers 0..65535, count >= 1")
        if intervals and address <= intervals[-1][1]:
            low, high = intervals[-1]
            intervals[-1] = (low, max(high, address + count))
        else:
            intervals.append((address, address + count))
    return intervals
