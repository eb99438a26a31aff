"""Hostile input by the ten thousand: every parser of outside input ends each input in a value
or a typed error (tests/fuzz/targets.py says which, per target). Fixed seed: a failure here
fails the same way on every run."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import TARGETS, Target

EXAMPLES = 10_000


@pytest.mark.parametrize("target", TARGETS, ids=[target.name for target in TARGETS])
def test_no_input_crashes(target: Target) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.inputs)
    def fuzz(value: object) -> None:
        target.run(value)

    fuzz()
