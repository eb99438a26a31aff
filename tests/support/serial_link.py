"""A real serial line for Modbus RTU tests: two pseudo-terminals joined like a null-modem cable,
and a pymodbus RTU server answering for several unit ids on one end of it.

Nothing is mocked: both ends are character devices with paths (``/dev/pts/N``) that pyserial
opens and configures with termios exactly as it would a USB RS485 adapter. One difference: a
Linux pty has no parity and always 8 data bits (the kernel clears PARENB and CSIZE on ptys),
so only 8N1/8N2 lines at any baud rate can be set up on one; see `pty_keeps_parity`.
"""

from __future__ import annotations

import json
import os
import select
import termios
import threading
import tty
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

_CHUNK = 4096


class NullModem:
    """Two pty pairs whose master ends a relay thread cross-connects, byte for byte.

    ``ports`` are the two slave paths: what one end writes, the other end reads. The slave
    fds from ``openpty()`` stay open for the modem's lifetime, so the masters never see EIO
    while an end is closed and reopened, and the line settings (raw mode) persist.
    Bytes a full receive buffer cannot take are dropped and counted, like a UART overrun.
    """

    def __init__(self) -> None:
        self._masters: tuple[int, int] = (-1, -1)
        self._slaves: tuple[int, int] = (-1, -1)
        self.ports: tuple[str, str] = ("", "")
        self.relayed = [0, 0]
        """Bytes relayed from end 0 to end 1, and from end 1 to end 0."""
        self.overruns = 0
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> Self:
        fds: list[int] = []
        try:
            master_a, slave_a = os.openpty()
            fds += [master_a, slave_a]
            master_b, slave_b = os.openpty()
            fds += [master_b, slave_b]
            self._wake_r, self._wake_w = os.pipe()
            fds += [self._wake_r, self._wake_w]
            for slave in (slave_a, slave_b):
                tty.setraw(slave)  # no echo, no line editing, no CR/LF mapping: 8 clean bits
            for master in (master_a, master_b):
                os.set_blocking(master, False)
            self._masters = (master_a, master_b)
            self._slaves = (slave_a, slave_b)
            self.ports = (os.ttyname(slave_a), os.ttyname(slave_b))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self._thread = threading.Thread(target=self._relay, name="null-modem", daemon=True)
        self._thread.start()
        return self

    def line_settings(self, end: int) -> list[Any]:
        """The line settings of one end, as whoever opened it last set them (tcgetattr)."""
        return termios.tcgetattr(self._slaves[end])

    def close(self) -> None:
        """Stop the relay thread and close every fd; idempotent."""
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                raise RuntimeError("null-modem relay thread did not stop")
            self._thread = None
        for fd in (*self._masters, *self._slaves, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._masters = self._slaves = (-1, -1)
        self._wake_r = self._wake_w = -1

    def _relay(self) -> None:
        poller = select.poll()
        for fd in (*self._masters, self._wake_r):
            poller.register(fd, select.POLLIN)
        peer = {self._masters[0]: self._masters[1], self._masters[1]: self._masters[0]}
        direction = {self._masters[0]: 0, self._masters[1]: 1}
        try:
            while True:
                for fd, _events in poller.poll():
                    if fd == self._wake_r:
                        return
                    try:
                        data = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    self.relayed[direction[fd]] += len(data)
                    self._send(peer[fd], data)
        except BaseException as error:  # surfaced by the tests through .error
            self.error = error
            raise

    def _send(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                self.overruns += len(view)
                return
            view = view[written:]


def load_image(path: Path) -> tuple[int, list[int]]:
    """A register image ``{"base", "registers"}`` as in tests/data/sunspec-real."""
    document: dict[str, Any] = json.loads(path.read_text())
    return int(document["base"]), [int(r) for r in document["registers"]]


class _Bus(SimCore):
    """An RS485 bus: a unit id with no device behind it does not answer at all."""

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if device_id not in self.devices:
            raise NoSuchIdException(f"nobody at unit {device_id}")
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if device_id not in self.devices:
            raise NoSuchIdException(f"nobody at unit {device_id}")
        return await super().async_setValues(device_id, func_code, address, values)


class RtuBus:
    """pymodbus's serial RTU server on ``port``, one simulated device per unit id.

    ``units`` maps unit id to (base address, registers); addresses outside a unit's image
    answer exception 2, unit ids not in ``units`` stay silent. ``pdus`` records every PDU
    the server received ("rx") or sent ("tx") with its unit id, in wire order.
    """

    def __init__(
        self,
        port: str,
        units: Mapping[int, tuple[int, list[int]]],
        *,
        baudrate: int,
        parity: str,
        stopbits: int = 1,
        bytesize: int = 8,
    ) -> None:
        self.port = port
        self.units = dict(units)
        self.baudrate, self.parity, self.stopbits, self.bytesize = (
            baudrate,
            parity,
            stopbits,
            bytesize,
        )
        self.pdus: list[tuple[str, int, int]] = []
        """(``rx``/``tx``, unit id, function code) per PDU."""
        self._server: ModbusSerialServer | None = None

    def _trace(self) -> Callable[[bool, ModbusPDU], ModbusPDU]:
        def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            self.pdus.append(("tx" if sending else "rx", pdu.dev_id, pdu.function_code))
            return pdu

        return trace

    async def start(self) -> Self:
        devices = [
            SimDevice(
                id=unit,
                simdata=[SimData(base, values=registers, datatype=DataType.REGISTERS)],
            )
            for unit, (base, registers) in self.units.items()
        ]
        server = ModbusSerialServer(
            devices,
            framer=FramerType.RTU,
            port=self.port,
            timeout=1,
            ignore_missing_devices=True,
            trace_pdu=self._trace(),
            baudrate=self.baudrate,
            parity=self.parity,
            stopbits=self.stopbits,
            bytesize=self.bytesize,
        )
        server.context = _Bus(devices)
        await server.serve_forever(background=True)
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def pty_keeps_parity() -> bool:
    """Whether this kernel lets a pty carry parity (Linux forces 8 bits, no parity, on ptys)."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[2] |= termios.PARENB
        try:
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
        except termios.error:
            return False
        return bool(termios.tcgetattr(slave)[2] & termios.PARENB)
    finally:
        os.close(master)
        os.close(slave)
