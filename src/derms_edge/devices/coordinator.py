"""One coordinator per device: owns its connection, polling cadence, backoff and staleness."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from derms_edge.errors import DeviceError
from derms_edge.model import Capability, DeviceState, Quality, SetpointName, SetpointValue

log = logging.getLogger(__name__)


class DeviceDriver(Protocol):
    """What a coordinator needs from a protocol driver."""

    async def connect(self) -> Capability:
        """Open the device, learn what it is; raise DeviceError on failure."""
        ...

    async def poll(self) -> DeviceState:
        """Read one fresh state; raise DeviceError on failure."""
        ...

    async def close(self) -> None:
        """Release the connection."""
        ...

    def supports(self) -> frozenset[SetpointName]:
        """The setpoints this device can take, as learnt at connect (empty before)."""
        ...

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        """Put one setpoint in force and check it by reading it back.

        ``None`` releases the control: the device returns to its own behaviour (limit off,
        mode disabled). Raise ControlRefused naming the point when the device refuses the
        value or reads back something else, DeviceError when it cannot be reached.
        """
        ...

    async def keepalive(self) -> None:
        """Refresh revert timers and the controller heartbeat while setpoints are in force."""
        ...


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest good state of a device and when it was taken."""

    state: DeviceState
    at: datetime
    """Wall-clock time of the reading (UTC)."""
    monotonic: float
    """Monotonic time of the reading, for ages."""


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Capped exponential backoff with full jitter above half the delay."""
    delay = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    return random.uniform(delay / 2, delay)


class DeviceCoordinator:
    """Polls one device at its interval and keeps its last good reading.

    A failing device is retried with capped exponential backoff and rediscovered after it
    has been unreachable; nothing it does can disturb another device's coordinator.
    """

    def __init__(
        self,
        device_id: str,
        driver: DeviceDriver,
        *,
        poll_interval_s: float,
        stale_after_s: float,
        backoff_max_s: float,
        on_capability: Callable[[str, Capability], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.driver = driver
        self._interval = poll_interval_s
        self._stale_after = stale_after_s
        self._backoff_max = backoff_max_s
        self._on_capability = on_capability
        self._clock = clock
        self.capability: Capability | None = None
        self.reading: Reading | None = None
        self.last_exception: BaseException | None = None
        self.connected = False
        self.failing = True
        self.polls = 0
        self.failures = 0

    def quality(self) -> Quality:
        """OK while fresh readings arrive; STALE when the last one is too old; else OFFLINE."""
        if self.reading is None or self.failing:
            return Quality.OFFLINE
        if self._clock() - self.reading.monotonic > self._stale_after:
            return Quality.STALE
        return Quality.OK

    async def run(self) -> None:
        """Poll forever; returns only when cancelled."""
        await asyncio.sleep(random.uniform(0, min(self._interval, 1.0)))  # stagger start
        attempt = 0
        next_poll = self._clock()
        try:
            while True:
                try:
                    if not self.connected:
                        await self._connect()
                        next_poll = self._clock()
                    await self._poll()
                except DeviceError as error:
                    self._failed(error)
                except Exception as error:  # a bug must not take the gateway down
                    log.exception("%s: unexpected error, retrying", self.device_id)
                    self._failed(error)
                else:
                    attempt = 0
                    next_poll += self._interval
                    await asyncio.sleep(max(0.0, next_poll - self._clock()))
                    next_poll = max(next_poll, self._clock() - self._interval)
                    continue
                await asyncio.sleep(backoff_delay(attempt, self._interval, self._backoff_max))
                attempt += 1
        finally:
            await self.driver.close()

    async def _connect(self) -> None:
        self.capability = await self.driver.connect()
        self.connected = True
        if self._on_capability is not None:
            self._on_capability(self.device_id, self.capability)

    async def _poll(self) -> None:
        state = await self.driver.poll()
        self.reading = Reading(state, datetime.now(UTC), self._clock())
        self.polls += 1
        if self.failing:
            log.info("%s: reading", self.device_id)
        self.failing = False
        self.last_exception = None

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        if not self.failing or self.failures == 1:
            log.warning("%s: offline: %s", self.device_id, error)
        elif self.last_exception is None or str(error) != str(self.last_exception):
            log.info("%s: still offline: %s", self.device_id, error)
        self.failing = True
        self.connected = False  # rediscover on the next try: the device may have restarted
        self.last_exception = error
