"""The device coordinator: cadence, last good reading, quality, backoff, isolation."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from derms_edge.backoff import backoff_delay
from derms_edge.devices.coordinator import (
    DeviceConnected,
    DeviceCoordinator,
    DeviceReport,
    Sample,
    SetpointRefused,
)
from derms_edge.errors import ControlRefused, DeviceChanged, DeviceException, DeviceTimeout
from derms_edge.model import Capability, DeviceState, Quality, SetpointName, SetpointValue


class FakeDriver:
    """A driver whose answers the test scripts; counts its calls."""

    def __init__(self, script: list[object], refuse: float | None = None) -> None:
        self.script = script
        self.refuse = refuse
        self.connects = 0
        self.polls = 0
        self.closed = False
        self.writes: list[tuple[SetpointName, SetpointValue | None]] = []
        self.keepalives = 0

    async def connect(self) -> Capability:
        self.connects += 1
        return Capability(w_max=5000.0)

    async def poll(self) -> DeviceState:
        self.polls += 1
        step = self.script.pop(0) if self.script else DeviceState(w=1.0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, DeviceState)
        return step

    async def close(self) -> None:
        self.closed = True

    def supports(self) -> frozenset[SetpointName]:
        return frozenset({SetpointName.MAX_W_PCT, SetpointName.VAR})

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        if value is not None and value == self.refuse:
            raise ControlRefused("inv1", "704.WMaxLimPct", f"Modbus exception 3 for {value}")
        self.writes.append((name, value))

    def sampled_at(self) -> None:
        return None

    async def keepalive(self) -> None:
        self.keepalives += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def coordinator(
    driver: FakeDriver,
    clock: Clock | None = None,
    on_capability: Callable[[str, Capability], None] | None = None,
) -> DeviceCoordinator:
    return DeviceCoordinator(
        "inv1",
        driver,
        poll_interval_s=0.01,
        stale_after_s=0.03,
        backoff_max_s=0.05,
        report=None if on_capability is None else on_connected(on_capability),
        clock=clock or time.monotonic,
    )


def on_connected(callback: Callable[[str, Capability], None]) -> Callable[[DeviceReport], None]:
    """A report callable that hands a connect's device id and capability to ``callback``."""

    def report(item: DeviceReport) -> None:
        if isinstance(item, DeviceConnected):
            callback(item.device_id, item.capability)

    return report


def on_refused(refused: list[Any]) -> Callable[[DeviceReport], None]:
    """A report callable that collects refusals as (device id, setpoint, refusal)."""

    def report(item: DeviceReport) -> None:
        if isinstance(item, SetpointRefused):
            refused.append((item.device_id, item.name, item.refusal))

    return report


