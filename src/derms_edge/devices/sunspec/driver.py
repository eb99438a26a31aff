"""The SunSpec driver: discovers a device's models, then reads and maps what its kind needs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from derms_edge.config import DeviceKind
from derms_edge.devices.modbus import MAX_READ_REGISTERS, RegisterTransport
from derms_edge.devices.sunspec.codec import decode
from derms_edge.devices.sunspec.discovery import DiscoveryResult, ModelHeader, discover
from derms_edge.devices.sunspec.mapping import (
    ModelValues,
    nameplate_models,
    poll_models,
    to_capability,
    to_state,
)
from derms_edge.devices.sunspec.models import ModelLayout, PointValue, build_layout
from derms_edge.devices.sunspec.plan import model_spans, plan_reads
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import Capability, DeviceState

log = logging.getLogger(__name__)

DEFAULT_BASES = (40000, 0, 50000)


class SunSpecDriver:
    """Reads one SunSpec device through a register transport.

    ``connect()`` walks the model chain, reads the nameplate models once and builds the
    layouts; ``poll()`` then reads only the models the device's kind needs, in as few
    contiguous requests as possible.
    """

    def __init__(
        self,
        transport: RegisterTransport,
        kind: DeviceKind,
        name: str,
        base_address: int | None = None,
    ) -> None:
        self._transport = transport
        self._kind = kind
        self._name = name
        self._bases = (base_address,) if base_address is not None else DEFAULT_BASES
        self._headers: dict[int, ModelHeader] = {}
        self._layouts: dict[int, ModelLayout] = {}
        self._polled: tuple[int, ...] = ()
        self._reads: list[tuple[int, int]] = []
        self._reported: set[str] = set()
        self.discovery: DiscoveryResult | None = None

    async def connect(self) -> Capability:
        """Discover the device and read its nameplate; raise DeviceError on failure."""
        result = await discover(self._transport.read, self._bases)
        self.discovery = result
        for warning in result.warnings:
            self._report(warning)
        self._headers = {}
        for header in result.models:
            self._headers.setdefault(header.model_id, header)
        chain = [header.model_id for header in result.models]
        polled = poll_models(self._kind, chain)
        if not polled:
            raise DeviceProtocolError(
                f"{self._name}: none of the models a {self._kind} needs is present "
                f"(device has {', '.join(map(str, chain))})"
            )
        wanted = tuple(dict.fromkeys((*nameplate_models(chain), *polled)))
        registers = await self._read_models(wanted)
        self._layouts = {}
        for model_id in wanted:
            layout = build_layout(model_id, self._headers[model_id].length, registers[model_id])
            if layout is None:
                continue
            if layout.mismatch:
                self._report(layout.mismatch)
            self._layouts[model_id] = layout
        self._polled = polled
        self._reads = plan_reads(model_spans(result.models, polled), max_count=MAX_READ_REGISTERS)
        values = self._decode(registers)
        return to_capability(values, chain)

    @property
    def reads(self) -> tuple[tuple[int, int], ...]:
        """The (address, count) requests of one poll, as planned at connect."""
        return tuple(self._reads)

    async def poll(self) -> DeviceState:
        """Read the polled models and map them to one reading; raise DeviceError on failure."""
        if not self._reads:
            raise RuntimeError(f"{self._name}: poll() before connect()")
        registers = await self._read_models(self._polled, self._reads)
        return to_state(self._kind, self._decode(registers))

    async def close(self) -> None:
        """Release the transport."""
        await self._transport.close()

    async def _read_models(
        self, model_ids: Iterable[int], reads: Sequence[tuple[int, int]] | None = None
    ) -> dict[int, list[int]]:
        """Read whole models (ID register to the end of the body), by model id."""
        headers = [self._headers[model_id] for model_id in model_ids]
        if reads is None:
            reads = plan_reads(
                model_spans(headers, [h.model_id for h in headers]),
                max_count=MAX_READ_REGISTERS,
            )
        blocks: list[tuple[int, list[int]]] = []
        for address, count in reads:
            registers = await self._transport.read(address, count)
            if blocks and blocks[-1][0] + len(blocks[-1][1]) == address:
                blocks[-1][1].extend(registers)  # a model split over two requests
            else:
                blocks.append((address, registers))
        return {h.model_id: _slice(blocks, h.address, h.length + 2) for h in headers}

    def _decode(self, registers: dict[int, list[int]]) -> ModelValues:
        values: dict[int, dict[str, PointValue]] = {}
        for model_id, regs in registers.items():
            layout = self._layouts.get(model_id)
            if layout is not None:
                values[model_id] = decode(layout, regs)
        return values

    def _report(self, message: str) -> None:
        """Log a device quirk once per connection lifetime of the daemon."""
        if message not in self._reported:
            self._reported.add(message)
            log.warning("%s: %s", self._name, message)


def _slice(blocks: list[tuple[int, list[int]]], address: int, count: int) -> list[int]:
    """``count`` registers from ``address`` out of the blocks that were read."""
    for start, registers in blocks:
        if start <= address and address + count <= start + len(registers):
            return registers[address - start : address - start + count]
    raise DeviceProtocolError(f"registers {address}..{address + count - 1} were not read")
