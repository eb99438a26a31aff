"""The configuration's sections other than devices: the gateway, the broker, control,
telemetry and Home Assistant discovery."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from derms_edge.config.dso_models import DsoModel, grid_operator_refusal, refined_roles
from derms_edge.config.keys import read_public_key
from derms_edge.model import ControlType
from derms_edge.schema import ControlPayload, Identifier, Strict


class GatewaySection(Strict):
    id: Identifier
    state_dir: Path = Path("./state")


class MqttTls(Strict):
    """TLS to the broker (1.2 or newer). The broker's certificate and host name are always
    verified; there is no switch to turn that off."""

    ca_file: Path | None = None
    """The CA the broker's certificate must chain to (PEM); default: the system CAs."""
    cert_file: Path | None = None
    """The gateway's client certificate (PEM), for brokers that require one (mutual TLS)."""
    key_file: Path | None = None
    """The private key of cert_file (PEM): a secret, readable by its owner and group only."""

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "cert_file and key_file go together (the client certificate and its key)"
            )
        return self


# B105: the name of the variable that holds the password, not a password
PASSWORD_ENV = "DERMS_EDGE_MQTT_PASSWORD"  # nosec B105
"""The environment variable that may hold the broker password instead of the configuration."""


class MqttSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: Identifier = "derms"
    groups: list[Identifier] = Field(default_factory=list)
    tls: MqttTls | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    """A file holding the password (its first line): a secret, readable by owner and group
    only. Or the environment variable DERMS_EDGE_MQTT_PASSWORD."""
    client_id: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_payload_bytes: int = Field(262_144, ge=1024, le=268_435_455)
    """A control message larger than this is refused unread (``rejected`` / ``invalid``)."""
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _password_needs_username(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("password is set but username is not")
        return self

    def secret(self) -> str | None:
        """The broker password: password, the first line of password_file, or the environment
        variable DERMS_EDGE_MQTT_PASSWORD; OSError when the file cannot be read."""
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            lines = self.password_file.read_text(encoding="utf-8").splitlines()
            return lines[0] if lines else ""
        return os.environ.get(PASSWORD_ENV)


def _ed25519_public_key(path: Path) -> Path:
    read_public_key(path)
    return path


PublicKeyFile = Annotated[Path, AfterValidator(_ed25519_public_key)]
"""A PEM file holding an Ed25519 public key, read and checked when the configuration loads."""


class RoleSection(Strict):
    """One party allowed to send controls: its default primacy and the control types it may."""

    primacy: int = Field(ge=0, le=255)
    """Lower wins (IEEE 2030.5); a role may not claim a stronger primacy than its own."""
    allow: list[ControlType] = Field(default_factory=lambda: list(ControlType))
    keys: list[PublicKeyFile] = Field(default_factory=list)
    """PEM Ed25519 public keys whose signatures count as this role's (control.require_signed)."""


class ExportLimitSection(Strict):
    """The closed loop that holds site export under export_limit_w."""

    meter: Identifier | None = None
    """The meter at the point of connection; default: the only kind: meter device."""
    gain: float = Field(0.5, gt=0, le=1)
    """Fraction of the export error corrected per control interval."""
    max_step_pct: float = Field(10.0, gt=0, le=100)
    """Largest change of an inverter's limit per control interval, % of WMax."""
    deadband_w: float = Field(50.0, ge=0)
    """Export within this many W under the limit is left alone (no hunting)."""


class RateLimitSection(Strict):
    """How many inbound messages each role may send; the excess is dropped unread."""

    per_s: float = Field(20.0, gt=0, le=100_000)
    """Messages a second each role may send, sustained."""
    burst: int = Field(100, ge=1, le=1_000_000)
    """Messages a role may send at once after a quiet spell."""


def _default_roles() -> dict[str, RoleSection]:
    return {"dso": RoleSection(primacy=1)}


class ControlSection(Strict):
    max_clock_skew_s: float = Field(300.0, ge=0, le=86400)
    """An event whose creation_time is further ahead of the gateway's clock than this is
    refused (a head-end's clock may run a little ahead; a year-9999 one would win forever)."""
    dispatcher_timeout_s: float = Field(900.0, gt=0)
    """A role silent for longer than this has its events aborted; the default control applies."""
    efficiency: float = Field(0.95, gt=0, le=1)
    """One-way charge and discharge efficiency for SoC projections."""
    interval_s: float = Field(1.0, gt=0, le=60)
    """Control loop period: edge volt-var, export limit, SoC watch, device heartbeats."""
    revert_s: float = Field(60.0, ge=0, le=65534)
    """Device revert timers (RvrtTms): the device falls back after this long without the
    gateway; refreshed every revert_s / 3. 0 disables them. At most 65534 s: the legacy
    timers (123, 124, 126) are uint16 and 65535 means "not implemented"."""
    dso_model: DsoModel | None = None
    """One of the six DSO models (config.dso_models): it creates the roles; ``roles``
    entries refine them (their keys replace the preset's) or add roles."""
    roles: dict[Identifier, RoleSection] = Field(default_factory=_default_roles, min_length=1)
    require_signed: bool = False
    """Controls, cancels and default controls must be JWS signed with one of the role's keys."""
    default: ControlPayload = ControlPayload()
    """Applies when no event is active; the retained default_control topic overrides it."""
    export_limit: ExportLimitSection = ExportLimitSection()
    rate_limit: RateLimitSection = RateLimitSection()
    """Per role; roles the configuration does not name share one allowance."""

    @model_validator(mode="before")
    @classmethod
    def _preset_roles(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dso_model") in set(DsoModel):
            return {**data, "roles": refined_roles(DsoModel(data["dso_model"]), data.get("roles"))}
        return data

    @model_validator(mode="after")
    def _grid_operator_strongest(self) -> Self:
        if self.dso_model is not None:
            refusal = grid_operator_refusal({n: r.primacy for n, r in self.roles.items()})
            if refusal is not None:
                raise ValueError(f"roles: {refusal}")
        return self


class InfluxSection(Strict):
    """An InfluxDB v2 (or compatible) server that keeps the telemetry history."""

    url: str = Field(pattern=r"^https?://")
    token: str = Field(min_length=1)
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    batch_size: int = Field(500, ge=1, le=50000)
    """Points per write request at most."""
    flush_interval_ms: int = Field(1000, ge=10, le=3_600_000)
    """A batch is written at least this often while points wait."""


class TelemetrySection(Strict):
    interval_s: float = Field(5.0, gt=0, le=3600)
    qos: Literal[0, 1] = 1
    buffer_path: Path | None = None
    """The store-and-forward buffer (SQLite); default gateway.state_dir/telemetry.sqlite."""
    buffer_max_mb: float = Field(64.0, ge=1, le=100_000)
    """When the buffer is this large, the oldest telemetry is dropped (never responses)."""
    replay_rate_per_s: float = Field(200.0, gt=0, le=100_000)
    """Backlog messages sent per second after an outage, beside the live ones."""
    store_every_round: bool = False
    """Write every telemetry round to the buffer (an fsynced commit each); by default a round
    the broker acknowledges before the next one is never written, and a power cut or kill -9
    while the broker is up can cost at most the last round."""
    influxdb: InfluxSection | None = None
    """Optional history sink, fed from the same buffer."""


class HomeAssistantSection(Strict):
    """Home Assistant MQTT discovery: the gateway announces its devices and their sensors
    (off unless the section is present)."""

    discovery_prefix: Identifier = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration's setting); its birth message
    is ``{discovery_prefix}/status``."""


def discovery_name(identifier: str) -> str:
    """An id as it appears in a Home Assistant discovery topic, whose node and object ids
    take letters, digits, '_' and '-' only: '.' becomes '_'."""
    return identifier.replace(".", "_")
