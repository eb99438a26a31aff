"""The AsyncAPI document and the prose contract cannot drift from the payload models."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from derms_edge.cli import main as cli_main
from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A, Reason, Status, superseded_by
from derms_edge.northbound import asyncapi
from derms_edge.northbound.commands import CancelPayload, EventPayload, Invalid, parse_events
from derms_edge.northbound.messages import ActiveMessage, ResponseMessage
from derms_edge.northbound.topics import Topics
from derms_edge.schema import ControlPayload, FixedPfPayload, VoltVarPayload

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
MQTT_API = ROOT / "docs" / "mqtt-api.md"

# The event of the issue that defines the control contract.
CONTRACT_EVENT: dict[str, Any] = {
    "mrid": "ev-2026-0001",
    "creation_time": "2026-11-21T09:00:00Z",
    "primacy": 1,
    "devices": ["inv1"],
    "start": "2026-11-21T10:00:00Z",
    "duration_s": 3600,
    "randomize_start_s": 0,
    "control": {
        "max_w_pct": 50,
        "export_limit_w": 5000,
        "volt_var": {
            "v_ref_pu": 1.0,
            "points": [[0.92, 44], [0.98, 0], [1.02, 0], [1.08, -44]],
            "response_time_s": 5,
            "mode": "auto",
        },
        "fixed_pf": {"pf": 0.95, "excitation": "absorb"},
        "storage_w": -3000,
        "evse_max_a": 16,
    },
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(asyncapi.render())
    return data


@pytest.fixture(scope="module")
def schemas(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["components"]["schemas"]
    return result


# -- the committed file and the command ---------------------------------------------------


def test_committed_document_is_what_the_models_generate() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == asyncapi.render(), (
        "docs/asyncapi.yaml is out of date: run `derms-edge asyncapi` and commit it"
    )


def test_render_is_deterministic() -> None:
    assert asyncapi.render() == asyncapi.render()


def test_command_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "docs" / "asyncapi.yaml"
    assert cli_main(["asyncapi", "--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == asyncapi.render()
    assert cli_main(["asyncapi", "--check", "--output", str(output)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "asyncapi.yaml"
    output.write_text(asyncapi.render().replace("qos: 1", "qos: 0", 1), encoding="utf-8")
    assert cli_main(["asyncapi", "--check", "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert "differs from what the payload models generate" in err
    assert "derms-edge asyncapi" in err
    assert "qos: 0" in err  # the diff shows what differs


def test_check_names_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["asyncapi", "--check", "--output", str(tmp_path / "none.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


# -- the document is sound ----------------------------------------------------------------


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref}: only references inside the document"
    node: Any = doc
    for escaped in ref[2:].split("/"):
        part = escaped.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def test_every_reference_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    found = list(refs(doc))
    assert found
    for ref in found:
        resolve(doc, ref)


def test_document_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc) <= {
        "asyncapi",
        "id",
        "info",
        "servers",
        "defaultContentType",
        "channels",
        "operations",
        "components",
    }
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = resolve(doc, operation["channel"]["$ref"])
        for message in operation["messages"]:
            # AsyncAPI 3: an operation's messages are its channel's messages
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            assert resolve(doc, message["$ref"]) in channel["messages"].values()
    for channel in doc["channels"].values():
        placeholders = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert placeholders == set(channel.get("parameters", {})), channel["address"]


DRAFT07_KEYWORDS = frozenset(
    {
        *("$id", "$ref", "$comment", "title", "description", "default", "examples"),
        *("readOnly", "writeOnly", "type", "enum", "const", "format"),
        *("multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"),
        *("maxLength", "minLength", "pattern", "contentMediaType", "contentEncoding"),
        *("items", "additionalItems", "maxItems", "minItems", "uniqueItems", "contains"),
        *("properties", "patternProperties", "additionalProperties", "propertyNames"),
        *("required", "maxProperties", "minProperties", "dependencies", "definitions"),
        *("if", "then", "else", "allOf", "anyOf", "oneOf", "not"),
    }
)
TYPES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})


def check_schema(node: Any, where: str) -> None:
    """Structural JSON Schema draft-07 validity (jsonschema is not installed here)."""
    assert isinstance(node, dict | bool), f"{where}: a schema is an object or a boolean"
    if isinstance(node, bool):
        return
    unknown = set(node) - DRAFT07_KEYWORDS
    assert not unknown, f"{where}: not draft-07 keywords: {sorted(unknown)}"
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        assert set(types) <= TYPES, f"{where}: type {node['type']}"
    for key in ("properties", "patternProperties", "definitions"):
        for name, sub in node.get(key, {}).items():
            check_schema(sub, f"{where}.{key}.{name}")
    for key in ("additionalProperties", "additionalItems", "propertyNames", "not", "contains"):
        if key in node:
            check_schema(node[key], f"{where}.{key}")
    if "items" in node:
        items = node["items"]
        for index, sub in enumerate(items if isinstance(items, list) else [items]):
            check_schema(sub, f"{where}.items[{index}]")
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            assert isinstance(node[key], list) and node[key], f"{where}.{key}: a non-empty list"
            for index, sub in enumerate(node[key]):
                check_schema(sub, f"{where}.{key}[{index}]")
    if "required" in node:
        required = node["required"]
        assert all(isinstance(r, str) for r in required) and len(set(required)) == len(required)
        if node.get("additionalProperties") is False:
            assert set(required) <= set(node.get("properties", {})), where
    if "enum" in node:
        assert isinstance(node["enum"], list) and node["enum"], f"{where}.enum"
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if key in node:
            assert isinstance(node[key], int | float) and not isinstance(node[key], bool), where
    for key in ("minItems", "maxItems", "minLength", "maxLength", "minProperties"):
        if key in node:
            assert isinstance(node[key], int) and node[key] >= 0, f"{where}.{key}"
    if "pattern" in node:
        re.compile(node["pattern"])
    if "$ref" in node:
        assert node["$ref"].startswith(asyncapi.SCHEMAS), f"{where}: {node['$ref']}"


def test_every_payload_schema_is_draft07_json_schema(schemas: dict[str, Any]) -> None:
    for name, schema in schemas.items():
        check_schema(schema, name)


def test_every_model_has_its_schema(doc: dict[str, Any], schemas: dict[str, Any]) -> None:
    for model in asyncapi.MODELS:
        assert model.__name__ in schemas
    for message in doc["components"]["messages"].values():
        resolve(doc, message["payload"]["$ref"])


def test_controls_take_one_event_or_an_array(schemas: dict[str, Any]) -> None:
    one, many = schemas[asyncapi.EVENTS]["oneOf"]
    assert one == {"$ref": asyncapi.SCHEMAS + "EventPayload"}
    assert many["type"] == "array" and many["items"] == one and many["minItems"] == 1


# -- the schemas say what the models enforce ----------------------------------------------


def number_allowed(schema: dict[str, Any], x: float) -> bool:
    """Whether the number ``x`` passes ``schema`` (the numeric keywords only)."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            passes = [number_allowed(sub, x) for sub in schema[key]]
            if not (any(passes) if key == "anyOf" else passes.count(True) == 1):
                return False
    types = schema.get("type", "number")
    types = types if isinstance(types, list) else [types]
    if not ("number" in types or ("integer" in types and float(x).is_integer())):
        return False
    checks: dict[str, Callable[[float], bool]] = {
        "const": lambda c: x == c,
        "minimum": lambda c: x >= c,
        "maximum": lambda c: x <= c,
        "exclusiveMinimum": lambda c: x > c,
        "exclusiveMaximum": lambda c: x < c,
    }
    return all(check(schema[key]) for key, check in checks.items() if key in schema)


