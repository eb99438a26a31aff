"""A grid operator's (or any role's) MQTT client for end-to-end tests: sends events,
cancellations and heartbeats to one gateway."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class DsoClient:
    """Publishes under a gateway's topic root ``root`` (QoS 1, waiting for each PUBACK).

    ``heartbeat_roles``: roles whose heartbeat is sent every second, so the gateway's
    dispatcher timeout does not end their events while a test runs.
    """

    def __init__(
        self,
        port: int,
        root: str,
        *,
        heartbeat_roles: Sequence[str] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.root = root
        self._client = paho.Client(CallbackAPIVersion.VERSION2)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        self._roles = tuple(heartbeat_roles)
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        if self._roles:
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(1.0):
            for role in self._roles:
                self._client.publish(f"{self.root}/heartbeat/{role}", b"{}", qos=1)

    def send(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        """Publish JSON (or bytes) on ``{root}/{topic}``."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        message = self._client.publish(f"{self.root}/{topic}", data, qos=1, retain=retain)
        message.wait_for_publish(5)

    def publish_raw(self, topic: str, payload: str) -> None:
        """Publish outside the gateway's root (group topics)."""
        self._client.publish(topic, payload.encode(), qos=1).wait_for_publish(5)

    def event(
        self,
        mrid: str,
        control: dict[str, Any],
        role: str = "dso",
        *,
        duration_s: float = 30,
        **fields: Any,
    ) -> None:
        """One event on ``controls/{role}``."""
        body = {"mrid": mrid, "duration_s": duration_s, "control": control, **fields}
        self.send(f"controls/{role}", body)

    def cancel(self, mrid: str, role: str = "dso") -> None:
        self.send(f"controls/{role}/cancel", {"mrid": mrid})

    def close(self) -> None:
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
