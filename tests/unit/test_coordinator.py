"""The device coordinator: cadence, last good reading, quality, backoff, isolation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from derms_edge.devices.coordinator import DeviceCoordinator, backoff_delay
from derms_edge.errors import DeviceException, DeviceTimeout
from derms_edge.model import Capability, DeviceState, Quality


class FakeDriver:
    """A driver whose answers the test scripts; counts its calls."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.connects = 0
        self.polls = 0
        self.closed = False

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
        on_capability=on_capability,
        clock=clock or time.monotonic,
    )


async def run_for(coord: DeviceCoordinator, seconds: float) -> None:
    task = asyncio.create_task(coord.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_offline_before_the_first_reading() -> None:
    assert coordinator(FakeDriver([])).quality() is Quality.OFFLINE


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
