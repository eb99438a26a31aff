"""The register-profile driver against the rig's simulated EV charger over real Modbus TCP.

The profile is configs/profiles/hil-evse.yaml, read through the config models; the rig runs
in-process on a free port, its simulated clock ``SPEED`` times faster than the wall.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from derms_edge.config import ProfileDevice, parse_config
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool, ModbusLink
from derms_edge.devices.profile import ProfileDriver
from derms_edge.errors import ControlRefused, DeviceTimeout
from derms_edge.model import OperatingState, SetpointName
from hil.devices import EvCharger, EvseState
from hil.rig import Rig
from hil.spec import RigSpec

PROFILE = Path(__file__).parents[2] / "configs" / "profiles" / "hil-evse.yaml"
SPEED = 20.0
"""Simulated seconds per wall second."""
EVSE_MAX_A = SetpointName.EVSE_MAX_A


def device_config(port: int, **profile: Any) -> ProfileDevice:
    """The rig's charger as the gateway configures it."""
    entry = {
        "id": "ev1",
        "kind": "evse",
        "protocol": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_s": 0.05,
        "timeout_s": 0.3,
        "profile": {**yaml.safe_load(PROFILE.read_text())["profile"], **profile},
    }
    device = parse_config({"gateway": {"id": "site"}, "devices": [entry]}).devices[0]
    assert isinstance(device, ProfileDevice)
    return device


@dataclass
class Bench:
    rig: Rig
    charger: EvCharger
    driver: ProfileDriver

    def sim(self) -> EvseState:
        return self.charger.snapshot()

    async def until(self, condition: Callable[[EvseState], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition(self.sim()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not reached: {self.sim()}")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def rig(**charger: Any) -> AsyncIterator[Rig]:
    spec = RigSpec.model_validate(
        {"speed": SPEED, "devices": [{"id": "ev1", "type": "evse", "tau_s": 1.0, **charger}]}
    )
    async with Rig(spec) as running:
        yield running


def on_bench(
    scenario: Callable[[Bench], Awaitable[None]],
    *,
    charger: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
) -> None:
    """Run a scenario against a fresh rig and a driver whose clock is the rig's (sim s)."""

    async def main() -> None:
        async with rig(**(charger or {})) as running:
            device = device_config(running.port("ev1"), **(profile or {}))
            link = ModbusLink.tcp("127.0.0.1", device.port, device.timeout_s)
            driver = ProfileDriver(
                link.unit(device.unit_id), device.profile, device.id, clock=running.clock.now
            )
            simulated = running.device("ev1")
            assert isinstance(simulated, EvCharger)
            try:
                await scenario(Bench(running, simulated, driver))
            finally:
                await driver.close()

    asyncio.run(main())


def test_connect_and_poll_read_what_the_simulator_holds() -> None:
    async def check(b: Bench) -> None:
        assert b.driver.supports() == frozenset()
        capability = await b.driver.connect()
        assert b.driver.supports() == {EVSE_MAX_A}
        assert capability.model == "hil-evse (alfen-ng9xx-like)"
        assert capability.manufacturer is None
        assert capability.w_max == pytest.approx(3 * 230 * 32)
        assert b.driver.reads == ((1201, 16),)
        await b.until(lambda s: abs(s.a - 6.0) < 1e-3)  # settled at the safe current
        state = await b.driver.poll()
        sim = b.sim()
        assert state.w == pytest.approx(sim.w, rel=1e-4)
        assert state.w == pytest.approx(-3 * 230 * 6.0, rel=1e-3)  # charging is negative
        assert state.a == pytest.approx(3 * sim.a, rel=1e-4)  # the total of three phases
        assert state.v == sim.v == 230.0
        assert state.soc_pct == pytest.approx(sim.soc_pct, abs=0.01)
        assert state.wh_imported == pytest.approx(sim.wh, abs=5)
        assert state.state is OperatingState.CHARGING
        assert (state.hz, state.va, state.var) == (None, None, None)  # not in the profile
        held = b.driver.held
        assert held is not None and (held.limit_a, held.validity_s) == (32.0, 0.0)

    on_bench(check)


def test_a_written_limit_is_applied_and_the_current_follows() -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 16.0)
        sim = b.sim()
        assert (sim.limit_a, sim.applied_a) == (16.0, 16.0)
        assert sim.validity_s == pytest.approx(60, abs=1)
        await b.until(lambda s: abs(s.a - 16.0) < 0.01)
        state = await b.driver.poll()
        assert state.a == pytest.approx(48.0, abs=0.05)
        assert state.w == pytest.approx(-3 * 230 * 16.0, rel=1e-3)

    on_bench(check)


@pytest.mark.parametrize(
    ("amps", "reason"),
    [
        (3.0, "3 A cannot be signalled: 0 pauses, else 6..32 A"),
        (5.99, "5.99 A cannot be signalled"),
        (-6.0, "-6 A cannot be signalled"),
        (40.0, "40 A is above the charger's max_a 32 A"),
        (float("nan"), "nan is not a current"),
    ],
)
def test_a_limit_the_charger_cannot_take_is_refused_naming_the_register(
    amps: float, reason: str
) -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 16.0)
        with pytest.raises(ControlRefused) as refused:
            await b.driver.write(EVSE_MAX_A, amps)
        assert refused.value.device == "ev1"
        assert refused.value.point == "register 1215"
        assert reason in refused.value.reason
        assert b.sim().limit_a == 16.0

    on_bench(check)


def test_the_chargers_own_refusal_is_a_control_refused() -> None:
    """A profile claiming more than the charger takes: the charger answers exception 3."""

    async def check(b: Bench) -> None:
        await b.driver.connect()
        with pytest.raises(ControlRefused) as refused:
            await b.driver.write(EVSE_MAX_A, 40.0)
        assert refused.value.point == "register 1215"
        assert "Modbus exception 3 (ILLEGAL DATA VALUE)" in refused.value.reason
        assert b.sim().limit_a == 32.0

    on_bench(check, profile={"max_a": 63})


def test_only_the_current_limit_is_taken() -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        with pytest.raises(ControlRefused, match="takes only evse_max_a"):
            await b.driver.write(SetpointName.MAX_W_PCT, 50.0)

    on_bench(check)


def test_writing_0_pauses_and_releasing_restores_the_chargers_maximum() -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 0.0)
        assert (b.sim().applied_a, b.sim().state) == (0.0, "B")
        await b.until(lambda s: s.a < 0.01)
        state = await b.driver.poll()
        assert state.state is OperatingState.IDLE
        assert state.w == pytest.approx(0.0, abs=10)
        await b.driver.write(EVSE_MAX_A, None)
        assert (b.sim().limit_a, b.sim().applied_a, b.sim().state) == (32.0, 32.0, "C")

    on_bench(check)


