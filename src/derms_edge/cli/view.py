"""A gateway as its MQTT messages show it: the retained status, controls in force and
capabilities, the latest telemetry of each device and the latest responses, folded from the
messages as they come (monitor's table, status)."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from derms_edge.northbound.topics import Topics

RECENT_RESPONSES = 8
"""How many of the latest responses a view keeps."""


@dataclass
class GatewayView:
    """What is known of one gateway so far."""

    topics: Topics
    status: dict[str, Any] | None = None
    active: dict[str, Any] | None = None
    capability: dict[str, dict[str, Any]] = field(default_factory=dict)
    telemetry: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_RESPONSES))

    def filters(self) -> list[str]:
        """The topic filters to subscribe to."""
        topics = self.topics
        return [
            topics.status,
            topics.active,
            topics.capability("+"),
            topics.telemetry("+"),
            topics.responses,
        ]

    def take(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """Fold one message in; its JSON object, or None when it is not one (an empty
        retained message, or a payload that is not JSON) or not on a topic of the view."""
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        topics = self.topics
        device = topic.rsplit("/", 1)[-1]
        if topic == topics.status:
            self.status = data
        elif topic == topics.active:
            self.active = data
        elif topic == topics.responses:
            self.responses.append(data)
        elif topic == topics.capability(device):
            self.capability[device] = data
        elif topic == topics.telemetry(device):
            self.telemetry[device] = data
        else:
            return None
        return data

    @property
    def devices(self) -> list[str]:
        """The gateway's devices: as its status lists them, then any other heard from."""
        listed = list((self.status or {}).get("devices", []))
        heard = sorted((set(self.telemetry) | set(self.capability)) - set(listed))
        return listed + heard

    def quality(self, device: str) -> str:
        """The device's quality: its latest telemetry's, else the status's, else unknown."""
        reading = self.telemetry.get(device)
        if reading is not None and "quality" in reading:
            return str(reading["quality"])
        return str(((self.status or {}).get("device_quality") or {}).get(device, "unknown"))

    def controls(self, device: str) -> dict[str, dict[str, Any]]:
        """The control types in force on a device (``site`` for site-wide ones)."""
        active = self.active or {}
        held = active.get("site") if device == "site" else active.get("devices", {}).get(device)
        return held if isinstance(held, dict) else {}

    def snapshot(self) -> dict[str, Any]:
        """Everything known, as JSON-ready data (``status --json``)."""
        return {
            "status": self.status,
            "active": self.active,
            "capability": self.capability,
            "telemetry": self.telemetry,
            "responses": list(self.responses),
        }