def bounds(schema: dict[str, Any]) -> set[float]:
    found: set[float] = set()
    for key in ("const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(schema.get(key), int | float):
            found.add(float(schema[key]))
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            found |= bounds(sub)
    return found


def probes(schema: dict[str, Any]) -> list[float]:
    """Each bound of ``schema`` and numbers just either side of it."""
    return sorted({b + step for b in bounds(schema) for step in (-1, -0.01, 0, 0.01, 1)})


def model_allows(build: Callable[[float], Any], x: float) -> bool:
    try:
        build(x)
    except ValidationError:
        return False
    return True


BASE_EVENT = {"mrid": "ev-1", "duration_s": 60, "control": {"max_w_pct": 50}}
NUMERIC_FIELDS: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[float], Any]]] = [
    *(
        (
            f"ControlPayload.{field}",
            lambda s, f=field: s["ControlPayload"]["properties"][f],
            lambda x, f=field: ControlPayload.model_validate({f: x}),
        )
        for field in ("max_w_pct", "export_limit_w", "storage_w", "evse_max_a")
    ),
    *(
        (
            f"EventPayload.{field}",
            lambda s, f=field: s["EventPayload"]["properties"][f],
            lambda x, f=field: EventPayload.model_validate(BASE_EVENT | {f: x}),
        )
        for field in ("primacy", "duration_s", "randomize_start_s")
    ),
    (
        "FixedPfPayload.pf",
        lambda s: s["FixedPfPayload"]["properties"]["pf"],
        lambda x: FixedPfPayload.model_validate({"pf": x, "excitation": "inject"}),
    ),
    *(
        (
            f"VoltVarPayload.{field}",
            lambda s, f=field: s["VoltVarPayload"]["properties"][f],
            lambda x, f=field: VoltVarPayload.model_validate({"curve": "cat_b", f: x}),
        )
        for field in ("v_ref_pu", "response_time_s")
    ),
    (
        "VoltVarPayload.points[].v_pu",
        lambda s: s["VoltVarPayload"]["properties"]["points"]["anyOf"][0]["items"]["items"][0],
        lambda x: VoltVarPayload.model_validate({"points": [[x, 0.0], [x, 0.0]]}),
    ),
    (
        "VoltVarPayload.points[].q_pct",
        lambda s: s["VoltVarPayload"]["properties"]["points"]["anyOf"][0]["items"]["items"][1],
        lambda x: VoltVarPayload.model_validate({"points": [[1.0, x], [1.0, x]]}),
    ),
]


