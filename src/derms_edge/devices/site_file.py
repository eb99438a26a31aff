"""The configuration file ``derms-edge init`` writes: the devices a survey found as entries,
each under a comment saying what it is, and the other sections with comments on what to
change. Pure: the answers come from the caller, and the text is checked as ``run`` reads it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from derms_edge.config import Config, parse_config
from derms_edge.devices.survey import OpcUaFound, SunSpecUnit
from derms_edge.model import Capability, DeviceKind


@dataclass(slots=True)
class Entry:
    """One device of the file: its keys, what it is (for the comment above it and for the
    questions about it) and notes for the installer."""

    settings: dict[str, Any]
    about: str
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind(self.settings["kind"])


def _nameplate(capability: Capability) -> str:
    """Maker, model, serial number and ratings, as far as the device reports them."""
    words = [w for w in (capability.manufacturer, capability.model) if w]
    maker = " ".join(words) or "unnamed device"
    facts = [f"serial {capability.serial_number}"] if capability.serial_number else []
    ratings = (
        (capability.w_max, "W"),
        (capability.va_max, "VA"),
        (capability.wh_rtg, "Wh"),
    )
    facts += [f"{value:g} {unit}" for value, unit in ratings if value is not None]
    return f"{maker} ({', '.join(facts)})" if facts else maker


def sunspec_entry(unit: SunSpecUnit, device_id: str) -> Entry:
    """The entry of a SunSpec device, with the base its map was found at."""
    models = ", ".join(map(str, unit.capability.models))
    settings = {
        "id": device_id,
        "kind": str(unit.kind),
        "protocol": "sunspec",
        **unit.place.settings(),
        "unit_id": unit.unit_id,
        "base_address": unit.base,
        "poll_interval_s": 1,
    }
    about = f"{unit.kind} {_nameplate(unit.capability)} at {unit.place.label} unit {unit.unit_id}"
    return Entry(settings, about, [f"SunSpec models {models}; the SunS marker at {unit.base}"])


def opcua_entry(found: OpcUaFound, device_id: str) -> Entry:
    """The entry of an OPC UA device, its points guessed from the browse names."""
    skeleton = found.skeleton
    settings = {
        "id": device_id,
        "kind": str(skeleton.kind),
        "protocol": "opcua",
        "endpoint": found.endpoint,
        "nodes": {point: variable.node_id for point, variable in skeleton.points.items()},
    }
    notes = [
        "points guessed from the browse names: check each one, its sign (w is positive when",
        "power goes to the grid: {node: ..., scale: -1} for a node that counts consumption",
        "positive) and its unit ({node: ..., unit: kW} when it is not W, Wh, V, A).",
        "An anonymous, unencrypted session: see security: in docs/configuration.md.",
    ]
    notes += [
        f"not recognised: {variable.browse_path} ({variable.node_id})"
        for variable in skeleton.unmatched
    ]
    about = f"{skeleton.kind} {skeleton.device_id!r} on {found.endpoint}"
    return Entry(settings, about, notes)


def default_ids(kinds: Sequence[DeviceKind]) -> list[str]:
    """A device id for each kind: the kind itself, numbered when there are several."""
    total = Counter(kinds)
    seen: Counter[DeviceKind] = Counter()
    ids = []
    for kind in kinds:
        seen[kind] += 1
        ids.append(str(kind) if total[kind] == 1 else f"{kind}-{seen[kind]}")
    return ids


def _block(value: Any, indent: str) -> list[str]:
    """``value`` as block YAML, every line indented."""
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=100)
    return [indent + line for line in text.splitlines()]


@dataclass(frozen=True, slots=True)
class Site:
    """What the file says besides the devices."""

    gateway_id: str
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    state_dir: str = "./state"


def render(site: Site, entries: Sequence[Entry], unread: Sequence[str], command: str) -> str:
    """The whole file, commented."""
    lines = [
        f"# Written by `{command}`.",
        "# Check it with `derms-edge check-config FILE` after every change, run it with",
        "# `derms-edge run FILE`. Every key is in docs/configuration.md.",
        "",
        "gateway:",
        "  # this site's id: every MQTT topic is under {prefix}/v1/{id}; unique per site",
        *_block({"id": site.gateway_id}, "  "),
        "  # where the gateway keeps its schedule and telemetry buffer (under systemd:",
        "  # /var/lib/derms-edge)",
        *_block({"state_dir": site.state_dir}, "  "),
        "",
        "mqtt:",
        "  # the broker the DSO or aggregator listens on",
        *_block({"host": site.broker_host, "port": site.broker_port, "prefix": "derms"}, "  "),
        "  # A broker off this machine wants TLS (port 8883) and a login. Uncomment and fill in:",
        "  # tls:",
        "  #   ca_file: /etc/derms-edge/ca.pem          # the CA of the broker's certificate",
        "  #   cert_file: /etc/derms-edge/gateway.pem   # a client certificate, if it wants one",
        "  #   key_file: /etc/derms-edge/gateway.key    # chmod 640, group derms-edge",
        "  # username: <this site's user on the broker>",
        "  # password_file: /etc/derms-edge/mqtt.password  # chmod 640; not the password here",
        "",
        "# The devices found. Each is read every poll_interval_s; base_address is where its",
        "# SunSpec map was found (drop it to search 40000, 0 and 50000 again at every connect).",
        "devices:",
    ]
    for entry in entries:
        lines.append(f"  # {entry.about}")
        lines += [f"  # {note}" for note in entry.notes]
        block = _block([entry.settings], "  ")
        lines += [*block, ""]
    if unread:
        lines.append("# Found, but not written (the gateway could not read them):")
        lines += [f"#   {line}" for line in unread]
        lines.append("")
    lines += [
        "telemetry:",
        "  # every device's latest reading is published this often, s",
        "  interval_s: 5",
        "",
        "# control: who may send controls (default: the role dso, primacy 1), the default",
        "# control and the export limit at the meter; see docs/configuration.md#control",
    ]
    return "\n".join(lines) + "\n"


def check(text: str, source: str) -> Config:
    """The file as ``run`` will read it; ConfigError if it is not valid."""
    return parse_config(yaml.safe_load(text), source)
