"""Home Assistant's MQTT templates, rendered as Home Assistant renders them.

Home Assistant renders an MQTT ``value_template`` (and an availability ``value_template``)
with Jinja2 in an immutable sandbox (its ``TemplateEnvironment`` derives from Jinja2's
``ImmutableSandboxedEnvironment``), with the variables ``value`` (the payload as text) and
``value_json`` (the payload parsed as JSON), and strips the result; a state that renders
``None`` is unknown. Here undefined names fail (Home Assistant only logs them), and the
filters Home Assistant replaces with its own (``float``, ``int``, ``round``, ``min``, ``max``)
are removed, so a template that leans on them fails here rather than behaving differently there.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPLACED_BY_HOME_ASSISTANT = ("float", "int", "round", "min", "max")

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
for _name in REPLACED_BY_HOME_ASSISTANT:
    _ENV.filters.pop(_name, None)


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's template makes of an MQTT payload."""
    text = payload.decode()
    variables: dict[str, Any] = {"value": text, "value_json": json.loads(text)}
    return _ENV.from_string(template).render(variables).strip()


EXPECTED: dict[str, tuple[str | None, str, str]] = {
    # telemetry field: (unit, device_class, state_class)
    "w": ("W", "power", "measurement"),
    "var": ("var", "reactive_power", "measurement"),
    "va": ("VA", "apparent_power", "measurement"),
    "pf": (None, "power_factor", "measurement"),
    "v": ("V", "voltage", "measurement"),
    "hz": ("Hz", "frequency", "measurement"),
    "a": ("A", "current", "measurement"),
    "soc_pct": ("%", "battery", "measurement"),
    "wh_exported": ("Wh", "energy", "total_increasing"),
    "wh_imported": ("Wh", "energy", "total_increasing"),
}
"""What each numeric telemetry field must show in Home Assistant: (unit, device_class,
state_class); the energy counters feed the Energy dashboard."""


PAYLOAD_NONE = "None"
"""A rendered state that Home Assistant takes as unknown."""


def state_of(config: dict[str, Any], payload: bytes) -> float | str | None:
    """The state a sensor with this discovery config takes from ``payload``: a number for a
    sensor with a unit or a numeric class, None for unknown, else the text."""
    rendered = render(config["value_template"], payload)
    if rendered == PAYLOAD_NONE:
        return None
    if "unit_of_measurement" in config or "state_class" in config:
        return float(rendered)  # Home Assistant refuses a non-numeric state here too
    return rendered


def available(config: dict[str, Any], payloads: dict[str, bytes]) -> bool | None:
    """Whether the entity is available given the latest payload on each availability topic
    (``availability_mode: all``, or ``latest`` with one topic); None while one has none yet."""
    results = []
    for entry in config.get("availability", []):
        payload = payloads.get(entry["topic"])
        if payload is None:
            return None
        rendered = render(entry["value_template"], payload)
        assert rendered in ("online", "offline"), f"{entry['value_template']} gave {rendered!r}"
        results.append(rendered == "online")
    if config.get("availability_mode", "latest") == "all":
        return all(results)
    assert len(results) <= 1, "more than one availability topic needs a mode"
    return results[0] if results else True
