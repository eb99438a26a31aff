"""The MQTT contract as an AsyncAPI 3.0 document, generated from the payload models.

Every payload schema is the JSON Schema of the pydantic model that builds (outbound) or
validates (inbound) the message, and every address comes from `Topics`, so the document
cannot describe a contract the gateway does not speak. What JSON Schema can state but a
pydantic validator enforces in code (0 or at least 6 A; a curve or points, not both) is
added in `_refine`, and the response statuses and reasons get their descriptions here;
tests hold both against the models. ``derms-edge asyncapi`` (cli/asyncapi.py) writes
docs/asyncapi.yaml, and with ``--check`` fails when the committed file differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from derms_edge.config import MqttSection, TelemetrySection
from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A, Reason, Status
from derms_edge.northbound.commands import CancelPayload, EventPayload
from derms_edge.northbound.messages import (
    ActiveMessage,
    CapabilityMessage,
    ResponseMessage,
    StatusMessage,
    TelemetryMessage,
)
from derms_edge.northbound.topics import API_VERSION, Topics
from derms_edge.schema import ControlPayload

DEFAULT_OUTPUT = Path("docs/asyncapi.yaml")
ASYNCAPI_VERSION = "3.0.0"
MQTT_BINDING_VERSION = "0.2.0"
SCHEMAS = "#/components/schemas/"
DEFAULT_PREFIX: str = MqttSection.model_fields["prefix"].default

MODELS: tuple[type[BaseModel], ...] = (
    StatusMessage,
    TelemetryMessage,
    CapabilityMessage,
    ResponseMessage,
    ActiveMessage,
    EventPayload,
    CancelPayload,
    ControlPayload,
)
"""Every payload model; the schemas they reference (curves, enums) come along."""

EVENTS = "Events"
"""The schema of a controls payload: one event or a JSON array of events."""
HEARTBEAT = "Heartbeat"
REASON = "Reason"

STATUS_DESCRIPTIONS: dict[Status, str] = {
    Status.RECEIVED: "The event is valid and its role may send it; scheduled follows at once.",
    Status.SCHEDULED: "Accepted and stored; it starts at its start (after any randomization). "
    "The detail says from when and for how long.",
    Status.STARTED: "Its window opened and it takes part in arbitration on its devices; the "
    "detail names the targeted devices that cannot be reached now (written when they answer).",
    Status.COMPLETED: "Its window closed (also said for a window that passed while the "
    "gateway was not running). Final.",
    Status.CANCELLED: "Its role cancelled it on controls/{role}/cancel. Final.",
    Status.SUPERSEDED: "A stronger event takes over every device, control type and second "
    "left of it; reason superseded_by:<mrid>. Final.",
    Status.REJECTED: "Refused on arrival, or when it was due to start; the reason says why. Final.",
    Status.ABORTED: "Stopped after it had started; the reason says why. Final.",
}

REASON_DESCRIPTIONS: dict[Reason, str] = {
    Reason.INVALID: "rejected: the payload is not UTF-8 JSON, is too deep or too large "
    "(mqtt.max_payload_bytes), is an empty array or breaks the schema (the detail names the "
    "field); the creation_time is more than control.max_clock_skew_s ahead of the gateway's "
    "clock, the start more than 366 days ahead, or the window ends after the year 9999; or a "
    "cancel names an event that has already ended.",
    Reason.EXPIRED: "rejected: the event's window had ended before it arrived.",
    Reason.DUPLICATE: "rejected: the mrid is taken by an event with a different body (the same "
    "body again is answered with the event's current status).",
    Reason.UNAUTHORIZED: "rejected: the role is not configured, may not send one of the control "
    "types, or claims a stronger (lower) primacy than its own; or it cancels another role's "
    "event. With control.require_signed: the message is not a JWS signed with one of the "
    "role's Ed25519 keys (unsigned, a bad signature, an unknown kid, another role's key); "
    "the mrid is then null, as nothing of an unverified payload is read.",
    Reason.NOT_APPLICABLE: "rejected: a named device does not exist or cannot carry a control "
    "type, no targeted device can, export_limit_w without a site meter, or storage_w beyond "
    "the battery's rating.",
    Reason.DEVICE_OFFLINE: "aborted: a storage event waited its whole window for a battery to "
    "give a fresh state of charge (limits are never refused for a device that cannot be "
    "reached: they start and are written when it answers).",
    Reason.DEVICE_REFUSED: "aborted: a device refused a setpoint or read back another value.",
    Reason.SOC_LIMIT: "rejected (on arrival or at start): the projected state of charge leaves "
    "[reserve, maximum]; aborted: the battery reached the limit while the event ran.",
    Reason.SOC_UNKNOWN: "rejected: the battery answers but gives no state of charge or "
    "capacity; aborted: while the event ran, its state of charge became unknown, stale or "
    "frozen (it did not move while energy went into or out of the battery).",
    Reason.UNKNOWN_EVENT: "rejected: a cancel names an mrid this gateway does not know.",
    Reason.DISPATCHER_TIMEOUT: "aborted: the event's role sent nothing (retained messages do not "
    "count) for longer than control.dispatcher_timeout_s; the default control applies.",
    Reason.REPLAYED: "rejected: a signed event or cancel whose creation_time is more than "
    "control.max_clock_skew_s behind the gateway's clock, or the repeat of a signed message "
    "that was refused (the repeat of one that was taken is answered with its event's status).",
}
SUPERSEDED_BY_DESCRIPTION = (
    "superseded: the event with this mrid takes over every device, control type and second "
    "left of this one."
)

Action = Literal["send", "receive"]


@dataclass(frozen=True, slots=True)
class Channel:
    """One topic of the contract and what the gateway does on it."""

    id: str
    address: str
    message: str
    """The name of the message (and of its payload schema) in components."""
    action: Action
    """From the gateway's point of view: it sends, or it receives (subscribes)."""
    qos: int
    retain: bool
    summary: str
    description: str


