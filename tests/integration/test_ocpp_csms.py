"""The CSMS against real charging stations: the `ocpp` library's charge-point side over
websockets on loopback, OCPP 2.0.1 and 1.6, with Basic auth, TLS (a trustme CA), subprotocol
negotiation and reconnects.

The stations here are the smallest stand-ins for the rig's simulator (hil/, another part of
issue 16): each answers only what its test needs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from ocpp import v16, v201
from ocpp.routing import on
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from derms_edge.devices.ocpp.csms import CsmsServer, StationAccess, server_context
from derms_edge.devices.ocpp.session import (
    CallErrorAnswer,
    OcppVersion,
    StationConnected,
    StationDisconnected,
    StationEvent,
    StationMessage,
)
from derms_edge.errors import ConnectionLost, DeviceProtocolError, DeviceTimeout

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
BOTH = ["ocpp2.0.1", "ocpp1.6"]
SCHEDULE_201 = {
    "evseId": 1,
    "duration": 600,
    "scheduleStart": "2026-01-01T00:00:00Z",
    "chargingRateUnit": "A",
    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
}
PROFILE = {
    "id": 1,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Relative",
    "chargingSchedule": [
        {
            "id": 1,
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}],
        }
    ],
}


class Station201(v201.ChargePoint):  # type: ignore[misc]
    """A 2.0.1 station: answers GetCompositeSchedule, answers SetChargingProfile with a status
    OCPP does not have, drops every GetVariables unanswered, and has no handler for
    ClearChargingProfile (the library answers a CALLERROR NotImplemented)."""

    async def route_message(self, raw_msg: str) -> None:
        if '"GetVariables"' not in raw_msg:
            await super().route_message(raw_msg)

    @on("GetCompositeSchedule")  # type: ignore[untyped-decorator]
    def get_composite_schedule(self, **_: Any) -> Any:
        return v201.call_result.GetCompositeSchedule(status="Accepted", schedule=SCHEDULE_201)

    @on("SetChargingProfile", skip_schema_validation=True)  # type: ignore[untyped-decorator]
    def set_charging_profile(self, **_: Any) -> Any:
        return v201.call_result.SetChargingProfile(status="Maybe")


class Station16(v16.ChargePoint):  # type: ignore[misc]
    @on("GetCompositeSchedule")  # type: ignore[untyped-decorator]
    def get_composite_schedule(self, connector_id: int, **_: Any) -> Any:
        return v16.call_result.GetCompositeSchedule(status="Accepted", connector_id=connector_id)


class Events:
    """What the CSMS reported, in order."""

    def __init__(self) -> None:
        self.seen: list[StationEvent] = []

    def __call__(self, event: StationEvent) -> None:
        self.seen.append(event)

    async def wait_for(self, wanted: Callable[[StationEvent], bool], timeout_s: float = 3.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.seen:
                if wanted(event):
                    return event
            await asyncio.sleep(0.01)
        raise AssertionError(f"not reported within {timeout_s} s; reported: {self.seen}")

    def message(self, station_id: str, action: str) -> Callable[[StationEvent], bool]:
        return lambda e: (
            isinstance(e, StationMessage) and e.station_id == station_id and e.action == action
        )


@contextlib.asynccontextmanager
async def csms(
    *stations: StationAccess, tls: ssl.SSLContext | None = None, **options: Any
) -> AsyncIterator[tuple[CsmsServer, Events]]:
    events = Events()
    server = CsmsServer(stations, events, host=HOST, port=0, tls=tls, heartbeat_s=30, **options)
    await server.start()
    try:
        yield server, events
    finally:
        await server.close()


def basic(station_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{station_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def station(
    server: CsmsServer,
    station_id: str,
    kind: type[Any] = Station201,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[Any, ClientConnection]]:
    """A station connected to the CSMS, its message loop running."""
    scheme = "wss" if ssl_context is not None else "ws"
    async with connect(
        f"{scheme}://{HOST}:{server.port}/ocpp/{station_id}",
        subprotocols=[*(BOTH if subprotocols is None else subprotocols)],  # type: ignore[list-item]
        additional_headers=headers,
        ssl=ssl_context,
        open_timeout=3,
    ) as websocket:
        charge_point = kind(station_id, websocket, response_timeout=3)
        loop = asyncio.create_task(charge_point.start())
        try:
            yield charge_point, websocket
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)


async def boot_201(charge_point: Any) -> Any:
    return await charge_point.call(
        v201.call.BootNotification(
            charging_station={"model": "Wallbox-1", "vendor_name": "derms"}, reason="PowerUp"
        )
    )


async def refused(server: CsmsServer, station_id: str, **options: Any) -> int:
    """The HTTP status a connection attempt is refused with."""
    with pytest.raises(InvalidStatus) as refusal:
        async with station(server, station_id, **options):
            pass
    return refusal.value.response.status_code


@pytest.fixture(autouse=True)
def no_stray_tasks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing left pending or unretrieved by a test's event loop ("Task was destroyed")."""
    caplog.set_level(logging.INFO)
    yield
    gc.collect()
    strays = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert strays == []


