"""The driver of an EV charger described by a register profile: read, limit, keep the limit alive.

Such chargers take a current limit per phase and hold it for a validity (watchdog) time, after
which they fall back to their own safe current: the gateway writes the limit, reads it back,
and writes it again every ``refresh_s``, or at once when a poll shows the charger lost it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from derms_edge.config import EvseProfile, RegisterPoint
from derms_edge.devices.charger import charging_state, rated_w
from derms_edge.devices.modbus import RegisterTransport
from derms_edge.devices.profile.codec import decode, decode_reads, encode, plan, size
from derms_edge.errors import ControlRefused, DeviceException, DeviceProtocolError
from derms_edge.model import (
    Capability,
    DeviceState,
    SetpointName,
    SetpointValue,
    limit_refusal,
)

log = logging.getLogger(__name__)

FLOAT32_TOLERANCE = 1e-6
"""Relative difference a float32 read-back may show."""
_LIMIT, _VALIDITY = "current_limit", "validity"


@dataclass(frozen=True, slots=True)
class HeldLimit:
    """What the charger held at the last read: its limit register and remaining validity."""

    limit_a: float | None
    """Current limit register, A per phase."""
    validity_s: float | None
    """Remaining validity of the limit, s (None: the profile maps no validity)."""
    at: float
    """Monotonic time the read started, s."""


@dataclass(frozen=True, slots=True)
class _Written:
    amps: float
    at: float


class ProfileDriver:
    """Reads one EV charger through a register profile and writes its current limit.

    ``connect()`` reads every mapped register once; ``poll()`` reads them again in the same
    few requests. The charger's power rating (``Capability.w_max``) is phases x V x max_a,
    with V the voltage measured at connect, or 230 V when no voltage is mapped or it reads 0.
    """

    def __init__(
        self,
        transport: RegisterTransport,
        profile: EvseProfile,
        name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._profile = profile
        self._name = name
        self._clock = clock
        self._limit_point = f"register {profile.current_limit.address}"
        points: dict[str, RegisterPoint] = {k: v for k, v in profile.measurements.items()}
        points[_LIMIT] = profile.current_limit
        if profile.validity is not None:
            points[_VALIDITY] = profile.validity
        self._points = points
        self._reads = plan(points.values())
        self._connected = False
        self._written: _Written | None = None
        self.held: HeldLimit | None = None
        """The limit the charger held at the last connect or poll."""

    @property
    def reads(self) -> tuple[tuple[int, int], ...]:
        """The (address, count) requests of one poll."""
        return tuple(self._reads)

    async def connect(self) -> Capability:
        """Read every mapped register once; raise DeviceError if the charger does not answer."""
        values = await self._read()
        if values[_LIMIT] is None:
            raise DeviceProtocolError(f"{self._name}: {self._limit_point} (current limit) is NaN")
        self._connected = True
        p = self._profile
        return Capability(
            model=p.name,
            w_max=rated_w(p.phases, values.get("v"), p.max_a),
            max_a=p.max_a,
            phases=p.phases,
        )

    async def poll(self) -> DeviceState:
        """One reading; ``a`` is the total current (phases x the current per phase)."""
        values = await self._read()
        w, a = values.get("w"), values.get("a")
        total_a = None if a is None else a * self._profile.phases
        return DeviceState(
            w=w,
            va=values.get("va"),
            v=values.get("v"),
            hz=values.get("hz"),
            a=total_a,
            soc_pct=values.get("soc_pct"),
            wh_imported=values.get("wh_imported"),
            state=charging_state(w, total_a, values.get("v")),
        )

    async def close(self) -> None:
        """Release the transport."""
        self._connected = False
        await self._transport.close()

    def supports(self) -> frozenset[SetpointName]:
        """The current limit, once connected."""
        return frozenset({SetpointName.EVSE_MAX_A}) if self._connected else frozenset()

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        """Put a current limit (A per phase) in force; ``None`` writes the charger's max_a.

        Either is then kept alive by `keepalive` (the safe current is for when the gateway
        is gone). A value the charger cannot take (above max_a, between 0 and 6 A) is
        refused here, never changed: ControlRefused names the register and both numbers.
        """
        if name is not SetpointName.EVSE_MAX_A:
            raise ControlRefused(self._name, name.value, "this charger takes only evse_max_a")
        max_a = self._profile.max_a
        if value is None:
            amps = max_a
        elif isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ControlRefused(self._name, self._limit_point, f"{value!r} is not a current")
        else:
            amps = float(value)
        refusal = limit_refusal(amps, max_a)
        if refusal is not None:
            raise ControlRefused(self._name, self._limit_point, refusal)
        await self._put(amps)

    def sampled_at(self) -> None:
        """Modbus values are measured when they are read."""
        return None

    async def keepalive(self) -> None:
        """Write the last limit again when refresh_s has passed, or the charger lost it."""
        written = self._written
        if written is None:
            return
        if self._clock() - written.at < self._profile.refresh_s:
            held = self._lost(written)
            if held is None:
                return
            log.warning(
                "%s: the charger lost %g A (limit %s A, validity %s s); writing it again",
                self._name,
                written.amps,
                held.limit_a,
                held.validity_s,
            )
        await self._put(written.amps)

    def _lost(self, written: _Written) -> HeldLimit | None:
        """The last read, if it was taken after the write and shows another limit or no validity."""
        held = self.held
        if held is None or held.at < written.at:
            return None
        if held.validity_s == 0 or held.limit_a is None:
            return held
        return None if _same(self._profile.current_limit, held.limit_a, written.amps) else held

    async def _put(self, amps: float) -> None:
        """Write the limit register, read it back, remember it."""
        point = self._profile.current_limit
        registers = encode(point, amps, self._profile.word_order)
        at = self._clock()
        try:
            await self._transport.write(point.address, registers)
            back = decode(
                point,
                await self._transport.read(point.address, size(point)),
                self._profile.word_order,
            )
        except DeviceException as exc:
            reason = f"{amps:g} A: {exc}"
            raise ControlRefused(
                self._name, self._limit_point, reason, retryable=exc.retryable
            ) from exc
        if back is None or not _same(point, back, amps):
            reason = f"wrote {amps:g} A, read back {back} A"
            raise ControlRefused(self._name, self._limit_point, reason)
        self._written = _Written(amps, at)

    async def _read(self) -> dict[str, float | None]:
        """Every mapped register, by measurement name (and the limit and validity)."""
        at = self._clock()
        blocks = [
            (address, await self._transport.read(address, count)) for address, count in self._reads
        ]
        values = decode_reads(self._points, blocks, self._profile.word_order)
        self.held = HeldLimit(values[_LIMIT], values.get(_VALIDITY), at)
        return values


def _same(point: RegisterPoint, read: float, written: float) -> bool:
    """Whether a read-back value is the written one, as far as the register resolves it."""
    if point.type == "float32":
        return math.isclose(read, written, rel_tol=FLOAT32_TOLERANCE, abs_tol=1e-9)
    return abs(read - written) <= abs(point.scale) / 2
