"""The MQTT topic names of the gateway's contract with utilities (keep them stable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

API_VERSION = "v1"


Inbound = Literal["controls", "cancel", "default_control", "heartbeat"]


@dataclass(frozen=True, slots=True)
class InboundTopic:
    """What an inbound topic is for, and which role sent it."""

    kind: Inbound
    role: str
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topics under ``{prefix}/v1/{gateway_id}``."""

    prefix: str
    gateway_id: str

    @property
    def root(self) -> str:
        """``{prefix}/v1/{gateway_id}``."""
        return f"{self.prefix}/{API_VERSION}/{self.gateway_id}"

    @property
    def status(self) -> str:
        """Retained gateway status; the MQTT last will sets it offline."""
        return f"{self.root}/status"

    def telemetry(self, device_id: str) -> str:
        """One device's readings, every telemetry interval."""
        return f"{self.root}/telemetry/{device_id}"

    def capability(self, device_id: str) -> str:
        """Retained nameplate and limits of one device."""
        return f"{self.root}/capability/{device_id}"

    @property
    def responses(self) -> str:
        """Event responses (received, scheduled, started …), QoS 1."""
        return f"{self.root}/responses"

    @property
    def active(self) -> str:
        """Retained: the control values in force now, per device and control type."""
        return f"{self.root}/active"

    def controls(self, role: str) -> str:
        """Where a role sends events (one or a JSON array)."""
        return f"{self.root}/controls/{role}"

    def group_controls(self, group: str, role: str) -> str:
        """Where a role sends events to every gateway of a group."""
        return f"{self.prefix}/{API_VERSION}/groups/{group}/controls/{role}"

    def cancel(self, role: str) -> str:
        """Where a role cancels one of its events."""
        return f"{self.root}/controls/{role}/cancel"

    def default_control(self, role: str) -> str:
        """Retained: a role's default control."""
        return f"{self.root}/default_control/{role}"

    def heartbeat(self, role: str) -> str:
        """A role's dispatcher proves liveness here (any payload)."""
        return f"{self.root}/heartbeat/{role}"

    def inbound_filters(self, groups: list[str]) -> list[str]:
        """Every topic filter the gateway subscribes to."""
        filters = [
            self.controls("+"),
            self.cancel("+"),
            self.default_control("+"),
            self.heartbeat("+"),
        ]
        for group in groups:
            filters += [
                self.group_controls(group, "+"),
                self.group_controls(group, "+") + "/cancel",
            ]
        return filters

    def parse_inbound(self, topic: str) -> InboundTopic | None:
        """Classify an inbound topic; None if it is not one of ours."""
        group_prefix = f"{self.prefix}/{API_VERSION}/groups/"
        group: str | None = None
        if topic.startswith(self.root + "/"):
            parts = topic.removeprefix(self.root + "/").split("/")
        elif topic.startswith(group_prefix):
            group, _, rest = topic.removeprefix(group_prefix).partition("/")
            parts = rest.split("/")
            if parts[0] != "controls":
                return None
        else:
            return None
        match parts:
            case ["controls", role]:
                return InboundTopic("controls", role, group)
            case ["controls", role, "cancel"]:
                return InboundTopic("cancel", role, group)
            case ["default_control", role] if group is None:
                return InboundTopic("default_control", role)
            case ["heartbeat", role] if group is None:
                return InboundTopic("heartbeat", role)
        return None
