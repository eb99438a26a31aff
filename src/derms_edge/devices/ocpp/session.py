"""One connected charging station, seen from the CSMS: its calls out and its messages in.

The `ocpp` library's central-system side does the framing, the schema validation and the
one-call-at-a-time rule; a version-specific handler class under each session answers what the
station sends, as OCPP 2.0.1 or 1.6 requires, and hands every inbound message on as a
`StationMessage` (the payload as on the wire, camelCase). Above the session nothing knows the
library: `StationSession.call` sends a request object and returns the answer, or raises the
gateway's errors (`DeviceTimeout`, `ConnectionLost`, `CallErrorAnswer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ocpp import v16, v201  # type: ignore[import-untyped]
from ocpp.charge_point import snake_to_camel_case  # type: ignore[import-untyped]
from ocpp.exceptions import OCPPError  # type: ignore[import-untyped]
from ocpp.routing import on  # type: ignore[import-untyped]
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from derms_edge.errors import ConnectionLost, DeviceError, DeviceException, DeviceTimeout

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0
"""How long a call waits for the station's answer, unless the caller says otherwise."""
_LIBRARY_TIMEOUT_S = 24 * 3600.0
"""The library's own wait for an answer: longer than any of ours, which governs."""


class OcppVersion(StrEnum):
    """The OCPP-J versions the CSMS speaks, by their websocket subprotocol names."""

    V201 = "ocpp2.0.1"
    V16 = "ocpp1.6"


@dataclass(frozen=True, slots=True)
class StationConnected:
    """A station's websocket was accepted: a new session (after a reconnect too)."""

    station_id: str
    version: OcppVersion


@dataclass(frozen=True, slots=True)
class StationDisconnected:
    """A station's session ended: its connection closed, or a newer one replaced it."""

    station_id: str
    version: OcppVersion
    reason: str


@dataclass(frozen=True, slots=True)
class StationMessage:
    """A call the station sent (BootNotification, MeterValues, TransactionEvent…), answered."""

    station_id: str
    version: OcppVersion
    action: str
    payload: Mapping[str, Any]
    """The request's payload with the standard's (camelCase) field names; a 1.6
    StartTransaction's also holds the ``transactionId`` the CSMS gave it."""
    received_at: datetime
    """Wall-clock time (UTC) the CSMS received it."""


StationEvent = StationConnected | StationDisconnected | StationMessage
Report = Callable[[StationEvent], None]
Tell = Callable[[str, dict[str, Any]], None]


class CallErrorAnswer(DeviceException):
    """The station answered a call with a CALLERROR (NotSupported, PropertyConstraintViolation…).

    ``error_code`` is OCPP's code; only an ``InternalError`` is worth trying again.
    """

    def __init__(self, station_id: str, action: str, error_code: str, description: str) -> None:
        DeviceError.__init__(
            self,
            f"station {station_id} answered {action} with CALLERROR {error_code}: "
            f"{description or 'no description'}",
        )
        self.error_code = error_code
        self.retryable = error_code == "InternalError"


class InfoAsDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A library's INFO (every frame, every handshake) is the gateway's DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)


