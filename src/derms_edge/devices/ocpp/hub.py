"""The gateway's one CSMS, shared by every OCPP device: it accepts the configured stations and
hands each station's events to the drivers of its EVSEs."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence

from derms_edge.config import OcppDevice, OcppSection
from derms_edge.devices.ocpp.csms import CsmsServer, StationAccess, server_context
from derms_edge.devices.ocpp.session import OcppVersion, StationEvent
from derms_edge.errors import ConfigError

log = logging.getLogger(__name__)

Listener = Callable[[StationEvent], None]

_VERSIONS = {"2.0.1": OcppVersion.V201, "1.6": OcppVersion.V16}


def _password(device: OcppDevice) -> str | None:
    """The station's password: the first line of its password_file; OSError if unreadable."""
    if device.password_file is None:
        return None
    lines = device.password_file.read_text(encoding="utf-8").splitlines()
    return lines[0] if lines else ""


class OcppHub:
    """One `CsmsServer` for the configured stations, and who listens to each station."""

    def __init__(self, section: OcppSection, devices: Sequence[OcppDevice]) -> None:
        self.section = section
        stations: dict[str, StationAccess] = {}
        for device in devices:
            version = None if device.ocpp_version is None else _VERSIONS[device.ocpp_version]
            stations.setdefault(
                device.station_id, StationAccess(device.station_id, _password(device), version)
            )
        tls = section.tls
        self.server = CsmsServer(
            stations.values(),
            self._report,
            host=section.host,
            port=section.port,
            tls=None if tls is None else server_context(tls.cert_file, tls.key_file),
            heartbeat_s=section.heartbeat_interval_s,
        )
        self._listeners: dict[str, list[Listener]] = defaultdict(list)

    def listen(self, station_id: str, listener: Listener) -> None:
        """Hand every event of this station to ``listener`` (a driver)."""
        self._listeners[station_id].append(listener)

    def _report(self, event: StationEvent) -> None:
        for listener in self._listeners.get(event.station_id, ()):
            try:
                listener(event)
            except Exception:  # one driver's bug must not cut the station off the others
                log.exception(
                    "OCPP: a listener of station %s failed on %r", event.station_id, event
                )

    async def start(self) -> None:
        """Listen for the stations; ConfigError naming ``ocpp.listen`` when the address is
        taken or not this machine's."""
        try:
            await self.server.start()
        except OSError as error:
            raise ConfigError(
                [f"ocpp.listen: cannot listen on {self.section.listen}: {error.strerror or error}"]
            ) from error

    async def close(self) -> None:
        """Close every station's connection and stop listening."""
        await self.server.close()
