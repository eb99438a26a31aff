"""Test clients that outlive outages: a subscriber with a persistent MQTT session, and the
gateway process of the moment (killed with SIGKILL and started again on the same buffer)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.gateway import start_gateway
from tests.support.servers import Process


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class SessionProbe:
    """A subscriber with a persistent session that reconnects every second.

    ``filters``: what it subscribes to (QoS 1); by default the gateway's telemetry and status
    under ``root``.
    """

    def __init__(
        self, port: int, client_id: str, root: str, filters: Sequence[str] | None = None
    ) -> None:
        topics = list(filters) if filters is not None else [f"{root}/telemetry/+", f"{root}/status"]
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_connect = lambda c, *_: c.subscribe([(f, 1) for f in topics])
        self._client.connect("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("probe could not subscribe")

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(m.topic, bytes(m.payload), time.monotonic()))

    def telemetry(self, after: float = 0.0) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if "/telemetry/" in m.topic and m.at >= after]

    def statuses(self, after: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m.json() for m in self.messages if m.topic.endswith("/status") and m.at >= after
            ]

    def on(self, topic: str) -> list[Received]:
        """Every message received on ``topic``, in the order of arrival."""
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def seqs(self, after: float = 0.0) -> list[int]:
        return [m.json()["seq"] for m in self.telemetry(after)]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Running:
    """The gateway process of the moment (a test restarts it)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: Process = start_gateway(config, log)

    def kill_and_restart(self) -> None:
        """kill -9, then the same configuration (and buffer) again."""
        self.kill()
        self.restart()

    def kill(self) -> None:
        """kill -9, and wait for the process to be gone."""
        self.process.signal(signal.SIGKILL)
        self.process.popen.wait(10)
        self.process.stop()  # closes its log file

    def restart(self) -> None:
        """The same configuration (and buffer) again."""
        self.process = start_gateway(self.config, self.log)
