"""EV charger current limits as IEC 61851 lets a charger signal them to a car."""

from __future__ import annotations

MIN_EVSE_A = 6.0
"""IEC 61851: below 6 A a charger cannot signal a current, so 0 (pause) or at least 6 A."""
MAX_EVSE_A = 80.0
"""The highest current limit IEC 61851 PWM can signal, A."""


def can_signal(amps: float) -> bool:
    """Whether a charger can signal this limit (A per phase): 0 pauses, else at least 6 A."""
    return amps == 0 or amps >= MIN_EVSE_A


def signal_at_most(amps: float, max_a: float) -> float:
    """The highest limit at or under ``amps`` a charger can signal: {0} or [6, max_a].
    Below 6 A the only value that respects a limit is pause."""
    return 0.0 if amps < MIN_EVSE_A else min(amps, max_a)


def limit_refusal(amps: float, max_a: float) -> str | None:
    """Why a charger cannot take this current limit (A per phase), or None if it can:
    0 pauses, else MIN_EVSE_A..max_a."""
    if amps > max_a:
        return f"{amps:g} A is above the charger's max_a {max_a:g} A"
    if not can_signal(amps):
        return f"{amps:g} A cannot be signalled: 0 pauses, else {MIN_EVSE_A:g}..{max_a:g} A"
    return None