def _topics() -> Topics:
    return Topics(DEFAULT_PREFIX, "{gateway_id}")


def channels() -> list[Channel]:
    """Every topic the gateway publishes or subscribes to, addressed as `Topics` builds it."""
    topics = _topics()
    telemetry_qos: int = TelemetrySection.model_fields["qos"].default
    return [
        Channel(
            "status",
            topics.status,
            StatusMessage.__name__,
            "send",
            1,
            True,
            "The gateway's status, retained; the last will sets it offline.",
            "Published on every (re)connection. The MQTT last will (QoS 1, retained) sets it "
            'to {"online": false, ...} when the gateway disappears; a clean stop publishes '
            "the same before exiting.",
        ),
        Channel(
            "telemetry",
            topics.telemetry("{device}"),
            TelemetryMessage.__name__,
            "send",
            telemetry_qos,
            False,
            "One device's readings, every telemetry.interval_s.",
            f"QoS is telemetry.qos (0 or 1, default {telemetry_qos}); seq counts every "
            "telemetry message of the gateway, so a gap means loss.",
        ),
        Channel(
            "capability",
            topics.capability("{device}"),
            CapabilityMessage.__name__,
            "send",
            1,
            True,
            "One device's nameplate and limits, retained.",
            "Published when the gateway connects to the device, and again on every MQTT "
            "(re)connection.",
        ),
        Channel(
            "responses",
            topics.responses,
            ResponseMessage.__name__,
            "send",
            1,
            False,
            "Each step of each event's life, or why it was refused.",
            "received, scheduled, started, completed; or cancelled, superseded, rejected, "
            "aborted with a machine-readable reason and a detail for people.",
        ),
        Channel(
            "active",
            topics.active,
            ActiveMessage.__name__,
            "send",
            1,
            True,
            "The control values in force now, per device and control type, retained.",
            "Republished whenever a value or its source changes. The source is an event "
            "(mrid and role), a default (role, or none for the configuration's control."
            "default) or export_limit (the site export loop lowered an inverter's limit).",
        ),
        Channel(
            "controls",
            topics.controls("{role}"),
            EVENTS,
            "receive",
            1,
            False,
            "A role sends one event or a JSON array of events to this gateway.",
            "Each event is validated and answered on its own on responses. A control type "
            "outside the role's control.roles.<role>.allow, or a primacy stronger (lower) "
            "than the role's, is rejected unauthorized.",
        ),
        Channel(
            "groupControls",
            topics.group_controls("{group}", "{role}"),
            EVENTS,
            "receive",
            1,
            False,
            "A role sends events to every gateway of a group (mqtt.groups).",
            "The same as controls/{role}: each gateway of the group answers on its own "
            "responses topic.",
        ),
        Channel(
            "cancel",
            topics.cancel("{role}"),
            CancelPayload.__name__,
            "receive",
            1,
            False,
            "A role cancels one of its own events.",
            "Answered cancelled, or rejected with unknown_event, unauthorized (another "
            "role's event) or invalid (the event has already ended).",
        ),
        Channel(
            "groupCancel",
            topics.group_controls("{group}", "{role}") + "/cancel",
            CancelPayload.__name__,
            "receive",
            1,
            False,
            "A role cancels one of its events at every gateway of a group.",
            "The same as controls/{role}/cancel.",
        ),
        Channel(
            "defaultControl",
            topics.default_control("{role}"),
            ControlPayload.__name__,
            "receive",
            1,
            True,
            "A role's default control; the sender publishes it retained.",
            "Applies, per device and control type, when no started event sets that type, "
            "and after the role's dispatcher has been silent longer than "
            "control.dispatcher_timeout_s. An empty retained message clears it. A default "
            "that is invalid or sets a type the role may not send is ignored and logged "
            "(there is no mrid to answer).",
        ),
        Channel(
            "heartbeat",
            topics.heartbeat("{role}"),
            HEARTBEAT,
            "receive",
            1,
            False,
            "A role's dispatcher proves it is alive.",
            "Any message of a role proves its dispatcher alive (retained ones do not); this "
            "topic is for when there is nothing else to say. Send it well within "
            "control.dispatcher_timeout_s.",
        ),
    ]


