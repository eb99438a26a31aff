"""The gateway's YAML configuration as pydantic models, and loading it with readable errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from derms_edge.errors import ConfigError

DeviceKind = Literal["inverter", "battery", "evse", "meter"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""Ids end up in MQTT topics: no '/', '+', '#' or spaces."""


class _Strict(BaseModel):
    """Base of every config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Strict):
    id: Identifier
    state_dir: Path = Path("./state")


class MqttSection(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: Identifier = "derms"
    groups: list[Identifier] = []
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _password_needs_username(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        return self


class SerialSection(_Strict):
    port: str = Field(min_length=1)
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class SunSpecDevice(_Strict):
    id: Identifier
    kind: DeviceKind
    protocol: Literal["sunspec"]
    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: SerialSection | None = None
    unit_id: int = Field(1, ge=0, le=247)
    base_address: Literal[40000, 0, 50000] | None = None
    """Where the SunS marker is; omitted: discovered at 40000, 0 and 50000 in that order."""
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    timeout_s: float = Field(1.0, gt=0, le=60)
    stale_after_s: float | None = Field(None, gt=0)
    """Readings older than this are reported stale; default three poll intervals."""
    backoff_max_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_link(self) -> Self:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host (Modbus TCP) or serial (Modbus RTU), not both")
        return self

    @property
    def stale_after(self) -> float:
        """Age in seconds after which a reading is stale."""
        return self.stale_after_s if self.stale_after_s is not None else 3 * self.poll_interval_s

    @property
    def link(self) -> str:
        """Where the device is, for people: host:port or the serial port."""
        if self.serial is not None:
            return f"{self.serial.port}@{self.serial.baudrate}/{self.serial.parity}"
        return f"{self.host}:{self.port}"


Device = Annotated[SunSpecDevice, Field(discriminator="protocol")]


class TelemetrySection(_Strict):
    interval_s: float = Field(5.0, gt=0, le=3600)
    qos: Literal[0, 1] = 1


class Config(_Strict):
    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    devices: list[Device] = Field(min_length=1)
    telemetry: TelemetrySection = TelemetrySection()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _unique_devices(self) -> Self:
        seen: dict[str, int] = {}
        for index, device in enumerate(self.devices):
            if device.id in seen:
                raise ValueError(
                    f"device id {device.id!r} is used twice: devices[{seen[device.id]}] "
                    f"and devices[{index}]"
                )
            seen[device.id] = index
        links: dict[tuple[str, int], str] = {}
        for device in self.devices:
            key = (device.link, device.unit_id)
            if key in links:
                raise ValueError(
                    f"devices {links[key]!r} and {device.id!r} both use {device.link} "
                    f"unit {device.unit_id}"
                )
            links[key] = device.id
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a path in the file: devices[1].port."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "sunspec" or re.fullmatch(r"function-\w+\[.*\]", part):
            continue  # discriminator tags and validator names are not keys in the file
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _messages(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/configuration.md)"
        lines.append(f"{_location(tuple(item['loc']))}: {message}")
    return lines


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML; raise ConfigError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a YAML mapping (key: value)"])
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_messages(error)) from error


def load_config(path: Path) -> Config:
    """Read and validate a configuration file; raise ConfigError with one line per problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the file ({error.strerror})"]) from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"{path}: not valid YAML at {where}: {problem}"]) from error
    return parse_config(data, str(path))
