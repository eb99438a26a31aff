"""The Modbus transport seam: links (one TCP endpoint or serial port) shared by unit ids.

A Modbus TCP gateway in front of an RS485 bus, or the bus itself, carries many devices but
answers one request at a time; every device on it reaches it through one `ModbusLink`,
which serialises requests and maps pymodbus failures onto the gateway's exception tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import termios
from collections.abc import Iterator, Sequence
from typing import Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from derms_edge.config import SerialSection
from derms_edge.devices.registers import MAX_READ_REGISTERS, MAX_WRITE_REGISTERS
from derms_edge.errors import ConnectionLost, DeviceException, DeviceProtocolError, DeviceTimeout


class RegisterTransport(Protocol):
    """What a SunSpec driver needs from Modbus: read and write holding registers of one unit."""

    async def read(self, address: int, count: int) -> list[int]:
        """Read ``count`` holding registers from ``address`` (FC3)."""
        ...

    async def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address`` (FC16)."""
        ...

    async def close(self) -> None:
        """Release this unit's use of the link."""
        ...


@contextlib.contextmanager
def _mapped_errors(request: str) -> Iterator[None]:
    """Turn pymodbus and socket exceptions into the most specific gateway exception."""
    try:
        yield
    except TimeoutError as exc:
        raise DeviceTimeout(f"no answer to {request}") from exc
    except ConnectionException as exc:
        raise ConnectionLost(f"connection lost during {request}: {exc}") from exc
    except ModbusIOException as exc:
        raise DeviceTimeout(f"no valid answer to {request}: {exc}") from exc
    except ModbusException as exc:
        raise DeviceProtocolError(f"bad answer to {request}: {exc}") from exc
    except OSError as exc:
        raise ConnectionLost(f"{request} failed: {exc.strerror or exc}") from exc
    except termios.error as exc:  # pyserial: the serial port refused its settings
        reason = exc.args[-1] if exc.args else exc
        raise ConnectionLost(f"{request} failed: the port refused its settings ({reason})") from exc


class ModbusLink:
    """One Modbus connection (TCP or RTU) shared by every unit id behind it."""

    def __init__(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, name: str) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._users = 0
        self.name = name

    @classmethod
    def tcp(cls, host: str, port: int, timeout_s: float) -> ModbusLink:
        """A link to a Modbus TCP server or gateway."""
        client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        return cls(client, f"{host}:{port}")

    @classmethod
    def serial(cls, settings: SerialSection, timeout_s: float) -> ModbusLink:
        """A link to an RS485 bus through a serial port (Modbus RTU)."""
        client = AsyncModbusSerialClient(
            settings.port,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            timeout=timeout_s,
            retries=0,
        )
        return cls(client, settings.port)

    def unit(self, unit_id: int) -> UnitTransport:
        """A transport for one unit id on this link."""
        self._users += 1
        return UnitTransport(self, unit_id)

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        with _mapped_errors(f"connect to {self.name}"):
            connected = await self._client.connect()
        if not connected:
            raise ConnectionLost(f"cannot connect to {self.name}")

    async def read(self, unit_id: int, address: int, count: int) -> list[int]:
        """Read holding registers of one unit; raise a DeviceError subclass on failure."""
        request = f"read {count} registers at {address} from {self.name} unit {unit_id}"
        async with self._lock:
            await self._ensure_connected()
            with _mapped_errors(request):
                response = await self._client.read_holding_registers(
                    address, count=count, device_id=unit_id
                )
        if response.isError():
            raise DeviceException(getattr(response, "exception_code", 0), request)
        registers = list(response.registers)
        if len(registers) != count:
            raise DeviceProtocolError(f"{request}: got {len(registers)} registers")
        return registers

    async def write(self, unit_id: int, address: int, values: Sequence[int]) -> None:
        """Write holding registers of one unit; raise a DeviceError subclass on failure."""
        request = f"write {len(values)} registers at {address} to {self.name} unit {unit_id}"
        async with self._lock:
            await self._ensure_connected()
            with _mapped_errors(request):
                response = await self._client.write_registers(
                    address, list(values), device_id=unit_id
                )
        if response.isError():
            raise DeviceException(getattr(response, "exception_code", 0), request)

    async def release(self) -> None:
        """One unit stopped using the link; close it when nobody uses it any more."""
        self._users -= 1
        if self._users <= 0:
            self._client.close()


class UnitTransport:
    """One unit id on a shared link: the `RegisterTransport` a SunSpec driver uses."""

    def __init__(self, link: ModbusLink, unit_id: int) -> None:
        self._link = link
        self.unit_id = unit_id

    async def read(self, address: int, count: int) -> list[int]:
        """Read holding registers; reads longer than 125 registers are split."""
        registers: list[int] = []
        while count > 0:
            chunk = min(count, MAX_READ_REGISTERS)
            registers += await self._link.read(self.unit_id, address, chunk)
            address += chunk
            count -= chunk
        return registers

    async def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers; writes longer than 123 registers are split."""
        for start in range(0, len(values), MAX_WRITE_REGISTERS):
            await self._link.write(
                self.unit_id, address + start, values[start : start + MAX_WRITE_REGISTERS]
            )

    async def close(self) -> None:
        """Release the link (closed when its last unit is gone)."""
        await self._link.release()


class LinkPool:
    """Hands out one `ModbusLink` per TCP endpoint or serial port."""

    def __init__(self) -> None:
        self._links: dict[str, ModbusLink] = {}

    def tcp(self, host: str, port: int, timeout_s: float) -> ModbusLink:
        """The link to host:port, created on first use."""
        key = f"tcp:{host}:{port}"
        if key not in self._links:
            self._links[key] = ModbusLink.tcp(host, port, timeout_s)
        return self._links[key]

    def serial(self, settings: SerialSection, timeout_s: float) -> ModbusLink:
        """The link to a serial port, created on first use."""
        key = f"rtu:{settings.port}"
        if key not in self._links:
            self._links[key] = ModbusLink.serial(settings, timeout_s)
        return self._links[key]
