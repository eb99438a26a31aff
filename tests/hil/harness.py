"""What the HIL tests share: rig specs from dicts, running a check, a clock moved by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from hil.physics import SimClock
from hil.spec import RigSpec

HOST = "127.0.0.1"


def rig(*devices: dict[str, Any], speed: float = 1.0) -> RigSpec:
    """A rig spec of these devices."""
    return RigSpec.model_validate({"speed": speed, "devices": list(devices)})


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async check to completion."""
    asyncio.run(coro())


class HandClock(SimClock):
    """A SimClock the test moves by hand: simulated time is whatever `t` was last set to, s."""

    def __init__(self) -> None:
        self.t = 0.0
        super().__init__(1.0, source=lambda: self.t)
