"""The gateway's MQTT session driven by the event loop (no network thread), with a real
Mosquitto: what moving paho into the loop could break.

- Over TLS, bytes already decrypted sit in the SSL object where epoll cannot see them:
  packets sharing a record must still be read at once, not when the next record arrives.
- paho's callbacks run in the event loop now: a handler that raises must not stop the
  session (the next message still arrives) and a control is handled on the loop's thread,
  without a network thread of paho's.
- Only connect and the TLS handshake run in a thread: stopping while a handshake hangs
  returns at once, and the connection that completes later is closed.
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

import pytest
import trustme
from paho.mqtt.publish import single

from derms_edge.config import MqttSection
from derms_edge.config.sections import MqttTls
from derms_edge.northbound.mqtt import Message, MqttSession
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


def test_a_broker_gone_silent_is_noticed_by_the_keepalive(tmp_path: Path) -> None:
    """The broker stops answering without closing the connection (SIGSTOP: a host frozen,
    a link cut without a reset): no EOF ever comes, only paho's keepalive check, which the
    session now runs itself, can tell. With keepalive 5 s a PINGREQ goes after 5 s of
    silence and the connection is given up 5 s later without its PINGRESP; once the broker
    answers again the session is back."""
    broker = Mosquitto(tmp_path / "mosquitto").start()
    process = broker.process
    assert process is not None
    mqtt = MqttSession(
        MqttSection(host=LOOPBACK, port=broker.port, keepalive_s=5, reconnect_max_s=1),
        client_id="session-test-keepalive",
        will=Message("state", "derms/v1/session-site/status", b"{}", retain=True),
    )

    async def scenario() -> tuple[float, bool]:
        mqtt.start()
        try:
            await connected(mqtt)
            process.signal(signal.SIGSTOP)
            frozen = time.monotonic()
            async with asyncio.timeout(15):
                while mqtt.connected.is_set():
                    await asyncio.sleep(0.1)
            noticed = time.monotonic() - frozen
            process.signal(signal.SIGCONT)
            async with asyncio.timeout(10):
                await mqtt.connected.wait()
            return noticed, mqtt.connected.is_set()
        finally:
            process.signal(signal.SIGCONT)
            await mqtt.stop([], timeout_s=1)

    try:
        noticed, back = asyncio.run(scenario())
    finally:
        broker.stop()
    assert 5 <= noticed <= 12
    assert back