def test_201_boot_meter_values_and_calls() -> None:
    async def scenario() -> None:
        async with (
            csms(StationAccess("CS-1"), call_timeout_s=0.3) as (server, events),
            station(server, "CS-1") as (charge_point, websocket),
        ):
            assert websocket.subprotocol == "ocpp2.0.1"
            answer = await boot_201(charge_point)
            assert (answer.status, answer.interval) == ("Accepted", 30)
            connected = await events.wait_for(lambda e: isinstance(e, StationConnected))
            assert connected == StationConnected("CS-1", OcppVersion.V201)
            boot = await events.wait_for(events.message("CS-1", "BootNotification"))
            assert abs(time.time() - boot.received_at.timestamp()) < 5
            assert boot.payload["chargingStation"] == {
                "model": "Wallbox-1",
                "vendorName": "derms",
            }

            sample = {
                "timestamp": "2026-01-01T00:00:00Z",
                "sampledValue": [{"value": 7200.0, "measurand": "Power.Active.Import"}],
            }
            await charge_point.call(
                v201.call.MeterValues(
                    evse_id=1,
                    meter_value=[
                        {
                            "timestamp": sample["timestamp"],
                            "sampled_value": [
                                {"value": 7200.0, "measurand": "Power.Active.Import"}
                            ],
                        }
                    ],
                )
            )
            meter = await events.wait_for(events.message("CS-1", "MeterValues"))
            assert meter.payload == {"evseId": 1, "meterValue": [sample]}
            heartbeat = await charge_point.call(v201.call.Heartbeat())
            assert heartbeat.current_time.endswith("Z")
            started = await charge_point.call(
                v201.call.TransactionEvent(
                    event_type="Started",
                    timestamp="2026-01-01T00:00:00Z",
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info={"transaction_id": "tx-1"},
                    id_token={"id_token": "TAG-1", "type": "ISO14443"},
                )
            )
            assert started.id_token_info == {"status": "Accepted"}
            await charge_point.call(
                v201.call.StatusNotification(
                    timestamp="2026-01-01T00:00:00Z",
                    connector_status="Occupied",
                    evse_id=1,
                    connector_id=1,
                )
            )
            status = await events.wait_for(events.message("CS-1", "StatusNotification"))
            assert status.payload["connectorStatus"] == "Occupied"
            authorized = await charge_point.call(
                v201.call.Authorize(id_token={"id_token": "TAG-1", "type": "ISO14443"})
            )
            assert authorized.id_token_info == {"status": "Accepted"}

            session = server.session("CS-1")
            assert session is not None
            schedule = await session.call(v201.call.GetCompositeSchedule(duration=600, evse_id=1))
            assert schedule.status == "Accepted"  # answers come as the library's objects
            period = schedule.schedule["charging_schedule_period"]
            assert period == [{"start_period": 0, "limit": 16.0}]

            with pytest.raises(CallErrorAnswer, match=r"CALLERROR NotImplemented"):
                await session.call(v201.call.ClearChargingProfile(charging_profile_id=1))
            with pytest.raises(DeviceProtocolError, match=r"SetChargingProfile not as OCPP"):
                await session.call(
                    v201.call.SetChargingProfile(evse_id=1, charging_profile=PROFILE)
                )
            with pytest.raises(ValueError, match=r"not valid OCPP ocpp2\.0\.1, not sent"):
                await session.call(v201.call.GetCompositeSchedule(duration="soon", evse_id=1))

            ask = v201.call.GetVariables(
                get_variable_data=[
                    {
                        "component": {"name": "SmartChargingCtrlr"},
                        "variable": {"name": "Enabled"},
                    }
                ]
            )
            begun = time.monotonic()
            with pytest.raises(DeviceTimeout, match="CS-1 did not answer GetVariables"):
                await session.call(ask)
            assert time.monotonic() - begun < 2.0
            again = await session.call(v201.call.GetCompositeSchedule(duration=60, evse_id=1))
            assert again.status == "Accepted"  # the session is free again after a timeout

            with pytest.raises(TypeError, match=r"speaks ocpp2\.0\.1"):
                await session.call(v16.call.GetCompositeSchedule(connector_id=1, duration=60))

    asyncio.run(scenario())


