"""The telemetry rounds: aligned to the clock, and at start one as soon as every device's
first attempt has ended."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any, cast

from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.errors import DeviceTimeout
from derms_edge.model import Capability, DeviceKind, DeviceState, SetpointName
from derms_edge.northbound.mqtt import Message
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.reporting import Reporter


class Driver:
    """Answers (or times out) after ``delay_s``; ``hang``: never answers."""

    def __init__(self, delay_s: float, *, fails: bool = False, hang: bool = False) -> None:
        self.delay_s = delay_s
        self.fails = fails
        self.hang = hang

    async def connect(self) -> Capability:
        await asyncio.sleep(3600 if self.hang else self.delay_s)
        if self.fails:
            raise DeviceTimeout("no answer")
        return Capability(w_max=5000.0)

    async def poll(self) -> DeviceState:
        return DeviceState(w=1.0)

    async def close(self) -> None:
        pass

    def supports(self) -> frozenset[SetpointName]:
        return frozenset()

    async def write(self, *_: object) -> None:
        pass

    async def keepalive(self) -> None:
        pass

    def sampled_at(self) -> None:
        return None


class Outbox:
    """Records each round: (monotonic time, the messages' payloads)."""

    def __init__(self) -> None:
        self.rounds: list[tuple[float, list[dict[str, Any]]]] = []
        self.dropped = 0
        self._seq = 0

    def next_seq(self, count: int) -> int:
        self._seq += count
        return self._seq - count + 1

    def add(self, messages: Sequence[Message], *, hold: bool = False) -> None:
        self.rounds.append((time.monotonic(), [json.loads(m.payload) for m in messages]))


class Session:
    def __init__(self) -> None:
        self.connected = asyncio.Event()

    def publish(self, _message: Message) -> None:
        pass


class Forwarder:
    buffered = 0


def reporter(drivers: dict[str, Driver], interval_s: float) -> tuple[Reporter, Outbox]:
    coordinators = {
        device_id: DeviceCoordinator(
            device_id, driver, poll_interval_s=1.0, stale_after_s=3.0, backoff_max_s=1.0
        )
        for device_id, driver in drivers.items()
    }
    outbox = Outbox()
    made = Reporter(
        Topics("derms", "gw"),
        dict.fromkeys(drivers, DeviceKind.INVERTER),
        coordinators,
        outbox=cast(Any, outbox),
        session=cast(Any, Session()),
        forwarder=cast(Any, Forwarder()),
        qos=1,
        interval_s=interval_s,
        store_every_round=False,
        on_round=lambda: None,
        rejected_inbound=lambda: 0,
    )
    return made, outbox


async def run_for(made: Reporter, seconds: float) -> None:
    coordinators = cast(dict[str, DeviceCoordinator], made._coordinators)
    tasks = [asyncio.create_task(c.run()) for c in coordinators.values()]
    tasks.append(asyncio.create_task(made.run()))
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def qualities(round_: list[dict[str, Any]]) -> dict[str, str]:
    return {m["device"]: m["quality"] for m in round_}


def test_at_start_a_round_as_soon_as_every_device_has_been_tried() -> None:
    """An hour's interval: the first round comes once pv reads and ghost has failed, not at
    the next full hour; then nothing until the boundary."""
    drivers = {"pv": Driver(0.05), "ghost": Driver(0.2, fails=True)}
    made, outbox = reporter(drivers, interval_s=3600)
    if 3600 - time.time() % 3600 < 5:  # a boundary would come within the test: wait it out
        time.sleep(5)
    start = time.monotonic()
    asyncio.run(run_for(made, 1.0))
    assert len(outbox.rounds) == 1
    at, messages = outbox.rounds[0]
    assert 0.2 <= at - start < 0.9  # after ghost's failure, well before the hour
    assert qualities(messages) == {"pv": "ok", "ghost": "offline"}
    assert [m["seq"] for m in messages] == [1, 2]


def test_a_device_not_tried_by_the_first_boundary_leaves_the_rounds_to_the_clock() -> None:
    """ghost's first attempt never ends: the rounds come at the boundaries, ghost unknown."""
    drivers = {"pv": Driver(0.0), "ghost": Driver(0.0, hang=True)}
    made, outbox = reporter(drivers, interval_s=0.25)
    asyncio.run(run_for(made, 0.9))
    assert 3 <= len(outbox.rounds) <= 4
    for at, messages in outbox.rounds:
        assert qualities(messages) == {"pv": "ok", "ghost": "unknown"}
        wall = time.time() - (time.monotonic() - at)
        assert min(wall % 0.25, 0.25 - wall % 0.25) < 0.05  # on a boundary of the clock
