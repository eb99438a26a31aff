"""The MQTT session: paho-mqtt 2 driven by the asyncio event loop, with no network thread.

The event loop watches paho's socket (``add_reader``, and ``add_writer`` while paho has
bytes to send) and calls paho's ``loop_read``/``loop_write`` when it is ready and
``loop_misc`` every fifth of the keepalive (a PINGREQ due, a PINGRESP or CONNACK overdue).
paho's callbacks therefore run in the event loop: a control reaches the gateway the moment
its bytes are read, without the hop from paho's own thread that the dispatch benchmark
measured (~0.25 ms of every dispatch, and a thread woken for every publish). What the
gateway publishes is written as it is handed over, in the same turn of the loop; the writer
watch is only for what the socket does not take at once and for what paho queues inside its
own handling (a PUBACK, a handler's reply), where paho may not be asked to write. Only the
TCP connect and TLS handshake, which paho does blocking, run in a short-lived thread of
their own (while it runs, paho's state is the thread's: retained state published meanwhile
is held and handed to paho after it, and ``send`` takes nothing); the session reconnects by
itself with capped, jittered backoff, and a failure of its own is logged and followed by a
reconnection, never the end of MQTT. After a reconnection paho first sends again what it
still holds (messages queued while the broker was away), then the ``on_connected`` callbacks
run (the forwarder's replay, fresh retained state), so no stale retained value overtakes a
fresh one. Retained state (status, capability, active) is published directly; telemetry and
responses come from the outbox through ``send`` (see outbox/forward.py).

On Linux the socket acknowledges at once what it receives (``TCP_QUICKACK``, which the
kernel turns off again by itself, so it is set again after every read): a broker with Nagle
on (Mosquitto's default ``set_tcp_nodelay false``) holds a small message, such as a control,
until what it sent last (a PUBACK) is acknowledged, and a delayed ACK makes that ~40 ms.
The socket also sends at once (``TCP_NODELAY``): a message is written as it is handed to
paho, and with Nagle a second small write would wait for the broker's ACK of the first
(docs/benchmarks.md, dispatch: the medians 0.7-1.7 ms shorter with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from derms_edge.aio import to_boundary, wait_set
from derms_edge.backoff import backoff_delay
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
    if TCP_QUICKACK is not None:
        _tcp_option(sock, TCP_QUICKACK)


def _tcp_option(sock: object, option: int) -> None:
    """Turn a TCP option on, for a TCP socket (not a Unix one)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # closed meanwhile: paho finds out by itself
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)


class _Client(paho.Client):
    """paho's client, its socket acknowledging at once (Linux), its broker's name resolved
    without the ``idna`` codec."""

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's read, then the quick ACK armed again (the kernel clears it as it goes)."""
        rc = super().loop_read(max_packets)
        quick_ack(self.socket())
        return rc

    def _create_socket_connection(self) -> socket.socket:
        """paho's TCP connect, an ASCII host given to ``getaddrinfo`` as bytes: for a str
        CPython encodes it with the ``idna`` codec, whose modules (``encodings.idna``,
        ``stringprep``, ``unicodedata``: 0.4 MB) a daemon would keep for nothing. A
        non-ASCII name, or a proxy (PySocks installed and one set), goes paho's own way.
        (TLS still loads the codec: ``ssl`` encodes ``server_hostname`` with it.)"""
        host: str = self._host
        if not host.isascii() or self._get_proxy():
            return super()._create_socket_connection()
        return socket.create_connection(
            (host.encode("ascii"), self._port),  # type: ignore[arg-type]  # getaddrinfo takes bytes
            timeout=self._connect_timeout,
            source_address=(self._bind_address, self._bind_port),
        )


