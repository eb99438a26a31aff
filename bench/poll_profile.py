"""Where the gateway's CPU goes while it polls: cProfile of the daemon's own code in steady
state, N legacy PV inverters on the HIL rig, telemetry every 1 s to a real Mosquitto.

    python bench/poll_profile.py [--devices 200] [--seconds 30] [--top 25]

The same set-up as bench/poll_bench.py's gateway side; the profiler is switched on once
every device is reading and has settled, so imports and discovery are not in it. Prints the
top functions by their own time (the event loop's wait in epoll among them), then by
cumulative time. cProfile sees
the event loop's thread only, and slows what it measures: read the shares, not the
absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parents[1]))

from bench.poll_bench import layout, write_gateway, write_rig
from bench.workers import rig_serving
from tests.support.servers import Mosquitto

if TYPE_CHECKING:
    from derms_edge.runtime.gateway import Gateway

SETTLE_S = 3.0


@asynccontextmanager
async def steady_gateway(config: Path) -> AsyncIterator[Gateway]:
    """The gateway running, every device reading and settled; stopped when the context ends."""
    from derms_edge.config import load_config
    from derms_edge.runtime.gateway import Gateway, freeze_startup_heap

    gateway = Gateway(load_config(config))
    freeze_startup_heap()  # as serve() does
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    async with asyncio.timeout(120):
        await asyncio.gather(*(c.first_attempt() for c in gateway.coordinators.values()))
    silent = [name for name, c in gateway.coordinators.items() if c.reading is None]
    if silent:
        raise RuntimeError(f"not reading: {', '.join(silent)}")
    await asyncio.sleep(SETTLE_S)
    try:
        yield gateway
    finally:
        stop.set()
        await runner


async def profile(config: Path, seconds: float) -> pstats.Stats:
    """Run the gateway; profile it for ``seconds`` once every device is reading."""
    async with steady_gateway(config):
        profiler = cProfile.Profile()
        profiler.enable()
        await asyncio.sleep(seconds)
        profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


@contextmanager
def gateway_set_up(n: int) -> Iterator[Path]:
    """A gateway configuration for N legacy PV inverters on the HIL rig, with telemetry to
    a real Mosquitto, both serving until the context ends."""
    devices = layout(n)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            write_rig(devices, tmp / "rig.yaml")
            write_gateway(devices, broker.port, tmp / "gateway.yaml")
            with rig_serving(tmp / "rig.yaml", (port for _d, port, _u in devices)):
                yield tmp / "gateway.yaml"
        finally:
            broker.stop()


def main() -> int:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--devices", type=int, default=200)
    top.add_argument("--seconds", type=float, default=30.0)
    top.add_argument("--top", type=int, default=25)
    args = top.parse_args()
    with gateway_set_up(args.devices) as config:
        stats = asyncio.run(profile(config, args.seconds))
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)
    print(f"{args.devices} devices, {args.seconds:g} s steady:\n{out.getvalue()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
