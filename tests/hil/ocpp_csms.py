"""A minimal CSMS for the OCPP station tests, on the `ocpp` library's central-system side:
accepts every station, records what it sends, lets the test call it. A stand-in for the
gateway's CSMS (src/derms_edge/devices/ocpp/csms.py, built in parallel)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ocpp import v16, v201
from ocpp.routing import on
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

HOST = "127.0.0.1"
HEARTBEAT_S = 1
VERSIONS = ("2.0.1", "1.6")


def _now() -> str:
    return datetime.now(UTC).isoformat()


Answer = Callable[[Any], Any]
"""What a handler answers, given the central-system ChargePoint (whose `csms` is the Csms)."""


def _handler(action: str, answer: Answer) -> Any:
    """An @on(action) handler, on_<action>, that records the payload and answers
    `answer(self)` (the library finds handlers by function name)."""

    def handle(self: Any, **payload: Any) -> Any:
        self.csms.messages.append((action, payload))
        return answer(self)

    handle.__name__ = f"on_{action}"
    return on(action)(handle)


def _boot(version: Any) -> Answer:
    def answer(cp: Any) -> Any:
        statuses = cp.csms.boot_statuses
        status = statuses.pop(0) if statuses else "Accepted"
        return version.call_result.BootNotification(_now(), HEARTBEAT_S, status)

    return answer


def _central(version: Any, answers: dict[str, Answer]) -> type:
    """A central-system ChargePoint class of `version` recording into its Csms."""

    def init(self: Any, station_id: str, ws: ServerConnection, csms: Csms) -> None:
        version.ChargePoint.__init__(self, station_id, ws)
        self.csms = csms

    common: dict[str, Answer] = {
        "BootNotification": _boot(version),
        "Heartbeat": lambda cp: version.call_result.Heartbeat(_now()),
        "StatusNotification": lambda cp: version.call_result.StatusNotification(),
        "MeterValues": lambda cp: version.call_result.MeterValues(),
    }
    handlers = {f"on_{a}": _handler(a, f) for a, f in (common | answers).items()}
    return type("Central", (version.ChargePoint,), {"__init__": init, **handlers})


Central201 = _central(v201, {"TransactionEvent": lambda cp: v201.call_result.TransactionEvent()})
Central16 = _central(
    v16,
    {
        "StartTransaction": lambda cp: v16.call_result.StartTransaction(
            transaction_id=4711, id_tag_info={"status": "Accepted"}
        ),
        "StopTransaction": lambda cp: v16.call_result.StopTransaction(),
    },
)


class Csms:
    """Serves ws://127.0.0.1:<port>/ocpp/<station id> for one OCPP version, or "any"; the
    last station to connect is the one `call` talks to."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.boot_statuses: list[str] = []
        """Answers to the next BootNotifications (then Accepted)."""
        self.station: Any = None
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.port = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ocpp"

    async def start(self) -> None:
        subs = [Subprotocol(f"ocpp{v}") for v in VERSIONS if self.version in (v, "any")]
        self._server = await serve(self._connected, HOST, self.port, subprotocols=subs)
        self.port = self._server.sockets[0].getsockname()[1] if not self.port else self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _connected(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        self.auth.append(ws.request.headers.get("Authorization"))
        station_id = ws.request.path.rsplit("/", 1)[-1]
        cls = Central201 if ws.subprotocol == "ocpp2.0.1" else Central16
        self.station = cls(station_id, ws, self)
        with contextlib.suppress(ConnectionClosed):  # the station went away
            await self.station.start()

    def of(self, action: str) -> list[dict[str, Any]]:
        """Payloads of every `action` received so far."""
        return [p for a, p in self.messages if a == action]

    async def wait(
        self,
        action: str,
        where: Callable[[dict[str, Any]], bool] = lambda p: True,
        timeout_s: float = 5.0,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first `action` payload (from message index `after`) that satisfies `where`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for a, p in self.messages[after:]:
                if a == action and where(p):
                    return p
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {action} matching within {timeout_s} s: {self.messages[-5:]}")

    async def call(self, payload: Any) -> Any:
        assert self.station is not None, "no station connected"
        return await self.station.call(payload)
