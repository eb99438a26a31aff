"""Waiting in asyncio without losing a cancellation, on Python 3.11.

Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives in the loop iteration in
which its awaitable completes (CPython gh-86296, fixed in 3.12): the task carries on as if it
had never been cancelled, and a gateway shutting down waits for it forever. The gateway's own
waits use `asyncio.timeout`, which keeps the cancellation; its device loops also honour one
that a library's `wait_for` (pymodbus, asyncua) swallowed, because the task still counts it.
"""

from __future__ import annotations

import asyncio
import time


def to_boundary(period_s: float) -> float:
    """Seconds from now to the next multiple of ``period_s`` on the wall clock (0 < s <= period).

    The gateway's once-a-second timers (the telemetry round, the watchdog's tick, the MQTT
    session's keepalive check) all sleep to these boundaries, so the event loop wakes once
    for all of them instead of once for each: at one device, a wake-up on cold caches costs
    more than the work it does."""
    return period_s - time.time() % period_s


async def wait_set(event: asyncio.Event, timeout_s: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` have passed (None: no limit); True if set."""
    try:
        async with asyncio.timeout(None if timeout_s is None else max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True


def honour_cancellation() -> None:
    """Raise CancelledError if the current task was cancelled but something swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
