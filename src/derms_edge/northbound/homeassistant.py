"""Home Assistant MQTT discovery, sans I/O: the retained config messages that make each DER a
Home Assistant device with its sensors, read from the gateway's own topics.

`discovery_messages` turns the gateway's devices (id, kind, capability when known) into
``(topic, payload)`` pairs; `is_own_config` and `is_birth` classify what comes back from the
broker. Publishing them, and removing the configs of devices that left, is
`northbound/ha_announcer.py`'s.

Unique ids and device identifiers are ``derms-edge:{gateway}[:{device}][:{key}]`` (':' is in
no id). Topics are ``{discovery_prefix}/{component}/{gateway}/{device}-{key}/config`` (the gateway's
own entities: ``.../{gateway}/{key}/config``): the node id is the gateway's, so every config
this gateway ever published is under ``{discovery_prefix}/+/{gateway}/+/config``; keys have
no '-', so the last '-' splits device and key. Ids pass through `discovery_name` ('.' to
'_', which Home Assistant's topic ids do not take).

Templates use only Jinja2's own syntax and ``value_json`` (no filters: Home Assistant
replaces several of Jinja2's, ``float``, ``int``, ``round`` among them). A template that
renders ``None`` sets the entity's state to unknown (Home Assistant's ``PAYLOAD_NONE``), which
is what a null telemetry value renders. Entities are available while the gateway's retained
status says ``online`` and, for readings, the device's telemetry says quality ``ok``
(``availability_mode: all``); the quality, controls and gateway entities need the gateway only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from derms_edge import __version__
from derms_edge.config import discovery_name
from derms_edge.model import Capability, DeviceKind, OperatingState, Quality
from derms_edge.northbound.topics import Topics

ORIGIN: Final = "derms-edge"
"""The ``origin`` Home Assistant shows, and the first part of every unique id."""
_ALL: Final = frozenset(DeviceKind)
_EVSE: Final = frozenset({DeviceKind.EVSE})
_GENERATING: Final = frozenset({DeviceKind.INVERTER, DeviceKind.BATTERY, DeviceKind.EVSE})
"""Kinds that carry controls (meters only measure)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """A telemetry field as a Home Assistant sensor."""

    key: str
    """The telemetry field (docs/mqtt-api.md), also the entity's key."""
    name: str
    unit: str | None
    device_class: str | None
    state_class: str | None = "measurement"
    kinds: frozenset[DeviceKind] = _ALL


READINGS: Final = (
    Reading("w", "Active power", "W", "power"),
    Reading("var", "Reactive power", "var", "reactive_power"),
    Reading("va", "Apparent power", "VA", "apparent_power"),
    Reading("pf", "Power factor", None, "power_factor"),
    Reading("v", "Voltage", "V", "voltage"),
    Reading("hz", "Frequency", "Hz", "frequency"),
    Reading("a", "Current", "A", "current"),
    Reading("soc_pct", "State of charge", "%", "battery", kinds=frozenset({DeviceKind.BATTERY})),
    # the energy counters feed Home Assistant's Energy dashboard
    Reading("wh_exported", "Energy exported", "Wh", "energy", "total_increasing"),
    Reading("wh_imported", "Energy imported", "Wh", "energy", "total_increasing"),
)
"""Every numeric telemetry field, in SI units as published."""

ENERGY_NAMES: Final[Mapping[tuple[DeviceKind, str], str]] = {
    (DeviceKind.INVERTER, "wh_exported"): "Energy produced",
    (DeviceKind.INVERTER, "wh_imported"): "Energy consumed",
    (DeviceKind.BATTERY, "wh_exported"): "Energy discharged",
    (DeviceKind.BATTERY, "wh_imported"): "Energy charged",
    (DeviceKind.EVSE, "wh_imported"): "Energy charged",
}
"""The counters' names where the grid's point of view is not the natural one."""


@dataclass(frozen=True, slots=True)
class ControlSensor:
    """A numeric control in force, from the retained ``active`` topic."""

    key: str
    """The control type (docs/mqtt-api.md, Events), also the entity's key."""
    name: str
    unit: str
    device_class: str | None
    kinds: frozenset[DeviceKind]


