"""Waiting in end-to-end tests: for a condition, or for an event's response on MQTT."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.support.mqtt_probe import Message, MqttProbe


def eventually(check: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` every 0.1 s until it returns something true; that value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        time.sleep(0.1)


async def until(check: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """In a test's event loop: poll ``check`` every 20 ms until it holds."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        await asyncio.sleep(0.02)


def response(
    probe: MqttProbe, root: str, mrid: str, status: str, timeout_s: float = 15.0
) -> dict[str, Any]:
    """The first response with this mrid and status on ``{root}/responses``."""

    def matches(m: Message) -> bool:
        if m.topic != f"{root}/responses":
            return False
        data = m.json()
        return bool(data["mrid"] == mrid and data["status"] == status)

    data: dict[str, Any] = probe.wait_for(matches, timeout_s).json()
    return data