async def run_for(coord: DeviceCoordinator, seconds: float) -> None:
    task = asyncio.create_task(coord.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_unknown_until_the_first_attempt_has_ended() -> None:
    """Not offline before it was tried: the first telemetry round may come first."""
    assert coordinator(FakeDriver([])).quality() is Quality.UNKNOWN


def test_offline_when_the_first_attempt_fails() -> None:
    driver = FakeDriver([DeviceTimeout("no answer")] * 50)
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.failures < 1:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert coord.quality() is Quality.OFFLINE


def test_polls_at_its_interval_and_keeps_the_reading() -> None:
    driver = FakeDriver([DeviceState(w=10.0), DeviceState(w=20.0)])
    captured: list[Capability] = []
    coord = coordinator(driver, on_capability=lambda _id, cap: captured.append(cap))
    asyncio.run(run_for(coord, 0.2))
    assert driver.connects == 1
    assert 5 <= driver.polls <= 25
    assert coord.reading is not None and coord.reading.state.w == 1.0
    assert coord.quality() is Quality.OK
    assert captured == [Capability(w_max=5000.0)]
    assert driver.closed


def test_failures_mark_offline_and_reconnect_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    driver = FakeDriver([DeviceState(w=5.0)] + [DeviceTimeout("no answer")] * 3)
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.failures < 3:
            await asyncio.sleep(0.001)
        assert coord.quality() is Quality.OFFLINE
        assert coord.reading is not None and coord.reading.state.w == 5.0  # last good kept
        while coord.quality() is not Quality.OK:
            await asyncio.sleep(0.001)
        task.cancel()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert driver.connects == 4  # rediscovered after every failure
    offline = [r for r in caplog.records if "offline: no answer" in r.getMessage()]
    assert len(offline) == 1  # logged once on the transition, not on every retry


def test_stale_when_readings_stop_arriving() -> None:
    clock = Clock()
    coord = coordinator(FakeDriver([]), clock)

    async def one_poll() -> None:
        await coord._connect()
        await coord._poll()

    asyncio.run(one_poll())
    assert coord.quality() is Quality.OK
    clock.now += 0.031
    assert coord.quality() is Quality.STALE


class ConfirmedDriver(FakeDriver):
    """A driver fed by a subscription: its values were last confirmed at ``confirmed``."""

    def __init__(self, confirmed: float) -> None:
        super().__init__([])
        self.confirmed = confirmed

    def sampled_at(self) -> Sample:  # type: ignore[override]
        return Sample(self.confirmed, vouched_s=2.0)


def test_one_confirmation_polled_again_keeps_one_time_and_a_new_one_moves_it_on() -> None:
    """A subscription confirms every keep-alive; polls between two keep-alives must report the
    same time, not one redrawn from the wall clock a millisecond off (ts going backwards)."""
    clock = Clock()
    driver = ConfirmedDriver(confirmed=clock.now - 0.2)
    coord = coordinator(driver, clock)

    async def poll_at(*moments: float) -> list[datetime]:
        await coord._connect()
        stamps = []
        for moment in moments:
            clock.now = moment
            await coord._poll()
            assert coord.reading is not None
            stamps.append(coord.reading.at)
        return stamps

    first, second, third = asyncio.run(poll_at(1000.0, 1000.5, 1001.0))
    assert first == second == third
    driver.confirmed = 1001.9  # the next keep-alive
    (later,) = asyncio.run(poll_at(1002.0))
    assert later > first


def test_a_bug_in_a_driver_does_not_end_the_coordinator() -> None:
    driver = FakeDriver([ZeroDivisionError("bug"), DeviceException(4, "read"), DeviceState(w=3.0)])
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.reading is None:
            await asyncio.sleep(0.001)
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())
    assert coord.failures == 2


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_is_capped_and_jittered(attempt: int) -> None:
    delay = backoff_delay(attempt, 1.0, 60.0)
    expected = min(60.0, 2.0**attempt)
    assert expected / 2 <= delay <= expected


def test_setpoints_written_at_once_released_and_rewritten_after_reconnect() -> None:
    driver = FakeDriver([DeviceState(w=1.0)] * 3 + [DeviceTimeout("gone")])
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.polls < 1:
            await asyncio.sleep(0.001)
        assert driver.writes == []  # nobody asked for control: the device is not written to
        coord.command({SetpointName.MAX_W_PCT: 40.0})
        await asyncio.sleep(0.005)  # well inside the poll interval: commands do not wait for it
        assert driver.writes == [(SetpointName.MAX_W_PCT, 40.0)]
        assert coord.applied == {SetpointName.MAX_W_PCT: 40.0}
        while driver.connects < 2 or coord.quality() is not Quality.OK:
            await asyncio.sleep(0.001)
        assert (SetpointName.MAX_W_PCT, 40.0) in driver.writes[1:]  # the device forgot: again
        coord.command({})
        while (SetpointName.MAX_W_PCT, None) not in driver.writes[-1:]:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())


def test_a_refused_setpoint_is_reported_once_and_not_retried() -> None:
    refused: list[tuple[str, SetpointName, ControlRefused]] = []
    driver = FakeDriver([], refuse=150.0)
    coord = DeviceCoordinator(
        "inv1",
        driver,
        poll_interval_s=0.01,
        stale_after_s=0.03,
        backoff_max_s=0.05,
        report=on_refused(refused),
        keepalive_s=0.02,
    )

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.polls < 1:
            await asyncio.sleep(0.001)
        coord.command({SetpointName.MAX_W_PCT: 150.0, SetpointName.VAR: -100.0})
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())
    assert len(refused) == 1 and refused[0][1] is SetpointName.MAX_W_PCT
    assert "704.WMaxLimPct" in str(refused[0][2])
    assert coord.applied == {SetpointName.VAR: -100.0}
    assert driver.keepalives >= 2  # kept alive while a setpoint is in force


class ChangingDriver(FakeDriver):
    """Answers, but is found changed (restarted) at the polls the test names."""

    def __init__(self, changed_at: set[int]) -> None:
        super().__init__([])
        self.changed_at = changed_at

    async def poll(self) -> DeviceState:
        state = await super().poll()
        if self.polls in self.changed_at:
            raise DeviceChanged("model 103 moved")
        return state