def test_keepalive_refreshes_the_limit_before_its_validity_expires() -> None:
    """Validity 6 s, refresh 3 s (simulated): 12 s of keepalives keep 16 A applied."""

    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.keepalive()  # nothing written yet: nothing to keep alive
        assert b.sim().validity_s == 0
        await b.driver.write(EVSE_MAX_A, 16.0)
        lowest = 6.0
        start = b.sim().t_s
        while b.sim().t_s - start < 12:
            await b.driver.poll()
            await b.driver.keepalive()
            sim = b.sim()
            assert sim.applied_a == 16.0, sim
            lowest = min(lowest, sim.validity_s)
            await asyncio.sleep(0.5 / SPEED)
        assert 2.0 < lowest < 3.5  # written again about every refresh_s, never near expiry

    on_bench(check, charger={"validity_s": 6}, profile={"refresh_s": 3})


def test_without_keepalive_the_charger_falls_back_to_its_safe_current() -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 16.0)
        await b.until(lambda s: s.validity_s == 0)
        assert b.sim().applied_a == 6.0
        state = await b.driver.poll()
        held = b.driver.held
        assert held is not None and (held.limit_a, held.validity_s) == (16.0, 0.0)
        await b.driver.keepalive()  # the poll showed the fall-back: written again at once
        assert b.sim().applied_a == 16.0
        assert state.state is OperatingState.CHARGING

    on_bench(check, charger={"validity_s": 2}, profile={"refresh_s": 100})


def test_a_restart_is_seen_and_the_limit_is_written_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 16.0)
        b.charger.restart()
        await b.driver.poll()
        held = b.driver.held
        assert held is not None and (held.limit_a, held.validity_s) == (32.0, 0.0)
        assert b.sim().applied_a == 6.0  # power-on: the safe current
        await b.driver.keepalive()
        assert (b.sim().limit_a, b.sim().applied_a) == (16.0, 16.0)
        assert "the charger lost 16 A (limit 32.0 A, validity 0.0 s)" in caplog.text

    on_bench(check)


def test_after_an_outage_and_a_restart_connect_and_write_work_again() -> None:
    async def check(b: Bench) -> None:
        await b.driver.connect()
        await b.driver.write(EVSE_MAX_A, 16.0)
        b.charger.go_silent()
        with pytest.raises(DeviceTimeout):
            await b.driver.poll()
        b.charger.restart()  # answers again, from power-on
        await b.driver.connect()
        assert b.driver.held is not None and b.driver.held.limit_a == 32.0
        await b.driver.write(EVSE_MAX_A, 10.0)
        assert (b.sim().limit_a, b.sim().applied_a) == (10.0, 10.0)

    on_bench(check)


def test_the_factory_builds_a_polling_coordinator_for_a_profile_device() -> None:
    async def main() -> None:
        async with rig() as running:
            coordinator = build_coordinator(device_config(running.port("ev1")), LinkPool())
            assert isinstance(coordinator.driver, ProfileDriver)
            task = asyncio.create_task(coordinator.run())
            try:
                deadline = time.monotonic() + 5
                while coordinator.polls < 2:
                    assert time.monotonic() < deadline, coordinator.last_exception
                    await asyncio.sleep(0.01)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            assert coordinator.capability is not None
            assert coordinator.capability.model == "hil-evse (alfen-ng9xx-like)"
            assert coordinator.reading is not None
            assert coordinator.reading.state.v == 230.0

    asyncio.run(main())
