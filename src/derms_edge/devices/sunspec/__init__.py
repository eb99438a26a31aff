"""SunSpec Modbus without I/O: model layouts, the register codec, discovery and the spans
to read."""

from derms_edge.devices.sunspec.codec import decode, encode
from derms_edge.devices.sunspec.discovery import (
    Discovery,
    DiscoveryResult,
    ModelHeader,
    NeedRegisters,
    discover,
)
from derms_edge.devices.sunspec.models import (
    ModelLayout,
    PointDef,
    PointValue,
    build_layout,
    model_definition,
)
from derms_edge.devices.sunspec.plan import model_spans

__all__ = [
    "Discovery",
    "DiscoveryResult",
    "ModelHeader",
    "ModelLayout",
    "NeedRegisters",
    "PointDef",
    "PointValue",
    "build_layout",
    "decode",
    "discover",
    "encode",
    "model_definition",
    "model_spans",
]