@pytest.mark.parametrize(
    ("name", "pick", "build"), NUMERIC_FIELDS, ids=[f[0] for f in NUMERIC_FIELDS]
)
def test_numeric_ranges_in_the_schema_are_the_models(
    schemas: dict[str, Any],
    name: str,
    pick: Callable[[dict[str, Any]], dict[str, Any]],
    build: Callable[[float], Any],
) -> None:
    schema = pick(schemas)
    values = probes(schema)
    assert values, f"{name}: the schema states no range"
    for x in values:
        assert number_allowed(schema, x) == model_allows(build, x), f"{name} = {x}"


def test_evse_current_is_zero_or_at_least_six_amps(schemas: dict[str, Any]) -> None:
    evse = schemas["ControlPayload"]["properties"]["evse_max_a"]
    assert {"type": "number", "const": 0} in evse["anyOf"]
    assert {"type": "number", "minimum": MIN_EVSE_A, "maximum": MAX_EVSE_A} in evse["anyOf"]
    assert not number_allowed(evse, 3)
    assert not model_allows(lambda x: ControlPayload.model_validate({"evse_max_a": x}), 3)


def test_the_contract_event_validates_and_evse_3_does_not(schemas: dict[str, Any]) -> None:
    for payload in (CONTRACT_EVENT, [CONTRACT_EVENT, CONTRACT_EVENT | {"mrid": "ev-2"}]):
        results = parse_events(json.dumps(payload).encode())
        assert results and not any(isinstance(r, Invalid) for r in results), results
    control = schemas["ControlPayload"]["properties"]
    for field, value in CONTRACT_EVENT["control"].items():
        assert field in control
        if isinstance(value, int | float):
            assert number_allowed(control[field], value), field
    bad = CONTRACT_EVENT | {"control": CONTRACT_EVENT["control"] | {"evse_max_a": 3}}
    [result] = parse_events(json.dumps(bad).encode())
    assert isinstance(result, Invalid) and result.mrid == "ev-2026-0001"
    assert "control.evse_max_a" in result.detail
    assert not number_allowed(control["evse_max_a"], 3)


