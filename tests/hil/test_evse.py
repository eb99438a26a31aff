"""The simulated EV charger over real Modbus TCP, on a simulated clock the test moves."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hil.devices import EvCharger
from hil.evse_physics import CHARGING_EFFICIENCY
from hil.physics import SimClock
from hil.server import ModbusGateway
from hil.spec import EvseSpec
from tests.hil.sunspec_client import ModbusError, SunSpecClient, times_out

HOST = "127.0.0.1"
STATE, VOLTAGE, CURRENT, POWER, SOC, ENERGY = 1200, 1201, 1203, 1205, 1207, 1209
APPLIED, VALIDITY, LIMIT, SAFE, PHASES = 1211, 1213, 1215, 1217, 1219


def f32(value: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">f", value)))


@dataclass
class Bench:
    """One charger served on a free port, its client, and the wall clock its SimClock reads."""

    charger: EvCharger
    client: SunSpecClient
    wall: list[float]

    def advance(self, seconds: float) -> None:
        self.wall[0] += seconds

    async def float32(self, address: int) -> float:
        registers = await self.client.read(address, 2)
        value: float = struct.unpack(">f", struct.pack(">2H", *registers))[0]
        return value

    async def uint(self, address: int, count: int = 1) -> int:
        registers = await self.client.read(address, count)
        return registers[0] if count == 1 else registers[0] << 16 | registers[1]

    async def write_a(self, address: int, amps: float) -> None:
        await self.client.write(address, f32(amps))


def on_bench(scenario: Callable[[Bench], Awaitable[None]], **spec: Any) -> None:
    async def main() -> None:
        wall = [0.0]
        charger = EvCharger(
            EvseSpec.model_validate({"id": "ev", "type": "evse", **spec}),
            SimClock(source=lambda: wall[0]),
        )
        gateway = ModbusGateway(HOST, 0, [charger])
        await gateway.start()
        try:
            async with SunSpecClient(HOST, gateway.port) as client:
                await scenario(Bench(charger, client, wall))
        finally:
            await gateway.stop()

    asyncio.run(main())


def test_power_on_signals_the_safe_current() -> None:
    async def check(b: Bench) -> None:
        b.advance(10)
        assert await b.float32(LIMIT) == 32.0
        assert await b.uint(VALIDITY, 2) == 0
        assert await b.float32(APPLIED) == 6.0
        assert await b.float32(CURRENT) == pytest.approx(6.0, abs=1e-3)  # 10 time constants
        assert await b.uint(STATE) == 2
        assert await b.uint(PHASES) == 3
        assert await b.float32(VOLTAGE) == 230.0
        assert await b.float32(POWER) == pytest.approx(3 * 230 * 6.0, abs=1)

    on_bench(check, tau_s=1.0)


def test_current_follows_the_limit_with_its_time_constant() -> None:
    async def check(b: Bench) -> None:
        b.advance(100)  # settled at the safe 6 A
        await b.write_a(LIMIT, 16)
        b.advance(2)  # one time constant
        expected = 16 + (6 - 16) * math.exp(-1)
        assert await b.float32(CURRENT) == pytest.approx(expected, rel=1e-5)
        assert await b.float32(POWER) == pytest.approx(3 * 230 * expected, rel=1e-5)
        state = b.charger.snapshot()
        assert (state.a, state.w) == pytest.approx((expected, -3 * 230 * expected), rel=1e-5)
        assert (state.state, state.limit_a, state.applied_a) == ("C", 16, 16)

    on_bench(check, tau_s=2.0)


@pytest.mark.parametrize("amps", [0.0, 6.0, 16.5, 32.0])
def test_limits_0_and_6_to_max_are_accepted_and_restart_the_validity(amps: float) -> None:
    async def check(b: Bench) -> None:
        b.advance(5)
        await b.write_a(LIMIT, amps)
        b.advance(20)
        assert await b.float32(LIMIT) == amps
        assert await b.uint(VALIDITY, 2) == 40
        assert await b.float32(APPLIED) == amps
        assert await b.uint(STATE) == (1 if amps == 0 else 2)

    on_bench(check, tau_s=0.0)


@pytest.mark.parametrize("amps", [3.0, 5.99, 40.0, -6.0, math.nan])
@pytest.mark.parametrize("address", [LIMIT, SAFE])
def test_currents_outside_0_and_6_to_max_answer_illegal_value(address: int, amps: float) -> None:
    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 16)
        before = await b.client.read(LIMIT, 4)
        b.advance(10)
        with pytest.raises(ModbusError) as err:
            await b.write_a(address, amps)
        assert err.value.code == 3
        assert await b.client.read(LIMIT, 4) == before
        assert await b.uint(VALIDITY, 2) == 50  # the refused write did not restart it

    on_bench(check)


@pytest.mark.parametrize(
    ("address", "registers"),
    [
        (APPLIED, f32(16)),
        (VALIDITY, [0, 60]),
        (PHASES, [1]),
        (STATE, [2]),
        (LIMIT, [0x4180]),  # half of the float
        (LIMIT + 1, f32(16)),  # straddles the limit and the safe current
        (VALIDITY, [0, 60, *f32(16)]),  # a writable value behind a read-only one
    ],
)
def test_writes_to_read_only_registers_answer_illegal_address(
    address: int, registers: list[int]
) -> None:
    async def check(b: Bench) -> None:
        with pytest.raises(ModbusError) as err:
            await b.client.write(address, registers)
        assert err.value.code == 2
        assert await b.float32(LIMIT) == 32.0

    on_bench(check)


def test_reads_outside_the_map_answer_illegal_address() -> None:
    async def check(b: Bench) -> None:
        for address, count in ((1199, 2), (1219, 2), (1300, 1)):
            with pytest.raises(ModbusError) as err:
                await b.client.read(address, count)
            assert err.value.code == 2

    on_bench(check)


def test_validity_expiry_falls_back_to_the_safe_current() -> None:
    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 20)
        await b.write_a(SAFE, 10)
        b.advance(59.5)
        assert (await b.uint(VALIDITY, 2), await b.float32(APPLIED)) == (1, 20.0)
        b.advance(1)
        assert (await b.uint(VALIDITY, 2), await b.float32(APPLIED)) == (0, 10.0)
        assert await b.float32(CURRENT) == pytest.approx(10.0)
        assert await b.float32(LIMIT) == 20.0  # the limit is kept, only no longer applied
        await b.write_a(LIMIT, 20)  # a refresh brings it back
        b.advance(0.5)
        assert await b.float32(APPLIED) == 20.0

    on_bench(check, tau_s=0.0)


def test_a_safe_current_of_0_pauses_after_the_validity() -> None:
    async def check(b: Bench) -> None:
        await b.write_a(SAFE, 0)
        await b.write_a(LIMIT, 16)
        b.advance(61)
        assert (await b.float32(APPLIED), await b.float32(CURRENT)) == (0.0, 0.0)
        assert await b.uint(STATE) == 1

    on_bench(check, tau_s=0.0, validity_s=60)


def test_the_car_limits_the_current() -> None:
    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 32)
        b.advance(10)
        assert (await b.float32(APPLIED), await b.float32(CURRENT)) == (32.0, 16.0)

    on_bench(check, tau_s=0.0, ev_max_a=16)


def test_single_phase_power() -> None:
    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 10)
        b.advance(10)
        assert await b.uint(PHASES) == 1
        assert await b.float32(POWER) == pytest.approx(230 * 10.0)

    on_bench(check, tau_s=0.0, phases=1)


def test_ev_soc_and_energy_integrate_the_power_and_charging_stops_at_100() -> None:
    ev_wh = 2000.0  # full after about 71 s at 16 A

    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 16)
        b.advance(20)
        energy_wh = 3 * 230 * 16 * 20 / 3600
        assert await b.uint(ENERGY, 2) == round(energy_wh)
        soc = 90 + CHARGING_EFFICIENCY * energy_wh / ev_wh * 100
        assert await b.float32(SOC) == pytest.approx(soc, rel=1e-5)
        await b.write_a(LIMIT, 16)
        b.advance(59)
        await b.write_a(LIMIT, 16)
        b.advance(59)
        assert await b.float32(SOC) == 100.0
        assert await b.float32(CURRENT) == 0.0
        assert await b.float32(POWER) == 0.0
        assert await b.uint(STATE) == 1  # connected, not charging
        assert await b.float32(APPLIED) == 16.0  # the charger still offers the current
        state = b.charger.snapshot()
        assert (state.soc_pct, state.state, state.w) == (100.0, "B", 0.0)

    on_bench(check, tau_s=0.0, ev_wh=ev_wh, ev_soc_pct=90)


def test_plugging_in_and_out() -> None:
    async def check(b: Bench) -> None:
        assert (await b.uint(STATE), await b.float32(APPLIED)) == (0, 0.0)
        b.advance(10)
        assert await b.uint(STATE) == 2  # plugged in at 5 s
        b.charger.plug(False)
        assert (await b.uint(STATE), await b.float32(CURRENT)) == (0, 0.0)
        b.charger.plug(True)
        b.advance(1)
        assert (await b.uint(STATE), await b.float32(CURRENT)) == (2, 6.0)

    on_bench(check, tau_s=0.0, plugged_at_s=5)


def test_no_car_without_plugged_at() -> None:
    async def check(b: Bench) -> None:
        b.advance(100)
        assert (await b.uint(STATE), await b.float32(POWER)) == (0, 0.0)

    on_bench(check, plugged_at_s=None)


def test_forced_voltage() -> None:
    async def check(b: Bench) -> None:
        b.charger.set_voltage(240.0)
        b.advance(1)
        assert await b.float32(VOLTAGE) == 240.0
        assert await b.float32(POWER) == pytest.approx(3 * 240 * 6.0)

    on_bench(check, tau_s=0.0)


def test_restart_returns_to_power_on_and_faults_clear() -> None:
    async def check(b: Bench) -> None:
        await b.write_a(LIMIT, 16)
        await b.write_a(SAFE, 8)
        b.advance(30)
        soc = await b.float32(SOC)
        b.charger.answer_exceptions()
        with pytest.raises(ModbusError) as err:
            await b.client.read(STATE, 1)
        assert err.value.code == 4
        b.charger.restart()
        assert (await b.float32(LIMIT), await b.float32(SAFE)) == (32.0, 6.0)
        assert (await b.uint(VALIDITY, 2), await b.float32(APPLIED)) == (0, 6.0)
        assert await b.uint(ENERGY, 2) == 0
        assert await b.float32(SOC) == pytest.approx(soc)  # the car keeps its charge

    on_bench(check, tau_s=0.0)


def test_a_silent_charger_does_not_answer() -> None:
    async def check(b: Bench) -> None:
        b.charger.go_silent()
        assert await times_out(b.client, STATE)

    on_bench(check)


@pytest.mark.parametrize("safe_a", [3.0, 40.0])
def test_spec_refuses_a_safe_current_the_charger_cannot_signal(safe_a: float) -> None:
    with pytest.raises(ValueError, match="safe_a"):
        EvseSpec.model_validate({"id": "ev", "type": "evse", "safe_a": safe_a})
