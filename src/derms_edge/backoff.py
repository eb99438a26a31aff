"""Capped exponential backoff with jitter: how long to wait before trying again."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """The wait before try ``attempt + 1``, s: ``base_s`` doubling per attempt up to
    ``cap_s``, drawn uniformly from its upper half so that many retries spread out."""
    delay = min(cap_s, base_s * 2.0 ** min(attempt, 30))
    # B311: jitter spreads reconnections; it guards no secret
    return random.uniform(delay / 2, delay)  # nosec B311
