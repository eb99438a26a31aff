"""Restarts a failed long-running task with capped backoff: no bug in one part ends the daemon."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from derms_edge.backoff import backoff_delay

log = logging.getLogger(__name__)


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    base_s: float = 1.0,
    cap_s: float = 60.0,
    settled_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Await ``run()``; when it raises, log it with its traceback and start it again after
    a capped exponential backoff (``base_s`` doubling up to ``cap_s``). A run that lasted
    ``settled_s`` before failing starts the backoff over. Returns when ``run()`` returns;
    cancellation goes through untouched.
    """
    attempt = 0
    while True:
        started = clock()
        try:
            await run()
        except Exception:
            if clock() - started >= settled_s:
                attempt = 0
            delay = backoff_delay(attempt, base_s, cap_s)
            attempt += 1
            log.exception(
                "%s crashed (%d in a row); starting it again in %.1f s", name, attempt, delay
            )
            await asyncio.sleep(delay)
        else:
            return
