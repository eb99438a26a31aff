"""The status's last dispatch: the last controls message taken, following its event's answers,
for the role it came from, whether it was taken or refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

from derms_edge.model import DeviceKind, Status
from derms_edge.northbound.commands import parse_command
from derms_edge.northbound.mqtt import Message
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.dispatches import DispatchLog
from derms_edge.runtime.reporting import Reporter, status_message
from tests.unit.test_control_loop import Recorder, controls, event, loop_for
from tests.unit.test_reporting import Forwarder, Outbox


def test_the_last_dispatch_follows_its_event_and_names_its_role(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = loop_for(tmp_path, Recorder(), roles={"dso": {"primacy": 1}, "aggr": {"primacy": 2}})
        assert loop.dispatches.last is None
        loop.handle([controls(event("a", 50), role="aggr"), controls(event("b", 40))])
        last = loop.dispatches.last
        assert last is not None
        assert (last.role, last.mrid, last.status) == ("dso", "b", Status.SCHEDULED)
        assert last.answered is not None and last.answered >= last.received
        loop.handle([controls(b'{"mrid": "c"}', role="nobody")])  # refused: still the last
        last = loop.dispatches.last
        assert last is not None
        assert (last.role, last.mrid, last.status, last.reason) == (
            "nobody",
            "c",
            Status.REJECTED,
            "unauthorized",
        )
        loop.close()

    asyncio.run(scenario())


def test_a_payload_without_mrid_is_answered_once_and_later_answers_are_not_its(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        loop = loop_for(tmp_path, Recorder())
        loop.handle([controls(b"not json")])
        first = loop.dispatches.last
        assert first is not None
        assert (first.mrid, first.status, first.reason) == (None, Status.REJECTED, "invalid")
        # a refused default control is answered with mrid null too: not the dispatch's answer
        refused = parse_command(
            Topics("derms", "site"), "derms/v1/site/default_control/dso", b'{"x": 1}', True
        )
        assert refused is not None
        loop.handle([refused])
        assert loop.dispatches.last == first
        loop.close()

    asyncio.run(scenario())


def test_the_status_message_carries_it_in_the_contracts_words(tmp_path: Path) -> None:
    async def scenario() -> None:
        loop = loop_for(tmp_path, Recorder())
        loop.handle([controls(event("a", 50))])
        message = status_message(
            Topics("derms", "site"),
            {},
            online=True,
            quality={},
            buffered=0,
            dropped=0,
            rejected_inbound=0,
            last_dispatch=loop.dispatches.last,
        )
        data = json.loads(message.payload)["last_dispatch"]
        assert data["role"] == "dso" and data["mrid"] == "a" and data["status"] == "scheduled"
        assert data["received"].endswith("Z") and data["answered"].endswith("Z")
        loop.close()

    asyncio.run(scenario())


def test_the_status_is_published_again_when_only_the_last_dispatch_changed() -> None:

    class Session:
        def __init__(self) -> None:
            self.connected = asyncio.Event()
            self.connected.set()
            self.statuses: list[dict[str, object]] = []

        def publish(self, message: Message) -> None:
            self.statuses.append(json.loads(message.payload))

    session, log = Session(), DispatchLog()
    reporter = Reporter(
        Topics("derms", "site"),
        {"inv1": DeviceKind.INVERTER},
        {},
        outbox=cast(Any, Outbox()),
        session=cast(Any, session),
        forwarder=cast(Any, Forwarder()),
        qos=1,
        interval_s=1,
        store_every_round=False,
        on_round=lambda: None,
        rejected_inbound=lambda: 0,
        last_dispatch=lambda: log.last,
    )
    reporter.publish_telemetry()
    reporter.publish_telemetry()  # nothing changed: not again
    log.taken("dso", "ev-1", datetime.now(UTC))
    reporter.publish_telemetry()
    assert [s["last_dispatch"] for s in session.statuses] == [
        None,
        {
            "role": "dso",
            "mrid": "ev-1",
            "received": ANY,
            "status": None,
            "reason": None,
            "detail": None,
            "answered": None,
        },
    ]
