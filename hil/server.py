"""One Modbus TCP listener hosting one or many simulated units, like a TCP gateway to RS485."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hil.devices import SimulatedDevice


class _Bus(SimCore):
    """Unit ids nobody answers to get GATEWAY_NO_RESPONSE (0x0B), as from a real gateway."""

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id not in self.devices:
            return ExcCodes.GATEWAY_NO_RESPONSE
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if device_id not in self.devices:
            return ExcCodes.GATEWAY_NO_RESPONSE
        return await super().async_setValues(device_id, func_code, address, values)


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

    def _simdevices(self) -> list[SimDevice]:
        return [
            SimDevice(
                id=d.unit_id,
                simdata=[
                    SimData(d.base, values=list(d.image.registers), datatype=DataType.REGISTERS)
                ],
                action=d.on_access,
            )
            for d in self.devices
        ]

    async def start(self) -> None:
        """Listen; afterwards `port` is the bound port."""
        simdevices = self._simdevices()
        server = ModbusTcpServer(
            simdevices, address=(self.host, self.port), ignore_missing_devices=True
        )
        # A silent device raises NoSuchIdException, which ignore_missing_devices turns into
        # no answer; unknown unit ids are answered by _Bus instead.
        server.context = _Bus(simdevices)
        await server.serve_forever(background=True)
        self._server = server
        listener = server.transport
        if not isinstance(listener, asyncio.Server) or not listener.sockets:
            await self.stop()
            raise RuntimeError(f"{self.host}:{self.port}: cannot tell the bound port")
        self.port = int(listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
