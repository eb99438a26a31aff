"""What the 2.0.1 and the 1.6 charge-point classes share: the station they speak for and the
calls both versions name alike."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from hil.ocpp.station import OcppStation


class StationSide:
    """Mixed in before the `ocpp` library's ChargePoint of one version, whose `call` it uses."""

    calls: ModuleType
    """The version's ocpp.v201.call or ocpp.v16.call."""

    def __init__(self, station: OcppStation, connection: Any) -> None:
        super().__init__(station.spec.station_id, connection)  # type: ignore[call-arg]
        self.station = station
        self.spec = station.spec

    async def call(self, payload: Any) -> Any:
        """The ChargePoint's call (the next class in the MRO)."""
        return await super().call(payload)  # type: ignore[misc]

    async def heartbeat(self) -> None:
        await self.call(self.calls.Heartbeat())