_WIRE_LOG = InfoAsDebug(logging.getLogger(f"{__name__}.wire"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _V201(v201.ChargePoint):  # type: ignore[misc]
    """OCPP 2.0.1 answers to what a station sends (K01-K08 smart charging needs these)."""

    def __init__(
        self, station_id: str, connection: ServerConnection, tell: Tell, heartbeat_s: int
    ) -> None:
        super().__init__(
            station_id, connection, response_timeout=_LIBRARY_TIMEOUT_S, logger=_WIRE_LOG
        )
        self._tell = tell
        self._heartbeat_s = heartbeat_s

    @on("BootNotification")  # type: ignore[untyped-decorator]
    def boot_notification(self, **payload: Any) -> Any:
        self._tell("BootNotification", payload)
        return v201.call_result.BootNotification(
            current_time=_now(), interval=self._heartbeat_s, status="Accepted"
        )

    @on("Heartbeat")  # type: ignore[untyped-decorator]
    def heartbeat(self, **payload: Any) -> Any:
        self._tell("Heartbeat", payload)
        return v201.call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")  # type: ignore[untyped-decorator]
    def status_notification(self, **payload: Any) -> Any:
        self._tell("StatusNotification", payload)
        return v201.call_result.StatusNotification()

    @on("MeterValues")  # type: ignore[untyped-decorator]
    def meter_values(self, **payload: Any) -> Any:
        self._tell("MeterValues", payload)
        return v201.call_result.MeterValues()

    @on("TransactionEvent")  # type: ignore[untyped-decorator]
    def transaction_event(self, **payload: Any) -> Any:
        self._tell("TransactionEvent", payload)
        if "id_token" not in payload:
            return v201.call_result.TransactionEvent()
        return v201.call_result.TransactionEvent(id_token_info={"status": "Accepted"})

    @on("Authorize")  # type: ignore[untyped-decorator]
    def authorize(self, **payload: Any) -> Any:
        self._tell("Authorize", payload)
        return v201.call_result.Authorize(id_token_info={"status": "Accepted"})


class _V16(v16.ChargePoint):  # type: ignore[misc]
    """OCPP 1.6 answers to what a charge point sends."""

    def __init__(
        self,
        station_id: str,
        connection: ServerConnection,
        tell: Tell,
        heartbeat_s: int,
        transaction_ids: Iterator[int],
    ) -> None:
        super().__init__(
            station_id, connection, response_timeout=_LIBRARY_TIMEOUT_S, logger=_WIRE_LOG
        )
        self._tell = tell
        self._heartbeat_s = heartbeat_s
        self._transaction_ids = transaction_ids

    @on("BootNotification")  # type: ignore[untyped-decorator]
    def boot_notification(self, **payload: Any) -> Any:
        self._tell("BootNotification", payload)
        return v16.call_result.BootNotification(
            current_time=_now(), interval=self._heartbeat_s, status="Accepted"
        )

    @on("Heartbeat")  # type: ignore[untyped-decorator]
    def heartbeat(self, **payload: Any) -> Any:
        self._tell("Heartbeat", payload)
        return v16.call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")  # type: ignore[untyped-decorator]
    def status_notification(self, **payload: Any) -> Any:
        self._tell("StatusNotification", payload)
        return v16.call_result.StatusNotification()

    @on("MeterValues")  # type: ignore[untyped-decorator]
    def meter_values(self, **payload: Any) -> Any:
        self._tell("MeterValues", payload)
        return v16.call_result.MeterValues()

    @on("StartTransaction")  # type: ignore[untyped-decorator]
    def start_transaction(self, **payload: Any) -> Any:
        transaction_id = next(self._transaction_ids)
        self._tell("StartTransaction", {**payload, "transaction_id": transaction_id})
        return v16.call_result.StartTransaction(
            transaction_id=transaction_id, id_tag_info={"status": "Accepted"}
        )

    @on("StopTransaction")  # type: ignore[untyped-decorator]
    def stop_transaction(self, **payload: Any) -> Any:
        self._tell("StopTransaction", payload)
        if "id_tag" not in payload:
            return v16.call_result.StopTransaction()
        return v16.call_result.StopTransaction(id_tag_info={"status": "Accepted"})

    @on("Authorize")  # type: ignore[untyped-decorator]
    def authorize(self, **payload: Any) -> Any:
        self._tell("Authorize", payload)
        return v16.call_result.Authorize(id_tag_info={"status": "Accepted"})


_CALL_MODULES = {OcppVersion.V201: v201.call.__name__, OcppVersion.V16: v16.call.__name__}


class StationSession:
    """One live connection to one charging station, whichever OCPP version it speaks."""

    def __init__(
        self,
        station_id: str,
        version: OcppVersion,
        connection: ServerConnection,
        report: Report,
        *,
        heartbeat_s: int,
        transaction_ids: Iterator[int],
        call_timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self.station_id = station_id
        self.version = version
        self.connection = connection
        self.call_timeout_s = call_timeout_s
        self._report = report
        self._ended = False
        self._handler: Any
        if version is OcppVersion.V201:
            self._handler = _V201(station_id, connection, self._tell, heartbeat_s)
        else:
            self._handler = _V16(station_id, connection, self._tell, heartbeat_s, transaction_ids)

    def _tell(self, action: str, payload: dict[str, Any]) -> None:
        self._report(
            StationMessage(
                station_id=self.station_id,
                version=self.version,
                action=action,
                payload=snake_to_camel_case(payload),
                received_at=datetime.now(UTC),
            )
        )

    async def serve(self) -> None:
        """Answer the station's messages and route its answers until the connection closes."""
        with contextlib.suppress(ConnectionClosed):
            await self._handler.start()

    def end(self, reason: str) -> None:
        """Say once that this session is over (closed, or replaced by a newer connection)."""
        if self._ended:
            return
        self._ended = True
        self._report(StationDisconnected(self.station_id, self.version, reason))

    async def call(self, request: object, timeout_s: float | None = None) -> Any:
        """Send one call (an ``ocpp.v201.call`` or ``ocpp.v16.call`` object of this station's
        version) and return the station's answer (the matching ``call_result`` object).

        Raises DeviceTimeout when no answer comes within ``timeout_s`` (the session's
        ``call_timeout_s`` by default), ConnectionLost when the connection closes first,
        CallErrorAnswer when the station answers with a CALLERROR.
        """
        action = type(request).__name__
        if type(request).__module__ != _CALL_MODULES[self.version]:
            raise TypeError(
                f"station {self.station_id} speaks {self.version}: {action} must be an "
                f"{_CALL_MODULES[self.version]} object, not {type(request).__module__}"
            )
        wait_s = self.call_timeout_s if timeout_s is None else timeout_s
        answer = asyncio.create_task(self._handler.call(request, suppress=False))
        closed = asyncio.create_task(self.connection.wait_closed())
        try:
            await asyncio.wait(
                {answer, closed}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            pending = [task for task in (answer, closed) if not task.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if not answer.done() or answer.cancelled():
            if closed.done() and not closed.cancelled():
                raise ConnectionLost(f"station {self.station_id} disconnected during {action}")
            raise DeviceTimeout(f"station {self.station_id} did not answer {action} in {wait_s} s")
        error = answer.exception()
        if error is None:
            return answer.result()
        if isinstance(error, OCPPError):
            raise CallErrorAnswer(
                self.station_id, action, str(error.code), str(error.description)
            ) from error
        if isinstance(error, ConnectionClosed):
            raise ConnectionLost(
                f"station {self.station_id} disconnected during {action}"
            ) from error
        raise error

    async def close(self, reason: str) -> None:
        """Close the websocket (1001 going away) and say the session is over."""
        self.end(reason)
        await self.connection.close(reason=reason[:120])