PARAMETERS: dict[str, dict[str, Any]] = {
    "gateway_id": {
        "description": "gateway.id in the gateway's configuration.",
        "examples": ["site-001"],
    },
    "device": {
        "description": "A device id (devices[].id); the status message lists them.",
        "examples": ["inv1"],
    },
    "role": {
        "description": "A role named in control.roles (for example dso, aggregator, "
        "customer), or created by control.dso_model (dgo, customer and the model's market "
        "roles: iso, derm, aggregator, trader; docs/dso-models.md): its default primacy and "
        "the control types it may send.",
        "examples": ["dso"],
    },
    "group": {
        "description": "A group named in mqtt.groups; the gateway subscribes to its controls.",
        "examples": ["feeder-12"],
    },
}


_VOLT_VAR_CAT_B = {
    "points": [[0.92, 44.0], [0.98, 0.0], [1.02, 0.0], [1.08, -44.0]],
    "v_ref_pu": 1.0,
    "response_time_s": 5.0,
    "mode": "auto",
}
EXAMPLES: dict[str, list[tuple[str, Any]]] = {
    EVENTS: [
        (
            "curtail",
            {
                "mrid": "ev-2026-0001",
                "creation_time": "2026-11-21T09:00:00Z",
                "devices": ["inv1"],
                "start": "2026-11-21T10:00:00Z",
                "duration_s": 3600,
                "control": {"max_w_pct": 50},
            },
        ),
        (
            "array",
            [
                {
                    "mrid": "ev-2026-0002",
                    "devices": ["bat1"],
                    "start": "2026-11-21T17:00:00Z",
                    "duration_s": 7200,
                    "randomize_start_s": 300,
                    "control": {"storage_w": 3000},
                },
                {
                    "mrid": "ev-2026-0003",
                    "duration_s": 86400,
                    "control": {"volt_var": {"curve": "cat_b"}},
                },
            ],
        ),
    ],
    CancelPayload.__name__: [("cancel", {"mrid": "ev-2026-0001"})],
    ControlPayload.__name__: [
        ("default", {"max_w_pct": 100, "volt_var": {"curve": "cat_b"}, "export_limit_w": 10000})
    ],
    ResponseMessage.__name__: [
        (
            "scheduled",
            {
                "mrid": "ev-2026-0001",
                "status": "scheduled",
                "reason": None,
                "detail": "from 2026-11-21T10:00:00Z for 3600 s",
                "ts": "2026-11-21T09:00:00.412Z",
            },
        ),
        (
            "rejected",
            {
                "mrid": "ev-2026-0004",
                "status": "rejected",
                "reason": "unauthorized",
                "detail": "role aggregator may not send max_w_pct (allowed: evse_max_a, storage_w)",
                "ts": "2026-11-21T09:05:00.020Z",
            },
        ),
    ],
    ActiveMessage.__name__: [
        (
            "active",
            {
                "ts": "2026-11-21T10:00:00.003Z",
                "devices": {
                    "inv1": {
                        "max_w_pct": {
                            "value": 50.0,
                            "source": "event",
                            "mrid": "ev-2026-0001",
                            "role": "dso",
                        },
                        "volt_var": {
                            "value": _VOLT_VAR_CAT_B,
                            "source": "default",
                            "mrid": None,
                            "role": "dso",
                        },
                    }
                },
                "site": {
                    "export_limit_w": {
                        "value": 10000.0,
                        "source": "default",
                        "mrid": None,
                        "role": "dso",
                    }
                },
            },
        )
    ],
}
"""Examples of the control contract's messages; tests validate each with its model."""


