"""Find SunSpec devices behind a Modbus TCP address (``derms-edge discover``): the model
chain at each unit id, and a ready-to-paste configuration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from derms_edge.config import MAX_SUNSPEC_BASE, SUNSPEC_BASES
from derms_edge.devices.modbus import ModbusLink, RegisterTransport
from derms_edge.devices.sunspec.discovery import DiscoveryResult, discover
from derms_edge.devices.sunspec.mapping import kind_of
from derms_edge.devices.sunspec.models import model_definition
from derms_edge.errors import ConnectionLost, DeviceError, DeviceException

MAX_UNIT_ID = 247


def parse_unit_ids(text: str) -> list[int]:
    """Parse ``1``, ``1-247`` or ``1,3,10-20`` into sorted unit ids; ValueError if bad."""
    ids: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if last else low
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a unit id or a range like 1-247") from None
        if not 0 <= low <= high <= MAX_UNIT_ID:
            raise ValueError(f"{part.strip()!r}: unit ids go from 0 to {MAX_UNIT_ID}, low-high")
        ids.update(range(low, high + 1))
    return sorted(ids)


def bases_to_try(extra: Sequence[int]) -> tuple[int, ...]:
    """The standard bases (40000, 0, 50000), then the extra ones a manual gives; ValueError
    for an address no SunSpec map fits above."""
    for base in extra:
        if not 0 <= base <= MAX_SUNSPEC_BASE:
            raise ValueError(
                f"{base} is not a holding register a SunSpec map fits above (0-{MAX_SUNSPEC_BASE})"
            )
    return tuple(dict.fromkeys((*SUNSPEC_BASES, *extra)))


@dataclass(frozen=True, slots=True)
class Found:
    """A SunSpec device found at one unit id."""

    unit_id: int
    result: DiscoveryResult


@dataclass(frozen=True, slots=True)
class NotSunSpec:
    """A unit id that answered, but with no SunSpec map at any base tried."""

    unit_id: int
    reason: str


def _progress(done: int, total: int, found: int, out: TextIO) -> None:
    width = 30
    filled = width * done // total
    out.write(f"\rscanning [{'#' * filled}{'.' * (width - filled)}] {done}/{total}, found {found}")
    if done == total:
        out.write("\n")
    out.flush()


_NOBODY_CODES = frozenset({10, 11})
"""Modbus exceptions a TCP gateway answers for a unit id nothing is behind."""


async def probe(
    unit: RegisterTransport, unit_id: int, bases: Sequence[int] = SUNSPEC_BASES
) -> Found | NotSunSpec | None:
    """Walk the SunSpec model chain at one unit: Found, NotSunSpec when something answered
    without a SunSpec map, None when nothing answered at all. ConnectionLost (the link
    itself is down: no such port, connection refused) is raised."""
    answered = False

    async def read(address: int, count: int) -> list[int]:
        nonlocal answered
        try:
            registers = await unit.read(address, count)
        except DeviceException as error:
            answered = answered or error.code not in _NOBODY_CODES
            raise
        answered = True
        return registers

    try:
        return Found(unit_id, await discover(read, bases))
    except ConnectionLost:
        raise
    except DeviceError as error:
        return NotSunSpec(unit_id, str(error)) if answered else None


async def scan(
    host: str,
    port: int,
    unit_ids: list[int],
    timeout_s: float,
    progress: TextIO | None,
    *,
    bases: Sequence[int] = SUNSPEC_BASES,
) -> list[Found]:
    """Walk the SunSpec model chain at every unit id; units that do not answer are skipped."""
    link = ModbusLink.tcp(host, port, timeout_s)
    found: list[Found] = []
    for done, unit_id in enumerate(unit_ids, start=1):
        unit = link.unit(unit_id)
        try:
            outcome = await probe(unit, unit_id, bases)
        except ConnectionLost:
            outcome = None
        finally:
            await unit.close()
        if isinstance(outcome, Found):
            found.append(outcome)
        if progress is not None:
            _progress(done, len(unit_ids), len(found), progress)
    return found


def report(host: str, port: int, found: list[Found]) -> str:
    """The models of each unit found, then a ready-to-paste ``devices:`` snippet."""
    lines: list[str] = []
    for item in found:
        lines.append(f"unit {item.unit_id}: SunSpec base {item.result.base}")
        lines.append(f"  {'model':>6}  {'name':<24} {'length':>6}  address")
        for header in item.result.models:
            definition = model_definition(header.model_id)
            name = str(definition["group"]["name"]) if definition else "(vendor, no definition)"
            lines.append(f"  {header.model_id:>6}  {name:<24} {header.length:>6}  {header.address}")
        lines.extend(f"  note: {warning}" for warning in item.result.warnings)
    lines.append("")
    lines.append("devices:")
    for item in found:
        kind = kind_of(h.model_id for h in item.result.models)
        if kind is None:
            lines.append(f"  # unit {item.unit_id}: no model the gateway reads; left out")
            continue
        lines.append(
            f"  - {{id: {kind[:3]}{item.unit_id}, kind: {kind}, protocol: sunspec, "
            f"host: {host}, port: {port}, unit_id: {item.unit_id}, "
            f"base_address: {item.result.base}, poll_interval_s: 1}}"
        )
    return "\n".join(lines)


async def run_scan(
    host: str,
    port: int,
    unit_ids: list[int],
    timeout_s: float,
    out: TextIO,
    *,
    bases: Sequence[int] = SUNSPEC_BASES,
) -> bool:
    """Scan, print the report, and say whether anything was found."""
    progress = sys.stderr if len(unit_ids) > 1 else None
    found = await scan(host, port, unit_ids, timeout_s, progress, bases=bases)
    if not found:
        print(
            f"no SunSpec device answered at {host}:{port} unit ids {unit_ids[0]}..{unit_ids[-1]}",
            file=out,
        )
        return False
    print(report(host, port, found), file=out)
    return True