CONTROLS: Final = (
    ControlSensor("max_w_pct", "Active power limit", "%", None, _GENERATING),
    ControlSensor("storage_w", "Storage setpoint", "W", "power", frozenset({DeviceKind.BATTERY})),
    ControlSensor(
        "reserve_soc_pct", "Backup reserve", "%", "battery", frozenset({DeviceKind.BATTERY})
    ),
    ControlSensor("evse_max_a", "Charging current limit", "A", "current", _EVSE),
    ControlSensor("evse_max_w", "Charging power limit", "W", "power", _EVSE),
)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What discovery knows of one device: its kind, and its capability once connected."""

    kind: DeviceKind
    capability: Capability | None = None


def status_template() -> str:
    """Availability from the gateway's retained status (its last will says offline)."""
    return "{{ 'online' if value_json.online else 'offline' }}"


def quality_template() -> str:
    """Availability from a device's telemetry: its values are to be trusted."""
    return f"{{{{ 'online' if value_json.quality == '{Quality.OK}' else 'offline' }}}}"


def field_template(key: str) -> str:
    """A telemetry field as it is; null renders ``None`` (unknown in Home Assistant)."""
    return f"{{{{ value_json.{key} }}}}"


def enum_template(key: str) -> str:
    """A telemetry field with a fixed set of words; null and ``unknown`` render ``None``
    (Home Assistant's own unknown: an enum sensor takes only the words of its options)."""
    return f"{{{{ 'None' if value_json.{key} in [None, 'unknown'] else value_json.{key} }}}}"


def control_template(scope: str, key: str) -> str:
    """The value of one control type in force in ``scope`` (a device's entry under ``devices``,
    or ``site``); ``None`` when none is."""
    return (
        f"{{% set c = {scope}.get('{key}') %}}"
        "{{ c.value if c is mapping and c.value is number else 'None' }}"
    )


def sources_template(scope: str) -> str:
    """The control types in force in ``scope`` and where each came from (its source, and the
    role when one sent it), or ``none``."""
    return (
        f"{{% for type, c in {scope}.items() %}}"
        "{{ type }}: {{ c.source }}{% if c.role %} ({{ c.role }}){% endif %}"
        "{% if not loop.last %}, {% endif %}"
        "{% else %}none{% endfor %}"
    )


def device_scope(device_id: str) -> str:
    """The template expression of one device's entry in the ``active`` message."""
    return f"value_json.devices.get('{device_id}', {{}})"


def discovery_messages(
    prefix: str, topics: Topics, devices: Mapping[str, DeviceInfo]
) -> list[tuple[str, bytes]]:
    """Every retained config message for the gateway and its devices, in a stable order."""
    node = discovery_name(topics.gateway_id)
    gateway = _gateway_device(topics)
    messages = [
        (f"{prefix}/{component}/{node}/{key}/config", _encode(config | {"device": gateway}))
        for component, key, config in _gateway_entities(topics)
    ]
    for device_id, info in devices.items():
        device = _device(topics, device_id, info)
        name = discovery_name(device_id)
        messages += [
            (
                f"{prefix}/{component}/{node}/{name}-{key}/config",
                _encode(config | {"device": device}),
            )
            for component, key, config in _device_entities(topics, device_id, info.kind)
        ]
    return messages


def config_filter(prefix: str, topics: Topics) -> str:
    """The topic filter that holds every config message this gateway publishes."""
    return f"{prefix}/+/{discovery_name(topics.gateway_id)}/+/config"


def is_own_config(prefix: str, topics: Topics, topic: str) -> bool:
    """A topic under `config_filter`."""
    parts = topic.split("/")
    return (
        len(parts) == 5
        and parts[0] == prefix
        and parts[2] == discovery_name(topics.gateway_id)
        and parts[4] == "config"
    )


def birth_topic(prefix: str) -> str:
    """Where Home Assistant says it (re)started: payload ``online``."""
    return f"{prefix}/status"


def is_birth(prefix: str, topic: str, payload: bytes) -> bool:
    """Home Assistant's birth message: every config is to be published again."""
    return topic == birth_topic(prefix) and payload.strip() == b"online"


Entity = tuple[str, str, dict[str, Any]]
"""(component, key, config without its device)."""

EXPORT_LIMIT: Final = ControlSensor("export_limit_w", "Export limit", "W", "power", frozenset())
"""The site's export limit, on the gateway's device."""