def _schemas() -> dict[str, Any]:
    """Every payload schema, with shared definitions hoisted into one flat map."""
    _, top = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template=SCHEMAS + "{model}"
    )
    schemas = {name: _draft07(schema, top=True) for name, schema in top["$defs"].items()}
    _refine(schemas)
    schemas[EVENTS] = {
        "title": EVENTS,
        "description": "One event, or a JSON array of events, each validated, accepted or "
        "rejected on its own.",
        "oneOf": [
            {"$ref": SCHEMAS + EventPayload.__name__},
            {"type": "array", "minItems": 1, "items": {"$ref": SCHEMAS + EventPayload.__name__}},
        ],
    }
    schemas[HEARTBEAT] = {
        "title": HEARTBEAT,
        "description": "Any payload; it is not read.",
    }
    return dict(sorted(schemas.items()))


def _draft07(node: Any, *, top: bool = False) -> Any:
    """Pydantic writes JSON Schema 2020-12; AsyncAPI 3.0 schemas are draft 07.

    The only difference in these models is tuples: ``prefixItems`` becomes ``items``. Titles
    stay on the named schemas only (a field's is its name again), and docstring markup
    (``x``) becomes Markdown (`x`).
    """
    if isinstance(node, list):
        return [_draft07(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {}
    for key, value in node.items():
        if key == "prefixItems":
            result["items"] = _draft07(value)
        elif key == "title" and not top:
            continue
        elif key == "description" and isinstance(value, str):
            result[key] = value.replace("``", "`")
        else:
            result[key] = _draft07(value)
    return result


def _refine(schemas: dict[str, Any]) -> None:
    """Rules the models enforce in validators, stated in the schema as well."""
    control = schemas[ControlPayload.__name__]["properties"]
    evse = control["evse_max_a"]
    evse["anyOf"] = [
        {"type": "number", "const": 0},
        {"type": "number", "minimum": MIN_EVSE_A, "maximum": MAX_EVSE_A},
        {"type": "null"},
    ]
    volt_var = schemas["VoltVarPayload"]
    volt_var["oneOf"] = [
        {"required": ["curve"], "properties": {"curve": {"type": "string"}}},
        {"required": ["points"], "properties": {"points": {"type": "array"}}},
    ]
    points = volt_var["properties"]["points"]["anyOf"][0]
    v_pu, q_pct = points["items"]["items"]
    v_pu.update({"minimum": 0.5, "maximum": 1.5, "description": "V, pu of nominal"})
    q_pct.update(
        {"minimum": -100, "maximum": 100, "description": "Q, % of nameplate VA, + = injecting"}
    )
    points["description"] = "in order of non-decreasing v_pu"
    response = schemas[ResponseMessage.__name__]["properties"]["reason"]
    response["anyOf"] = [{"$ref": SCHEMAS + REASON}, {"type": "null"}]
    schemas[Status.__name__] = _enumeration(schemas[Status.__name__], STATUS_DESCRIPTIONS)
    mrid_pattern: str = schemas[CancelPayload.__name__]["properties"]["mrid"]["pattern"]
    schemas[REASON] = _enumeration(
        {
            "title": REASON,
            "description": "Why an event was rejected, aborted or superseded "
            "(machine-readable; the detail says it for people).",
            "type": "string",
        },
        REASON_DESCRIPTIONS,
    )
    schemas[REASON]["oneOf"].append(
        {
            "pattern": "^superseded_by:" + mrid_pattern.removeprefix("^"),
            "description": SUPERSEDED_BY_DESCRIPTION,
        }
    )


def _enumeration(schema: dict[str, Any], descriptions: dict[Any, str]) -> dict[str, Any]:
    """An enum schema whose values each carry a description (one ``const`` per value)."""
    result = {key: value for key, value in schema.items() if key != "enum"}
    result["oneOf"] = [
        {"const": str(value), "description": text} for value, text in descriptions.items()
    ]
    return result


def _mqtt(**fields: Any) -> dict[str, Any]:
    return {"mqtt": {**fields, "bindingVersion": MQTT_BINDING_VERSION}}


def _parameters(address: str) -> dict[str, Any]:
    return {
        name: {"$ref": "#/components/parameters/" + name}
        for name in PARAMETERS
        if "{" + name + "}" in address
    }


def _message(schema: str, schemas: dict[str, Any]) -> dict[str, Any]:
    description = schemas[schema].get("description", "")
    message = {
        "name": schema,
        "title": schema,
        "summary": description.split("\n", 1)[0],
        "contentType": "application/json",
        "payload": {"$ref": SCHEMAS + schema},
    }
    if schema in EXAMPLES:
        message["examples"] = [
            {"name": name, "payload": payload} for name, payload in EXAMPLES[schema]
        ]
    return message


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as data."""
    schemas = _schemas()
    topics = _topics()
    mqtt_defaults = MqttSection.model_fields
    doc_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel in channels():
        messages.setdefault(channel.message, _message(channel.message, schemas))
        doc_channels[channel.id] = {
            "address": channel.address,
            "title": channel.id,
            "summary": channel.summary,
            "description": channel.description + _PREFIX_NOTE,
            "parameters": _parameters(channel.address),
            "messages": {channel.message: {"$ref": "#/components/messages/" + channel.message}},
        }
        operation = f"{channel.action}{channel.id[0].upper()}{channel.id[1:]}"
        operations[operation] = {
            "action": channel.action,
            "channel": {"$ref": "#/channels/" + channel.id},
            "summary": channel.summary,
            "messages": [{"$ref": f"#/channels/{channel.id}/messages/{channel.message}"}],
            "bindings": _mqtt(qos=channel.qos, retain=channel.retain),
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "derms-edge MQTT contract",
            "version": API_VERSION,
            "description": _INFO,
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "{host}:{port}",
                "protocol": "mqtt",
                "protocolVersion": "3.1.1",
                "description": "The MQTT broker in the gateway's configuration (mqtt.host, "
                "mqtt.port, mqtt.username).",
                "variables": {
                    "host": {"default": str(mqtt_defaults["host"].default)},
                    "port": {"default": str(mqtt_defaults["port"].default)},
                },
                "bindings": _mqtt(
                    keepAlive=mqtt_defaults["keepalive_s"].default,
                    lastWill={"topic": topics.status, "qos": 1, "retain": True},
                ),
            }
        },
        "channels": doc_channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": dict(sorted(messages.items())),
            "parameters": PARAMETERS,
        },
    }


_PREFIX_NOTE = f"\n\n`{DEFAULT_PREFIX}` is mqtt.prefix (configurable; this is its default)."
_INFO = f"""\
What utilities integrate against: a DSO (or another role) sends controls over MQTT; the \
gateway publishes its status, telemetry, device capabilities, responses to controls and the \
controls in force. Actions are from the gateway's point of view (send = it publishes, \
receive = it subscribes, at QoS 1).

Payloads are UTF-8 JSON; times are RFC 3339 (the gateway writes UTC with milliseconds and \
a Z); quantities are SI units. Addresses start with `{DEFAULT_PREFIX}`, the default of \
mqtt.prefix, which each gateway may configure.

With control.require_signed, what arrives on controls, cancel and defaultControl is a JWS in \
compact serialization (RFC 7515) signed with one of the role's Ed25519 keys (alg Ed25519 or \
EdDSA, kid the key's RFC 7638 thumbprint) whose payload is the JSON described here; a signed \
event or cancel carries creation_time.

Generated from the gateway's payload models by `derms-edge asyncapi`; do not edit by \
hand. The prose contract, with the event lifecycle and arbitration rules, is \
docs/mqtt-api.md."""


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors, multi-line text as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _text)


def render() -> str:
    """The document as YAML, exactly as docs/asyncapi.yaml holds it."""
    header = "# Generated by `derms-edge asyncapi` from the payload models; do not edit.\n"
    body = yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body