def test_16_station_gets_16_and_its_transactions_answered() -> None:
    async def scenario() -> None:
        async with (
            csms(StationAccess("CP-16")) as (server, events),
            station(server, "CP-16", Station16, ["ocpp1.6"]) as (charge_point, ws),
        ):
            assert ws.subprotocol == "ocpp1.6"
            boot = await charge_point.call(
                v16.call.BootNotification(charge_point_model="M", charge_point_vendor="V")
            )
            assert boot.status == "Accepted"
            start = await charge_point.call(
                v16.call.StartTransaction(
                    connector_id=1,
                    id_tag="TAG",
                    meter_start=0,
                    timestamp="2026-01-01T00:00:00Z",
                )
            )
            assert start.id_tag_info == {"status": "Accepted"}
            told = await events.wait_for(events.message("CP-16", "StartTransaction"))
            assert told.payload["transactionId"] == start.transaction_id
            assert told.version is OcppVersion.V16
            await charge_point.call(
                v16.call.MeterValues(
                    connector_id=1,
                    meter_value=[
                        {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "7"}]}
                    ],
                )
            )
            await events.wait_for(events.message("CP-16", "MeterValues"))
            stop = await charge_point.call(
                v16.call.StopTransaction(
                    meter_stop=1000,
                    timestamp="2026-01-01T01:00:00Z",
                    transaction_id=start.transaction_id,
                    id_tag="TAG",
                )
            )
            assert stop.id_tag_info == {"status": "Accepted"}
            await events.wait_for(events.message("CP-16", "StopTransaction"))
            session = await server.wait_connected("CP-16", 1.0)
            answer = await session.call(v16.call.GetCompositeSchedule(connector_id=1, duration=60))
            assert (answer.status, answer.connector_id) == ("Accepted", 1)

    asyncio.run(scenario())


def test_subprotocol_negotiation(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        pinned = StationAccess("PINNED", ocpp_version=OcppVersion.V16)
        async with csms(StationAccess("ANY"), pinned) as (server, _):
            async with station(server, "PINNED", Station16, BOTH) as (_, websocket):
                assert websocket.subprotocol == "ocpp1.6"
            assert await refused(server, "ANY", subprotocols=[]) == 400
            assert await refused(server, "ANY", subprotocols=["ocpp2.1"]) == 400
            assert await refused(server, "PINNED", subprotocols=["ocpp2.0.1"]) == 400

    asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "refused station 'ANY'" in r.getMessage()]
    assert lines == [
        "CSMS: refused station 'ANY': it offers the subprotocols none, "
        "the CSMS speaks ocpp2.0.1 or ocpp1.6",
        "CSMS: refused station 'ANY': it offers the subprotocols ocpp2.1, "
        "the CSMS speaks ocpp2.0.1 or ocpp1.6",
    ]


def test_unknown_station_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with csms(StationAccess("CS-1")) as (server, events):
            caplog.clear()
            for _ in range(3):
                assert await refused(server, "CS%2F9") == 404
            told = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
            assert len(told) == 1, told
            assert "refused station 'CS/9'" in told[0][1]
            assert events.seen == []

    asyncio.run(scenario())


