"""Every field of the model's readings and nameplates has its place in the published payloads."""

from __future__ import annotations

import dataclasses

from derms_edge.model import Capability, DeviceState
from derms_edge.northbound.messages import CapabilityMessage, TelemetryMessage


def test_every_capability_field_is_published() -> None:
    published = set(CapabilityMessage.model_fields)
    assert {field.name for field in dataclasses.fields(Capability)} <= published


def test_every_reading_field_is_published() -> None:
    published = set(TelemetryMessage.model_fields)
    assert {field.name for field in dataclasses.fields(DeviceState)} <= published
