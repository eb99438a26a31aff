"""What every pydantic shape of the gateway shares: strictness, identifiers, readable errors."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

_ID_CHARS = "A-Za-z0-9_.-"
Identifier = Annotated[str, Field(pattern=rf"^[A-Za-z0-9][{_ID_CHARS}]{{0,63}}$")]
"""Ids end up in MQTT topics: 1 to 64 letters, digits, '_', '.', '-'; no '/', '+', '#' or
spaces."""


def as_identifier(name: str, fallback: str) -> str:
    """``name`` made an `Identifier`: other characters become '-', at most 64, and it starts
    with a letter or digit; ``fallback`` when nothing is left."""
    cleaned = re.sub(rf"[^{_ID_CHARS}]", "-", name).strip("-_.")[:64]
    return cleaned or fallback


class Strict(BaseModel):
    """Base of every shape read from outside: unknown keys are errors, so typos do not pass
    silently; values are immutable once validated.

    A model builds its validator when first used, not when defined (``defer_build``): most
    of them (the configuration's sections and device kinds) are only ever validated inside
    another's (`Config`'s), and a validator of their own would be ~0.4 MB the daemon never
    uses (tests/unit/test_lazy_imports.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


_VALIDATOR_NAME = re.compile(r"function-\w+\[.*\]")


def problems(
    error: ValidationError,
    *,
    root: str = "",
    nowhere: str = "payload",
    wording: Mapping[str, str] | None = None,
    tags: Collection[str] = (),
) -> list[str]:
    """One line per problem: where (a path such as ``devices[1].port``, after ``root``) and
    what. ``nowhere`` names a problem of the whole; ``wording`` replaces pydantic's message
    for an error type (``extra_forbidden``, ``missing``); ``tags`` are discriminator values
    in pydantic's locations (right after a list index) that are not keys in the document."""
    lines = []
    for item in error.errors(include_url=False):
        path = root
        after_index = False  # a discriminator value follows a list index in a location
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not (after_index and part in tags) and not _VALIDATOR_NAME.fullmatch(part):
                path += f".{part}" if path else part
            after_index = isinstance(part, int)
        message = (wording or {}).get(item["type"]) or item["msg"].removeprefix("Value error, ")
        lines.append(f"{path or nowhere}: {message}")
    return lines
