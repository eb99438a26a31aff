"""A minimal SunSpec client for the HIL tests: pymodbus to read and write, pysunspec2 to decode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from sunspec2.device import Model, Point

MARKER = [0x5375, 0x6E53]
CHUNK = 100


def point(model: Model, name: str) -> Point:
    """A point by its name in the rig's images: 'W', 'PFWInj.PF', 'Crv[2].Pt[1].V'."""
    group: Any = model
    *path, leaf = name.split(".")
    for part in path:
        gname, _, index = part.partition("[")
        group = group.groups[gname]
        if index:
            group = group[int(index.rstrip("]")) - 1]
    found: Point = group.points[leaf]
    return found


class ModbusError(Exception):
    """The device answered with a Modbus exception."""

    def __init__(self, code: int) -> None:
        super().__init__(f"Modbus exception {code}")
        self.code = code


@dataclass
class SunSpecClient:
    """One unit behind host:port, scanned from a base address."""

    host: str
    port: int
    unit: int = 1
    timeout_s: float = 1.0
    addresses: dict[int, int] = field(default_factory=dict)  # model id -> address of its ID
    lengths: dict[int, int] = field(default_factory=dict)  # model id -> L
    _client: AsyncModbusTcpClient | None = None

    async def __aenter__(self) -> SunSpecClient:
        self._client = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0
        )
        assert await self._client.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        self._client.close()

    async def read(self, address: int, count: int) -> list[int]:
        """Registers, read in chunks; a Modbus exception raises ModbusError."""
        assert self._client is not None
        out: list[int] = []
        while count > 0:
            n = min(count, CHUNK)
            rr = await self._client.read_holding_registers(address, count=n, device_id=self.unit)
            if rr.isError():
                raise ModbusError(int(rr.exception_code))
            out.extend(rr.registers)
            address, count = address + n, count - n
        return out

    async def write(self, address: int, values: list[int]) -> None:
        """Write registers; a Modbus exception raises ModbusError."""
        assert self._client is not None
        rr = await self._client.write_registers(address, values, device_id=self.unit)
        if rr.isError():
            raise ModbusError(int(rr.exception_code))

    async def scan(self, base: int = 40000) -> list[int]:
        """Check the marker at base and walk the model chain; returns the model ids."""
        assert await self.read(base, 2) == MARKER
        address = base + 2
        while True:
            model_id, length = await self.read(address, 2)
            if model_id == 0xFFFF:
                return list(self.addresses)
            self.addresses[model_id] = address
            self.lengths[model_id] = length
            address += 2 + length

    async def model(self, model_id: int) -> Model:
        """A model read from the device and decoded by pysunspec2."""
        length = self.lengths[model_id]
        regs = await self.read(self.addresses[model_id], length + 2)
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        model = Model(model_id, model_len=length, data=data)
        assert not model.error_info, model.error_info
        return model

    async def write_points(self, model_id: int, values: dict[str, float]) -> None:
        """Write points (engineering units) one by one, in order, encoded by pysunspec2."""
        model = await self.model(model_id)
        for name, value in values.items():
            written = point(model, name)
            written.cvalue = value
            data = written.get_mb()
            regs = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
            await self.write(self.addresses[model_id] + written.offset, regs)

    async def value(self, model_id: int, name: str) -> float | int | str | None:
        """One point in engineering units."""
        model = await self.model(model_id)
        value: float | int | str | None = point(model, name).cvalue
        return value

    async def values(self, model_id: int, names: list[str]) -> dict[str, float | int | str | None]:
        """Several points of one model, read at once, in engineering units."""
        model = await self.model(model_id)
        return {name: point(model, name).cvalue for name in names}


async def times_out(client: SunSpecClient, address: int) -> bool:
    """Whether a read gets no answer at all."""
    try:
        await client.read(address, 1)
    except ModbusIOException:
        return True
    return False