def test_volt_var_takes_a_curve_or_points(schemas: dict[str, Any]) -> None:
    curve_only, points_only = schemas["VoltVarPayload"]["oneOf"]
    assert curve_only["required"] == ["curve"] and points_only["required"] == ["points"]
    points = [[0.9, 10], [1.1, -10]]
    VoltVarPayload.model_validate({"curve": "cat_a"})
    VoltVarPayload.model_validate({"points": points})
    for wrong in ({}, {"curve": "cat_a", "points": points}):
        with pytest.raises(ValidationError):
            VoltVarPayload.model_validate(wrong)


def test_required_fields_are_the_models(schemas: dict[str, Any]) -> None:
    models: tuple[type[BaseModel], ...] = (*asyncapi.MODELS, VoltVarPayload, FixedPfPayload)
    for model in models:
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert set(schemas[model.__name__].get("required", [])) == required, model.__name__


# -- statuses and reasons -----------------------------------------------------------------


def test_every_status_has_a_description(schemas: dict[str, Any]) -> None:
    assert set(asyncapi.STATUS_DESCRIPTIONS) == set(Status)
    consts = [entry["const"] for entry in schemas["Status"]["oneOf"]]
    assert consts == [s.value for s in Status]
    assert all(entry["description"] for entry in schemas["Status"]["oneOf"])


def test_every_reason_has_a_description(schemas: dict[str, Any]) -> None:
    assert set(asyncapi.REASON_DESCRIPTIONS) == set(Reason)
    entries = schemas["Reason"]["oneOf"]
    assert [e["const"] for e in entries if "const" in e] == [r.value for r in Reason]
    [pattern] = [e["pattern"] for e in entries if "pattern" in e]
    assert re.fullmatch(pattern, superseded_by("ev-2026-0009"))
    for wrong in ("superseded_by:", "superseded_by:ev 1", "superseded:ev-1"):
        assert not re.fullmatch(pattern, wrong)
    reason = schemas["ResponseMessage"]["properties"]["reason"]
    assert {"$ref": asyncapi.SCHEMAS + "Reason"} in reason["anyOf"]


def test_the_models_reason_description_lists_every_reason() -> None:
    description = ResponseMessage.model_fields["reason"].description or ""
    for reason in Reason:
        assert reason.value in description
    assert "superseded_by:<mrid>" in description


# -- topics -------------------------------------------------------------------------------

PLACEHOLDER = {"device_id": "{device}", "role": "{role}", "group": "{group}"}


def every_topic(topics: Topics) -> dict[str, str]:
    """Each topic `Topics` builds, with placeholders for its parameters."""
    found = {}
    for name, member in inspect.getmembers(Topics):
        if name.startswith("_") or name in ("root", "prefix", "gateway_id"):
            continue
        if isinstance(member, property):
            found[name] = getattr(topics, name)
        elif inspect.isfunction(member) and name not in ("inbound_filters", "parse_inbound"):
            parameters = list(inspect.signature(member).parameters)[1:]
            found[name] = getattr(topics, name)(*(PLACEHOLDER[p] for p in parameters))
    return found


def test_every_topic_is_a_channel(doc: dict[str, Any]) -> None:
    topics = Topics(asyncapi.DEFAULT_PREFIX, "{gateway_id}")
    addresses = {channel["address"] for channel in doc["channels"].values()}
    built = every_topic(topics)
    assert len(built) >= 10
    for name, topic in built.items():
        assert topic in addresses, f"Topics.{name}: {topic} is not a channel"


def test_the_gateway_subscribes_to_every_receive_channel(doc: dict[str, Any]) -> None:
    topics = Topics(asyncapi.DEFAULT_PREFIX, "{gateway_id}")
    receive = {
        doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]["address"].replace("{role}", "+")
        for op in doc["operations"].values()
        if op["action"] == "receive"
    }
    assert receive == set(topics.inbound_filters(["{group}"]))


KIND = {
    "controls": "controls",
    "groupControls": "controls",
    "cancel": "cancel",
    "groupCancel": "cancel",
    "defaultControl": "default_control",
    "heartbeat": "heartbeat",
}


def test_receive_channels_parse_as_their_kind() -> None:
    topics = Topics("derms", "site-001")
    for channel in asyncapi.channels():
        if channel.action != "receive":
            continue
        address = channel.address.replace("{gateway_id}", "site-001")
        address = address.replace("{role}", "dso").replace("{group}", "feeder-12")
        inbound = topics.parse_inbound(address)
        assert inbound is not None, address
        assert (inbound.kind, inbound.role) == (KIND[channel.id], "dso")
        assert inbound.group == ("feeder-12" if "{group}" in channel.address else None)


