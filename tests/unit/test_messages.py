"""Every field of the model's readings and nameplates has its place in the published payloads."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest

from derms_edge.model import Capability, DeviceKind, DeviceState, OperatingState, Quality
from derms_edge.northbound.messages import CapabilityMessage, TelemetryMessage, telemetry_payload


def test_every_capability_field_is_published() -> None:
    published = set(CapabilityMessage.model_fields)
    assert {field.name for field in dataclasses.fields(Capability)} <= published


def test_every_reading_field_is_published() -> None:
    published = set(TelemetryMessage.model_fields)
    assert {field.name for field in dataclasses.fields(DeviceState)} <= published


_NUMBERS = [
    0.0,
    -0.0,
    1.0,
    -3000.5,
    0.1 + 0.2,
    1e-4,
    1e-5,
    123456.789,
    1e15,
    1e16,
    -1e17,
    2.5e-300,
    1.7976931348623157e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    0,
    3000,
    -7,
    10**20,
    True,
]


def _cases() -> Iterator[dict[str, Any]]:
    rng = random.Random(14)
    at = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)
    names = [f.name for f in dataclasses.fields(DeviceState) if f.name != "state"]
    for i in range(3000):
        values: dict[str, Any] = {}
        for name in names:
            pick = rng.random()
            if pick < 0.15:
                values[name] = None
            elif pick < 0.45:
                values[name] = rng.choice(_NUMBERS)
            elif pick < 0.7:
                values[name] = rng.uniform(-1e6, 1e6)
            else:
                values[name] = round(rng.uniform(-1e4, 1e4), rng.randint(0, 4))
        operating = rng.choice([None, *OperatingState])
        yield {
            "seq": rng.choice([0, 1, i, 2**40]),
            "device": rng.choice(["inv1", "bat-2.a", "meter_3", "wr:4", "grüner", 'q"t', "a\\b"]),
            "kind": rng.choice(list(DeviceKind)),
            "quality": rng.choice(list(Quality)),
            "ts": at + timedelta(seconds=rng.uniform(-1e6, 1e6)),
            "state": None if i % 50 == 0 else DeviceState(**values, state=operating),
        }


def test_telemetry_bytes_built_directly_are_the_models() -> None:
    """The payload built without pydantic is byte for byte the model's, for ordinary readings
    and for every value it hands back to the model (exponents, not finite, ints, bools,
    device ids JSON escapes)."""
    for case in _cases():
        assert telemetry_payload(**case) == TelemetryMessage.of(**case).encode(), case


def test_an_ordinary_reading_is_built_without_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def model(**_kwargs: object) -> NoReturn:
        raise AssertionError("went through the model")

    monkeypatch.setattr(TelemetryMessage, "of", model)
    reading = DeviceState(w=3000.0, v=230.1, hz=50.0, wh_exported=5.0, state=OperatingState.RUNNING)
    payload = telemetry_payload(
        seq=7,
        device="inv1",
        kind=DeviceKind.INVERTER,
        quality=Quality.OK,
        ts=datetime(2026, 12, 4, tzinfo=UTC),
        state=reading,
    )
    assert json.loads(payload)["w"] == 3000.0
