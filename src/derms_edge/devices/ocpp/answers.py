"""What the CSMS answers to each call a station sends, per OCPP version.

The `ocpp` library's central-system side (`ocpp.v201.ChargePoint`, `ocpp.v16.ChargePoint`)
routes each action to an ``@on`` handler here; each handler tells the session what arrived
and returns the answer the standard asks for. Nothing outside devices/ocpp/ sees these classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from ocpp import v16, v201  # type: ignore[import-untyped]
from ocpp.charge_point import ChargePoint  # type: ignore[import-untyped]
from ocpp.messages import MessageType  # type: ignore[import-untyped]
from ocpp.routing import on  # type: ignore[import-untyped]
from websockets.asyncio.server import ServerConnection

Tell = Callable[[str, dict[str, Any]], None]
"""How a handler hands on what arrived: the action and its payload (snake_case)."""

LIBRARY_TIMEOUT_S = 24 * 3600.0
"""The library's own wait for an answer: longer than any of the session's, which governs."""


class InfoAsDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A library's INFO (every frame, every handshake) is the gateway's DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level == logging.INFO else level, msg, *args, **kwargs)


_WIRE_LOG = InfoAsDebug(logging.getLogger(f"{__name__}.wire"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Central(ChargePoint):  # type: ignore[misc]
    """What both versions answer alike (the 1.6 and 2.0.1 answers have the same fields), and
    whether each call was answered by a CALLRESULT or a CALLERROR: the library raises the
    same exception types for a station's CALLERROR and for a payload its schema refused."""

    _call_result: Any

    def __init__(
        self, station_id: str, connection: ServerConnection, tell: Tell, heartbeat_s: int
    ) -> None:
        super().__init__(
            station_id, connection, response_timeout=LIBRARY_TIMEOUT_S, logger=_WIRE_LOG
        )
        self._tell = tell
        self._heartbeat_s = heartbeat_s
        self.answered: dict[str, bool] = {}
        """Unique id: True for a CALLERROR, False for a CALLRESULT; taken by the caller."""

    async def _get_specific_response(self, unique_id: str, timeout_s: float) -> Any:
        response = await super()._get_specific_response(unique_id, timeout_s)
        self.answered[unique_id] = response.message_type_id == MessageType.CallError
        return response

    @on("BootNotification")  # type: ignore[untyped-decorator]
    def boot_notification(self, **payload: Any) -> Any:
        self._tell("BootNotification", payload)
        return self._call_result.BootNotification(
            current_time=_now(), interval=self._heartbeat_s, status="Accepted"
        )

    @on("Heartbeat")  # type: ignore[untyped-decorator]
    def heartbeat(self, **payload: Any) -> Any:
        self._tell("Heartbeat", payload)
        return self._call_result.Heartbeat(current_time=_now())

    @on("StatusNotification")  # type: ignore[untyped-decorator]
    def status_notification(self, **payload: Any) -> Any:
        self._tell("StatusNotification", payload)
        return self._call_result.StatusNotification()

    @on("MeterValues")  # type: ignore[untyped-decorator]
    def meter_values(self, **payload: Any) -> Any:
        self._tell("MeterValues", payload)
        return self._call_result.MeterValues()


class V201(_Central, v201.ChargePoint):  # type: ignore[misc]
    """OCPP 2.0.1 answers to what a station sends."""

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


class V16(_Central, v16.ChargePoint):  # type: ignore[misc]
    """OCPP 1.6 answers to what a charge point sends."""

    def __init__(
        self,
        station_id: str,
        connection: ServerConnection,
        tell: Tell,
        heartbeat_s: int,
        transaction_ids: Iterator[int],
    ) -> None:
        super().__init__(station_id, connection, tell, heartbeat_s)
        self._transaction_ids = transaction_ids

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
