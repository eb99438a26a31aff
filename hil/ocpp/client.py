"""The simulated station's websocket side: connect out to the CSMS at csms_url/<station_id>,
boot, report status, sessions and meter values, answer its requests; when the connection drops,
reconnect with exponential backoff and boot again (installed profiles stay; `reboot` clears
them, as a real station's restart does)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from hil.ocpp.station import OcppStation

LOG = logging.getLogger(__name__)
POLL_MAX_S = 0.25
"""How often (wall s) at least the station looks at its car for plug-in, unplug and status
changes (more often when its meter interval is shorter): 50 stations wake 200 times a second."""
OPEN_TIMEOUT_S = 5.0


class Link(Protocol):
    """One version's charge-point side on one connection (hil.ocpp.v201 / hil.ocpp.v16)."""

    async def start(self) -> None: ...
    async def boot(self, reason: str) -> tuple[str, int]: ...
    async def heartbeat(self) -> None: ...
    def connector_status(self) -> str: ...
    async def status(self, status: str) -> None: ...
    async def start_transaction(self) -> None: ...
    async def end_transaction(self, reason: str) -> None: ...
    async def meter(self) -> None: ...


def _link(station: OcppStation, connection: ClientConnection) -> Link:
    if station.spec.version == "2.0.1":
        from hil.ocpp.v201 import Station201

        return Station201(station, connection)
    from hil.ocpp.v16 import Station16

    return Station16(station, connection)


class OcppClient:
    """Runs one station's connection, `await start()` ... `await stop()`."""

    def __init__(self, station: OcppStation) -> None:
        self.station = station
        self.spec = station.spec
        self.boots: list[str] = []
        """The reason of every accepted BootNotification, oldest first."""
        self.connections = 0
        """Websocket connections opened so far."""
        self.connected = asyncio.Event()
        """Set while a connection is open and booted."""
        self._boot_reason = "PowerUp"
        self._connection: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the station connects: csms_url/<station_id>."""
        return f"{self.spec.csms_url.rstrip('/')}/{self.spec.station_id}"

    def _headers(self) -> dict[str, str]:
        if self.spec.password is None:
            return {}
        token = f"{self.spec.station_id}:{self.spec.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(token).decode()}

    async def start(self) -> None:
        """Start connecting (in the background; the CSMS need not be up yet)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ocpp-{self.spec.id}")

    async def stop(self) -> None:
        """Close the connection (normal closure) and stop reconnecting."""
        if self._task is not None:
            await self.drop()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    async def drop(self) -> None:
        """Close the websocket now (a network loss); the station reconnects."""
        if self._connection is not None:
            await self._connection.close()

    async def reboot(self) -> None:
        """Restart the station: profiles forgotten, the session ends, the connection drops and
        the next boot says PowerUp."""
        self.station.reboot()
        self._boot_reason = "PowerUp"
        await self.drop()

    async def _run(self) -> None:
        delay = self.spec.reconnect_min_s
        subprotocol = Subprotocol("ocpp2.0.1" if self.spec.version == "2.0.1" else "ocpp1.6")
        while True:
            try:
                async with connect(
                    self.url,
                    subprotocols=[subprotocol],
                    additional_headers=self._headers(),
                    open_timeout=OPEN_TIMEOUT_S,
                ) as connection:
                    self._connection = connection
                    self.connections += 1
                    delay = self.spec.reconnect_min_s
                    await self._session(_link(self.station, connection))
            except (OSError, TimeoutError, WebSocketException) as exc:
                LOG.info("%s: connection to %s ended: %r", self.spec.id, self.url, exc)
            except Exception:  # a CSMS answer the station cannot use: log, reconnect
                LOG.exception("%s: session with %s failed", self.spec.id, self.url)
            finally:
                self._connection = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.spec.reconnect_max_s)

    async def _session(self, link: Link) -> None:
        """Receive and operate until either ends (the connection closed)."""
        receiver = asyncio.create_task(link.start())
        operator = asyncio.create_task(self._operate(link))
        try:
            done, _ = await asyncio.wait({receiver, operator}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (receiver, operator):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _operate(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        while True:
            status, interval = await link.boot(self._boot_reason)
            if status == "Accepted":
                break
            await asyncio.sleep(interval or 1)
        self.boots.append(self._boot_reason)
        self._boot_reason = "Unknown"  # a reconnect, not a power cycle
        self.connected.set()
        last_status: str | None = None
        meter_s = self.spec.meter_interval_s / self.station.clock.speed
        next_meter, next_heartbeat = loop.time(), loop.time() + interval
        while True:
            last_status = await self._sync(link, last_status)
            now = loop.time()
            if now >= next_meter:
                next_meter = now + meter_s
                await link.meter()
            if interval > 0 and now >= next_heartbeat:
                next_heartbeat = now + interval
                await link.heartbeat()
            await asyncio.sleep(min(POLL_MAX_S, meter_s))

    async def _sync(self, link: Link, last_status: str | None) -> str:
        """Start or end the session as the car is plugged or not; a status change."""
        station = self.station
        status = link.connector_status()
        if status != last_status:
            await link.status(status)
        tx = station.tx
        if tx is not None and (tx.stop_reason is not None or not station.plugged()):
            await link.end_transaction(tx.stop_reason or "EVDisconnected")
            station.end_transaction()
        if station.tx is None and station.plugged():
            await link.start_transaction()
        new_status = link.connector_status()
        if new_status != status:
            await link.status(new_status)
        return new_status
