"""How often the setpoints in force are refreshed and read back by the daemon."""

from __future__ import annotations

import pytest

from derms_edge.runtime.gateway import CHECK_S, keepalive_interval


@pytest.mark.parametrize(("revert_s", "expected"), [(60.0, 20.0), (3.0, 1.0), (0.0, CHECK_S)])
def test_setpoints_are_read_back_with_or_without_revert_timers(
    revert_s: float, expected: float
) -> None:
    # with revert timers: three refreshes per timer; without: still checked, since a device
    # that restarted between two polls has forgotten them and nothing else would notice
    assert keepalive_interval(revert_s) == expected
