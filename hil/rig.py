"""A rig of simulated devices behind Modbus TCP listeners and OPC UA servers, in asyncio or in
a background thread.

asyncua is imported only when the spec has OPC UA devices; websockets and ocpp only when it has
OCPP stations (which connect out to a CSMS rather than listen).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from hil.devices import (
    DeviceState,
    EvCharger,
    EvseState,
    PhysicsDevice,
    SimulatedDevice,
    build_device,
)
from hil.ocpp.station import OcppStation
from hil.opcua.devices import OpcUaDevice, build_opcua_device
from hil.opcua.pki import OpcUaPki, ensure_pki
from hil.physics import SimClock
from hil.server import ModbusGateway
from hil.spec import MeterSpec, OcppEvseSpec, OpcUaSpec, RigSpec, load_rig_spec

if TYPE_CHECKING:
    from hil.ocpp.client import OcppClient
    from hil.opcua.server import OpcUaServer

T = TypeVar("T")
OPCUA_START_S = 3.0
"""Allowance per OPC UA server when waiting for a RigThread to start, s: one starts in about
0.1 s, but the first start on a machine builds asyncua's address-space cache (about 2 s)."""


def _as_spec(spec: RigSpec | str | Path) -> RigSpec:
    return spec if isinstance(spec, RigSpec) else load_rig_spec(spec)


