"""The dispatcher's control loop tells the watchdog it is alive; steps from elsewhere do not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from derms_edge.config import parse_config
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.dispatch import Dispatcher
from derms_edge.northbound.topics import Topics


def test_only_the_loops_own_steps_feed_the_watchdog(tmp_path: Path) -> None:
    config = parse_config(
        {
            "gateway": {"id": "site", "state_dir": str(tmp_path)},
            "devices": [
                {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}
            ],
            "control": {"interval_s": 0.05},
        }
    )
    ticks: list[None] = []

    async def scenario() -> None:
        pool = LinkPool()  # the pymodbus client wants a running loop
        coordinators = {d.id: build_coordinator(d, pool) for d in config.devices}
        dispatcher = Dispatcher(
            config,
            coordinators,
            lambda _publication: None,
            Topics("derms", "site"),
            respond=lambda _publications: None,
            on_tick=lambda: ticks.append(None),
        )
        dispatcher.step()  # what a device connect asks for: no sign that the loop is alive
        assert ticks == []
        task = asyncio.create_task(dispatcher.run())
        async with asyncio.timeout(5):
            while len(ticks) < 3:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert len(ticks) >= 3
