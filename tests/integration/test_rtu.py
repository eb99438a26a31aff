"""Modbus RTU for real: the gateway's serial link, over a pty null-modem, to pymodbus's RTU
server carrying two replayed real devices (and a unit id nobody answers to) on one bus.

The line runs at 19200 baud, 8N1: a Linux pty cannot carry parity (the kernel forces 8 data
bits and no parity on ptys, and pyserial's re-applied settings then fail with EINVAL), so
parity E is tested as what it does on such a port: a mapped ConnectionLost, not a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from derms_edge.config import SerialSection, parse_config
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool, ModbusLink
from derms_edge.devices.sunspec.driver import SunSpecDriver
from derms_edge.errors import DeviceTimeout, TransportError
from derms_edge.model import DeviceState, OperatingState
from tests.support.serial_link import NullModem, RtuBus, load_image, pty_keeps_parity

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "sunspec-real"
SYMO = load_image(DATA / "fronius-symo-3.0-3-s-float113.json")  # base 40000, models 1, 113, ...
SOLAREDGE = load_image(DATA / "solaredge-se33.3k-103.json")  # base 0: 40000 answers exception 2
UNITS = {1: SYMO, 2: SOLAREDGE}
GHOST = 9  # a unit id with nothing behind it
BAUD, PARITY = 19200, "N"
TIMEOUT_S = 1.0  # generous for a busy machine: a pty round trip takes milliseconds

SYMO_STATE = {"w": 70.0, "hz": 50.05, "wh_exported": 11937020.0, "state": OperatingState.RUNNING}
SOLAREDGE_STATE = {"w": 24767.0, "hz": 59.99, "a": 86.89, "wh_exported": 17534384.0}


def assert_state(state: DeviceState, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert getattr(state, name) == pytest.approx(value, rel=1e-6), name
        else:
            assert getattr(state, name) == value, name


def run(scenario: Callable[[NullModem, RtuBus], Awaitable[None]]) -> None:
    """Run ``scenario`` with a null modem whose end 0 carries the RTU bus of ``UNITS``."""

    async def main() -> None:
        with NullModem() as modem:
            async with RtuBus(modem.ports[0], UNITS, baudrate=BAUD, parity=PARITY) as bus:
                await asyncio.wait_for(scenario(modem, bus), timeout=20)
            assert modem.error is None
            assert modem.overruns == 0

    asyncio.run(main())


def serial_link(pool: LinkPool, port: str) -> ModbusLink:
    return pool.serial(SerialSection(port=port, baudrate=BAUD, parity=PARITY), TIMEOUT_S)


def test_null_modem_relays_bytes_both_ways_untouched() -> None:
    every_byte = bytes(range(256))  # CR, LF, ^C, ^D, XON/XOFF, DEL, 8th bit: all data in raw mode
    with NullModem() as modem:
        ends = [os.open(port, os.O_RDWR | os.O_NOCTTY) for port in modem.ports]
        try:
            for sender, receiver in ((0, 1), (1, 0)):
                os.write(ends[sender], every_byte)
                received = b""
                deadline = time.monotonic() + 5
                while len(received) < len(every_byte) and time.monotonic() < deadline:
                    received += os.read(ends[receiver], 512)
                assert received == every_byte
        finally:
            for fd in ends:
                os.close(fd)
    assert modem.relayed == [256, 256]


def test_two_units_on_one_rtu_bus_decode_as_captured() -> None:
    async def scenario(modem: NullModem, bus: RtuBus) -> None:
        pool = LinkPool()
        link = serial_link(pool, modem.ports[1])
        assert serial_link(pool, modem.ports[1]) is link  # one link per port
        symo = SunSpecDriver(link.unit(1), "inverter", "symo")
        edge = SunSpecDriver(link.unit(2), "inverter", "edge")
        try:
            # Both units connect and poll at once: the link serialises them on the bus.
            symo_cap, edge_cap = await asyncio.gather(symo.connect(), edge.connect())
            assert symo_cap.manufacturer == "Fronius"
            assert symo_cap.models == (1, 113, 120, 121, 122, 123, 160)
            assert edge_cap.models == (1, 103)
            assert edge.discovery is not None and edge.discovery.base == 0
            symo_state, edge_state = await asyncio.gather(symo.poll(), edge.poll())
            assert_state(symo_state, SYMO_STATE)
            assert_state(edge_state, SOLAREDGE_STATE)

            # The gateway's settings reached the port: 19200 baud, 8 data bits, no parity, 1 stop.
            iflag, _oflag, cflag, _lflag, ispeed, ospeed, _cc = modem.line_settings(1)
            assert (ispeed, ospeed) == (termios.B19200, termios.B19200)
            assert cflag & termios.CSIZE == termios.CS8
            assert not cflag & termios.PARENB
            assert not cflag & termios.CSTOPB
            assert not iflag & termios.ISTRIP  # the 8th bit survives

            # A unit id with nothing behind it times out; polls queued behind it still work.
            ghost = link.unit(GHOST)
            started = time.monotonic()
            outcome = await asyncio.gather(
                ghost.read(40000, 2), symo.poll(), edge.poll(), return_exceptions=True
            )
            assert isinstance(outcome[0], DeviceTimeout), repr(outcome[0])
            assert time.monotonic() - started >= TIMEOUT_S * 0.9
            assert isinstance(outcome[1], DeviceState) and isinstance(outcome[2], DeviceState)
            assert_state(outcome[1], SYMO_STATE)
            assert_state(outcome[2], SOLAREDGE_STATE)
            # The driver's discovery reports the silent unit as a (retryable) transport failure.
            ghost_driver = SunSpecDriver(link.unit(GHOST), "inverter", "ghost", base_address=40000)
            with pytest.raises(TransportError, match="no valid answer"):
                await ghost_driver.connect()
            # ...and the other units' next polls are undisturbed.
            assert_state(await symo.poll(), SYMO_STATE)
            assert_state(await edge.poll(), SOLAREDGE_STATE)
            await ghost_driver.close()
            await ghost.close()
        finally:
            await symo.close()
            await edge.close()
        assert not link._client.connected  # the last unit closed the port
        # On the wire, every request to a present unit was answered before the next one went
        # out (one master, one request at a time); the ghost's requests got no answer.
        for index, (direction, unit, _code) in enumerate(bus.pdus):
            if direction == "rx" and unit in UNITS:
                assert bus.pdus[index + 1][:2] == ("tx", unit), bus.pdus[index : index + 2]
        assert ("tx", GHOST) not in {(d, u) for d, u, _c in bus.pdus}
        assert sum(1 for d, u, _c in bus.pdus if (d, u) == ("rx", GHOST)) == 2

    run(scenario)


def test_serial_config_builds_working_coordinators(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(modem: NullModem, bus: RtuBus) -> None:
        def device(device_id: str, unit_id: int, **extra: Any) -> dict[str, Any]:
            return {
                "id": device_id,
                "kind": "inverter",
                "protocol": "sunspec",
                "serial": {"port": modem.ports[1], "baudrate": BAUD, "parity": PARITY},
                "unit_id": unit_id,
                "poll_interval_s": 0.1,
                "timeout_s": TIMEOUT_S,
                "backoff_max_s": 1,
                **extra,
            }

        config = parse_config(
            {
                "gateway": {"id": "rtu-site"},
                "devices": [
                    device("symo", 1),
                    device("edge", 2),
                    device("ghost", GHOST, base_address=40000),
                ],
            }
        )
        assert config.devices[0].link == f"{modem.ports[1]}@19200/{PARITY}"
        pool = LinkPool()
        coordinators = {d.id: build_coordinator(d, pool) for d in config.devices}
        assert len(pool._links) == 1  # three devices, one serial port
        tasks = [asyncio.create_task(c.run()) for c in coordinators.values()]
        try:
            await until(lambda: all(c.polls >= 2 for c in healthy(coordinators)))
            await until(lambda: coordinators["ghost"].failures >= 1)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        symo, edge, ghost = (coordinators[name] for name in ("symo", "edge", "ghost"))
        assert symo.reading is not None and edge.reading is not None
        assert_state(symo.reading.state, SYMO_STATE)
        assert_state(edge.reading.state, SOLAREDGE_STATE)
        assert symo.capability is not None and symo.capability.model == "Symo 3.0-3-S"
        assert ghost.reading is None
        assert isinstance(ghost.last_exception, TransportError)
        assert "no valid answer" in str(ghost.last_exception)
        link = next(iter(pool._links.values()))
        assert not link._client.connected  # every coordinator released it on cancel

    with caplog.at_level(logging.WARNING, logger="derms_edge"):
        run(scenario)
    assert "unexpected error" not in caplog.text


def healthy(coordinators: dict[str, DeviceCoordinator]) -> list[DeviceCoordinator]:
    return [c for name, c in coordinators.items() if name != "ghost"]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.mark.skipif(pty_keeps_parity(), reason="this kernel lets ptys carry parity")
def test_parity_the_port_refuses_is_a_connection_lost(caplog: pytest.LogCaptureFixture) -> None:
    """``parity: E`` on a port that cannot do parity (a pty) takes its devices offline with a
    ConnectionLost; it used to escape the link as a raw termios.error."""

    async def main() -> None:
        with NullModem() as modem:
            config = parse_config(
                {
                    "gateway": {"id": "rtu-site"},
                    "devices": [
                        {
                            "id": "even",
                            "kind": "inverter",
                            "protocol": "sunspec",
                            "serial": {"port": modem.ports[1], "baudrate": BAUD, "parity": "E"},
                            "base_address": 40000,
                            "poll_interval_s": 0.1,
                            "timeout_s": TIMEOUT_S,
                        }
                    ],
                }
            )
            pool = LinkPool()
            coordinator = build_coordinator(config.devices[0], pool)
            task = asyncio.create_task(coordinator.run())
            try:
                await until(lambda: coordinator.failures >= 1)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            error = coordinator.last_exception
            assert isinstance(error, TransportError), repr(error)  # discovery wraps it
            assert "refused its settings" in str(error)
            assert coordinator.reading is None

    with caplog.at_level(logging.WARNING, logger="derms_edge"):
        asyncio.run(main())
    assert "unexpected error" not in caplog.text
