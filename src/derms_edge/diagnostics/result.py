"""The outcome of one check: passed, a warning, or failed, with what to do about it."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mark(enum.Enum):
    """How a check came out; a failure makes ``doctor`` exit non-zero, a warning does not."""

    # B105: a check mark, not a password
    PASS = "✓"  # nosec B105
    WARN = "!"
    FAIL = "✗"


@dataclass(frozen=True, slots=True)
class Check:
    """What was checked (``title``, with what was found) and, unless it passed, what to do."""

    mark: Mark
    title: str
    advice: str | None = None

    @classmethod
    def passed(cls, title: str) -> Check:
        return cls(Mark.PASS, title)

    @classmethod
    def warning(cls, title: str, advice: str) -> Check:
        return cls(Mark.WARN, title, advice)

    @classmethod
    def failed(cls, title: str, advice: str) -> Check:
        return cls(Mark.FAIL, title, advice)
