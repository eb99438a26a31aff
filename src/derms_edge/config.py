"""The gateway's YAML configuration as pydantic models, and loading it with readable errors."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from derms_edge.control.events import ControlType
from derms_edge.devices.opcua.nodeid import NodeRef, parse_node_id
from derms_edge.errors import ConfigError
from derms_edge.northbound.commands import ControlPayload

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


class _Device(_Strict):
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


class StorageSettings(_Strict):
    """The customer's side of a battery, whatever protocol it speaks."""

    reserve_soc_pct: float | None = Field(None, ge=0, le=100)
    """The customer's backup reserve: storage control never takes SoC below it (batteries)."""
    efficiency: float | None = Field(None, gt=0, le=1)
    """One-way charge and discharge efficiency; default control.efficiency (batteries)."""

    @model_validator(mode="after")
    def _storage_settings(self) -> Self:
        if getattr(self, "kind", "battery") != "battery":
            for key in ("reserve_soc_pct", "efficiency"):
                if getattr(self, key) is not None:
                    kind = getattr(self, "kind", "")
                    raise ValueError(
                        f"{key} applies to batteries only (this device is kind: {kind})"
                    )
        return self


class _ModbusDevice(_Device):
    """A Modbus device: where it is (TCP or serial) and its unit id."""

    host: str | None = None
    port: int = Field(502, ge=1, le=65535)
    serial: SerialSection | None = None
    unit_id: int = Field(1, ge=0, le=247)

    @model_validator(mode="after")
    def _one_link(self) -> Self:
        if (self.host is None) == (self.serial is None):
            raise ValueError("give either host (Modbus TCP) or serial (Modbus RTU), not both")
        return self

    @property
    def link(self) -> str:
        """Where the device is, for people: host:port or the serial port."""
        if self.serial is not None:
            return f"{self.serial.port}@{self.serial.baudrate}/{self.serial.parity}"
        return f"{self.host}:{self.port}"

    @property
    def connection(self) -> str:
        """The serial port or host:port: devices with the same one share one Modbus link."""
        return self.serial.port if self.serial is not None else f"{self.host}:{self.port}"


class SunSpecDevice(_ModbusDevice, StorageSettings):
    protocol: Literal["sunspec"]
    base_address: Literal[40000, 0, 50000] | None = None
    """Where the SunS marker is; omitted: discovered at 40000, 0 and 50000 in that order."""


RegisterType = Literal["uint16", "int16", "uint32", "int32", "float32"]