def _socket_opened(_client: paho.Client, _userdata: Any, sock: object) -> None:
    """Every segment leaves at once (no Nagle: a message is written as it is handed to paho,
    and a second small write would wait for the broker's ACK of the first), and what
    arrives is acknowledged at once."""
    _tcp_option(sock, socket.TCP_NODELAY)
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
    """A long-lived MQTT connection with a last will, reconnecting by itself.

    Every method is called in the event loop, and every callback runs there; paho is used
    from the connect thread only while ``_connecting`` (the loop leaves it alone meanwhile).
    """

    def __init__(self, config: MqttSection, client_id: str, will: Message) -> None:
        self._config = config
        # a persistent session: the broker keeps QoS 1 controls sent while we are away
        self._client = new_client(config, config.client_id or client_id, persistent=True)
        self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_socket_register_write = self._register_write
        self._client.on_socket_unregister_write = self._unregister_write
        self._client.on_socket_close = self._socket_closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runner: asyncio.Task[None] | None = None
        self._outage_logged = False
        self._accepted = False
        """The broker answered the current connection with its CONNACK."""
        self._connections = 0
        """Connections the broker accepted since start: the backoff starts afresh after one."""
        self._stopping = False
        self._connecting = False
        """The connect thread is using paho: the loop does not touch it."""
        self._held: list[Message] = []
        """Retained state published while connecting, handed to paho after."""
        self._in_paho = False
        """paho is reading, writing or checking the keepalive: its callbacks run, it may
        not be asked to write."""
        self._handing = False
        """A publish is being handed to paho, and writes what paho queues when it returns."""
        self._closed = asyncio.Event()
        """Set while there is no socket: never opened, or closed by either side."""
        self._closed.set()
        self._final: set[int] = set()
        """The message ids stop() waits for."""
        self._final_delivered = asyncio.Event()
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
        self._loop_thread = threading.get_ident()
        self._client.connect_async(
            self._config.host, self._config.port, keepalive=self._config.keepalive_s
        )
        self._runner = self._loop.create_task(self._run(), name="mqtt session")

    def publish(self, message: Message) -> None:
        """Queue a message; paho sends it now or after the next reconnection."""
        if self._connecting:
            self._held.append(message)
            return
        info = self._hand_to_paho(message)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            log.warning("MQTT: cannot queue %s: %s", message.topic, paho.error_string(info.rc))

    def send(self, message: Message) -> int | None:
        """Hand a message to paho; its message id, or None when paho did not take it.

        A QoS 1 message taken while the connection is down waits in paho and goes out after
        the reconnection, like one in flight when it broke (with the DUP flag). A QoS 0
        message is taken only while connected. Nothing is taken while the connect thread
        uses paho (the forwarder sends it after the reconnection).
        """
        if self._connecting:
            return None
        info = self._hand_to_paho(message)
        if info.rc == paho.MQTT_ERR_SUCCESS or (
            info.rc == paho.MQTT_ERR_NO_CONN and message.qos > 0
        ):
            return int(info.mid)
        if info.rc != paho.MQTT_ERR_NO_CONN:
            log.warning("MQTT: cannot queue %s: %s", message.topic, paho.error_string(info.rc))
        return None

    def _hand_to_paho(self, message: Message) -> paho.MQTTMessageInfo:
        """paho's publish, and what it queued written at once: the socket is nearly always
        writable, so the bytes leave in this turn of the event loop, with no writer to
        register and no turn of its own. Inside paho's own handling (a callback of a packet
        read) paho may not write; the writer watch writes it after, as before."""
        handing = self._handing = not self._in_paho
        try:
            info = self._client.publish(
                message.topic, message.payload, qos=message.qos, retain=message.retain
            )
        finally:
            self._handing = False
        if handing and self._client.want_write():
            self._writable()
            sock = self._client.socket()
            if self._client.want_write() and self._loop is not None and sock is not None:
                self._loop.add_writer(sock, self._writable)  # the rest when it can take it
        return info

    async def stop(self, final: list[Message], timeout_s: float = 3.0) -> None:
        """Publish the final messages (if connected) and disconnect cleanly, each within
        ``timeout_s``; then stop reconnecting."""
        self._stopping = True
        if self.connected.is_set():
            self._final.clear()
            self._final_delivered.clear()  # set by every earlier disconnection
            for m in final:
                info = self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
                if info.rc == paho.MQTT_ERR_SUCCESS:
                    self._final.add(info.mid)
            if self._final:
                await wait_set(self._final_delivered, timeout_s)
        if not self._closed.is_set():
            self._client.disconnect()  # paho closes the socket once DISCONNECT is written
            if not await wait_set(self._closed, timeout_s):
                self._drop_socket()  # the broker does not read: close it without
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    # The connection: connect, serve until closed, wait, connect again.

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            accepted_before = self._connections
            try:
                if await self._connect():
                    await self._serve()
            except Exception:  # a failure of the session's own: MQTT must not end with it
                log.exception("MQTT session %s failed; reconnecting", self.endpoint)
                self._drop_socket()
            attempt = 0 if self._connections > accepted_before else attempt + 1
            await asyncio.sleep(
                backoff_delay(attempt, RECONNECT_MIN_S, self._config.reconnect_max_s)
            )

    async def _connect(self) -> bool:
        """Open the socket and send CONNECT; False (said once per outage) when that failed."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[BaseException | None] = loop.create_future()
        client = self._client

        def connect() -> None:  # paho connects and shakes hands blocking: not in the loop
            error: BaseException | None = None
            try:
                client.reconnect()
            except Exception as exc:  # said to the installer, then retried
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, outcome, error)
            except RuntimeError:  # the loop closed: the daemon has stopped; close it here
                sock = client.socket()
                if isinstance(sock, socket.socket):
                    sock.close()

        self._connecting = True
        threading.Thread(target=connect, name="mqtt connect", daemon=True).start()
        try:
            error = await asyncio.shield(outcome)
        except asyncio.CancelledError:
            outcome.add_done_callback(self._abandon)  # paho is the thread's until it ends
            raise
        self._connect_thread_done()
        if error is not None:
            if not self._outage_logged:
                log.error("%s; retrying with backoff", connect_failure(error, self._config))
                self._outage_logged = True
            return False
        sock = client.socket()
        if not isinstance(sock, socket.socket):
            return False
        self._closed.clear()
        loop.add_reader(sock, self._readable)
        if client.want_write():  # CONNECT, queued in the thread: its register call was ignored
            loop.add_writer(sock, self._writable)
        return True

    def _connect_thread_done(self) -> None:
        """paho is the loop's again: hand it the retained state held meanwhile."""
        self._connecting = False
        held, self._held = self._held, []
        for message in held:
            self.publish(message)

    async def _serve(self) -> None:
        """Keep the connection alive until its socket closes (checked on the wall clock's
        multiples of `misc_interval_s`, in the same wake-up as the gateway's once-a-second
        timers)."""
        every_s = misc_interval_s(self._config.keepalive_s)
        while not await wait_set(self._closed, to_boundary(every_s)):
            self._as_paho(self._client.loop_misc)

    def _abandon(self, outcome: asyncio.Future[BaseException | None]) -> None:
        """A connection that completed after the session stopped is closed unused."""
        self._connecting = False
        self._held.clear()  # stopped: nothing more goes out
        if not outcome.cancelled() and outcome.result() is None:
            self._drop_socket()

    # The socket, watched by the event loop.

    def _as_paho(self, handling: Callable[[], object]) -> None:
        """paho's own handling of its socket: its callbacks run inside, and what they
        publish waits for the writer watch (paho holds its callback lock: a QoS 0 write
        there would deadlock)."""
        self._in_paho = True
        try:
            handling()
        finally:
            self._in_paho = False

    def _readable(self) -> None:
        self._as_paho(self._read)

    def _read(self) -> None:
        client = self._client
        client.loop_read()
        sock = client.socket()
        # TLS: what was decrypted already is not readable for epoll any more
        while isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
            client.loop_read()
            sock = client.socket()

    def _writable(self) -> None:
        self._as_paho(self._client.loop_write)

    def _register_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if self._handing:
            return  # _hand_to_paho writes it before it returns
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            self._loop.add_writer(sock, self._writable)
        # else: the connect thread queued CONNECT; _connect() registers it in the loop

    def _unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if self._loop is not None and threading.get_ident() == self._loop_thread:
            self._loop.remove_writer(sock)

    def _socket_closed(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self._forget_socket(sock)
            self._closed.set()

    def _forget_socket(self, sock: Any) -> None:
        if self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _drop_socket(self) -> None:
        """Close paho's socket without a word to the broker (the session is stopping)."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket) and sock.fileno() >= 0:
            self._forget_socket(sock)
            sock.close()
        self._accepted = False
        self.connected.clear()
        self._closed.set()

    # paho's callbacks, in the event loop; what the gateway does with them must not break
    # paho's handling of the packet, so a failure there is logged and contained.

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
        self._connections += 1
        if self._filters:
            self._client.subscribe([(topic, 1) for topic in self._filters])
        self.connected.set()
        # after paho's CONNACK handling, which first sends again what it held (it runs when
        # this returns): fresh retained state must follow queued stale values, not precede them
        loop = asyncio.get_running_loop()
        for callback in self._on_connected:
            loop.call_soon(_contained, callback)

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        accepted, self._accepted = self._accepted, False
        if accepted and not self._stopping:
            log.warning("MQTT disconnected from %s: %s; reconnecting", self.endpoint, reason_code)
        elif not accepted and not self._stopping and not self._outage_logged:
            why = closed_before_accepted(str(reason_code), self._config)
            log.error("%s; retrying with backoff", why)
            self._outage_logged = True
        self.connected.clear()
        self._final_delivered.set()  # nothing more will be delivered on this connection

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if self._handler is not None:
            _contained(self._handler, message.topic, bytes(message.payload), bool(message.retain))

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        _reason_code: ReasonCode,
        _properties: Any,
    ) -> None:
        for callback in self._on_published:
            _contained(callback, mid)
        if mid in self._final:
            self._final.discard(mid)
            if not self._final:
                self._final_delivered.set()


RECONNECT_MIN_S = 1.0
"""The first wait before connecting again, doubling per failed attempt up to
``mqtt.reconnect_max_s``."""
MISC_INTERVAL_S = 1.0
"""The shortest wait between paho's keepalive checks."""


def misc_interval_s(keepalive_s: int) -> float:
    """How often paho checks the keepalive (a PINGREQ due, a PINGRESP or CONNACK overdue):
    every fifth of it, in whole seconds, at least every `MISC_INTERVAL_S`. A PINGREQ then
    leaves at most that late (the broker waits 1.5 times the keepalive), and a broker gone
    silent is given up at most two keepalives and two intervals after its last bytes. At
    one device a check every second cost ~0.1 ms of CPU a second, two callbacks of a cold
    loop (docs/benchmarks.md)."""
    return max(MISC_INTERVAL_S, float(keepalive_s // 5))


def _settle(outcome: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not outcome.done():
        outcome.set_result(error)


def _contained(callback: Callable[..., None], *args: Any) -> None:
    try:
        callback(*args)
    except Exception:
        log.exception("MQTT: %r failed", callback)