BINDINGS = {
    # channel: (action, qos, retain), as the issue and the gateway have them
    "status": ("send", 1, True),
    "telemetry": ("send", 1, False),
    "capability": ("send", 1, True),
    "responses": ("send", 1, False),
    "active": ("send", 1, True),
    "controls": ("receive", 1, False),
    "groupControls": ("receive", 1, False),
    "cancel": ("receive", 1, False),
    "groupCancel": ("receive", 1, False),
    "defaultControl": ("receive", 1, True),
    "heartbeat": ("receive", 1, False),
}


def test_operations_and_mqtt_bindings(doc: dict[str, Any]) -> None:
    seen = {}
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        mqtt = operation["bindings"]["mqtt"]
        seen[channel] = (operation["action"], mqtt["qos"], mqtt["retain"])
    assert seen == BINDINGS
    will = doc["servers"]["broker"]["bindings"]["mqtt"]["lastWill"]
    assert will == {"topic": "derms/v1/{gateway_id}/status", "qos": 1, "retain": True}


def test_addresses_show_the_default_prefix_as_configurable(doc: dict[str, Any]) -> None:
    for channel in doc["channels"].values():
        assert channel["address"].startswith("derms/v1/")
        assert "mqtt.prefix (configurable" in channel["description"]


# -- examples -----------------------------------------------------------------------------


EXAMPLE_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (EventPayload, CancelPayload, ControlPayload, ResponseMessage, ActiveMessage)
}


def validate_example(schema: str, text: str) -> None:
    """Inbound: the model accepts it. Outbound: it is exactly what the gateway publishes."""
    if schema == asyncapi.EVENTS:
        results = parse_events(text.encode())
        assert not any(isinstance(r, Invalid) for r in results), results
        return
    model = EXAMPLE_MODELS[schema]
    parsed = model.model_validate_json(text)
    if model in (ResponseMessage, ActiveMessage):
        assert json.loads(parsed.model_dump_json()) == json.loads(text)
        assert list(json.loads(parsed.model_dump_json())) == list(json.loads(text))


def test_examples_in_the_document_match_the_models(doc: dict[str, Any]) -> None:
    count = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            validate_example(name, json.dumps(example["payload"]))
            count += 1
    assert count >= 6


EXAMPLE = re.compile(
    r"<!-- schema: (?P<schema>\w+)(?P<lines> \(one per line\))? -->\n```json\n(?P<body>.*?)```",
    re.DOTALL,
)
CONTROL_SECTION = "\n## Control contract\n"


def test_control_examples_in_mqtt_api_match_the_models() -> None:
    text = MQTT_API.read_text(encoding="utf-8")
    assert CONTROL_SECTION in text
    section = text[text.index(CONTROL_SECTION) :]
    examples = list(EXAMPLE.finditer(section))
    # every json block of the control sections is marked, so none escapes the test
    assert len(examples) == section.count("```json")
    assert {m["schema"] for m in examples} >= {
        "EventPayload",
        asyncapi.EVENTS,
        "CancelPayload",
        "ControlPayload",
        "ResponseMessage",
        "ActiveMessage",
    }
    for match in examples:
        bodies = match["body"].strip().splitlines() if match["lines"] else [match["body"]]
        for body in bodies:
            validate_example(match["schema"], body)


def test_the_contract_event_is_the_one_in_mqtt_api() -> None:
    text = MQTT_API.read_text(encoding="utf-8")
    section = text[text.index(CONTROL_SECTION) :]
    first = next(m for m in EXAMPLE.finditer(section) if m["schema"] == "EventPayload")
    assert json.loads(first["body"]) == CONTRACT_EVENT


def test_mqtt_api_names_every_status_reason_and_the_document() -> None:
    text = MQTT_API.read_text(encoding="utf-8")
    for value in [*Status, *Reason]:
        assert f"`{value.value}`" in text, value
    assert "`superseded_by:<mrid>`" in text
    assert "docs/asyncapi.yaml" in text and "derms-edge asyncapi --check" in text
