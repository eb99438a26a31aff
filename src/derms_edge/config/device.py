"""What every device entry has, whatever it speaks: its id and kind, its cadence and
staleness, and (batteries) the customer's side of storage."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from derms_edge.model import DeviceKind
from derms_edge.schema import Identifier, Strict


class DeviceSection(Strict):
    """What every device has: its id and kind, how often it is read, when it is stale."""

    id: Identifier
    kind: DeviceKind
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    timeout_s: float = Field(1.0, gt=0, le=60)
    stale_after_s: float | None = Field(None, gt=0)
    """Readings older than this are reported stale; default three poll intervals."""
    backoff_max_s: float | None = Field(None, gt=0, le=3600)
    """Cap of the retry backoff of an unreachable device; `Config` fills in the default."""

    @property
    def stale_after(self) -> float:
        """Age in seconds after which a reading is stale."""
        return self.stale_after_s if self.stale_after_s is not None else 3 * self.poll_interval_s

    @property
    def backoff_max(self) -> float:
        """Cap in seconds of the retry backoff (the poll interval until `Config` decides)."""
        return self.backoff_max_s if self.backoff_max_s is not None else self.poll_interval_s


class StorageSettings(Strict):
    """The customer's side of a battery, whatever protocol it speaks."""

    reserve_soc_pct: float | None = Field(None, ge=0, le=100)
    """The customer's backup reserve: storage control never takes SoC below it (batteries)."""
    efficiency: float | None = Field(None, gt=0, le=1)
    """One-way charge and discharge efficiency; default control.efficiency (batteries)."""
    soc_frozen_after_wh: float | None = Field(None, gt=0)
    """Energy through the battery, Wh, after which a state of charge that has not moved
    counts as frozen (batteries); default the larger of 2 % of its capacity and two steps
    of its SoC point."""

    @model_validator(mode="after")
    def _storage_settings(self) -> Self:
        if getattr(self, "kind", DeviceKind.BATTERY) != DeviceKind.BATTERY:
            for key in ("reserve_soc_pct", "efficiency", "soc_frozen_after_wh"):
                if getattr(self, key) is not None:
                    kind = getattr(self, "kind", "")
                    raise ValueError(
                        f"{key} applies to batteries only (this device is kind: {kind})"
                    )
        return self
