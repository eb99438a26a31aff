"""One Modbus TCP listener hosting one or many simulated units, like a TCP gateway to RS485."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hil.devices import Fault, SimulatedDevice
from hil.processes import free_port

_BIT_CODES = frozenset({1, 2, 5, 15})
"""Coil and discrete-input function codes: a SunSpec device has only registers."""
_READ_CODES = frozenset({3, 4, 22, 23})
"""Function codes whose register read is the client's (not the echo of a write)."""


class _Bus(SimCore):
    """Serves each unit id from its simulated device, whose image may move or change size
    (a restart); unit ids nobody answers to get GATEWAY_NO_RESPONSE (0x0B), as from a real
    gateway. A device that hangs up closes the client connections (`hang_up`)."""

    def __init__(
        self,
        simdevices: list[SimDevice],
        devices: Sequence[SimulatedDevice],
        hang_up: Callable[[], None],
    ) -> None:
        super().__init__(simdevices)
        self._units = {d.unit_id: d for d in devices}
        self._hang_up = hang_up

    def _unit(self, device_id: int, func_code: int) -> SimulatedDevice | ExcCodes:
        device = self._units.get(device_id)
        if device is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if device.fault is Fault.HANG_UP:
            self._hang_up()
            raise NoSuchIdException(f"{device.id} hangs up")
        if func_code in _BIT_CODES:
            return ExcCodes.ILLEGAL_FUNCTION
        return device

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        device = self._unit(device_id, func_code)
        if isinstance(device, ExcCodes):
            return device
        if func_code in _READ_CODES:
            return device.answer_read(address, count)
        return device.image.read(address, count)  # what a write answers with (FC6)

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        device = self._unit(device_id, func_code)
        if isinstance(device, ExcCodes):
            return device
        return device.answer_write(address, [int(v) for v in values])


class ModbusGateway:
    """Serves `devices` (distinct unit ids) on host:port; port 0 binds any free port."""

    def __init__(self, host: str, port: int, devices: Sequence[SimulatedDevice]) -> None:
        units = [d.unit_id for d in devices]
        if len(set(units)) != len(units):
            raise ValueError(f"{host}:{port}: duplicate unit ids {units}")
        self.host = host
        self.port = port
        self.devices = list(devices)
        self._server: ModbusTcpServer | None = None

    @property
    def listening(self) -> bool:
        """Whether the port is open."""
        return self._server is not None

    async def start(self) -> None:
        """Listen; a port 0 is drawn once (`free_port` says why the kernel's is not taken)
        and kept by later starts."""
        if self.port == 0:
            self.port = free_port()
        # pymodbus wants SimDevices; _Bus answers every request from the devices instead
        simdevices = [
            SimDevice(id=d.unit_id, simdata=[SimData(0, datatype=DataType.REGISTERS)])
            for d in self.devices
        ]
        bus = _Bus(simdevices, self.devices, self.drop_connections)
        server = ModbusTcpServer(
            simdevices, address=(self.host, self.port), ignore_missing_devices=True
        )
        # A silent device raises NoSuchIdException, which ignore_missing_devices turns into
        # no answer; unknown unit ids are answered by _Bus instead.
        server.context = bus
        await server.serve_forever(background=True)
        self._server = server
        listener = server.transport
        if not isinstance(listener, asyncio.Server) or not listener.sockets:
            await self.stop()
            raise RuntimeError(f"{self.host}:{self.port}: not listening (is the port taken?)")

    def drop_connections(self) -> None:
        """Close every client connection; the listener stays open."""
        if self._server is not None:
            for connection in list(self._server.active_connections.values()):
                connection.close()

    async def stop(self) -> None:
        """Close the listener and every client connection (clients are refused until the
        next start, on the same port)."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
