"""The configuration's sections other than devices: the gateway, the broker, control and
telemetry."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from derms_edge.config.dso_models import DsoModel, grid_operator_refusal, refined_roles
from derms_edge.model import ControlType
from derms_edge.schema import ControlPayload, Identifier, Strict


class GatewaySection(Strict):
    id: Identifier
    state_dir: Path = Path("./state")


class MqttSection(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: Identifier = "derms"
    groups: list[Identifier] = Field(default_factory=list)
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    max_payload_bytes: int = Field(262_144, ge=1024, le=268_435_455)
    """A control message larger than this is refused unread (``rejected`` / ``invalid``)."""
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _password_needs_username(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


class RoleSection(Strict):
    """One party allowed to send controls: its default primacy and the control types it may."""

    primacy: int = Field(ge=0, le=255)
    """Lower wins (IEEE 2030.5); a role may not claim a stronger primacy than its own."""
    allow: list[ControlType] = Field(default_factory=lambda: list(ControlType))


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
    default: ControlPayload = ControlPayload()
    """Applies when no event is active; the retained default_control topic overrides it."""
    export_limit: ExportLimitSection = ExportLimitSection()

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
    influxdb: InfluxSection | None = None
    """Optional history sink, fed from the same buffer."""