class Rig:
    """Builds every device of a spec and serves them; `async with Rig(spec) as rig:`.

    `clock` replaces the rig's own SimClock (at `speed` or the spec's), e.g. with one a test
    moves by hand. `devices` holds the Modbus units, `opcua_devices` the OPC UA devices, each
    served by its own server in `opcua_servers`; `ocpp_stations` the OCPP charging stations,
    each connected out to its CSMS by its client in `ocpp_clients` (made at start).
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
        built: dict[str, SimulatedDevice | OpcUaDevice | OcppStation] = {}
        for d in sorted(self.spec.devices, key=lambda d: isinstance(d, MeterSpec)):
            if isinstance(d, OcppEvseSpec):
                built[d.id] = OcppStation(d, self.clock)
            elif isinstance(d, OpcUaSpec):
                built[d.id] = build_opcua_device(d, self.clock)
            else:  # meters last: they measure others
                built[d.id] = build_device(d, self.clock, built)
        self.devices: dict[str, SimulatedDevice] = {}
        self.opcua_devices: dict[str, OpcUaDevice] = {}
        self.ocpp_stations: dict[str, OcppStation] = {}
        self.ocpp_clients: dict[str, OcppClient] = {}
        for d in self.spec.devices:
            device = built[d.id]
            if isinstance(device, OcppStation):
                self.ocpp_stations[d.id] = device
            elif isinstance(device, OpcUaDevice):
                self.opcua_devices[d.id] = device
            else:
                self.devices[d.id] = device
        groups: dict[tuple[str, int, str], list[SimulatedDevice]] = {}
        for d in self.spec.devices:
            if not isinstance(d, OpcUaSpec | OcppEvseSpec):
                key = (d.host, d.port, d.gateway or ("" if d.port else d.id))
                groups.setdefault(key, []).append(self.devices[d.id])
        self.gateways = [
            ModbusGateway(host, port, devs) for (host, port, _), devs in groups.items()
        ]
        self._gateway_of = {d.id: g for g in self.gateways for d in g.devices}
        self.opcua_servers = self._opcua_servers()
        self.pki_dir = self.spec.pki_dir
        """Where the OPC UA certificates are (None before the first start without a pki_dir)."""
        self._own_pki_dir = False
        self._tick: asyncio.Task[None] | None = None

    def _opcua_servers(self) -> dict[str, OpcUaServer]:
        """A server per OPC UA device (importing asyncua only if there is one)."""
        if not self.opcua_devices:
            return {}
        from hil.opcua.server import OpcUaServer

        specs = {d.id: d for d in self.spec.devices if isinstance(d, OpcUaSpec)}
        return {
            i: OpcUaServer(
                device,
                specs[i].host,
                specs[i].port,
                users=specs[i].users,
                publish_s=self.spec.tick_s,
            )
            for i, device in self.opcua_devices.items()
        }

    async def start(self) -> None:
        """Start every listener and OPC UA server (and the tick, if the spec asks for one)."""
        try:
            for gateway in self.gateways:
                await gateway.start()
            for device_id, server in self.opcua_servers.items():
                pki_dir = self._pki_dir()
                pki = await asyncio.to_thread(ensure_pki, pki_dir, device_id, server.host)
                await server.start(pki)
            if self.ocpp_stations:
                from hil.ocpp.client import OcppClient

                for device_id, station in self.ocpp_stations.items():
                    self.ocpp_clients[device_id] = OcppClient(station)
                    await self.ocpp_clients[device_id].start()
        except BaseException:
            await self.stop()
            raise
        if self.spec.tick_s is not None:
            self._tick = asyncio.create_task(self._run_tick(self.spec.tick_s), name="hil-tick")

    def _pki_dir(self) -> Path:
        """The spec's PKI directory, or a temporary one the rig makes (and removes at stop)."""
        if self.pki_dir is None:
            self.pki_dir = Path(tempfile.mkdtemp(prefix="derms-edge-hil-pki-"))
            self._own_pki_dir = True
        return self.pki_dir

    async def stop(self) -> None:
        """Stop the tick, every OPC UA server and listener; remove a PKI directory the rig
        made."""
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
            self._tick = None
        for client in self.ocpp_clients.values():
            await client.stop()
        self.ocpp_clients = {}
        for server in self.opcua_servers.values():
            await server.stop()
        for gateway in self.gateways:
            await gateway.stop()
        if self._own_pki_dir and self.pki_dir is not None:
            shutil.rmtree(self.pki_dir, ignore_errors=True)
            self.pki_dir, self._own_pki_dir = None, False

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

    def device(self, device_id: str) -> SimulatedDevice | OpcUaDevice | OcppStation:
        """The simulated device with that id (a Modbus unit, an OPC UA device or an OCPP
        station)."""
        if device_id in self.devices:
            return self.devices[device_id]
        if device_id in self.ocpp_stations:
            return self.ocpp_stations[device_id]
        return self.opcua_device(device_id)

    def opcua_device(self, device_id: str) -> OpcUaDevice:
        """The OPC UA device with that id."""
        return self._opcua_server(device_id).device

    def snapshot(self, device_id: str) -> DeviceState | EvseState:
        """The physics state of any device but a replay, now."""
        device = self.device(device_id)
        if not isinstance(device, PhysicsDevice | EvCharger | OpcUaDevice | OcppStation):
            raise TypeError(f"{device_id} is a {device.kind} device without physics")
        return device.snapshot()

    def ocpp_client(self, device_id: str) -> OcppClient:
        """An OCPP station's connection (once the rig has started)."""
        if device_id not in self.ocpp_clients:
            raise KeyError(f"{device_id} is not a started OCPP station of the rig")
        return self.ocpp_clients[device_id]

    async def reboot_station(self, device_id: str) -> None:
        """Reboot an OCPP station: its profiles are forgotten, its session ends, it reconnects
        and boots (PowerUp); the car stays."""
        await self.ocpp_client(device_id).reboot()

    def physics_device(self, device_id: str) -> PhysicsDevice:
        """The simulated device with that id, which must not be a replay."""
        device = self.devices[device_id]
        if not isinstance(device, PhysicsDevice):
            raise TypeError(f"{device_id} is a {device.kind} device without physics")
        return device

    def host(self, device_id: str) -> str:
        """The host a device listens on."""
        if device_id in self._gateway_of:
            return self._gateway_of[device_id].host
        return self._opcua_server(device_id).host

    def port(self, device_id: str) -> int:
        """The TCP port a device answers on (the bound port once started)."""
        if device_id in self._gateway_of:
            return self._gateway_of[device_id].port
        return self._opcua_server(device_id).port

    def endpoint(self, device_id: str) -> str:
        """An OPC UA device's endpoint URL, opc.tcp://<host>:<port>/derms-edge/hil/<id>."""
        return self._opcua_server(device_id).endpoint

    def pki(self, device_id: str) -> OpcUaPki:
        """The certificates of an OPC UA device's server and of the gateway client."""
        pki = self._opcua_server(device_id).pki
        if pki is None:
            raise RuntimeError(f"{device_id}: the rig has not started, there is no PKI yet")
        return pki

    async def restart(
        self, device_id: str, down_s: float = 0.0, shift_namespaces: bool = False
    ) -> None:
        """Restart an OPC UA device's server: every connection drops, the port is closed for
        down_s (wall s), then the server listens again on the same port.

        Like a real controller restart, the setpoint returns to its power-on value when the
        server stops (charger max_a, battery 0 W); the physics (car, SoC, energy) carries on.
        shift_namespaces registers one more dummy namespace before the device's, so its
        namespace index goes up by one (node ids by namespace URI still resolve).
        """
        server = self._opcua_server(device_id)
        await server.stop()
        server.device.power_on()
        await asyncio.sleep(down_s)
        if shift_namespaces:
            server.shifted_namespaces += 1
        await server.start()

    async def close_port(self, device_id: str) -> None:
        """Close a Modbus device's port: every connection drops, new ones are refused (as
        from a device that lost its network, or a TCP gateway that is down); the other units
        behind the same port go with it."""
        await self._modbus_gateway(device_id).stop()

    async def open_port(self, device_id: str) -> None:
        """Listen again on a Modbus device's port, closed by close_port (no-op if open)."""
        gateway = self._modbus_gateway(device_id)
        if not gateway.listening:
            await gateway.start()

    async def reboot(
        self,
        device_id: str,
        down_s: float,
        *,
        base: int | None = None,
        insert_model: int | None = None,
    ) -> None:
        """Reboot a Modbus device: it forgets every control at once (registers back to
        power-on, see SimulatedDevice.restart for base and insert_model), is unreachable for
        down_s (wall s), then answers again. Alone on its port, the port closes for that time
        (connections drop, new ones are refused); behind a shared port (an RS485 gateway) the
        device is silent while its neighbours keep answering."""
        device = self.devices[device_id]
        gateway = self._modbus_gateway(device_id)
        alone = len(gateway.devices) == 1
        if alone:
            await gateway.stop()
        device.restart(base=base, insert_model=insert_model)
        if not alone:
            device.go_silent()
        await asyncio.sleep(down_s)
        device.clear_faults()
        if alone:
            await gateway.start()

    def _modbus_gateway(self, device_id: str) -> ModbusGateway:
        if device_id in self._gateway_of:
            return self._gateway_of[device_id]
        if device_id in self.opcua_servers:
            raise KeyError(f"{device_id} is an OPC UA device, not a Modbus device")
        raise KeyError(f"the rig has no device {device_id!r}")

    def _opcua_server(self, device_id: str) -> OpcUaServer:
        if device_id in self.opcua_servers:
            return self.opcua_servers[device_id]
        if device_id in self.devices:
            raise KeyError(f"{device_id} is a Modbus device, not an OPC UA device")
        raise KeyError(f"the rig has no device {device_id!r}")


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
        opcua = sum(isinstance(d, OpcUaSpec) for d in self.spec.devices)
        if not self._ready.wait(self._timeout_s + OPCUA_START_S * opcua):
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

        async def run(rig: Rig) -> T:
            return func(rig)

        return self.call_async(run)

    def call_async(
        self, func: Callable[[Rig], Coroutine[Any, Any, T]], timeout_s: float | None = None
    ) -> T:
        """await func(rig) on the rig's loop; its result or exception comes back here."""
        loop, rig = self._loop, self._rig
        if loop is None or rig is None:
            raise RuntimeError("RigThread is not running")
        future = asyncio.run_coroutine_threadsafe(func(rig), loop)
        return future.result(self._timeout_s if timeout_s is None else timeout_s)

    def state(self, device_id: str) -> DeviceState:
        """The physics state of a device now."""
        return self.call(lambda rig: rig.physics_device(device_id).snapshot())

    def port(self, device_id: str) -> int:
        """The bound TCP port of a device."""
        return self.call(lambda rig: rig.port(device_id))

    def host(self, device_id: str) -> str:
        """The host a device listens on."""
        return self.call(lambda rig: rig.host(device_id))

    def snapshot(self, device_id: str) -> DeviceState | EvseState:
        """The physics state of any device but a replay (Modbus or OPC UA), now."""
        return self.call(lambda rig: rig.snapshot(device_id))

    def endpoint(self, device_id: str) -> str:
        """An OPC UA device's endpoint URL."""
        return self.call(lambda rig: rig.endpoint(device_id))

    def pki(self, device_id: str) -> OpcUaPki:
        """The certificates of an OPC UA device's server and of the gateway client."""
        return self.call(lambda rig: rig.pki(device_id))

    def restart(self, device_id: str, down_s: float = 0.0, shift_namespaces: bool = False) -> None:
        """Restart an OPC UA device's server (see Rig.restart) and wait until it listens."""
        timeout_s = down_s + self._timeout_s + OPCUA_START_S
        self.call_async(lambda rig: rig.restart(device_id, down_s, shift_namespaces), timeout_s)

    def close_port(self, device_id: str) -> None:
        """Close a Modbus device's port (see Rig.close_port)."""
        self.call_async(lambda rig: rig.close_port(device_id))

    def open_port(self, device_id: str) -> None:
        """Listen again on a Modbus device's port (see Rig.open_port)."""
        self.call_async(lambda rig: rig.open_port(device_id))

    def reboot(
        self,
        device_id: str,
        down_s: float,
        *,
        base: int | None = None,
        insert_model: int | None = None,
    ) -> None:
        """Reboot a Modbus device (see Rig.reboot) and wait until it answers again."""
        self.call_async(
            lambda rig: rig.reboot(device_id, down_s, base=base, insert_model=insert_model),
            down_s + self._timeout_s,
        )
