"""One coordinator per device: owns its connection, polling cadence, backoff and staleness."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from derms_edge.aio import honour_cancellation
from derms_edge.backoff import backoff_delay
from derms_edge.errors import ControlRefused, DeviceChanged, DeviceError
from derms_edge.model import (
    Capability,
    DeviceState,
    Quality,
    SetpointName,
    Setpoints,
    SetpointValue,
)

log = logging.getLogger(__name__)

WRITE_TRIES = 3
"""Times a write the device answers with "busy" or "failing" (a retryable refusal) is tried,
a poll apart, before it counts as refused."""


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
        """Refresh revert timers and the controller heartbeat while setpoints are in force.

        Raise DeviceChanged when the device no longer holds a setpoint in force (it restarted
        or reverted): the coordinator then discovers it again and rewrites every setpoint.
        """
        ...

    def sampled_at(self) -> Sample | None:
        """When the device last confirmed the values of the last poll; None: at the poll.

        A driver fed by notifications (OPC UA) answers when its subscription last spoke and
        how long it promised silence to mean "unchanged", so a value held still on a live
        subscription stays current and one on a silent subscription goes stale.
        """
        ...


@dataclass(frozen=True, slots=True)
class Sample:
    """When a driver's values were last confirmed, and for how long the device vouches for
    them after that."""

    at: float
    """Monotonic time the device last confirmed the values."""
    vouched_s: float = 0.0
    """How long after ``at`` the device promised to report any change (an OPC UA
    subscription's keep-alive period): until then, its silence means "unchanged"."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest good state of a device and when it was taken."""

    state: DeviceState
    at: datetime
    """Wall-clock time the device last confirmed the reading (UTC)."""
    current_until: float
    """Monotonic time up to which the device vouched for the reading (when it was taken, or
    later while a subscription promised to report changes); staleness counts from here."""
    confirmed: float
    """Monotonic time the device last confirmed the reading: ``at`` on the monotonic clock."""


@dataclass(frozen=True, slots=True)
class DeviceConnected:
    """A device (re)connected: what it is and can do now. A coordinator that awaits
    decisions holds its writes until the next `DeviceCoordinator.command`, the decision made
    with this capability."""

    device_id: str
    capability: Capability


@dataclass(frozen=True, slots=True)
class SetpointRefused:
    """A device did not take a setpoint: it answered an exception, or read back another value."""

    device_id: str
    name: SetpointName
    refusal: ControlRefused


DeviceReport = DeviceConnected | SetpointRefused
"""What a coordinator tells the gateway, through its one ``report`` callable."""


class DeviceCoordinator:
    """Polls one device at its interval, keeps its last good reading, applies its setpoints.

    A failing device is retried with capped exponential backoff and rediscovered after it
    has been unreachable; nothing it does can disturb another device's coordinator, and no
    exception (a driver's or a callback's bug) ends `run`. The setpoints asked for with
    `command` are written at once, re-written after every reconnection (devices forget
    volatile settings when they restart), and kept alive (revert timers, heartbeat) every
    ``keepalive_s``. A device found changed while it answers (DeviceChanged: models moved,
    setpoints forgotten) is discovered again at once and its setpoints written again; the
    write and its read-back follow the first good poll in the same pass, so the setpoints
    are back in force within one poll of the device answering again.

    A setpoint is held through an outage, never dropped: what was asked for is written as
    soon as the device answers. A write the device refuses (an exception that says the value
    or address is wrong, or a read-back that differs) is reported (`SetpointRefused`) once
    and not tried again until the setpoint changes; one answered "busy" or "failing" is tried
    again at the next poll, and reported after `WRITE_TRIES` such answers.

    Everything the coordinator tells the gateway goes through ``report``: `DeviceConnected`
    after every connect, `SetpointRefused`. With ``await_decision_s`` > 0 the writes after a
    connect wait for the next `command` (the controller deciding with the capability just
    read), at most that long: a decision made before the device said what it is (a charger's
    highest current, a battery's capacity) is never written on the way.
    """

    def __init__(
        self,
        device_id: str,
        driver: DeviceDriver,
        *,
        poll_interval_s: float,
        stale_after_s: float,
        backoff_max_s: float,
        report: Callable[[DeviceReport], None] | None = None,
        await_decision_s: float = 0.0,
        keepalive_s: float | None = None,
        hold_when_idle: bool = False,
        take_over: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.driver = driver
        self._interval = poll_interval_s
        self._stale_after = stale_after_s
        self._backoff_max = backoff_max_s
        self._report = report
        self._await_decision_s = await_decision_s
        self._decide_by: float | None = None
        """After a connect, until the next command: the writes wait until this moment."""
        self._keepalive_s = keepalive_s
        self._hold_when_idle = hold_when_idle
        """Release every control at connect and keep the released state alive (a charger's
        watchdog drops to its safe current unless its limit is refreshed)."""
        self._take_over = take_over
        """At the first connect of this process, write every setpoint the device supports
        (the decision, or its release): it may still hold what a gateway that stopped wrote,
        and it has no revert timer of its own to drop it (OPC UA)."""
        self._clock = clock
        self._desired: dict[SetpointName, SetpointValue] = {}
        self._applied: dict[SetpointName, SetpointValue] = {}
        self._unsure: set[SetpointName] = set()
        """Names whose value in the device is not known (after a connect): written again."""
        self._refused: dict[SetpointName, SetpointValue | None] = {}
        self._tries: dict[SetpointName, tuple[SetpointValue | None, int]] = {}
        """Writes answered "busy" or "failing": the value, and how often so far."""
        self._last_keepalive = 0.0
        self._wake = asyncio.Event()
        self.writes = 0
        self.capability: Capability | None = None
        self.reading: Reading | None = None
        self.last_exception: BaseException | None = None
        self.connected = False
        self.failing = True
        self._tried = asyncio.Event()
        self.polls = 0
        self.failures = 0
        self.rediscoveries = 0
        """Times the device was found changed (restarted) while it answered."""

    @property
    def tried(self) -> bool:
        """Whether the first attempt to reach the device (connect and read) has ended."""
        return self._tried.is_set()

    async def first_attempt(self) -> None:
        """Return once the first attempt to reach the device (connect and read) has ended:
        its first reading is in, or the device is offline."""
        await self._tried.wait()

    def quality(self) -> Quality:
        """UNKNOWN before the first attempt to reach the device has ended; then OK while fresh
        readings arrive, STALE when the last one is too old, else OFFLINE."""
        if not self.tried:
            return Quality.UNKNOWN
        if self.reading is None or self.failing:
            return Quality.OFFLINE
        if self._clock() - self.reading.current_until > self._stale_after:
            return Quality.STALE
        return Quality.OK

    def command(self, setpoints: Setpoints) -> None:
        """Ask for these setpoints (names left out are released); written at once."""
        desired = dict(setpoints)
        if desired != self._desired or self._decide_by is not None:
            self._desired = desired
            self._decide_by = None
            self._wake.set()

    @property
    def applied(self) -> dict[SetpointName, SetpointValue]:
        """The setpoints written to the device and read back since it last connected."""
        return dict(self._applied)

    async def run(self) -> None:
        """Poll and apply forever; returns only when cancelled.

        The first connect and poll are at once (a gateway that starts reads every device
        within its first second); the polls after the first are staggered, each device's
        shifted by its own random part of the interval (at most 1 s), so that devices on a
        shared bus do not all poll at the same moment.
        """
        # B311: spreading load, no secret
        stagger = random.uniform(0, min(self._interval, 1.0))  # nosec B311
        attempt = 0
        next_poll = self._clock()
        changed = False  # found changed since the last good pass: the next time is a failure
        try:
            while True:
                honour_cancellation()  # one pymodbus or asyncua swallowed (Python 3.11)
                try:
                    if not self.connected:
                        await self._connect()
                        next_poll = self._clock()
                    if self._clock() >= next_poll:
                        await self._poll()
                        next_poll += self._interval + stagger
                        stagger = 0.0
                        next_poll = max(next_poll, self._clock() - self._interval)
                    self._wake.clear()
                    await self._apply()
                except DeviceChanged as change:
                    if not changed:
                        changed = True
                        self._rediscover(change)
                        continue
                    self._failed(change)  # changed again at once: not a restart, a fault
                except DeviceError as error:
                    self._failed(error)
                except Exception as error:  # a bug must not take the gateway down
                    log.exception("%s: unexpected error, retrying", self.device_id)
                    self._failed(error)
                else:
                    attempt = 0
                    changed = False
                    await self._sleep_until(next_poll)
                    continue
                await asyncio.sleep(backoff_delay(attempt, self._interval, self._backoff_max))
                attempt += 1
        finally:
            try:
                await self.driver.close()
            except Exception:  # closing must not turn a clean shutdown into a crash
                log.exception("%s: closing the driver failed", self.device_id)

    async def _sleep_until(self, moment: float) -> None:
        """Sleep until ``moment`` (monotonic) or until a new command arrives.

        The moment sets the wake-up event from a timer: a poll a second per device is not
        worth a timeout's cancellation and its two exceptions (an event set early is
        harmless, ``run`` checks the time)."""
        if self._decide_by is not None:
            moment = min(moment, self._decide_by)
        delay = max(0.0, moment - self._clock())
        timer = asyncio.get_running_loop().call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            timer.cancel()

    async def _apply(self) -> None:
        """Write what differs between the desired and the applied setpoints; keep them alive."""
        if self._decide_by is not None:
            if self._clock() < self._decide_by:
                return  # the decision for this connect has not come yet
            log.warning(
                "%s: no control decision %g s after connecting; writing the last one",
                self.device_id,
                self._await_decision_s,
            )
            self._decide_by = None
        for name in list(dict.fromkeys([*self._unsure, *self._applied, *self._desired])):
            value = self._desired.get(name)
            if name not in self._unsure and self._applied.get(name) == value:
                continue
            if name in self._refused and self._refused[name] == value:
                continue  # refused before: not again until the control changes
            try:
                await self.driver.write(name, value)
            except ControlRefused as refusal:
                if refusal.retryable and self._try_again(name, value, refusal):
                    continue
                self._tries.pop(name, None)
                self._refused[name] = value
                log.warning("%s: %s", self.device_id, refusal)
                self._tell(SetpointRefused(self.device_id, name, refusal))
                continue
            self.writes += 1
            self._tries.pop(name, None)
            self._refused.pop(name, None)
            self._unsure.discard(name)
            if value is None:
                self._applied.pop(name, None)
            else:
                self._applied[name] = value
        if (
            self._keepalive_s is not None
            and (self._applied or self._hold_when_idle)
            and self._clock() - self._last_keepalive >= self._keepalive_s
        ):
            await self.driver.keepalive()
            self._last_keepalive = self._clock()

    def _try_again(
        self, name: SetpointName, value: SetpointValue | None, refusal: ControlRefused
    ) -> bool:
        """Count a "busy" or "failing" answer; whether the write is to be tried again."""
        last, tries = self._tries.get(name, (value, 0))
        tries = tries + 1 if last == value else 1
        if tries >= WRITE_TRIES:
            return False
        self._tries[name] = (value, tries)
        log.info("%s: %s; trying again at the next poll", self.device_id, refusal)
        return True

    def _tell(self, report: DeviceReport) -> None:
        """Report to the gateway; a bug there is logged, never the device's failure."""
        if self._report is None:
            return
        try:
            self._report(report)
        except Exception:
            log.exception("%s: the report callback failed on %r", self.device_id, report)

    def _rediscover(self, change: DeviceChanged) -> None:
        """The device answers but is not as discovered: connect again, without a backoff."""
        self.rediscoveries += 1
        self.connected = False
        log.warning("%s: %s; discovering it again", self.device_id, change)

    async def _connect(self) -> None:
        self.capability = await self.driver.connect()
        self.connected = True
        # the device may have restarted and forgotten: rewrite what is wanted, release what we
        # wrote before (and what is still unsure from a connect whose writes failed); a device
        # nobody asked us to control is never written to, unless we take it over at start
        everything = self._hold_when_idle or self._take_over
        self._take_over = False
        names = set(self.driver.supports()) if everything else set()
        self._unsure |= names | set(self._applied) | set(self._desired)
        self._applied = {}
        self._refused = {}
        if self._await_decision_s > 0:
            self._decide_by = self._clock() + self._await_decision_s
        self._tell(DeviceConnected(self.device_id, self.capability))

    async def _poll(self) -> None:
        state = await self.driver.poll()
        now = self._clock()
        sample = self.driver.sampled_at()
        at, until = (now, now) if sample is None else (sample.at, sample.at + sample.vouched_s)
        previous = self.reading
        if previous is not None and previous.confirmed == at:
            wall = previous.at  # the same confirmation: the same time, not one redrawn a ms off
        else:
            wall = datetime.now(UTC) - timedelta(seconds=max(0.0, now - at))
        self.reading = Reading(state, wall, min(now, until), at)
        self.polls += 1
        if self.failing:
            log.info("%s: reading", self.device_id)
        self.failing = False
        self._tried.set()
        self.last_exception = None

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        if not self.failing or self.failures == 1:
            log.warning("%s: offline: %s", self.device_id, error)
        elif self.last_exception is None or str(error) != str(self.last_exception):
            log.info("%s: still offline: %s", self.device_id, error)
        self.failing = True
        self._tried.set()
        self.connected = False  # rediscover on the next try: the device may have restarted
        self.last_exception = error
