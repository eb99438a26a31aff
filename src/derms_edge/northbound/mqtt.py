"""The MQTT session: paho-mqtt 2 on its own network thread, bridged to asyncio.

paho's thread owns the socket and reconnects with capped backoff; asyncio code only calls
``publish`` and ``send`` (thread-safe in paho, never blocking) and learns of (re)connections
and acknowledgements through callbacks that cross back into the event loop with
``call_soon_threadsafe``. Retained state (status, capability, active) is published directly;
telemetry and responses come from the outbox through ``send`` (see outbox/forward.py).

On Linux the socket acknowledges at once what it receives (``TCP_QUICKACK``, which the
kernel turns off again by itself, so it is set again after every read): a broker with Nagle
on (Mosquitto's default ``set_tcp_nodelay false``) holds a small message, such as a control,
until what it sent last (a PUBACK) is acknowledged, and a delayed ACK makes that ~40 ms.
(``TCP_NODELAY`` on the gateway's side made no difference to the dispatch benchmark.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from derms_edge.config import MqttSection
from derms_edge.northbound.tls import client_context, closed_before_accepted, connect_failure

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 10_000
"""paho's in-memory queue while the broker is away; the oldest are dropped beyond it."""
MAX_INFLIGHT = 200
"""QoS 1 messages paho sends before their PUBACKs; more than the forwarder's window, so the
outbox's rows never wait in paho's queue behind retained state."""


