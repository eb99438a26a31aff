"""The capability read from a device's decoded models, where the device says odd things."""

from __future__ import annotations

import pytest

from derms_edge.devices.sunspec.mapping import to_capability


@pytest.mark.parametrize(("sf", "step"), [(-1, 0.1), (0, 1.0), (309, None), (-32000, None)])
def test_a_soc_scale_factor_outside_the_spec_gives_no_step(sf: int, step: float | None) -> None:
    """Found by tests/fuzz (the SunSpec driver over a random device): a 124 storage model whose
    ChaState_SF read 309 made 10.0 ** 309 overflow, an untyped crash of connect()."""
    values = {124: {"WChaMax": 5000, "ChaState_SF": sf, "MinRsvPct": 10, "ChaState": 50}}
    capability = to_capability(values, [1, 124])
    assert capability.soc_step_pct == step
