"""The control loop takes a jump of the wall clock before anything stamped with the new time.

A heartbeat heard a moment after NTP set the clock carries the new time already: were the
jump taken after it (at the next control interval), the heartbeat would be moved by the jump
too, and the role's silence measured an hour long (set back: the running event aborted at
once) or an hour short (set forward: a dispatcher that really fell silent went unnoticed for
an hour). ``ControlLoop.run`` runs here as in the daemon, on a wall clock that follows the
monotonic one plus an offset the test sets, as libfaketime does in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from derms_edge.northbound.commands import Command, parse_command
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.control_loop import ControlLoop
from tests.unit.test_arbitration_cases import loop_at
from tests.unit.test_control_loop import Recorder
from tests.unit.test_engine import T0

INTERVAL_S = 0.2
TIMEOUT_S = 1.0


class SteppedClock:
    """A wall clock that runs with the monotonic clock from T0 and is stepped by ``offset``."""

    def __init__(self) -> None:
        self._zero = time.monotonic()
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=time.monotonic() - self._zero) + self.offset


def command(topic: str, body: object) -> Command:
    parsed = parse_command(
        Topics("derms", "site"), f"derms/v1/site/{topic}", json.dumps(body).encode(), retained=False
    )
    assert parsed is not None
    return parsed


HEARTBEAT = command("heartbeat/dso", {})


def said(recorder: Recorder) -> list[tuple[str, str]]:
    return [(str(r["mrid"]), str(r["status"])) for r in recorder.responses]


async def running(
    tmp_path: Path, recorder: Recorder, clock: SteppedClock
) -> tuple[ControlLoop, asyncio.Task[None]]:
    """A loop running, its dso heard and its event started."""
    loop = loop_at(tmp_path, recorder, clock, interval_s=INTERVAL_S, dispatcher_timeout_s=TIMEOUT_S)
    task = asyncio.create_task(loop.run())
    event = {"mrid": "e", "start": T0.isoformat(), "duration_s": 7200, "control": {"max_w_pct": 40}}
    loop.post(HEARTBEAT)
    loop.post(command("controls/dso", event))
    await asyncio.sleep(3 * INTERVAL_S)
    assert said(recorder)[-1] == ("e", "started")
    return loop, task


def jump(loop: ControlLoop, clock: SteppedClock, by: timedelta) -> None:
    """NTP steps the clock; the dispatcher's heartbeat arrives before the next interval."""
    clock.offset += by
    loop.post(HEARTBEAT)


@pytest.mark.parametrize("by_h", [1, -1], ids=["forward", "back"])
def test_a_heartbeat_heard_just_after_a_jump_keeps_the_role_alive(
    tmp_path: Path, by_h: int
) -> None:
    recorder, clock = Recorder(), SteppedClock()

    async def scenario() -> None:
        loop, task = await running(tmp_path, recorder, clock)
        jump(loop, clock, timedelta(hours=by_h))
        for _ in range(int(0.8 * TIMEOUT_S / 0.1)):  # heartbeats, as the dispatcher sends
            await asyncio.sleep(0.1)
            loop.post(HEARTBEAT)
        assert said(recorder)[-1] == ("e", "started")
        task.cancel()
        loop.close()

    asyncio.run(scenario())


def test_silence_after_a_forward_jump_times_the_role_out_on_time(tmp_path: Path) -> None:
    recorder, clock = Recorder(), SteppedClock()

    async def scenario() -> None:
        loop, task = await running(tmp_path, recorder, clock)
        jump(loop, clock, timedelta(hours=1))  # its last word
        await asyncio.sleep(TIMEOUT_S + 4 * INTERVAL_S)
        assert said(recorder)[-1] == ("e", "aborted")
        assert recorder.responses[-1]["reason"] == "dispatcher_timeout"
        task.cancel()
        loop.close()

    asyncio.run(scenario())
