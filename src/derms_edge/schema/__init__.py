"""Pydantic shapes shared by the configuration file and the MQTT contract: the strict base,
identifiers, the control object, and errors worded for people. Validation happens at these
boundaries only; inside, the model's plain dataclasses carry values known to be right."""

from derms_edge.schema.base import Identifier, Strict, as_identifier, problems
from derms_edge.schema.controls import ControlPayload, FixedPfPayload, VoltVarPayload

__all__ = [
    "ControlPayload",
    "FixedPfPayload",
    "Identifier",
    "Strict",
    "VoltVarPayload",
    "as_identifier",
    "problems",
]