def test_a_changed_device_is_rediscovered_at_once_and_rewritten_without_going_offline() -> None:
    driver = ChangingDriver(changed_at={3})
    coord = coordinator(driver)
    qualities: list[Quality] = []

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        coord.command({SetpointName.MAX_W_PCT: 40.0})
        while driver.polls < 5:
            qualities.append(coord.quality())
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert driver.connects == 2
    assert coord.rediscoveries == 1 and coord.failures == 0
    assert Quality.OFFLINE not in qualities[qualities.index(Quality.OK) :]
    assert driver.writes.count((SetpointName.MAX_W_PCT, 40.0)) == 2  # again after the change


def test_changed_again_right_after_rediscovery_is_a_failure() -> None:
    driver = ChangingDriver(changed_at={2, 3})
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while driver.polls < 5:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert coord.rediscoveries == 1 and coord.failures == 1


class BusyDriver(FakeDriver):
    """Answers a write "busy" (a retryable refusal) a number of times."""

    def __init__(self, busy: int) -> None:
        super().__init__([])
        self.busy = busy

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        if self.busy > 0:
            self.busy -= 1
            raise ControlRefused("inv1", "704.WMaxLimPct", "Modbus exception 6", retryable=True)
        await super().write(name, value)


@pytest.mark.parametrize(("busy", "reported"), [(2, False), (3, True)])
def test_a_busy_answer_is_tried_again_before_it_counts_as_refused(
    busy: int, reported: bool
) -> None:
    refused: list[object] = []
    driver = BusyDriver(busy)
    coord = DeviceCoordinator(
        "inv1",
        driver,
        poll_interval_s=0.01,
        stale_after_s=0.03,
        backoff_max_s=0.05,
        report=on_refused(refused),
    )

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        coord.command({SetpointName.MAX_W_PCT: 40.0})
        await asyncio.sleep(0.15)
        task.cancel()

    asyncio.run(scenario())
    assert bool(refused) is reported
    assert (coord.applied == {}) is reported
    assert coord.failures == 0  # busy is not offline


def test_a_bug_in_a_callback_or_in_close_does_not_end_the_coordinator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadClose(FakeDriver):
        async def close(self) -> None:
            raise OSError("already closed")

    def broken(_id: str, _capability: Capability) -> None:
        raise KeyError("bug in the gateway")

    driver = BadClose([], refuse=150.0)
    coord = coordinator(driver, on_capability=broken)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.polls < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert coord.failures == 0 and driver.connects == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("callback" in m and "failed" in m for m in messages)
    assert any("closing the driver failed" in m for m in messages)


def test_a_cancellation_the_driver_swallowed_still_stops_the_coordinator() -> None:
    """Python 3.11's asyncio.wait_for, inside pymodbus and asyncua, swallows a cancellation
    that arrives as its answer does; the coordinator must stop anyway (a shutdown hung on it)."""

    class Swallowing(FakeDriver):
        in_flight = False
        swallowed = 0

        async def poll(self) -> DeviceState:
            self.in_flight = True
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                self.swallowed += 1  # the answer came in the same loop iteration as the cancel
            finally:
                self.in_flight = False
            return await super().poll()

    driver = Swallowing([])
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        while coord.polls < 2:
            await asyncio.sleep(0.001)
        while not driver.in_flight:
            await asyncio.sleep(0)
        task.cancel()
        done, _pending = await asyncio.wait([task], timeout=1.0)
        assert done, "the coordinator went on after its cancellation"
        with pytest.raises(asyncio.CancelledError):
            task.result()

    asyncio.run(scenario())
    assert driver.swallowed == 1
    assert driver.closed


def test_a_release_that_fails_across_reconnects_is_still_made() -> None:
    """A curtailment that ended while the link kept dropping must still be released: what
    the device may hold stays unsure until a write of it succeeds, however many reconnects."""

    class FailingWrites(FakeDriver):
        failing_writes = 0

        async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
            if self.failing_writes:
                self.failing_writes -= 1
                raise DeviceTimeout(f"no answer to the write of {name}")
            await super().write(name, value)

    driver = FailingWrites([])
    coord = coordinator(driver)

    async def scenario() -> None:
        task = asyncio.create_task(coord.run())
        coord.command({SetpointName.MAX_W_PCT: 40.0})
        while coord.applied != {SetpointName.MAX_W_PCT: 40.0}:
            await asyncio.sleep(0.001)
        driver.failing_writes = 3  # the release fails, and again after each of two reconnects
        coord.command({})
        async with asyncio.timeout(2.0):
            while (SetpointName.MAX_W_PCT, None) not in driver.writes:
                await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert driver.connects == 4
    assert driver.writes == [(SetpointName.MAX_W_PCT, 40.0), (SetpointName.MAX_W_PCT, None)]