MessageKind = Literal["telemetry", "response", "state"]
"""What a message is: telemetry and responses go through the outbox (telemetry may be
dropped when it is full, responses never); retained state (status, capability, active) is
published directly, the latest wins."""


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message the gateway sends, and what it is."""

    kind: MessageKind
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
"""Linux only; elsewhere the socket acknowledges as the kernel sees fit."""


def quick_ack(sock: object) -> None:
    """Acknowledge at once what has arrived and what arrives next (Linux; no-op elsewhere)."""
    if (
        TCP_QUICKACK is not None
        and isinstance(sock, socket.socket)
        and sock.family in (socket.AF_INET, socket.AF_INET6)
    ):
        with contextlib.suppress(OSError):  # closed meanwhile: paho finds out by itself
            sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)


class _Client(paho.Client):
    """paho's client, its socket acknowledging at once (Linux)."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's read, then the quick ACK armed again (the kernel clears it as it goes)."""
        rc = super().loop_read(max_packets)
        quick_ack(self.socket())
        return rc


def _socket_opened(_client: paho.Client, _userdata: Any, sock: object) -> None:
    quick_ack(sock)


def new_client(
    config: MqttSection, client_id: str = "", *, persistent: bool = False
) -> paho.Client:
    """A paho client for the configured broker (MQTT 3.1.1, the credentials), not connected.

    ``persistent``: the broker keeps the session (subscriptions, QoS 1 messages) while the
    client is away; it needs a ``client_id``. Without one the broker makes one up.
    """
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=not persistent,
    )
    client.on_socket_open = _socket_opened
    if config.tls is not None:
        client.tls_set_context(client_context(config.tls))
    if config.username is not None:
        client.username_pw_set(config.username, config.secret())
    return client


class MqttSession:
    """A long-lived MQTT connection with a last will, reconnecting by itself."""

    def __init__(self, config: MqttSection, client_id: str, will: Message) -> None:
        self._config = config
        # a persistent session: the broker keeps QoS 1 controls sent while we are away
        self._client = new_client(config, config.client_id or client_id, persistent=True)
        self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.reconnect_delay_set(min_delay=1, max_delay=int(config.reconnect_max_s))
        self._client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outage_logged = False
        self._accepted = False
        """The broker answered the last connection with its CONNACK (paho's thread only)."""
        self._stopping = False
        self._on_connected: list[Callable[[], None]] = []
        self._on_published: list[Callable[[int], None]] = []
        self._filters: list[str] = []
        self._handler: Callable[[str, bytes, bool], None] | None = None
        self.connected = asyncio.Event()
        self.endpoint = f"{config.host}:{config.port}"

    def on_connected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the event loop after every (re)connection."""
        self._on_connected.append(callback)

    def on_published(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(mid)`` in the event loop when a message is delivered: its PUBACK
        arrived (QoS 1), or it was written to the socket (QoS 0)."""
        self._on_published.append(callback)

    def subscribe(self, filters: list[str], handler: Callable[[str, bytes, bool], None]) -> None:
        """Subscribe (QoS 1) now and after every reconnection; ``handler(topic, payload,
        retained)`` runs in the event loop. Call before start()."""
        self._filters = list(filters)
        self._handler = handler

    def start(self) -> None:
        """Start connecting in the background; never blocks, retries until stopped."""
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(
            self._config.host, self._config.port, keepalive=self._config.keepalive_s
        )
        self._client.loop_start()

    def publish(self, message: Message) -> None:
        """Queue a message; paho sends it now or after the next reconnection."""
        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("MQTT: cannot queue %s: %s", message.topic, paho.error_string(info.rc))

    def send(self, message: Message) -> int | None:
        """Hand a message to paho; its message id, or None when paho did not take it.

        A QoS 1 message taken while the connection is down waits in paho and goes out after
        the reconnection, like one in flight when it broke (with the DUP flag). A QoS 0
        message is taken only while connected.
        """
        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain
        )
        if info.rc == paho.MQTT_ERR_SUCCESS or (
            info.rc == paho.MQTT_ERR_NO_CONN and message.qos > 0
        ):
            return int(info.mid)
        if info.rc != paho.MQTT_ERR_NO_CONN:
            log.warning("MQTT: cannot queue %s: %s", message.topic, paho.error_string(info.rc))
        return None

    async def stop(self, final: list[Message], timeout_s: float = 3.0) -> None:
        """Publish the final messages (if connected), disconnect cleanly, stop the thread."""
        self._stopping = True
        if self.connected.is_set():
            infos = [
                self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain) for m in final
            ]
            await asyncio.to_thread(_wait_all, infos, timeout_s)
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    # paho's network thread calls these; they only hop into the event loop.

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if reason_code.is_failure:
            if not self._outage_logged:
                log.error("MQTT broker %s refused the connection: %s", self.endpoint, reason_code)
                self._outage_logged = True
            return
        log.info("MQTT connected to %s", self.endpoint)
        self._outage_logged = False
        self._accepted = True
        if self._filters:
            self._client.subscribe([(topic, 1) for topic in self._filters])
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._connected)

    def _on_connect_fail(self, _client: paho.Client, _userdata: Any) -> None:
        # paho calls this inside its `except OSError:` around the connect: the error is there
        if not self._outage_logged:
            why = connect_failure(sys.exc_info()[1], self._config)
            log.error("%s; retrying with backoff", why)
            self._outage_logged = True

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if self._loop is None:
            return
        accepted, self._accepted = self._accepted, False
        if accepted and not self._stopping:
            log.warning("MQTT disconnected from %s: %s; reconnecting", self.endpoint, reason_code)
        elif not accepted and not self._stopping and not self._outage_logged:
            why = closed_before_accepted(str(reason_code), self._config)
            log.error("%s; retrying with backoff", why)
            self._outage_logged = True
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if self._loop is not None and self._handler is not None:
            self._loop.call_soon_threadsafe(
                self._handler, message.topic, bytes(message.payload), bool(message.retain)
            )

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        _reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        if self._loop is not None and self._on_published:
            self._loop.call_soon_threadsafe(self._published, mid)

    def _published(self, mid: int) -> None:
        for callback in self._on_published:
            callback(mid)

    def _connected(self) -> None:
        self.connected.set()
        for callback in self._on_connected:
            callback()


def _wait_all(infos: list[paho.MQTTMessageInfo], timeout_s: float) -> None:
    for info in infos:
        try:
            info.wait_for_publish(timeout=timeout_s)
        except (RuntimeError, ValueError):
            return  # not connected any more: nothing more can be sent
