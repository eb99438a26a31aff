"""The MQTT topic names of the gateway's contract with utilities (keep them stable)."""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "v1"


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
