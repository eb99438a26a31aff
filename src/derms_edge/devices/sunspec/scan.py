"""Find SunSpec devices behind a Modbus TCP address (``derms-edge discover``): the model
chain at each unit id, and a ready-to-paste configuration."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import TextIO

from derms_edge.devices.modbus import ModbusLink
from derms_edge.devices.sunspec.discovery import DiscoveryResult, discover
from derms_edge.devices.sunspec.models import model_definition
from derms_edge.errors import DeviceError
from derms_edge.model import DeviceKind

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


def guess_kind(models: list[int]) -> DeviceKind:
    """The device kind a chain of SunSpec models suggests."""
    present = set(models)
    if present & {124, 713, 802}:
        return DeviceKind.BATTERY
    if present & {701, 101, 102, 103, 111, 112, 113}:
        return DeviceKind.INVERTER
    if any(200 <= m < 300 for m in present):
        return DeviceKind.METER
    return DeviceKind.INVERTER


@dataclass(frozen=True, slots=True)
class Found:
    """A SunSpec device found at one unit id."""

    unit_id: int
    result: DiscoveryResult


def _progress(done: int, total: int, found: int, out: TextIO) -> None:
    width = 30
    filled = width * done // total
    out.write(f"\rscanning [{'#' * filled}{'.' * (width - filled)}] {done}/{total}, found {found}")
    if done == total:
        out.write("\n")
    out.flush()


async def scan(
    host: str, port: int, unit_ids: list[int], timeout_s: float, progress: TextIO | None
) -> list[Found]:
    """Walk the SunSpec model chain at every unit id; units that do not answer are skipped."""
    link = ModbusLink.tcp(host, port, timeout_s)
    found: list[Found] = []
    try:
        for done, unit_id in enumerate(unit_ids, start=1):
            unit = link.unit(unit_id)
            with contextlib.suppress(DeviceError):  # no answer or no SunSpec: not a device
                found.append(Found(unit_id, await discover(unit.read)))
            if progress is not None:
                _progress(done, len(unit_ids), len(found), progress)
    finally:
        await link.release()
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
        models = [h.model_id for h in item.result.models]
        kind = guess_kind(models)
        lines.append(
            f"  - {{id: {kind[:3]}{item.unit_id}, kind: {kind}, protocol: sunspec, "
            f"host: {host}, port: {port}, unit_id: {item.unit_id}, "
            f"base_address: {item.result.base}, poll_interval_s: 1}}"
        )
    return "\n".join(lines)


async def run_scan(
    host: str, port: int, unit_ids: list[int], timeout_s: float, out: TextIO
) -> bool:
    """Scan, print the report, and say whether anything was found."""
    progress = sys.stderr if len(unit_ids) > 1 else None
    found = await scan(host, port, unit_ids, timeout_s, progress)
    if not found:
        print(
            f"no SunSpec device answered at {host}:{port} unit ids {unit_ids[0]}..{unit_ids[-1]}",
            file=out,
        )
        return False
    print(report(host, port, found), file=out)
    return True
