"""The SunSpec driver: discovers a device's models, reads what its kind needs, writes setpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from derms_edge.config import SUNSPEC_BASES
from derms_edge.devices.modbus import RegisterTransport
from derms_edge.devices.registers import MAX_READ_REGISTERS, plan_reads
from derms_edge.devices.sunspec.codec import decode
from derms_edge.devices.sunspec.controls import (
    AwaitAdoption,
    ControlTarget,
    WritePlan,
    adoption_done,
    control_models,
    plan_heartbeat,
    plan_setpoint,
    supported,
)
from derms_edge.devices.sunspec.discovery import (
    DiscoveryResult,
    ModelHeader,
    discover,
)
from derms_edge.devices.sunspec.mapping import (
    nameplate_models,
    poll_models,
    state_points,
    to_capability,
    to_state,
)
from derms_edge.devices.sunspec.models import ModelLayout, PointValue, build_layout
from derms_edge.devices.sunspec.plan import model_spans
from derms_edge.devices.sunspec.writes import PointWrite, WriteRequest, differing, group_writes
from derms_edge.errors import ControlRefused, DeviceChanged, DeviceException, DeviceProtocolError
from derms_edge.model import Capability, DeviceKind, DeviceState, SetpointName, SetpointValue

log = logging.getLogger(__name__)

ADOPT_TIMEOUT_S = 10.0
"""How long a 705 device may take to adopt a curve."""
ADOPT_POLL_S = 0.2


class SunSpecDriver:
    """Reads and controls one SunSpec device through a register transport.

    ``connect()`` walks the model chain, reads the nameplate and control models once and
    builds the layouts; ``poll()`` then reads only the models the device's kind needs, in as
    few contiguous requests as possible, and checks that each still starts with the ID and
    length discovered. ``write()`` puts a setpoint in force (see `controls`) and reads back
    every register written; ``keepalive()`` rewrites the revert timers of the setpoints in
    force, beats 715 ControllerHb and checks that the device still holds those setpoints.
    A device found changed (models moved, setpoints forgotten) raises DeviceChanged: it
    restarted, and the coordinator discovers it again and writes its setpoints again.
    """

    def __init__(
        self,
        transport: RegisterTransport,
        kind: DeviceKind,
        name: str,
        base_address: int | None = None,
        *,
        revert_s: float = 0.0,
        max_w_pct_fallback: float | None = None,
    ) -> None:
        self._transport = transport
        self._kind = kind
        self._name = name
        self._bases = (base_address,) if base_address is not None else SUNSPEC_BASES
        self._revert_s = revert_s
        self._max_w_pct_fallback = max_w_pct_fallback
        self._headers: dict[int, ModelHeader] = {}
        self._layouts: dict[int, ModelLayout] = {}
        self._chain: tuple[int, ...] = ()
        self._registers: dict[int, list[int]] = {}
        self._values: dict[int, dict[str, PointValue]] = {}
        self._polled: tuple[int, ...] = ()
        self._state_points: dict[int, frozenset[str]] = {}
        self._reads: list[tuple[int, int]] = []
        self._supported: frozenset[SetpointName] = frozenset()
        self._in_force: dict[SetpointName, WritePlan] = {}
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
        wanted = tuple(dict.fromkeys((*nameplate_models(chain), *control_models(chain), *polled)))
        registers = await self._read_models(wanted)
        self._layouts = {}
        for model_id in wanted:
            layout = build_layout(model_id, self._headers[model_id].length, registers[model_id])
            if layout is None:
                continue
            if layout.mismatch:
                self._report(layout.mismatch)
            self._layouts[model_id] = layout
        self._chain = tuple(chain)
        self._registers = {m: registers[m] for m in self._layouts}
        self._values = self._decode(self._registers)
        self._polled = polled
        self._state_points = {model_id: state_points(model_id) for model_id in polled}
        self._reads = plan_reads(model_spans(result.models, polled), max_count=MAX_READ_REGISTERS)
        self._in_force = {}
        self._supported = supported(self._target())
        return to_capability(self._values, chain)

    @property
    def reads(self) -> tuple[tuple[int, int], ...]:
        """The (address, count) requests of one poll, as planned at connect."""
        return tuple(self._reads)

    async def poll(self) -> DeviceState:
        """Read the polled models and map them to one reading; raise DeviceError on failure,
        DeviceChanged when a model no longer starts with the ID and length discovered."""
        self._check_connected("poll")
        registers = await self._read_models(self._polled, self._reads)
        for model_id, regs in registers.items():
            header = self._headers[model_id]
            if regs[:2] != [model_id, header.length]:
                raise DeviceChanged(
                    f"model {model_id} (length {header.length}) was found at "
                    f"{header.address}, which now reads ID {regs[0]} length {regs[1]}: "
                    "the model chain changed"
                )
        return to_state(self._kind, self._decode(registers, self._state_points))

    async def close(self) -> None:
        """Release the transport."""
        await self._transport.close()

    def supports(self) -> frozenset[SetpointName]:
        """The setpoints this device's models can carry, as learnt at connect (empty before)."""
        return self._supported

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        """Put one setpoint in force (None releases it) and read back every register written.

        All writes are encoded before the first is sent. Raise ControlRefused naming the point
        when the setpoint is not supported, the value cannot be encoded, the device answers a
        Modbus exception or reads back something else; DeviceError when it cannot be reached.
        """
        self._check_connected("write")
        plan = plan_setpoint(self._target(), name, value)
        for step in plan.steps:
            if isinstance(step, AwaitAdoption):
                await self._await_adoption(step)
            else:
                await self._write_points(step)
        if value is None:
            self._in_force.pop(name, None)
        else:
            self._in_force[name] = plan

    def sampled_at(self) -> None:
        """Modbus values are measured when they are read."""
        return None

    async def keepalive(self) -> None:
        """Rewrite the revert timers of the setpoints in force, increment 715 ControllerHb,
        then check that the device still holds those setpoints: DeviceChanged if not."""
        self._check_connected("keepalive")
        writes = [write for plan in self._in_force.values() for write in plan.refresh]
        heartbeat = plan_heartbeat(self._target())
        if heartbeat is not None:
            writes.append(heartbeat)
        if writes:
            await self._write_points(writes)
        await self._check_in_force()

    async def _check_in_force(self) -> None:
        """Read back the points that put each setpoint in force (a plan's last writes: the
        values and enables); any that differ mean the device restarted or reverted."""
        held: dict[int, list[PointWrite]] = {}
        for plan in self._in_force.values():
            last = plan.steps[-1] if plan.steps else ()
            if isinstance(last, tuple):
                for write in last:
                    if write.verify and write not in plan.refresh:
                        held.setdefault(write.model_id, []).append(write)
        for model_id, writes in held.items():
            header = self._headers[model_id]
            spans = [(header.address + write.offset, len(write.registers)) for write in writes]
            for address, count in plan_reads(spans, MAX_READ_REGISTERS, MAX_READ_REGISTERS):
                self._store(
                    model_id, address - header.address, await self._transport.read(address, count)
                )
            for wrong in differing(writes, self._registers[model_id]):
                read = self._values[model_id].get(wrong.path)
                raise DeviceChanged(
                    f"{wrong.point} reads {read} where {wrong.value} was written "
                    "and read back: the device restarted or reverted"
                )

    def _check_connected(self, call: str) -> None:
        if not self._reads:
            raise RuntimeError(f"{self._name}: {call}() before connect()")

    def _target(self) -> ControlTarget:
        return ControlTarget(
            device=self._name,
            models=self._chain,
            layouts=self._layouts,
            values=self._values,
            storage=self._kind == DeviceKind.BATTERY,
            revert_s=self._revert_s,
            max_w_pct_fallback=self._max_w_pct_fallback,
        )

    async def _write_points(self, writes: Sequence[PointWrite]) -> None:
        """Send the writes in as few FC16 requests as possible, then read them all back."""
        requests = group_writes(writes)
        for request in requests:
            with self._refused_as(request.label):
                await self._transport.write(self._address(request), request.registers)
        for model_id in dict.fromkeys(request.model_id for request in requests):
            await self._read_back(model_id, [r for r in requests if r.model_id == model_id])

    async def _read_back(self, model_id: int, requests: list[WriteRequest]) -> None:
        """Read back one model's written registers; a register that differs refuses the write."""
        header = self._headers[model_id]
        spans = [(self._address(r), len(r.registers)) for r in requests]
        with self._refused_as(", ".join(r.label for r in requests)):
            for address, count in plan_reads(spans, MAX_READ_REGISTERS, MAX_READ_REGISTERS):
                registers = await self._transport.read(address, count)
                self._store(model_id, address - header.address, registers)
        points = [point for request in requests for point in request.points]
        for wrong in differing(points, self._registers[model_id]):
            read = self._values[model_id].get(wrong.path)
            raise ControlRefused(self._name, wrong.point, f"wrote {wrong.value}, read back {read}")

    async def _await_adoption(self, step: AwaitAdoption) -> None:
        """Poll the curve model until the device has adopted the staged curve."""
        deadline = time.monotonic() + ADOPT_TIMEOUT_S
        point = f"{step.model_id}.AdptCrvRslt"
        while True:
            with self._refused_as(point):
                registers = await self._read_models((step.model_id,))
            self._store(step.model_id, 0, registers[step.model_id])
            values = self._values[step.model_id]
            if adoption_done(self._name, step, self._registers[step.model_id], values):
                return
            if time.monotonic() >= deadline:
                raise ControlRefused(
                    self._name,
                    point,
                    f"curve {step.curve} not adopted within {ADOPT_TIMEOUT_S:g} s "
                    f"(AdptCrvRslt {values.get('AdptCrvRslt')})",
                )
            await asyncio.sleep(ADOPT_POLL_S)

    @contextlib.contextmanager
    def _refused_as(self, point: str) -> Iterator[None]:
        """A Modbus exception answer becomes a ControlRefused naming the points (retryable
        when the code says the device is busy or failing, not that the value is wrong)."""
        try:
            yield
        except DeviceException as exc:
            raise ControlRefused(self._name, point, str(exc), retryable=exc.retryable) from exc

    def _address(self, request: WriteRequest) -> int:
        return self._headers[request.model_id].address + request.offset

    def _store(self, model_id: int, offset: int, registers: Sequence[int]) -> None:
        """Keep registers read from a model (from ``offset``) and decode the model again."""
        kept = self._registers[model_id]
        kept[offset : offset + len(registers)] = registers
        self._values[model_id] = decode(self._layouts[model_id], kept)

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

    def _decode(
        self,
        registers: dict[int, list[int]],
        points: Mapping[int, frozenset[str]] | None = None,
    ) -> dict[int, dict[str, PointValue]]:
        """Decode each model that has a layout: every point, or those ``points`` names."""
        values: dict[int, dict[str, PointValue]] = {}
        for model_id, regs in registers.items():
            layout = self._layouts.get(model_id)
            if layout is not None:
                wanted = None if points is None else points[model_id]
                values[model_id] = decode(layout, regs, wanted)
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
