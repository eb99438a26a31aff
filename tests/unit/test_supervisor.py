"""Task supervision: a failing task is started again with backoff; cancellation goes through."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from derms_edge.runtime.supervisor import supervise


def test_a_crashing_task_is_started_again_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 4:
            raise ZeroDivisionError("bug")

    asyncio.run(supervise("telemetry", flaky, base_s=0.02, cap_s=0.04))
    assert len(runs) == 4
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.01 and all(gap <= 0.1 for gap in gaps)  # capped
    crashes = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(crashes) == 3 and "telemetry crashed" in crashes[0].getMessage()
    assert crashes[0].exc_info is not None  # with its traceback


def test_cancellation_is_not_a_crash() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def scenario() -> None:
        task = asyncio.create_task(supervise("device:inv1", forever))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
