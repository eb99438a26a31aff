"""A rig of simulated devices behind Modbus TCP listeners, in asyncio or in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from hil.devices import DeviceState, PhysicsDevice, SimulatedDevice, build_device
from hil.physics import SimClock
from hil.server import ModbusGateway
from hil.spec import MeterSpec, RigSpec, load_rig_spec

T = TypeVar("T")


def _as_spec(spec: RigSpec | str | Path) -> RigSpec:
    return spec if isinstance(spec, RigSpec) else load_rig_spec(spec)


class Rig:
    """Builds every device of a spec and serves them; `async with Rig(spec) as rig:`.

    `clock` replaces the rig's own SimClock (at `speed` or the spec's), e.g. with one a test
    moves by hand.
    """

    def __init__(
        self,
        spec: RigSpec | str | Path,
        *,
        speed: float | None = None,
        clock: SimClock | None = None,
    ) -> None:
        self.spec = _as_spec(spec)
        self.clock = clock or SimClock(self.spec.speed if speed is None else speed)
        built: dict[str, SimulatedDevice] = {}
        for d in sorted(self.spec.devices, key=lambda d: isinstance(d, MeterSpec)):
            built[d.id] = build_device(d, self.clock, built)  # meters last: they measure others
        self.devices = {d.id: built[d.id] for d in self.spec.devices}
        groups: dict[tuple[str, int, str], list[SimulatedDevice]] = {}
        for d in self.spec.devices:
            key = (d.host, d.port, d.gateway or ("" if d.port else d.id))
            groups.setdefault(key, []).append(self.devices[d.id])
        self.gateways = [
            ModbusGateway(host, port, devs) for (host, port, _), devs in groups.items()
        ]
        self._gateway_of = {d.id: g for g in self.gateways for d in g.devices}
        self._tick: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start every listener (and the tick, if the spec asks for one)."""
        try:
            for gateway in self.gateways:
                await gateway.start()
        except BaseException:
            await self.stop()
            raise
        if self.spec.tick_s is not None:
            self._tick = asyncio.create_task(self._run_tick(self.spec.tick_s), name="hil-tick")

    async def stop(self) -> None:
        """Stop the tick and every listener."""
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
            self._tick = None
        for gateway in self.gateways:
            await gateway.stop()

    async def __aenter__(self) -> Rig:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run_tick(self, period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)
            for device in self.devices.values():
                device.refresh()

    def device(self, device_id: str) -> SimulatedDevice:
        """The simulated device with that id."""
        return self.devices[device_id]

    def physics_device(self, device_id: str) -> PhysicsDevice:
        """The simulated device with that id, which must not be a replay."""
        device = self.devices[device_id]
        if not isinstance(device, PhysicsDevice):
            raise TypeError(f"{device_id} is a {device.kind} device without physics")
        return device

    def host(self, device_id: str) -> str:
        """The host a device listens on."""
        return self._gateway_of[device_id].host

    def port(self, device_id: str) -> int:
        """The TCP port a device answers on (the bound port once started)."""
        return self._gateway_of[device_id].port


class RigThread:
    """Runs a Rig on its own event loop in a daemon thread, for synchronous tests and tools.

    Every accessor runs on the rig's loop, so it is safe to call from any thread.
    """

    def __init__(
        self,
        spec: RigSpec | str | Path,
        *,
        speed: float | None = None,
        clock: SimClock | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.spec = _as_spec(spec)
        self._speed = speed
        self._clock = clock
        self._timeout_s = timeout_s
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._rig: Rig | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RigThread:
        """Start the rig and wait until every listener is bound."""
        if self._thread is not None:
            raise RuntimeError("RigThread already started")
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.name = "hil-rig"
        self._thread.start()
        if not self._ready.wait(self._timeout_s):
            raise TimeoutError("rig did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the rig and join its thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(self._timeout_s)
        self._thread = self._loop = None

    def __enter__(self) -> RigThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            async with Rig(self.spec, speed=self._speed, clock=self._clock) as rig:
                self._rig = rig
                self._ready.set()
                await self._stopping.wait()
        except BaseException as exc:  # handed to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    def call(self, func: Callable[[Rig], T]) -> T:
        """func(rig), run on the rig's loop; its result or exception comes back here."""
        loop, rig = self._loop, self._rig
        if loop is None or rig is None:
            raise RuntimeError("RigThread is not running")

        async def run() -> T:
            return func(rig)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(self._timeout_s)

    def state(self, device_id: str) -> DeviceState:
        """The physics state of a device now."""
        return self.call(lambda rig: rig.physics_device(device_id).snapshot())

    def port(self, device_id: str) -> int:
        """The bound TCP port of a device."""
        return self.call(lambda rig: rig.port(device_id))

    def host(self, device_id: str) -> str:
        """The host a device listens on."""
        return self.call(lambda rig: rig.host(device_id))