def test_take_over_writes_every_setpoint_at_the_first_connect_only() -> None:
    """A device with no revert timer may hold what a gateway that stopped wrote: at the first
    connect every setpoint it supports is written, the decision or its release; later
    connects write only what the gateway itself wrote or wants."""
    driver = FakeDriver([DeviceState(w=1.0)] * 3 + [DeviceTimeout("gone")])
    coord = DeviceCoordinator(
        "bat1", driver, poll_interval_s=0.01, stale_after_s=0.03, backoff_max_s=0.05, take_over=True
    )

    async def scenario() -> None:
        coord.command({SetpointName.VAR: 300.0})  # decided before the device answered
        task = asyncio.create_task(coord.run())
        while driver.connects < 2 or coord.quality() is not Quality.OK:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    first, again = driver.writes[:2], driver.writes[2:]
    assert sorted(first, key=str) == [(SetpointName.MAX_W_PCT, None), (SetpointName.VAR, 300.0)]
    assert again == [(SetpointName.VAR, 300.0)]  # the device may have forgotten it: again


def test_after_a_connect_the_writes_wait_for_the_decision_made_with_its_capability() -> None:
    """A decision made before the device said what it is (a charger's max_a, a battery's
    capacity) is never written: after each connect the writes wait for the next command."""
    driver = FakeDriver([])
    connects: list[Capability] = []
    coord = DeviceCoordinator(
        "inv1",
        driver,
        poll_interval_s=0.01,
        stale_after_s=0.03,
        backoff_max_s=0.05,
        report=on_connected(lambda _id, capability: connects.append(capability)),
        await_decision_s=5.0,
    )

    async def scenario() -> None:
        coord.command({SetpointName.MAX_W_PCT: 100.0})  # decided before the device connected
        task = asyncio.create_task(coord.run())
        while coord.polls < 5:
            await asyncio.sleep(0.001)
        assert connects and driver.writes == []  # polling goes on; the old decision waits
        coord.command({SetpointName.MAX_W_PCT: 40.0})  # the decision with the capability
        while not driver.writes:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert driver.writes == [(SetpointName.MAX_W_PCT, 40.0)]


def test_with_no_decision_in_time_the_last_one_is_written(caplog: pytest.LogCaptureFixture) -> None:
    """A control loop that does not answer (crashed, restarting) cannot keep a device from
    the setpoints last decided for it for longer than the wait."""
    driver = FakeDriver([])
    coord = DeviceCoordinator(
        "inv1",
        driver,
        poll_interval_s=1.0,
        stale_after_s=3.0,
        backoff_max_s=1.0,
        report=lambda _report: None,
        await_decision_s=0.05,
    )

    async def scenario() -> None:
        coord.command({SetpointName.MAX_W_PCT: 60.0})
        task = asyncio.create_task(coord.run())
        async with asyncio.timeout(2):  # well before the next poll, 1 s apart
            while not driver.writes:
                await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(scenario())
    assert driver.writes == [(SetpointName.MAX_W_PCT, 60.0)]
    assert any("no control decision" in r.getMessage() for r in caplog.records)


def test_the_first_poll_is_at_once_and_the_later_ones_are_staggered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway that starts reads every device at once; each device's polls after the first
    are shifted by its own random part of the interval (here drawn at its largest)."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    driver = FakeDriver([])
    polled: list[float] = []
    original = driver.poll

    async def poll() -> DeviceState:
        polled.append(time.monotonic())
        return await original()

    driver.poll = poll  # type: ignore[method-assign]
    coord = DeviceCoordinator(
        "inv1", driver, poll_interval_s=0.2, stale_after_s=1.0, backoff_max_s=0.2
    )
    start = time.monotonic()
    asyncio.run(run_for(coord, 0.7))
    assert polled[0] - start < 0.1  # not after a stagger of 0.2 s
    assert polled[1] - polled[0] >= 0.39  # the interval and the stagger
    assert 0.19 <= polled[2] - polled[1] < 0.35  # then the interval
