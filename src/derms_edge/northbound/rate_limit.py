"""How many inbound messages each role may send: a token bucket per role, sans I/O.

A message costs one token; a role's bucket holds ``burst`` tokens and refills at ``per_s``
tokens a second. A message that finds the bucket empty is dropped before anything reads its
payload: no JSON decode, no answer (an answer per message would let a flood fill the outbox).
Every role the configuration names has its own bucket; messages on topics of roles it does
not name share one bucket, so that inventing role names opens no new buckets (memory stays
bounded whatever a sender writes in the topic).

The time is passed in (seconds of a monotonic clock), so tests drive it without sleeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

UNKNOWN_ROLES = "(unknown roles)"
"""The bucket, and the name in summaries, of every role the configuration does not name."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at_s: float


class InboundLimit:
    """Per-role token buckets for inbound messages, with the count of what was dropped."""

    def __init__(
        self, roles: Iterable[str], *, per_s: float, burst: int, summary_every_s: float = 60.0
    ) -> None:
        self._per_s = per_s
        self._burst = burst
        self._roles = frozenset(roles)
        self._buckets: dict[str, _Bucket] = {}
        self._summary_every_s = summary_every_s
        self._summarised_at_s: float | None = None
        self._pending: Counter[tuple[str, str]] = Counter()
        self.rejected = 0
        """Messages dropped unread since the gateway started."""

    def admit(self, role: str, kind: str, now_s: float) -> bool:
        """Whether a message from ``role`` on a topic of ``kind`` (controls, cancel, ...) at
        ``now_s`` may be read; False counts it as dropped."""
        key = role if role in self._roles else UNKNOWN_ROLES
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._burst), now_s)
        elapsed = max(0.0, now_s - bucket.at_s)
        bucket.tokens = min(float(self._burst), bucket.tokens + elapsed * self._per_s)
        bucket.at_s = now_s
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.rejected += 1
        self._pending[(key, kind)] += 1
        return False

    def summary(self, now_s: float) -> str | None:
        """What was dropped since the last summary, at most once every ``summary_every_s``
        (the first drop is told at once); None when nothing is due."""
        if not self._pending:
            return None
        last = self._summarised_at_s
        if last is not None and now_s - last < self._summary_every_s:
            return None
        self._summarised_at_s = now_s
        total = sum(self._pending.values())
        parts = ", ".join(
            f"{count} {role}/{kind}" for (role, kind), count in sorted(self._pending.items())
        )
        self._pending.clear()
        return (
            f"dropped {total} inbound messages unread over the rate limit "
            f"({self._per_s:g}/s, burst {self._burst} per role): {parts}"
        )
