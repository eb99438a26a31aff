"""One connected charging station, seen from the CSMS: its calls out and its messages in.

The `ocpp` library's central-system side does the framing, the schema validation and the
one-call-at-a-time rule; a version-specific handler class under each session (answers.py)
answers what the station sends, as OCPP 2.0.1 or 1.6 requires, and the session hands every
inbound message on as a `StationMessage` (the payload with the standard's camelCase names).
`StationSession.call` sends a request object (built by the caller from ``ocpp.v201.call`` or
``ocpp.v16.call``) and returns the library's answer object, or raises the gateway's errors
(`DeviceTimeout`, `ConnectionLost`, `CallErrorAnswer`, `DeviceProtocolError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ocpp import v16, v201  # type: ignore[import-untyped]
from ocpp.charge_point import snake_to_camel_case  # type: ignore[import-untyped]
from ocpp.exceptions import OCPPError, UnknownCallErrorCodeError  # type: ignore[import-untyped]
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from derms_edge.devices.ocpp.answers import V16, V201
from derms_edge.errors import (
    ConnectionLost,
    DeviceError,
    DeviceException,
    DeviceProtocolError,
    DeviceTimeout,
)

CALL_TIMEOUT_S = 30.0
"""How long a call waits for the station's answer, unless the caller says otherwise."""


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


_CALL_MODULES = {OcppVersion.V201: v201.call.__name__, OcppVersion.V16: v16.call.__name__}


def _cause(error: Any) -> str:
    """What the library's schema validation found wrong, in one line (not the schema)."""
    details = error.details
    cause = details["cause"] if isinstance(details, dict) and "cause" in details else None
    return str(cause or error.description).splitlines()[0]


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
            self._handler = V201(station_id, connection, self._tell, heartbeat_s)
        else:
            self._handler = V16(station_id, connection, self._tell, heartbeat_s, transaction_ids)

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
        CallErrorAnswer when the station answers with a CALLERROR, DeviceProtocolError when
        its answer breaks the OCPP schema; ValueError (ours, not sent) when ``request`` does.
        """
        action = type(request).__name__
        if type(request).__module__ != _CALL_MODULES[self.version]:
            raise TypeError(
                f"station {self.station_id} speaks {self.version}: {action} must be an "
                f"{_CALL_MODULES[self.version]} object, not {type(request).__module__}"
            )
        wait_s = self.call_timeout_s if timeout_s is None else timeout_s
        unique_id = str(uuid.uuid4())
        answer = asyncio.create_task(
            self._handler.call(request, suppress=False, unique_id=unique_id)
        )
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
        call_error = self._handler.answered.pop(unique_id, None)
        if not answer.done() or answer.cancelled():
            if closed.done() and not closed.cancelled():
                raise ConnectionLost(f"station {self.station_id} disconnected during {action}")
            raise DeviceTimeout(f"station {self.station_id} did not answer {action} in {wait_s} s")
        error = answer.exception()
        if error is None:
            return answer.result()
        if isinstance(error, ConnectionClosed):
            raise ConnectionLost(
                f"station {self.station_id} disconnected during {action}"
            ) from error
        if call_error and isinstance(error, OCPPError | UnknownCallErrorCodeError):
            code = str(getattr(error, "code", "unknown to OCPP"))
            description = str(getattr(error, "description", error))
            raise CallErrorAnswer(self.station_id, action, code, description) from error
        if call_error is False and isinstance(error, OCPPError):
            raise DeviceProtocolError(
                f"station {self.station_id} answered {action} not as OCPP "
                f"{self.version} says: {_cause(error)}"
            ) from error
        if isinstance(error, OCPPError):
            raise ValueError(
                f"{action} for station {self.station_id} is not valid OCPP {self.version}, "
                f"not sent: {_cause(error)}"
            ) from error
        raise error

    async def close(self, reason: str) -> None:
        """Close the websocket (1001 going away) and say the session is over."""
        self.end(reason)
        await self.connection.close(reason=reason[:120])
