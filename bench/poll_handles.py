"""Where the event loop's thread spends its CPU, callback by callback, while the gateway polls.

    python bench/poll_handles.py [--devices 1] [--seconds 30]

The same set-up as bench/poll_bench.py's gateway side (N legacy PV inverters on the HIL rig,
telemetry every 1 s to a real Mosquitto). Once every device is reading and has settled,
every callback the event loop runs is timed on the thread's CPU clock (a task's step is
named by its task and the coroutine frames it waits in) for ``--seconds``. Unlike cProfile
it does not slow what it measures per Python call, so at N = 1, where cold caches and
wake-ups are most of the cost, it shows the real microseconds of each wake-up.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parents[1]))

from bench.poll_profile import gateway_set_up, steady_gateway


def describe(handle: asyncio.Handle) -> str:
    """A callback by what it runs: a task's step by its name and where its coroutine waits."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if not isinstance(task, asyncio.Task):
        return str(getattr(callback, "__qualname__", repr(callback)))
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return f"task {task.get_name().split(':')[0]} @ {' > '.join(frames[-3:])}"


async def measure(config: Path, seconds: float) -> None:
    """Run the gateway; time every callback for ``seconds`` once every device is reading."""
    async with steady_gateway(config) as gateway:
        await time_callbacks(len(gateway.coordinators), seconds)


async def time_callbacks(devices: int, seconds: float) -> None:
    """Time every callback the running loop runs for ``seconds``; print them, costliest
    first."""
    loop = asyncio.get_running_loop()
    counts: collections.Counter[str] = collections.Counter()
    spent: collections.Counter[str] = collections.Counter()
    total_ns = [0, 0]  # CPU in _run_once, its iterations
    run_once = type(loop)._run_once  # type: ignore[attr-defined]
    run_handle = asyncio.Handle._run

    def timed_run_once(self: asyncio.AbstractEventLoop) -> None:
        start = time.thread_time_ns()
        run_once(self)
        total_ns[0] += time.thread_time_ns() - start
        total_ns[1] += 1

    def timed_handle(handle: asyncio.Handle) -> None:
        name = describe(handle)
        start = time.thread_time_ns()
        run_handle(handle)
        spent[name] += time.thread_time_ns() - start
        counts[name] += 1

    type(loop)._run_once = timed_run_once  # type: ignore[attr-defined]
    asyncio.Handle._run = timed_handle  # type: ignore[method-assign]
    try:
        await asyncio.sleep(seconds)
    finally:
        type(loop)._run_once = run_once  # type: ignore[attr-defined]
        asyncio.Handle._run = run_handle  # type: ignore[method-assign]
    print(
        f"{devices} devices, {seconds:g} s: {total_ns[1] / seconds:.1f} loop "
        f"iterations/s, the loop's thread {total_ns[0] / 1e6 / seconds:.3f} ms CPU/s, "
        f"{sum(spent.values()) / 1e6 / seconds:.3f} of it in callbacks"
    )
    print("   calls/s    CPU µs/s  µs each  callback")
    for name, ns in spent.most_common(30):
        each = ns / 1e3 / counts[name]
        print(f"{counts[name] / seconds:10.2f} {ns / 1e3 / seconds:11.1f} {each:8.1f}  {name}")


def main() -> int:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--devices", type=int, default=1)
    top.add_argument("--seconds", type=float, default=30.0)
    args = top.parse_args()
    with gateway_set_up(args.devices) as config:
        asyncio.run(measure(config, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
