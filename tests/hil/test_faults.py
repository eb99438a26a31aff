"""The rig's device faults over real Modbus TCP: hang-ups, short answers, wrong model lengths,
closed ports, and reboots that reset the registers or move the model chain."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from hil.rig import RigThread
from tests.hil.harness import HOST, rig, run
from tests.hil.sunspec_client import ModbusError, SunSpecClient, times_out

LEGACY = [1, 103, 120, 121, 123, 126]


READ_MARKER = bytes([0, 1, 0, 0, 0, 6, 1, 3, 0x9C, 0x40, 0, 2])
"""Modbus TCP: transaction 1, unit 1, read 2 holding registers at 40000."""


def test_hang_up_closes_the_connection_unanswered_for_every_unit_on_the_port() -> None:
    spec = rig(
        {"id": "a", "type": "pv_legacy", "unit_id": 1, "gateway": "rs485"},
        {"id": "b", "type": "pv_legacy", "unit_id": 2, "gateway": "rs485"},
    )
    with RigThread(spec) as rt:
        with socket.create_connection((HOST, rt.port("a")), timeout=2) as sock:
            sock.sendall(READ_MARKER)
            assert sock.recv(100).endswith(b"SunS")
            rt.call(lambda r: r.devices["a"].hang_up())
            sock.sendall(READ_MARKER)
            assert sock.recv(100) == b""  # closed, no answer

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("b"), unit=2) as neighbour:
                assert await neighbour.scan() == LEGACY  # others answer on a new connection
            rt.call(lambda r: r.devices["a"].clear_faults())
            async with SunSpecClient(HOST, rt.port("a"), unit=1) as c:
                assert await c.scan() == LEGACY

        run(check)


def test_short_answers_carry_one_register_fewer_than_asked() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:

        async def check() -> None:
            client = AsyncModbusTcpClient(HOST, port=rt.port("pv"), timeout=0.5, retries=0)
            assert await client.connect()
            rt.call(lambda r: r.devices["pv"].answer_short())
            rr = await client.read_holding_registers(40070, count=52, device_id=1)
            assert not rr.isError() and len(rr.registers) == 51
            rt.call(lambda r: r.devices["pv"].clear_faults())
            rr = await client.read_holding_registers(40070, count=52, device_id=1)
            assert len(rr.registers) == 52
            client.close()

        run(check)


def test_a_misreported_model_length_breaks_the_walk_until_cleared() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                rt.call(lambda r: r.devices["pv"].misreport_length(103, 0xFFF0))
                assert await c.read(40070, 2) == [103, 0xFFF0]
                assert (await c.read(40072, 1))[0] != 0xFFF0  # the body is where it was
                rt.call(lambda r: r.devices["pv"].clear_faults())
                assert await c.read(40070, 2) == [103, 50]

        run(check)


@pytest.mark.parametrize(
    ("moved", "base", "chain"),
    [
        ({"base": 50000}, 50000, LEGACY),
        ({"insert_model": 12}, 40000, [1, 12, 103, 120, 121, 123, 126]),
        ({"base": 0, "insert_model": 12}, 0, [1, 12, 103, 120, 121, 123, 126]),
    ],
    ids=["base", "inserted", "both"],
)
def test_restart_can_move_the_model_chain(
    moved: dict[str, int], base: int, chain: list[int]
) -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv"), timeout_s=0.5) as c:
                await c.scan()
                await c.write_points(123, {"WMaxLimPct": 40.0, "WMaxLim_Ena": 1})
                assert rt.state("pv").w_lim_pct == 40.0
            rt.call(lambda r: r.devices["pv"].restart(**moved))
            assert rt.state("pv").w_lim_pct is None  # controls forgotten
            async with SunSpecClient(HOST, rt.port("pv"), timeout_s=0.5) as c:
                if base != 40000:
                    with pytest.raises(ModbusError) as err:
                        await c.read(40000, 2)
                    assert err.value.code == 2
                assert await c.scan(base) == chain
                model = await c.model(123)
                assert (model.WMaxLim_Ena.cvalue, model.WMaxLimPct.cvalue) == (0, 100)
                await c.write_points(123, {"WMaxLimPct": 30.0, "WMaxLim_Ena": 1})
                assert rt.state("pv").w_lim_pct == 30.0  # controls work at the new addresses
                with pytest.raises(ModbusError) as err:  # and are vetted as before
                    await c.write_points(123, {"WMaxLimPct": 150.0})
                assert err.value.code == 3

        run(check)


def test_a_closed_port_refuses_connections_until_opened_again() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:
        port = rt.port("pv")

        async def check() -> None:
            async with SunSpecClient(HOST, port) as c:
                await c.scan()
                rt.close_port("pv")
                with pytest.raises((ConnectionException, ModbusIOException)):
                    await c.read(40000, 2)
            client = AsyncModbusTcpClient(HOST, port=port, timeout=0.5, retries=0)
            assert not await client.connect()
            client.close()
            rt.open_port("pv")
            assert rt.port("pv") == port
            async with SunSpecClient(HOST, port) as c:
                assert await c.scan() == LEGACY

        run(check)


def test_reboot_alone_on_its_port_closes_it_and_comes_back_reset() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:

        async def check() -> None:
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                await c.scan()
                await c.write_points(123, {"WMaxLimPct": 40.0, "WMaxLim_Ena": 1})
            rebooting = asyncio.create_task(asyncio.to_thread(rt.reboot, "pv", 0.5, base=50000))
            await asyncio.sleep(0.2)
            client = AsyncModbusTcpClient(HOST, port=rt.port("pv"), timeout=0.5, retries=0)
            assert not await client.connect()  # down
            client.close()
            await rebooting
            back = time.monotonic()
            async with SunSpecClient(HOST, rt.port("pv")) as c:
                assert await c.scan(50000) == LEGACY
                assert await c.value(123, "WMaxLim_Ena") == 0
            first = rt.call(lambda r: r.devices["pv"].first_answer_after(back))
            assert first is not None and not first.write and first.address == 50000

        run(check)


def test_reboot_behind_a_shared_port_is_silent_while_its_neighbour_answers() -> None:
    spec = rig(
        {"id": "a", "type": "pv_legacy", "unit_id": 1, "gateway": "rs485"},
        {"id": "b", "type": "pv_legacy", "unit_id": 2, "gateway": "rs485"},
    )
    with RigThread(spec) as rt:

        async def check() -> None:
            rebooting = asyncio.create_task(asyncio.to_thread(rt.reboot, "a", 0.8))
            await asyncio.sleep(0.1)
            async with SunSpecClient(HOST, rt.port("a"), unit=1, timeout_s=0.2) as a:
                assert await times_out(a, 40000)
            async with SunSpecClient(HOST, rt.port("b"), unit=2) as b:
                assert await b.scan() == LEGACY
            await rebooting
            async with SunSpecClient(HOST, rt.port("a"), unit=1) as a:
                assert await a.scan() == LEGACY

        run(check)


def test_coils_are_an_illegal_function_and_accesses_are_logged() -> None:
    with RigThread(rig({"id": "pv", "type": "pv_legacy"})) as rt:
        started = time.monotonic()

        async def check() -> None:
            client = AsyncModbusTcpClient(HOST, port=rt.port("pv"), timeout=0.5, retries=0)
            assert await client.connect()
            rr = await client.read_coils(0, count=1, device_id=1)
            assert rr.isError() and rr.exception_code == 1
            rr = await client.read_holding_registers(39990, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 2
            rr = await client.read_holding_registers(40000, count=2, device_id=1)
            assert rr.registers == [0x5375, 0x6E53]
            client.close()

        run(check)
        accesses = rt.call(lambda r: list(r.devices["pv"].accesses))
        assert [(a.address, a.ok) for a in accesses if a.at >= started] == [
            (39990, False),
            (40000, True),
        ]