def _gateway_entities(topics: Topics) -> list[Entity]:
    gateway_only = {"availability": [_availability(topics.status, status_template())]}
    return [
        (
            "binary_sensor",
            "online",
            _entity(topics, "online", "Online", topics.status)
            | {
                "device_class": "connectivity",
                "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
                "entity_category": "diagnostic",
            },
        ),
        (
            "sensor",
            "buffered",
            _entity(topics, "buffered", "Buffered messages", topics.status)
            | gateway_only
            | {
                "value_template": field_template("buffered"),
                "state_class": "measurement",
                "entity_category": "diagnostic",
            },
        ),
        (
            "sensor",
            EXPORT_LIMIT.key,
            _entity(topics, EXPORT_LIMIT.key, EXPORT_LIMIT.name, topics.active)
            | gateway_only
            | _control(EXPORT_LIMIT, "value_json.site"),
        ),
        (
            "sensor",
            "controls",
            _entity(topics, "controls", "Site controls", topics.active)
            | gateway_only
            | {"value_template": sources_template("value_json.site")},
        ),
    ]


def _device_entities(topics: Topics, device_id: str, kind: DeviceKind) -> list[Entity]:
    telemetry = topics.telemetry(device_id)
    gateway_only = {"availability": [_availability(topics.status, status_template())]}
    trusted = {
        "availability": [
            _availability(topics.status, status_template()),
            _availability(telemetry, quality_template()),
        ],
        "availability_mode": "all",
    }
    entities: list[Entity] = []
    for reading in READINGS:
        if kind not in reading.kinds:
            continue
        name = ENERGY_NAMES.get((kind, reading.key), reading.name)
        config = _entity(topics, reading.key, name, telemetry, device_id) | trusted
        config["value_template"] = field_template(reading.key)
        config |= _classes(reading.unit, reading.device_class, reading.state_class)
        entities.append(("sensor", reading.key, config))
    entities += [
        (
            "sensor",
            "quality",
            _entity(topics, "quality", "Quality", telemetry, device_id)
            | gateway_only
            | {
                "value_template": enum_template("quality"),
                "device_class": "enum",
                "options": [str(q) for q in Quality if q != Quality.UNKNOWN],
                "entity_category": "diagnostic",
            },
        ),
        (
            "sensor",
            "state",
            _entity(topics, "state", "Operating state", telemetry, device_id)
            | trusted
            | {
                "value_template": enum_template("state"),
                "device_class": "enum",
                "options": [str(s) for s in OperatingState if s != OperatingState.UNKNOWN],
            },
        ),
    ]
    if kind not in _GENERATING:
        return entities
    scope = device_scope(device_id)
    entities += [
        (
            "sensor",
            control.key,
            _entity(topics, control.key, control.name, topics.active, device_id)
            | gateway_only
            | _control(control, scope),
        )
        for control in CONTROLS
        if kind in control.kinds
    ]
    entities.append(
        (
            "sensor",
            "controls",
            _entity(topics, "controls", "Controls in force", topics.active, device_id)
            | gateway_only
            | {"value_template": sources_template(scope)},
        )
    )
    return entities


def _entity(
    topics: Topics, key: str, name: str, state_topic: str, device_id: str | None = None
) -> dict[str, Any]:
    owner = topics.gateway_id if device_id is None else f"{topics.gateway_id}:{device_id}"
    return {
        "name": name,
        "unique_id": f"{ORIGIN}:{owner}:{key}",
        "state_topic": state_topic,
        "qos": 1,
        "origin": {"name": ORIGIN, "sw_version": __version__},
    }


def _control(control: ControlSensor, scope: str) -> dict[str, Any]:
    return {"value_template": control_template(scope, control.key)} | _classes(
        control.unit, control.device_class, "measurement"
    )


def _classes(unit: str | None, device_class: str | None, state_class: str | None) -> dict[str, Any]:
    classes = {
        "unit_of_measurement": unit,
        "device_class": device_class,
        "state_class": state_class,
    }
    return {name: value for name, value in classes.items() if value is not None}


def _availability(topic: str, template: str) -> dict[str, str]:
    return {"topic": topic, "value_template": template}


def _gateway_device(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [f"{ORIGIN}:{topics.gateway_id}"],
        "name": f"DER gateway {topics.gateway_id}",
        "manufacturer": ORIGIN,
        "model": "DER gateway",
        "sw_version": __version__,
    }


def _device(topics: Topics, device_id: str, info: DeviceInfo) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [f"{ORIGIN}:{topics.gateway_id}:{device_id}"],
        "name": device_id,
        "model": str(info.kind),
        "via_device": f"{ORIGIN}:{topics.gateway_id}",
    }
    capability = info.capability
    if capability is not None:
        nameplate = {
            "manufacturer": capability.manufacturer,
            "model": capability.model,
            "serial_number": capability.serial_number,
            "sw_version": capability.version,
        }
        device |= {name: value for name, value in nameplate.items() if value}
    return device


def _encode(config: dict[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":")).encode()
