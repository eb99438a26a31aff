"""Following a gateway on MQTT from the command line (monitor, status, send): one subscriber
whose messages paho's network thread puts on a queue, and why it could not connect, if it
could not."""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from derms_edge.config import Config
from derms_edge.northbound.mqtt import new_client
from derms_edge.northbound.tls import closed_before_accepted, connect_failure


class Follower:
    """Subscribes (QoS 1) to ``filters`` on the configured broker while in its ``with``
    block; retained messages come first, as the broker holds them."""

    def __init__(self, config: Config, filters: Sequence[str]) -> None:
        self._config = config
        self._filters = list(filters)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subscribed = threading.Event()
        self.failure: str | None = None
        """Why the last attempt to connect failed, for people; None while all is well."""
        self._client = new_client(config.mqtt)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._client.on_message = lambda _c, _u, m: self._inbox.put((m.topic, bytes(m.payload)))
        self._accepted = False

    @property
    def broker(self) -> str:
        """host:port of the broker."""
        return f"{self._config.mqtt.host}:{self._config.mqtt.port}"

    def __enter__(self) -> Self:
        self._client.connect_async(self._config.mqtt.host, self._config.mqtt.port)
        self._client.loop_start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def connect(self, timeout_s: float) -> str | None:
        """Wait until the subscription is in place: None then, else why it is not (at once
        when an attempt to connect failed, or after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while not self.subscribed.wait(0.05):
            if self.failure is not None:
                return self.failure
            if time.monotonic() > deadline:
                return f"MQTT broker {self.broker}: no answer in {timeout_s:g} s"
        return None

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> None:
        """Publish at QoS 1 and wait up to ``timeout_s`` for the broker's acknowledgement."""
        self._client.publish(topic, payload, qos=1).wait_for_publish(timeout_s)

    def get(self, timeout_s: float) -> tuple[str, bytes] | None:
        """The next message (topic, payload), or None when none comes within ``timeout_s``."""
        try:
            return self._inbox.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None

    def drain(self, until: float) -> list[tuple[str, bytes]]:
        """Every message until the monotonic time ``until``."""
        received = []
        while (message := self.get(until - time.monotonic())) is not None:
            received.append(message)
        return received

    # paho's network thread calls these

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason_code: ReasonCode, _p: Any
    ) -> None:
        if reason_code.is_failure:
            self.failure = f"MQTT broker {self.broker} refused the connection: {reason_code}"
            return
        self._accepted = True
        self.failure = None
        client.subscribe([(topic, 1) for topic in self._filters])

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        # paho calls this inside its `except OSError:` around the connect: the error is there
        self.failure = connect_failure(sys.exc_info()[1], self._config.mqtt)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason_code: ReasonCode, _p: Any
    ) -> None:
        accepted, self._accepted = self._accepted, False
        if not accepted and self.failure is None:
            self.failure = closed_before_accepted(str(reason_code), self._config.mqtt)
