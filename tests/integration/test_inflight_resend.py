"""Messages in flight when the broker dies are sent again, with a real broker.

tests/unit/test_forward.py shows the forwarder's side against a fake session; here the real
``MqttSession`` (paho), ``Forwarder`` and ``Outbox``, wired as runtime/gateway.py wires them,
talk to a real Mosquitto. The broker is paused (SIGSTOP) and a batch of telemetry is added
to the outbox: the forwarder hands it to paho, paho writes it to the socket, and it lies in
the broker's receive queue, unread, so no PUBACK can come. Then the broker is killed
(SIGKILL) with the batch in flight and started again on the same port. The session
reconnects by itself, paho sends the batch again (with the DUP flag), the PUBACKs come, and
the forwarder marks every row done: the outbox's backlog is 0.

Why paused first: a broker killed while it runs may have acknowledged part of the batch and
hold it for the subscriber in memory only, and it dies with it. That loss is the broker's,
after its PUBACK, outside what the gateway promises; it would make the subscriber's count a
matter of timing. Paused, the broker has acknowledged nothing, so the gateway alone must
deliver every row.

The subscriber holds a persistent session (clean_session=False, QoS 1). Its subscription is
saved to the broker's persistence file (SIGUSR1) before the gateway's session connects, so
the broker started again knows the subscriber (and nothing of the gateway's session) and
keeps the batch for it, whichever of the two clients reconnects first.

Copies: docs/mqtt-api.md allows a message in flight as the connection broke to arrive twice
(QoS 1 is at least once). Here the broker died without reading the first copies, so the
subscriber can only see what was sent after the restart: paho's one resend of each. A
second copy would mean the forwarder sent a row paho already had, which it must not (its
rows in flight are ``held``); so each seq arrives exactly once, in the original order.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from derms_edge.config import MqttSection
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.forward import Forwarder
from tests.support.servers import Mosquitto
from tests.support.sessions import SessionProbe
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.integration

ROOT = "derms/v1/inflight-site"
TOPIC = f"{ROOT}/telemetry/inv1"
CLIENT_ID = "derms-edge-inflight-site"
BATCH = 50
"""Rows in flight as the broker dies: fewer than the forwarder's window, so all go at once."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of its own (it is killed), saving sessions, logging every packet."""
    server = Mosquitto(tmp_path / "mosquitto", persistent=True)
    server.config.write_text(server.config.read_text() + "log_type all\n")
    yield server.start()
    server.stop()


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[SessionProbe]:
    listener = SessionProbe(broker.port, "inflight-probe", ROOT, filters=[f"{ROOT}/telemetry/+"])
    yield listener
    listener.close()


def telemetry(seq: int) -> Message:
    body = {"seq": seq, "device": "inv1", "quality": "ok", "w": 1000.0 + seq}
    return Message("telemetry", TOPIC, json.dumps(body).encode())


def unread_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the broker's established connections."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "01" and int(local.split(":")[1], 16) == port:
            total += int(queues.split(":")[1], 16)
    return total


def save_state(broker: Mosquitto) -> None:
    """Have the broker write its persistence file now (SIGUSR1) and wait until it has."""
    assert broker.process is not None
    saved = broker.directory / "mosquitto.db"
    before = saved.stat().st_mtime_ns if saved.exists() else 0
    broker.process.signal(signal.SIGUSR1)
    eventually(
        lambda: saved.exists() and saved.stat().st_mtime_ns != before,
        timeout_s=5,
        what="the broker saved its state",
    )


def kill(broker: Mosquitto) -> None:
    """SIGKILL: the broker dies with what it has not read."""
    assert broker.process is not None
    broker.process.signal(signal.SIGKILL)
    broker.process.popen.wait(10)
    broker.process.stop()  # closes its log file
    broker.process = None


def test_a_batch_in_flight_when_the_broker_dies_is_sent_again_and_done(
    tmp_path: Path, broker: Mosquitto, subscriber: SessionProbe
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=64 * 1024 * 1024)
    session = MqttSession(
        MqttSection(host="127.0.0.1", port=broker.port, reconnect_max_s=1),
        client_id=CLIENT_ID,
        will=Message("state", f"{ROOT}/status", b'{"online": false}', retain=True),
    )
    forwarder = Forwarder(outbox, session, replay_rate_per_s=200)
    # who tells whom, as runtime/gateway.py connects them
    outbox.add_listener(forwarder.wake)
    session.on_connected(forwarder.reconnected)
    session.on_published(forwarder.published)
    batch = [telemetry(seq) for seq in range(1, BATCH + 1)]

    save_state(broker)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        outbox.on_durable(functools.partial(loop.call_soon_threadsafe, forwarder.wake))
        session.start()
        task = asyncio.create_task(forwarder.run())
        try:
            await until(session.connected.is_set, "the session connected")
            assert broker.process is not None
            broker.process.signal(signal.SIGSTOP)
            outbox.add(batch)
            sent = sum(len(m.payload) for m in batch)
            await until(
                lambda: unread_bytes(broker.port) >= sent, "the batch in the broker's socket"
            )
            await asyncio.sleep(0.3)
            assert outbox.backlog(MQTT) == BATCH, "done before its PUBACK"
            assert forwarder.buffered == BATCH

            kill(broker)
            await until(lambda: not session.connected.is_set(), "the session saw it die")
            assert outbox.backlog(MQTT) == BATCH, "a row in flight was marked done"
            broker.start()
            await until(lambda: outbox.backlog(MQTT) == 0, "every row done", timeout_s=20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await session.stop([])

    try:
        asyncio.run(scenario())
    finally:
        outbox.close()

    eventually(lambda: len(subscriber.on(TOPIC)) >= BATCH, what="the subscriber received the batch")
    time.sleep(1.0)  # time for a copy, would one come
    received = [m.json()["seq"] for m in subscriber.on(TOPIC)]
    assert received == list(range(1, BATCH + 1)), "each seq once, in order"
    payloads = {m.payload for m in subscriber.on(TOPIC)}
    assert payloads == {m.payload for m in batch}, "each exactly as it was made"

    # the broker's log, one part per life: the first never read the batch; the second
    # received it once, every message flagged DUP (paho's resend of what was in flight)
    lives = broker.directory.joinpath("mosquitto.log").read_text().split(" running\n")
    assert len(lives) == 3, "the broker ran twice"
    assert f"Received PUBLISH from {CLIENT_ID}" not in lives[1], "the paused broker read it"
    publish = re.compile(rf"Received PUBLISH from {CLIENT_ID} \(d(\d), q1, r0, m\d+, '{TOPIC}'")
    assert publish.findall(lives[2]) == ["1"] * BATCH
