"""Waits that keep a cancellation, and loops that honour one a library swallowed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from derms_edge.aio import honour_cancellation, to_boundary, wait_set


def test_wait_set_says_whether_the_event_came() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        came = await wait_set(event, None)
        already = await wait_set(event, -1.0)  # a deadline in the past still sees a set event
        return timed_out, came, already

    assert asyncio.run(scenario()) == (False, True, True)


def test_a_cancel_in_the_iteration_the_event_is_set_is_not_lost() -> None:
    """The race asyncio.wait_for loses on Python 3.11: the wait ends and the task is
    cancelled in the same loop iteration."""

    async def scenario() -> None:
        event = asyncio.Event()
        task = asyncio.create_task(wait_set(event, 10.0))
        await asyncio.sleep(0)
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_honour_cancellation_raises_for_a_cancel_someone_swallowed() -> None:
    async def swallowing_library_call() -> None:
        # what wait_for does on 3.11 when its awaitable completed in the same loop iteration
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    async def loop_body(steps: list[str]) -> None:
        honour_cancellation()
        steps.append("first pass")
        await swallowing_library_call()
        steps.append("library returned")
        honour_cancellation()
        steps.append("never")

    async def scenario() -> list[str]:
        steps: list[str] = []
        task = asyncio.create_task(loop_body(steps))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return steps

    assert asyncio.run(scenario()) == ["first pass", "library returned"]


def test_an_expired_timeout_leaves_nothing_to_honour() -> None:
    async def scenario() -> str:
        await wait_set(asyncio.Event(), 0.0)
        honour_cancellation()  # asyncio.timeout took back its own cancel
        return "went on"

    assert asyncio.run(scenario()) == "went on"


@pytest.mark.parametrize("period_s", [1.0, 0.1, 5.0])
def test_to_boundary_reaches_the_wall_clocks_next_multiple(period_s: float) -> None:
    for _ in range(50):
        now = time.time()
        wait_s = to_boundary(period_s)
        assert 0.0 < wait_s <= period_s
        phase = (now + wait_s) % period_s
        assert min(phase, period_s - phase) < 0.005, (now, wait_s)
        time.sleep(0.001)
