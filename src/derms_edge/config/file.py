"""The configuration file: the whole of it as one pydantic model, and loading it with errors
that name what and where."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from derms_edge.config.modbus import ProfileDevice, SunSpecDevice
from derms_edge.config.ocpp import OcppDevice, OcppSection
from derms_edge.config.opcua import OpcUaDevice
from derms_edge.config.sections import (
    ControlSection,
    GatewaySection,
    HomeAssistantSection,
    MqttSection,
    TelemetrySection,
    discovery_name,
)
from derms_edge.errors import ConfigError
from derms_edge.model import DeviceKind
from derms_edge.schema import Strict, problems

AnyDevice = SunSpecDevice | ProfileDevice | OpcUaDevice | OcppDevice
"""Any device entry."""
Device = Annotated[AnyDevice, Field(discriminator="protocol")]
"""A device entry as the file gives it: which one, by its ``protocol``."""


class Config(Strict):
    """The whole configuration file."""

    gateway: GatewaySection
    mqtt: MqttSection = MqttSection()
    devices: list[Device] = Field(min_length=1)
    telemetry: TelemetrySection = TelemetrySection()
    control: ControlSection = ControlSection()
    homeassistant: HomeAssistantSection | None = None
    """Home Assistant MQTT discovery; None (absent): off."""
    ocpp: OcppSection | None = None
    """The CSMS the OCPP charging stations connect to; required by protocol: ocpp devices."""
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
            if isinstance(device, OpcUaDevice | OcppDevice):
                continue  # one OPC UA server (or charging station) may well hold several
            key = (device.connection, device.unit_id)
            if key in links:
                raise ValueError(
                    f"devices {links[key]!r} and {device.id!r} both use {device.link} "
                    f"unit {device.unit_id}"
                )
            links[key] = device.id
        self._ocpp_stations()
        self._default_backoffs()
        if self.homeassistant is not None:
            self._distinct_discovery_names()
        meter = self.control.export_limit.meter
        if meter is not None and seen.get(meter) is None:
            raise ValueError(f"control.export_limit.meter: no device {meter!r}")
        if meter is not None and self.devices[seen[meter]].kind != DeviceKind.METER:
            raise ValueError(f"control.export_limit.meter: {meter!r} is not a kind: meter device")
        return self

    def _distinct_discovery_names(self) -> None:
        """Two device ids that differ only by '.' and '_' would share Home Assistant topics;
        discovery under the gateway's own prefix would take its topics for configs."""
        if (
            self.homeassistant is not None
            and self.homeassistant.discovery_prefix == self.mqtt.prefix
        ):
            raise ValueError(
                f"homeassistant.discovery_prefix: {self.mqtt.prefix!r} is mqtt.prefix, the "
                "gateway's own topics; use Home Assistant's (default homeassistant)"
            )
        named: dict[str, str] = {}
        for device in self.devices:
            name = discovery_name(device.id)
            if name in named:
                raise ValueError(
                    f"homeassistant: devices {named[name]!r} and {device.id!r} would share "
                    f"the Home Assistant discovery name {name!r} ('.' becomes '_'): rename one"
                )
            named[name] = device.id

    def _ocpp_stations(self) -> None:
        """OCPP devices need the ocpp section; the EVSEs of one station agree on how it
        connects, and no EVSE is two devices."""
        stations: dict[str, tuple[int, OcppDevice]] = {}
        evses: set[tuple[str, int]] = set()
        for index, device in enumerate(self.devices):
            if not isinstance(device, OcppDevice):
                continue
            if self.ocpp is None:
                raise ValueError(
                    f"devices[{index}] ({device.id!r}) is protocol: ocpp, which needs the "
                    'top-level ocpp section (at least ocpp: {listen: "0.0.0.0:9000"})'
                )
            if (device.station_id, device.evse) in evses:
                raise ValueError(
                    f"devices[{index}] ({device.id!r}): station {device.station_id} evse "
                    f"{device.evse} is already another device"
                )
            evses.add((device.station_id, device.evse))
            first = stations.setdefault(device.station_id, (index, device))
            other = first[1]
            for key in ("ocpp_version", "password_file"):
                if getattr(device, key) != getattr(other, key):
                    raise ValueError(
                        f"devices[{index}].{key}: station {device.station_id} has another "
                        f"{key} in devices[{first[0]}]; one station connects one way"
                    )

    def _default_backoffs(self) -> None:
        """Fill in each device's ``backoff_max_s`` left out.

        A device alone on its link is tried again every poll interval at most, so the
        controls in force are back within two poll intervals of its recovery. Devices that
        share a link (units on one RS485 bus or behind one Modbus TCP gateway) wait up to
        30 timeouts: every try at a silent unit holds the link for up to three timeouts
        (SunS marker search), so a unit gone for long takes at most about a tenth of it.
        """
        # an OPC UA device has a session of its own, even on a server it shares
        sharing = Counter(
            d.connection for d in self.devices if not isinstance(d, OpcUaDevice | OcppDevice)
        )
        for index, device in enumerate(self.devices):
            if device.backoff_max_s is not None:
                continue
            shared = (
                not isinstance(device, OpcUaDevice | OcppDevice) and sharing[device.connection] > 1
            )
            cap = 30 * device.timeout_s if shared else device.poll_interval_s
            self.devices[index] = device.model_copy(
                update={"backoff_max_s": min(3600.0, max(device.poll_interval_s, cap))}
            )


ModbusEntry = Annotated[SunSpecDevice | ProfileDevice, Field(discriminator="protocol")]
"""A device entry that speaks Modbus: SunSpec or a register profile."""


class _ModbusConfig(Config):
    """`Config` for a file whose devices all speak Modbus and that has no ocpp section: the
    same fields, checks and messages, validated without the OPC UA and OCPP models in the
    validator (pydantic builds `Config`'s, with them, only when a file needs it: ~0.3 MB
    that a SunSpec site's daemon does not carry)."""

    devices: list[ModbusEntry] = Field(min_length=1)  # type: ignore[assignment]
    ocpp: None = None


_MODBUS = ("sunspec", "modbus")
_WORDING = {"extra_forbidden": "unknown key (check the spelling; see docs/configuration.md)"}
_TAGS = ("sunspec", "modbus", "opcua", "ocpp")
"""The device entries' discriminator values: pydantic puts them in error locations."""


def _modbus_only(data: dict[Any, Any]) -> bool:
    """Every device entry names a Modbus protocol and there is no ocpp section: anything
    else (another protocol, none, a typo, no list) goes to `Config` and its messages."""
    devices = data.get("devices")
    return (
        "ocpp" not in data
        and isinstance(devices, list)
        and all(isinstance(d, dict) and d.get("protocol") in _MODBUS for d in devices)
    )


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-parsed YAML; raise ConfigError with one line per problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the file must be a YAML mapping (key: value)"])
    model = _ModbusConfig if _modbus_only(data) else Config
    try:
        config = model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(
            problems(error, nowhere="(top level)", wording=_WORDING, tags=_TAGS)
        ) from error
    if model is Config:
        return config
    # validated: the same values as a Config (its validator is not needed for that)
    values = {name: getattr(config, name) for name in Config.model_fields}
    return Config.model_construct(config.model_fields_set, **values)


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
