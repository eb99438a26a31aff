"""The gateway as the site's CSMS: the websocket server the charging stations connect to.

A station connects to ``ws[s]://host:port/<anything>/<station id>``. Before the websocket
upgrade, `CsmsServer` checks (websockets' ``process_request``) that the identity, the last path
segment percent-decoded, is a configured station (else 404, logged once per identity), that
its HTTP Basic credentials hold when it has a password (security profiles 1 and 2; else 401),
and that it offers a subprotocol the CSMS speaks (else 400): the station's configured
``ocpp_version``, or else ``ocpp2.0.1`` before ``ocpp1.6``. One live session per station: a
new connection replaces the old one, whose TCP may not have noticed the network drop yet.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import logging
import ssl
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from derms_edge.aio import wait_set
from derms_edge.devices.ocpp.answers import InfoAsDebug
from derms_edge.devices.ocpp.session import (
    CALL_TIMEOUT_S,
    OcppVersion,
    Report,
    StationConnected,
    StationSession,
)
from derms_edge.errors import DeviceTimeout

log = logging.getLogger(__name__)

HEARTBEAT_S = 60
"""The heartbeat interval (s) a BootNotification is answered with."""
CLOSE_TIMEOUT_S = 10.0
"""How long a closing connection waits for the station's close frame before dropping the TCP
connection (a replaced connection whose network is gone never answers)."""
TOLD_MAX = 256
"""Refusals remembered as already logged; past that, further ones are not logged (a scan of
made-up station ids must not grow memory or the log)."""


@dataclass(frozen=True, slots=True)
class StationAccess:
    """Who may connect as one station, and how."""

    station_id: str
    password: str | None = None
    """HTTP Basic password (the username is the station id); None: no credentials asked."""
    ocpp_version: OcppVersion | None = None
    """The version to speak; None: the best the station offers (2.0.1 before 1.6)."""


@dataclass(frozen=True, slots=True)
class _Admission:
    station: StationAccess
    version: OcppVersion


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS for the stations (security profile 2: server certificate, Basic auth inside); TLS
    1.2 or newer. OSError or ssl.SSLError when a file is missing or wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def station_identity(path: str) -> str:
    """The charging station identity of a request path: its last segment, percent-decoded."""
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def offered_subprotocols(request: Request) -> list[str]:
    """The subprotocols a station offers, in its order."""
    return [
        name.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for name in header.split(",")
        if name.strip()
    ]


def _basic_password(request: Request, station_id: str) -> bytes | None:
    """The password of an ``Authorization: Basic`` header for ``station_id``; None if absent,
    malformed or for another username."""
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    if not colon or username != station_id.encode():
        return None
    return password


class CsmsServer:
    """Accepts the configured charging stations and keeps one `StationSession` per station."""

    def __init__(
        self,
        stations: Iterable[StationAccess],
        report: Report,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        heartbeat_s: int = HEARTBEAT_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.stations = {station.station_id: station for station in stations}
        self.host = host
        self.port = port
        self._report = report
        self._tls = tls
        self._heartbeat_s = heartbeat_s
        self._call_timeout_s = call_timeout_s
        self._close_timeout_s = close_timeout_s
        self._server: Server | None = None
        self._sessions: dict[str, StationSession] = {}
        self._connected = {station_id: asyncio.Event() for station_id in self.stations}
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, _Admission] = (
            weakref.WeakKeyDictionary()
        )
        self._told: set[tuple[str, str]] = set()
        self._told_full = False
        # OCPP 1.6 transaction ids are the CSMS's: counted from the start time (s), so a
        # restarted gateway does not hand out the ids of the last run again
        self._transaction_ids = itertools.count(int(time.time()) % 2**31)

    async def start(self) -> None:
        """Listen; OSError when the address is taken."""
        self._server = await serve(
            self._serve,
            self.host,
            self.port,
            ssl=self._tls,
            process_request=self._admit,
            select_subprotocol=self._select_subprotocol,
            subprotocols=[Subprotocol(version.value) for version in OcppVersion],
            close_timeout=self._close_timeout_s,
            logger=InfoAsDebug(logging.getLogger(f"{__name__}.websockets")),
        )
        if self.port == 0:
            self.port = next(iter(self._server.sockets)).getsockname()[1]
        scheme = "wss" if self._tls is not None else "ws"
        log.info("CSMS listening on %s://%s:%d/", scheme, self.host, self.port)

    def session(self, station_id: str) -> StationSession | None:
        """The station's live session, if it is connected."""
        return self._sessions.get(station_id)

    async def wait_connected(self, station_id: str, timeout_s: float | None) -> StationSession:
        """The station's session once it is connected; DeviceTimeout if not within
        ``timeout_s``; KeyError for a station that is not configured."""
        connected = self._connected[station_id]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (session := self._sessions.get(station_id)) is None:
            left = None if deadline is None else deadline - time.monotonic()
            if not await wait_set(connected, left):
                raise DeviceTimeout(f"station {station_id} did not connect within {timeout_s} s")
        return session

    async def close(self) -> None:
        """Stop accepting, close every session (1001 going away) and wait for them to end."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    def _once(self, station_id: str, what: str, message: str, *args: object) -> None:
        """Log a refusal once per station and kind, not at every retry of the station."""
        if (station_id, what) in self._told:
            return
        if len(self._told) < TOLD_MAX:
            self._told.add((station_id, what))
            log.warning(message, *args)
        elif not self._told_full:
            self._told_full = True
            log.warning("CSMS: %d stations refused; further refusals are not logged", TOLD_MAX)

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Identity, credentials and subprotocol, before the websocket upgrade."""
        station_id = station_identity(request.path)
        station = self.stations.get(station_id)
        if station is None:
            self._once(
                station_id,
                "unknown",
                "CSMS: refused station %r from %s: not one of the configured station ids; "
                "further attempts are refused silently",
                station_id,
                connection.remote_address,
            )
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charging station.\n")
        if station.password is not None:
            password = _basic_password(request, station_id)
            if password is None or not hmac.compare_digest(password, station.password.encode()):
                self._once(
                    station_id,
                    "auth",
                    "CSMS: refused station %r from %s: missing or wrong HTTP Basic credentials "
                    "(username must be the station id, password the station's secret)",
                    station_id,
                    connection.remote_address,
                )
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized.\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="derms-edge CSMS"'
                return response
            self._told.discard((station_id, "auth"))
        offered = offered_subprotocols(request)
        version = _choose(offered, station.ocpp_version)
        if version is None:
            wanted = station.ocpp_version or " or ".join(OcppVersion)
            self._once(
                station_id,
                f"subprotocol {offered}",
                "CSMS: refused station %r: it offers the subprotocols %s, the CSMS speaks %s",
                station_id,
                ", ".join(offered) or "none",
                wanted,
            )
            return connection.respond(
                HTTPStatus.BAD_REQUEST, f"Offer the websocket subprotocol {wanted}.\n"
            )
        self._admitted[connection] = _Admission(station, version)
        return None

    def _select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        admission = self._admitted.get(connection)
        return None if admission is None else Subprotocol(admission.version.value)

    async def _serve(self, connection: ServerConnection) -> None:
        """One station's connection, from the upgrade until it closes or is replaced."""
        admission = self._admitted.pop(connection)
        station_id = admission.station.station_id
        session = StationSession(
            station_id,
            admission.version,
            connection,
            self._report,
            heartbeat_s=self._heartbeat_s,
            transaction_ids=self._transaction_ids,
            call_timeout_s=self._call_timeout_s,
        )
        old = self._sessions.get(station_id)
        self._sessions[station_id] = session
        if old is not None:
            log.info("CSMS: station %s connected again; its previous connection closed", station_id)
            old.end("replaced by a new connection")
        self._report(StationConnected(station_id, admission.version))
        self._connected[station_id].set()
        log.info("CSMS: station %s connected (%s)", station_id, admission.version)
        try:
            async with asyncio.TaskGroup() as group:
                if old is not None:  # closed beside, so the new session is answered at once
                    group.create_task(old.close("replaced by a new connection"))
                await session.serve()
        finally:
            if self._sessions.get(station_id) is session:
                del self._sessions[station_id]
                self._connected[station_id].clear()
            code = connection.close_code
            session.end("connection closed" if code is None else f"connection closed ({code})")
            log.info("CSMS: station %s disconnected", station_id)


def _choose(offered: Sequence[str], configured: OcppVersion | None) -> OcppVersion | None:
    """The version to speak: the configured one if offered, else the best offered."""
    if configured is not None:
        return configured if configured.value in offered else None
    for version in OcppVersion:
        if version.value in offered:
            return version
    return None
