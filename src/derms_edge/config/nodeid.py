"""OPC UA node ids as written in the configuration, parsed without asyncua.

The text form of OPC UA Part 6 (5.3.1.10): ``ns=<index>;<type>=<value>``, or with a
namespace URI instead of the index, ``nsu=<uri>;<type>=<value>``, where type is ``i``
(numeric), ``s`` (string), ``g`` (GUID) or ``b`` (opaque, base64). ``ns=0`` may be left
out. The URI form survives servers that renumber their namespaces when they restart.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Literal

IdType = Literal["i", "s", "g", "b"]
_NODE_ID = re.compile(
    r"^(?:(?P<ns>ns=(?P<index>\d+)|nsu=(?P<uri>[^;]+));)?(?P<type>[isgb])=(?P<id>.+)$"
)
MAX_NUMERIC = 2**32 - 1


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A parsed node id: the namespace by index or by URI, and the identifier."""

    id_type: IdType
    identifier: str | int
    namespace_index: int | None = None
    """The namespace index (``ns=``); None when the URI is given (or for ns=0)."""
    namespace_uri: str | None = None
    """The namespace URI (``nsu=``), resolved to an index on every connect."""

    def __str__(self) -> str:
        prefix = (
            f"nsu={self.namespace_uri};"
            if self.namespace_uri is not None
            else f"ns={self.namespace_index};"
            if self.namespace_index
            else ""
        )
        return f"{prefix}{self.id_type}={self.identifier}"


def parse_node_id(text: str) -> NodeRef:
    """Parse the text form of a node id; ValueError says what is wrong with it."""
    match = _NODE_ID.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a node id: write ns=<index>;s=<name> (or i=, g=, b=), "
            "or nsu=<namespace uri>;s=<name>"
        )
    id_type: IdType = match["type"]  # type: ignore[assignment]  # the pattern allows only these
    raw = match["id"]
    identifier: str | int = raw
    if id_type == "i":
        if not raw.isdigit() or int(raw) > MAX_NUMERIC:
            raise ValueError(f"{text!r}: a numeric identifier (i=) is 0..{MAX_NUMERIC}")
        identifier = int(raw)
    elif id_type == "g":
        try:
            identifier = str(uuid.UUID(raw))
        except ValueError:
            raise ValueError(
                f"{text!r}: g= takes a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63"
            ) from None
    elif id_type == "b":
        try:
            base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise ValueError(f"{text!r}: b= takes base64") from None
    index = match["index"]
    if index is not None and int(index) > 65535:
        raise ValueError(f"{text!r}: a namespace index is 0..65535")
    return NodeRef(
        id_type=id_type,
        identifier=identifier,
        namespace_index=int(index) if index is not None else None,
        namespace_uri=match["uri"],
    )
