"""An MQTT subscriber for tests: collects messages and waits for the one you expect."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttProbe:
    """Subscribes to topic filters on a broker and records every message."""

    def __init__(
        self, port: int, *filters: str, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self.port = port
        self.messages: list[Message] = []
        self._lock = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in filters])
        self._client.connect(host, port)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("probe could not subscribe")

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Message(m.topic, bytes(m.payload), bool(m.retain), time.monotonic())
            )
            self._lock.notify_all()

    def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout_s: float = 15.0,
        after: float = 0.0,
    ) -> Message:
        """The first message (received at or after ``after``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for message in self.messages:
                    if message.at >= after and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise TimeoutError(f"no matching message in {timeout_s} s; saw {topics}")
                self._lock.wait(remaining)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
