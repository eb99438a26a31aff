"""OcppDriver on the gateway's real CSMS (OcppHub) with a station of the `ocpp` library's
charge-point side over loopback: its readings are as fresh as the station's last message and
stay current one heartbeat interval; a station that connects again is a changed device."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from ocpp import v201
from ocpp.routing import on
from websockets.asyncio.client import connect

from derms_edge.config import OcppDevice, OcppSection
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.devices.ocpp.driver import OcppDriver
from derms_edge.devices.ocpp.hub import OcppHub
from derms_edge.errors import DeviceChanged
from derms_edge.model import Quality
from tests.support.servers import free_port

HEARTBEAT_S = 30
STALE_AFTER_S = 1.0


class Station(v201.ChargePoint):  # type: ignore[misc]
    """A station that knows none of the variables the gateway asks for."""

    @on("GetVariables")  # type: ignore[untyped-decorator]
    def get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return v201.call_result.GetVariables(
            get_variable_result=[
                {
                    "attribute_status": "UnknownVariable",
                    "component": d["component"],
                    "variable": d["variable"],
                }
                for d in get_variable_data
            ]
        )


def meter_values(w: float) -> Any:
    now = datetime.now(UTC).isoformat()
    sample = {"value": w, "measurand": "Power.Active.Import"}
    return v201.call.MeterValues(
        evse_id=1, meter_value=[{"timestamp": now, "sampled_value": [sample]}]
    )


async def until(check: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(5):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not reached in 5 s: {what}") from None


@pytest.mark.integration
def test_readings_are_current_one_heartbeat_after_the_last_message_then_stale() -> None:
    async def scenario() -> None:
        port = free_port()
        section = OcppSection(listen=f"127.0.0.1:{port}", heartbeat_interval_s=HEARTBEAT_S)
        device = OcppDevice(id="ev1", kind="evse", protocol="ocpp", station_id="CP-1")
        hub = OcppHub(section, [device])
        t = [1000.0]
        driver = OcppDriver(device, hub, clock=lambda: t[0])
        coordinator = DeviceCoordinator(
            "ev1",
            driver,
            poll_interval_s=0.05,
            stale_after_s=STALE_AFTER_S,
            backoff_max_s=0.05,
            clock=lambda: t[0],
        )
        await hub.start()
        url = f"ws://127.0.0.1:{port}/ocpp/CP-1"
        try:
            async with connect(url, subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
                station = Station("CP-1", ws)
                serving = asyncio.create_task(station.start())
                await station.call(
                    v201.call.BootNotification(
                        charging_station={"vendor_name": "ACME", "model": "Box"},
                        reason="PowerUp",
                    )
                )
                running = asyncio.create_task(coordinator.run())
                await until(lambda: coordinator.polls > 0, "the first reading")
                assert coordinator.capability is not None
                assert coordinator.capability.manufacturer == "ACME"

                async def poll_at(now: float) -> Quality:
                    polls = coordinator.polls
                    t[0] = now
                    await until(lambda: coordinator.polls > polls, f"a poll at {now}")
                    return coordinator.quality()

                t[0] = 1010.0
                await station.call(meter_values(2300.0))
                assert await poll_at(1011.0) is Quality.OK
                assert coordinator.reading is not None
                assert coordinator.reading.state.w == -2300.0  # charging: negative
                # silent, but the station vouches until its next heartbeat is due
                assert await poll_at(1010.0 + HEARTBEAT_S - 0.5) is Quality.OK
                assert await poll_at(1010.0 + HEARTBEAT_S + STALE_AFTER_S + 2) is Quality.STALE
                await station.call(v201.call.Heartbeat())
                assert await poll_at(t[0] + 0.5) is Quality.OK

                # the same station connects again: the old session is replaced
                first = hub.server.session("CP-1")
                async with connect(url, subprotocols=["ocpp2.0.1"]) as ws2:  # type: ignore[list-item]
                    again = Station("CP-1", ws2)
                    serving2 = asyncio.create_task(again.start())
                    await until(lambda: hub.server.session("CP-1") not in (None, first), "again")
                    with pytest.raises(DeviceChanged):
                        await driver.poll()
                    serving2.cancel()
                running.cancel()
                serving.cancel()
                await asyncio.gather(running, serving, serving2, return_exceptions=True)
        finally:
            await hub.close()

    asyncio.run(scenario())