def test_basic_auth(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with csms(StationAccess("CS-1", password="s3cret-Pw")) as (server, events):
            assert await refused(server, "CS-1", headers=basic("CS-1", "Wr0ng-Pw-77")) == 401
            assert await refused(server, "CS-1") == 401
            assert await refused(server, "CS-1", headers=basic("CS-2", "s3cret-Pw")) == 401
            assert events.seen == []
            async with station(server, "CS-1", headers=basic("CS-1", "s3cret-Pw")) as (cp, _):
                assert (await boot_201(cp)).status == "Accepted"

    asyncio.run(scenario())
    told = [r.getMessage() for r in caplog.records if "HTTP Basic" in r.getMessage()]
    assert len(told) == 1
    assert "s3cret" not in caplog.text, caplog.text
    assert "Wr0ng" not in caplog.text


def test_tls_with_basic_auth(tmp_path: Path) -> None:
    ca = trustme.CA()
    certificate = ca.issue_cert(HOST)
    cert_file, key_file = tmp_path / "csms.pem", tmp_path / "csms.key"
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def scenario() -> None:
        access = StationAccess("CS-TLS", password="pw")
        tls = server_context(cert_file, key_file)
        async with csms(access, tls=tls) as (server, _):
            headers = basic("CS-TLS", "pw")
            async with station(server, "CS-TLS", headers=headers, ssl_context=trusting) as (cp, _):
                assert (await boot_201(cp)).status == "Accepted"
            with pytest.raises(ssl.SSLCertVerificationError):
                async with station(
                    server, "CS-TLS", headers=headers, ssl_context=ssl.create_default_context()
                ):
                    pass

    asyncio.run(scenario())


def test_reconnect_replaces_the_old_session() -> None:
    async def scenario() -> None:
        async with (
            csms(StationAccess("CS-1")) as (server, events),
            station(server, "CS-1") as (_, first_ws),
        ):
            first = await server.wait_connected("CS-1", 1.0)
            async with station(server, "CS-1") as (second_cp, _):
                await events.wait_for(lambda e: isinstance(e, StationDisconnected))
                second = server.session("CS-1")
                assert second is not None and second is not first
                await asyncio.wait_for(first_ws.wait_closed(), 2.0)
                assert (await boot_201(second_cp)).status == "Accepted"
                answer = await second.call(v201.call.GetCompositeSchedule(duration=1, evse_id=1))
                assert answer.status == "Accepted"
                assert [type(e).__name__ for e in events.seen[:3]] == [
                    "StationConnected",
                    "StationDisconnected",
                    "StationConnected",
                ]
                assert events.seen[1] == StationDisconnected(
                    "CS-1", OcppVersion.V201, "replaced by a new connection"
                )
            await events.wait_for(
                lambda e: isinstance(e, StationDisconnected) and e is not events.seen[1]
            )
            assert server.session("CS-1") is None
            with pytest.raises(DeviceTimeout, match=r"CS-1 did not connect within 0\.1 s"):
                await server.wait_connected("CS-1", 0.1)

    asyncio.run(scenario())


def test_reconnect_after_a_network_drop_is_answered_at_once() -> None:
    """The old connection's peer is gone (it reads nothing, so never answers the close): the
    new session is served while the old one waits out its close timeout beside it."""

    async def scenario() -> None:
        async with (
            csms(StationAccess("CS-1"), close_timeout_s=3.0) as (server, events),
            station(server, "CS-1") as (_, first_ws),
        ):
            first_ws.transport.pause_reading()
            async with station(server, "CS-1") as (second_cp, _):
                begun = time.monotonic()
                assert (await boot_201(second_cp)).status == "Accepted"
                assert time.monotonic() - begun < 2.0  # not the 3 s close timeout
                assert isinstance(events.seen[1], StationDisconnected)
                await events.wait_for(events.message("CS-1", "BootNotification"))
            first_ws.transport.resume_reading()  # the network is back: it sees the close

    asyncio.run(scenario())


def test_close_ends_sessions_and_calls_in_flight() -> None:
    async def scenario() -> None:
        events = Events()
        server = CsmsServer([StationAccess("CS-1")], events, host=HOST, port=0)
        await server.start()
        async with station(server, "CS-1") as (_, websocket):
            session = await server.wait_connected("CS-1", 1.0)
            ask = v201.call.GetVariables(
                get_variable_data=[{"component": {"name": "C"}, "variable": {"name": "V"}}]
            )
            pending = asyncio.create_task(session.call(ask))
            await asyncio.sleep(0.05)
            await server.close()
            await asyncio.wait_for(websocket.wait_closed(), 2.0)
            with pytest.raises(ConnectionLost, match="disconnected during GetVariables"):
                await pending
        assert isinstance(events.seen[-1], StationDisconnected)

    asyncio.run(scenario())
