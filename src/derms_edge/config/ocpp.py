"""OCPP in the configuration: the gateway's CSMS (where the charging stations connect) and
the charging stations' EVSEs as devices."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from derms_edge.config.device import DeviceSection
from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A, DeviceKind
from derms_edge.schema import Strict

_LISTEN = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):(?P<port>\d{1,5})$")
_STATION_ID = r"^[A-Za-z0-9_.:*+|@-]{1,48}$"
"""OCPP's identity rule: at most 48 characters, of the URL-safe ones the standard allows."""


class OcppTls(Strict):
    """TLS for the stations (security profile 2): the CSMS's certificate and its key (PEM)."""

    cert_file: Path
    key_file: Path
    """A secret, readable by its owner and group only."""


class OcppSection(Strict):
    """The gateway as the site's CSMS: the websocket server the charging stations connect to."""

    listen: str = "0.0.0.0:9000"  # the stations on the site network connect here
    """host:port the stations connect to (``ws[s]://host:port/<path>/<station_id>``)."""
    tls: OcppTls | None = None
    heartbeat_interval_s: int = Field(60, ge=10, le=86400)
    """The heartbeat interval a BootNotification is answered with."""
    profile_valid_s: int = Field(900, ge=10, le=86400)
    """Fail-safe: a charging profile the gateway installs expires this long after it was
    last refreshed (the gateway refreshes it halfway), so a dead gateway's limit lapses."""

    @model_validator(mode="after")
    def _listen(self) -> Self:
        match = _LISTEN.fullmatch(self.listen)
        if match is None or not 0 < int(match["port"]) <= 65535:
            raise ValueError(f"listen {self.listen!r} is not host:port (port 1..65535)")
        return self

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class OcppDevice(DeviceSection):
    """One EVSE of a charging station that connects to the gateway over OCPP."""

    protocol: Literal["ocpp"]
    station_id: str = Field(pattern=_STATION_ID)
    """The station's identity: the last part of the URL it connects to."""
    evse: int = Field(1, ge=1, le=99)
    """The EVSE (1.6: connector) this device is."""
    ocpp_version: Literal["2.0.1", "1.6"] | None = None
    """The version to speak; default the best the station offers (2.0.1 before 1.6)."""
    password_file: Path | None = None
    """The station's HTTP Basic password (its first line; the username is the station id),
    security profiles 1 and 2: a secret, readable by its owner and group only."""
    phases: Literal[1, 3] | None = None
    """The phases the EVSE is wired to (default: what the station says, else 3); 1.6 stations
    do not say, and a power cap becomes a current per phase by it."""
    max_a: float | None = Field(None, ge=MIN_EVSE_A, le=MAX_EVSE_A)
    """The EVSE's highest current, A per phase (default: what the station says, if it does)."""
    timeout_s: float = Field(10.0, gt=0, le=60)
    """How long a call waits for the station's answer, and the connect for the station."""

    @model_validator(mode="after")
    def _ocpp(self) -> Self:
        if self.kind != DeviceKind.EVSE:
            raise ValueError(f"an OCPP device is kind: evse (this one is kind: {self.kind})")
        return self

    @property
    def link(self) -> str:
        """Where the device is, for people: its station and EVSE."""
        return f"OCPP station {self.station_id} evse {self.evse}"