class RegisterPoint(_Strict):
    """One value in a vendor's register map: holding register address, type and scale."""

    address: int = Field(ge=0, le=65535)
    type: RegisterType = "uint16"
    scale: float = 1.0
    """Value in SI units = raw x scale (a negative scale flips the sign)."""

    @model_validator(mode="after")
    def _scale_and_room(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address == 65535 and not self.type.endswith("16"):
            raise ValueError(f"a {self.type} takes two registers: 65535 is the last address")
        return self


MeasuredName = Literal["w", "va", "v", "a", "hz", "wh_imported", "soc_pct"]


class EvseProfile(_Strict):
    """A Modbus EV charger's register map (a vendor quirk is data, not code)."""

    name: str = Field(min_length=1)
    """Which charger this describes, for people (e.g. "alfen-ng9xx")."""
    word_order: Literal["big", "little"] = "big"
    """Order of the 16-bit words in 32-bit values."""
    phases: Literal[1, 3] = 3
    max_a: float = Field(32.0, ge=6, le=80)
    """Highest current limit the charger (and its cable) takes, A per phase."""
    measurements: dict[MeasuredName, RegisterPoint] = {}
    """Read every poll. W is positive for power delivered to the grid (charging is negative);
    ``a`` is the current per phase (readings report the total, phases x a)."""
    current_limit: RegisterPoint
    """The current limit register, A per phase; written, then read back."""
    refresh_s: float = Field(30.0, gt=0, le=3600)
    """The limit is re-written this often, inside the charger's validity (watchdog) time."""
    validity: RegisterPoint | None = None
    """Remaining validity of the written limit, s (read; 0 means the charger fell back)."""


class ProfileDevice(_ModbusDevice):
    """A non-SunSpec Modbus device described by a register profile (EV chargers)."""

    protocol: Literal["modbus"]
    profile: EvseProfile

    @model_validator(mode="after")
    def _kind(self) -> Self:
        if self.kind != "evse":
            raise ValueError(
                f"register profiles describe EV chargers (kind: evse), not {self.kind}"
            )
        return self


OpcUaPointName = Literal[
    # measurements, in every reading
    "w", "var", "va", "pf", "v", "hz", "a", "soc_pct", "wh_exported", "wh_imported", "state",
    # nameplate and limits, read at connect
    "w_max", "va_max", "wh_rtg", "charge_w_max", "discharge_w_max",
    "soc_min_pct", "soc_max_pct", "max_a",
    # setpoints the gateway writes
    "max_a_setpoint", "storage_w_setpoint", "max_w_pct_setpoint", "var_setpoint",
]  # fmt: skip
StateName = Literal[
    "off", "sleeping", "starting", "running", "throttled", "shutting_down", "fault",
    "standby", "charging", "discharging", "idle", "unknown",
]  # fmt: skip

SI_UNITS: dict[str, dict[str, float]] = {
    "W": {"W": 1.0, "kW": 1e3, "MW": 1e6},
    "var": {"var": 1.0, "kvar": 1e3, "Mvar": 1e6},
    "VA": {"VA": 1.0, "kVA": 1e3, "MVA": 1e6},
    "V": {"V": 1.0, "kV": 1e3},
    "A": {"A": 1.0, "mA": 1e-3, "kA": 1e3},
    "Hz": {"Hz": 1.0, "mHz": 1e-3},
    "Wh": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
    "%": {"%": 1.0},
    "": {"": 1.0},
}
"""Per SI unit of the gateway, the units a node may be given in and their factors to it."""
POINT_UNITS: dict[str, str] = {
    "w": "W", "var": "var", "va": "VA", "pf": "", "v": "V", "hz": "Hz", "a": "A",
    "soc_pct": "%", "wh_exported": "Wh", "wh_imported": "Wh", "state": "",
    "w_max": "W", "va_max": "VA", "wh_rtg": "Wh", "charge_w_max": "W",
    "discharge_w_max": "W", "soc_min_pct": "%", "soc_max_pct": "%", "max_a": "A",
    "max_a_setpoint": "A", "storage_w_setpoint": "W", "max_w_pct_setpoint": "%",
    "var_setpoint": "var",
}  # fmt: skip
"""The gateway's SI unit of each point."""


class NodePoint(_Strict):
    """One point of an OPC UA device: its node, and how its value becomes SI units.

    Value in SI units = node value x scale x the unit's factor (kW -> 1000). Written the
    other way round for setpoints. A plain string is the node id alone.
    """

    node: str
    scale: float = 1.0
    """A negative scale flips the sign (e.g. a charger that reports consumption positive)."""
    unit: str | None = None
    """The unit the node's value is in, if not the gateway's SI unit (kW, kWh, kV, mA, ...)."""
    states: dict[str, StateName] | None = None
    """For ``state`` only: the node's values (as text: "0", "2", "Charging") to states."""

    @model_validator(mode="before")
    @classmethod
    def _plain_node_id(cls, data: Any) -> Any:
        return {"node": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _valid(self) -> Self:
        parse_node_id(self.node)  # a ValueError names what is wrong
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def node_ref(self) -> NodeRef:
        """The parsed node id."""
        return parse_node_id(self.node)

    def factor(self, point: str) -> float:
        """SI value = node value x factor."""
        return self.scale * SI_UNITS[POINT_UNITS[point]][self.unit or POINT_UNITS[point]]


class OpcUaSecurity(_Strict):
    """How the session is secured: OPC UA security policy, message mode and certificates."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    """Basic256Sha256 only: sign the messages, or sign and encrypt them."""
    certificate: Path | None = None
    """The gateway's application instance certificate (DER or PEM); the server must trust it."""
    private_key: Path | None = None
    """The private key of that certificate (PEM)."""
    server_certificate: Path | None = None
    """The server certificate the gateway trusts (DER or PEM): a server presenting another one
    is refused. Without it the session is encrypted but the server's identity is not checked."""

    @model_validator(mode="after")
    def _certificates(self) -> Self:
        given = [
            k for k in ("certificate", "private_key", "server_certificate") if getattr(self, k)
        ]
        if self.policy == "None" and given:
            raise ValueError(f"{', '.join(given)} given, but policy is None (no security)")
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy} needs certificate and private_key")
        return self


_ENDPOINT = re.compile(
    r"^opc\.tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s]+)(?::(?P<port>\d+))?(?:/\S*)?$"
)


class OpcUaDevice(_Device, StorageSettings):
    """A device that speaks OPC UA: an EV charger, a battery or a plant controller."""

    protocol: Literal["opcua"]
    endpoint: str
    """opc.tcp://host:port/path"""
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: str | None = None
    nodes: dict[OpcUaPointName, NodePoint] = Field(min_length=1)
    """The gateway's point names to the server's nodes."""
    subscribe: bool = True
    """Read through a subscription (data-change notifications); false: poll every interval."""
    publishing_interval_ms: float = Field(500.0, ge=10, le=60000)
    """The subscription's publishing (and sampling) interval."""
    phases: Literal[1, 3] = 3
    """EV chargers: phases in use."""
    max_a: float | None = Field(None, ge=6, le=80)
    """EV chargers: the highest current limit, A per phase (default: the max_a node, else 32)."""

    @model_validator(mode="after")
    def _opcua(self) -> Self:
        if _ENDPOINT.fullmatch(self.endpoint) is None:
            raise ValueError(f"endpoint {self.endpoint!r} is not opc.tcp://host[:port][/path]")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        for point, spec in self.nodes.items():
            unit = spec.unit
            units = SI_UNITS[POINT_UNITS[point]]
            if unit is not None and unit not in units:
                allowed = ", ".join(u for u in units if u) or "none (it has no unit)"
                raise ValueError(f"nodes.{point}: unit {unit!r} is not one of {allowed}")
            if spec.states is not None and point != "state":
                raise ValueError(f"nodes.{point}: states applies to the state point only")
        if self.kind != "evse" and self.max_a is not None:
            raise ValueError(
                f"max_a applies to EV chargers only (this device is kind: {self.kind})"
            )
        return self

    @property
    def link(self) -> str:
        """Where the device is, for people: its endpoint."""
        return self.endpoint


Device = Annotated[SunSpecDevice | ProfileDevice | OpcUaDevice, Field(discriminator="protocol")]
AnyDevice = SunSpecDevice | ProfileDevice | OpcUaDevice


class RoleSection(_Strict):
    """One party allowed to send controls: its default primacy and the control types it may."""

    primacy: int = Field(ge=0, le=255)
    """Lower wins (IEEE 2030.5); a role may not claim a stronger primacy than its own."""
    allow: list[ControlType] = list(ControlType)


class ExportLimitSection(_Strict):
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


class ControlSection(_Strict):
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
    roles: dict[Identifier, RoleSection] = Field(default_factory=_default_roles, min_length=1)
    default: ControlPayload = ControlPayload()
    """Applies when no event is active; the retained default_control topic overrides it."""
    export_limit: ExportLimitSection = ExportLimitSection()


class InfluxSection(_Strict):
    """An InfluxDB v2 (or compatible) server that keeps the telemetry history."""

    url: str = Field(pattern=r"^https?://")
    token: str = Field(min_length=1)
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    batch_size: int = Field(500, ge=1, le=50000)
    """Points per write request at most."""
    flush_interval_ms: int = Field(1000, ge=10, le=3_600_000)
    """A batch is written at least this often while points wait."""


class TelemetrySection(_Strict):
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


class Config(_Strict):
    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    devices: list[Device] = Field(min_length=1)
    telemetry: TelemetrySection = TelemetrySection()
    control: ControlSection = ControlSection()
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
            if isinstance(device, OpcUaDevice):
                continue  # one OPC UA server may well hold several devices
            key = (device.connection, device.unit_id)
            if key in links:
                raise ValueError(
                    f"devices {links[key]!r} and {device.id!r} both use {device.link} "
                    f"unit {device.unit_id}"
                )
            links[key] = device.id
        self._default_backoffs()
        meter = self.control.export_limit.meter
        if meter is not None and seen.get(meter) is None:
            raise ValueError(f"control.export_limit.meter: no device {meter!r}")
        if meter is not None and self.devices[seen[meter]].kind != "meter":
            raise ValueError(f"control.export_limit.meter: {meter!r} is not a kind: meter device")
        return self

    def _default_backoffs(self) -> None:
        """Fill in each device's ``backoff_max_s`` left out.

        A device alone on its link is tried again every poll interval at most, so the
        controls in force are back within two poll intervals of its recovery. Devices that
        share a link (units on one RS485 bus or behind one Modbus TCP gateway) wait up to
        30 timeouts: every try at a silent unit holds the link for up to three timeouts
        (SunS marker search), so a unit gone for long takes at most about a tenth of it.
        """
        # an OPC UA device has a session of its own, even on a server it shares
        sharing = Counter(d.connection for d in self.devices if not isinstance(d, OpcUaDevice))
        for index, device in enumerate(self.devices):
            if device.backoff_max_s is not None:
                continue
            shared = not isinstance(device, OpcUaDevice) and sharing[device.connection] > 1
            cap = 30 * device.timeout_s if shared else device.poll_interval_s
            self.devices[index] = device.model_copy(
                update={"backoff_max_s": min(3600.0, max(device.poll_interval_s, cap))}
            )

    def device(self, device_id: str) -> AnyDevice:
        """The configured device with this id; KeyError if there is none."""
        return next(d for d in self.devices if d.id == device_id)


def _location(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a path in the file: devices[1].port."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("sunspec", "modbus", "opcua") or re.fullmatch(r"function-\w+\[.*\]", part):
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
