"""The gateway's MQTT session driven by the event loop (no network thread), with a real
Mosquitto: what moving paho into the loop could break.

- Over TLS, bytes already decrypted sit in the SSL object where epoll cannot see them:
  packets sharing a record must still be read at once, not when the next record arrives.
- paho's callbacks run in the event loop now: a handler that raises must not stop the
  session (the next message still arrives) and a control is handled on the loop's thread,
  without a network thread of paho's.
- Only connect and the TLS handshake run in a thread: stopping while a handshake hangs
  returns at once, and the connection that completes later is closed; what the loop
  publishes while the thread has paho waits for it (never a PUBLISH before the CONNECT).
- After a reconnection, what paho queued during the outage goes before the fresh retained
  state the reconnection publishes; stop() after a reconnection still waits for the final
  message's PUBACK.
- What the gateway publishes is written in the turn of the loop that hands it over, but not
  inside paho's own handling, where paho holds its callback lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from paho.mqtt.publish import single

from derms_edge.config import MqttSection
from derms_edge.config.sections import MqttTls
from derms_edge.northbound.mqtt import Message, MqttSession
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import LOOPBACK, Mosquitto

pytestmark = pytest.mark.integration

TOPIC = "derms/v1/session-site/in"
RECORD = 50
"""Packets in one TLS record (about 1.5 kB, well under a record's 16 kB)."""


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert(LOOPBACK)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def session(port: int, tls: MqttTls | None = None) -> MqttSession:
    return MqttSession(
        MqttSection(host=LOOPBACK, port=port, tls=tls, reconnect_max_s=1),
        client_id=f"session-test-{time.monotonic_ns()}",
        will=Message("state", "derms/v1/session-site/status", b"{}", retain=True),
    )


async def connected(mqtt: MqttSession) -> None:
    async with asyncio.timeout(10):
        await mqtt.connected.wait()
    await asyncio.sleep(0.3)  # the SUBACK


def publish_packet(topic: str, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 0 (remaining length < 128)."""
    body = len(topic).to_bytes(2, "big") + topic.encode() + payload
    return bytes([0x30, len(body)]) + body


CONNACK = b"\x20\x02\x00\x00"


def test_packets_sharing_one_tls_record_are_all_read(pki: Pki) -> None:
    """A broker may put several packets in one TLS record (Mosquitto writes a record per
    packet, others do not). Reading the first decrypts the whole record into the SSL object,
    where epoll cannot see the rest: each one must still be handed on at once, not when the
    next record happens to arrive (here none does)."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    finished = threading.Event()

    def broker() -> None:
        conn, _ = listener.accept()
        with pki.server_context().wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)  # CONNECT
            tls.sendall(CONNACK)
            tls.sendall(b"".join(publish_packet(TOPIC, b"%d" % n) for n in range(RECORD)))
            finished.wait(10)

    threading.Thread(target=broker, daemon=True).start()
    received: list[bytes] = []
    all_in = asyncio.Event()
    mqtt = session(port, MqttTls(ca_file=pki.ca))

    def handler(_topic: str, payload: bytes, _retained: bool) -> None:
        received.append(payload)
        if len(received) == RECORD:
            all_in.set()

    mqtt.subscribe([TOPIC], handler)

    async def scenario() -> None:
        mqtt.start()
        try:
            async with asyncio.timeout(10):
                await mqtt.connected.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await all_in.wait()
        finally:
            finished.set()
            await mqtt.stop([], timeout_s=0.5)

    try:
        asyncio.run(scenario())
    finally:
        listener.close()
    assert received == [b"%d" % n for n in range(RECORD)]


def test_a_failing_handler_does_not_stop_the_session(broker: Mosquitto) -> None:
    """The handler runs on the event loop's thread, within paho's read; when it raises,
    paho's packet handling is not cut short: the PUBACK goes, the next message arrives."""
    seen: list[tuple[bytes, int]] = []
    second = asyncio.Event()
    mqtt = session(broker.port)

    def handler(_topic: str, payload: bytes, _retained: bool) -> None:
        seen.append((payload, threading.get_ident()))
        if payload == b"first":
            raise RuntimeError("the gateway's handler failed")
        second.set()

    mqtt.subscribe([TOPIC], handler)

    async def scenario() -> int:
        mqtt.start()
        try:
            await connected(mqtt)
            await asyncio.to_thread(publish_one, broker.port, b"first")
            await asyncio.to_thread(publish_one, broker.port, b"second")
            async with asyncio.timeout(5):
                await second.wait()
            return threading.get_ident()
        finally:
            await mqtt.stop([])

    loop_thread = asyncio.run(scenario())
    assert [payload for payload, _ in seen] == [b"first", b"second"]
    assert {thread for _, thread in seen} == {loop_thread}


def publish_one(port: int, payload: bytes) -> None:
    single(TOPIC, payload, qos=1, hostname=LOOPBACK, port=port)


def test_no_network_thread_while_connected(broker: Mosquitto) -> None:
    """Connected and exchanging messages, the session runs no thread besides the loop's."""
    mqtt = session(broker.port)

    async def scenario() -> list[str]:
        before = {t.ident for t in threading.enumerate()}
        mqtt.start()
        try:
            await connected(mqtt)
            for n in range(20):
                mqtt.publish(Message("state", TOPIC, b"%d" % n))
            await asyncio.sleep(0.3)
            return [t.name for t in threading.enumerate() if t.ident not in before]
        finally:
            await mqtt.stop([])

    assert asyncio.run(scenario()) == []


def test_stop_while_the_handshake_hangs_returns_at_once(pki: Pki) -> None:
    """A listener that accepts TCP and holds back its TLS answer: the connect thread waits in
    paho's handshake; stop() does not wait for it. When the handshake then completes, the
    connection is closed unused (the listener reads end of file, no CONNECT)."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    accepted = threading.Event()
    stopped = threading.Event()
    after_stop: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.set()
        stopped.wait(10)
        with pki.server_context().wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(3)
            after_stop.append(tls.recv(1024))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    mqtt = session(port, MqttTls(ca_file=pki.ca))

    async def scenario() -> float:
        mqtt.start()
        assert await asyncio.to_thread(accepted.wait, 5), "the session never connected"
        started = time.monotonic()
        await mqtt.stop([])
        took = time.monotonic() - started
        stopped.set()  # the handshake completes now, in the still running loop's process
        await asyncio.to_thread(server.join, 5)
        return took

    try:
        assert asyncio.run(scenario()) < 0.5
        assert after_stop == [b""]
    finally:
        stopped.set()
        listener.close()


@pytest.mark.parametrize(("keepalive_s", "latest_s"), [(5, 12), (10, 24)])
def test_a_broker_gone_silent_is_noticed_by_the_keepalive(
    tmp_path: Path, keepalive_s: int, latest_s: float
) -> None:
    """The broker stops answering without closing the connection (SIGSTOP: a host frozen,
    a link cut without a reset): no EOF ever comes, only paho's keepalive check, which the
    session now runs itself, can tell. A PINGREQ goes after a keepalive of silence and the
    connection is given up a keepalive later without its PINGRESP, each at most one check
    interval late (1 s at keepalive 5, 2 s at 10); once the broker answers again the
    session is back."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    process = broker.process
    assert process is not None
    mqtt = MqttSession(
        MqttSection(host=LOOPBACK, port=broker.port, keepalive_s=keepalive_s, reconnect_max_s=1),
        client_id="session-test-keepalive",
        will=Message("state", "derms/v1/session-site/status", b"{}", retain=True),
    )

    async def scenario() -> float:
        mqtt.start()
        try:
            await connected(mqtt)
            process.signal(signal.SIGSTOP)
            frozen = time.monotonic()
            async with asyncio.timeout(latest_s + 3):
                while mqtt.connected.is_set():
                    await asyncio.sleep(0.1)
            noticed = time.monotonic() - frozen
            process.signal(signal.SIGCONT)
            async with asyncio.timeout(10):  # back once the broker answers again
                await mqtt.connected.wait()
            return noticed
        finally:
            process.signal(signal.SIGCONT)
            await mqtt.stop([], timeout_s=1)

    try:
        noticed = asyncio.run(scenario())
    finally:
        broker.stop()
    # paho sends its PINGREQ a keepalive after the last bytes it received (the settle in
    # `connected`, 0.3 s before the SIGSTOP) and gives up a keepalive after the PINGREQ
    assert 2 * keepalive_s - 1 <= noticed <= latest_s


STATE = "derms/v1/session-site/state"


def retained(port: int) -> bytes:
    """What the broker keeps on STATE."""
    probe = MqttProbe(port, STATE)
    try:
        return probe.wait_for(lambda m: m.retain, timeout_s=5).payload
    finally:
        probe.close()


async def disconnected(mqtt: MqttSession) -> None:
    async with asyncio.timeout(10):
        while mqtt.connected.is_set():
            await asyncio.sleep(0.05)


def test_state_queued_in_an_outage_does_not_overtake_the_fresh_state(tmp_path: Path) -> None:
    """A retained value published while the broker is away waits in paho; the reconnection
    publishes the fresh one (as the reporter's announce does). paho sends the queued one
    again first, so the fresh one is what the broker keeps."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    mqtt = session(broker.port)
    mqtt.on_connected(lambda: mqtt.publish(Message("state", STATE, b"fresh", retain=True)))

    async def scenario() -> None:
        mqtt.start()
        try:
            await connected(mqtt)
            broker.stop()
            await disconnected(mqtt)
            mqtt.publish(Message("state", STATE, b"stale", retain=True))  # queued in paho
            broker.start()
            await connected(mqtt)
        finally:
            await mqtt.stop([])

    try:
        asyncio.run(scenario())
        assert retained(broker.port) == b"fresh"
    finally:
        broker.stop()


def test_stop_after_a_reconnection_waits_for_the_final_puback(tmp_path: Path) -> None:
    """Every disconnection says "nothing more will be delivered on this connection"; that
    must not let a later stop() skip the wait for its final message's PUBACK."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    mqtt = session(broker.port)
    delivered: list[int] = []
    mqtt.on_published(delivered.append)

    async def scenario() -> None:
        mqtt.start()
        await connected(mqtt)
        broker.stop()
        await disconnected(mqtt)
        broker.start()
        await connected(mqtt)
        await mqtt.stop([Message("state", STATE, b"offline", retain=True)])

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
    assert len(delivered) == 1  # the final message's PUBACK, read before disconnecting


def test_what_the_loop_publishes_while_connecting_goes_after_the_connect(
    broker: Mosquitto,
) -> None:
    """The connect thread opens the socket, hands it to paho, then queues CONNECT; a retained
    value the loop publishes in between must not reach the broker first (Mosquitto drops a
    connection whose first packet is no CONNECT). Here the thread is held 0.5 s in that gap,
    as a busy machine may hold it; the value waits and follows the CONNECT, on the first
    connection."""
    mqtt = session(broker.port)
    client = mqtt._client
    send_connect = client._send_connect
    connects: list[float] = []

    def held_in_the_gap(keepalive: int) -> Any:
        connects.append(time.monotonic())
        time.sleep(0.5)
        return send_connect(keepalive)

    client._send_connect = held_in_the_gap  # type: ignore[method-assign]

    async def scenario() -> None:
        mqtt.start()
        try:
            async with asyncio.timeout(5):
                while not connects:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the thread is in the gap: the socket is paho's
            mqtt.publish(Message("state", STATE, b"during", retain=True))
            await connected(mqtt)
        finally:
            await mqtt.stop([])

    asyncio.run(scenario())
    assert retained(broker.port) == b"during"
    assert len(connects) == 1  # the first connection held: not dropped and made again


def test_a_failure_of_the_session_itself_is_logged_and_followed_by_a_reconnection(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Something in the session's own task raises (here paho's keepalive check, once): the
    session says so and connects again, rather than leaving the gateway without MQTT."""
    mqtt = session(broker.port)
    client = mqtt._client
    loop_misc = client.loop_misc
    failures: list[None] = []

    def failing_once() -> Any:
        if not failures:
            failures.append(None)
            raise RuntimeError("a bug in the session")
        return loop_misc()

    async def scenario() -> None:
        mqtt.start()
        try:
            await connected(mqtt)
            client.loop_misc = failing_once  # type: ignore[method-assign]
            await disconnected(mqtt)
            await connected(mqtt)
        finally:
            await mqtt.stop([])

    asyncio.run(scenario())
    assert failures and any("failed; reconnecting" in m for m in caplog.messages)


def test_a_message_leaves_in_the_turn_of_the_loop_that_sends_it(broker: Mosquitto) -> None:
    """``send`` and ``publish`` write paho's bytes before they return, not in a later turn
    of the event loop (a writer registered, a turn of its own): with the loop held up after
    each, the subscriber has the message all the same (QoS 1, QoS 0, retained state)."""
    out = "derms/v1/session-site/out"
    probe = MqttProbe(broker.port, out)
    mqtt = session(broker.port)

    def arrived(payload: bytes) -> bool:  # blocks the loop meanwhile
        try:
            probe.wait_for(lambda m: m.payload == payload, timeout_s=2)
        except TimeoutError:
            return False
        return True

    async def scenario() -> list[bool]:
        mqtt.start()
        try:
            await connected(mqtt)
            assert mqtt.send(Message("telemetry", out, b"qos1")) is not None
            qos1 = arrived(b"qos1")
            assert mqtt.send(Message("telemetry", out, b"qos0", qos=0)) is not None
            qos0 = arrived(b"qos0")
            mqtt.publish(Message("state", out, b"retained", retain=True))
            return [qos1, qos0, arrived(b"retained")]
        finally:
            await mqtt.stop([])

    try:
        assert asyncio.run(scenario()) == [True, True, True]
    finally:
        probe.close()


def test_a_handler_that_sends_inside_paho_s_read_does_not_deadlock(broker: Mosquitto) -> None:
    """A handler runs inside paho's packet handling, where paho holds its callback lock:
    what it sends (here QoS 0, whose write calls back into paho under that lock) is written
    once the read is over, not inside it, and arrives."""
    out = "derms/v1/session-site/reply"
    probe = MqttProbe(broker.port, out)
    mqtt = session(broker.port)

    def handler(_topic: str, payload: bytes, _retained: bool) -> None:
        mqtt.send(Message("telemetry", out, b"re: " + payload, qos=0))

    mqtt.subscribe([TOPIC], handler)

    async def scenario() -> None:
        mqtt.start()
        try:
            await connected(mqtt)
            await asyncio.to_thread(publish_one, broker.port, b"ping")
            await asyncio.to_thread(probe.wait_for, lambda m: m.payload == b"re: ping", 5)
        finally:
            await mqtt.stop([])

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(scenario())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)  # a deadlock must not hang the suite
    runner.start()
    runner.join(20)
    probe.close()
    assert not runner.is_alive(), "the session deadlocked in the handler's send"
    assert errors == []
