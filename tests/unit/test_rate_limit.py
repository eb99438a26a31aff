"""The per-role inbound rate limit: a burst, then the sustained rate; drops counted and summed
up once a minute at most."""

from __future__ import annotations

from derms_edge.northbound.rate_limit import UNKNOWN_ROLES, InboundLimit


def admitted(limit: InboundLimit, role: str, n: int, now_s: float) -> int:
    return sum(limit.admit(role, "controls", now_s) for _ in range(n))


def test_a_burst_then_the_sustained_rate() -> None:
    limit = InboundLimit(["dso"], per_s=20, burst=100)
    assert admitted(limit, "dso", 150, 0.0) == 100
    assert limit.rejected == 50
    assert admitted(limit, "dso", 100, 1.0) == 20  # one second refills 20
    assert admitted(limit, "dso", 1000, 100.0) == 100  # refilled, never past the burst
    assert limit.rejected == 50 + 80 + 900


def test_each_configured_role_has_its_own_bucket() -> None:
    limit = InboundLimit(["dso", "aggregator"], per_s=1, burst=5)
    assert admitted(limit, "aggregator", 50, 0.0) == 5
    assert admitted(limit, "dso", 5, 0.0) == 5  # the aggregator's flood costs the dso nothing


def test_invented_role_names_share_one_bucket() -> None:
    limit = InboundLimit(["dso"], per_s=1, burst=5)
    assert sum(limit.admit(f"r{i}", "controls", 0.0) for i in range(1000)) == 5
    assert admitted(limit, "dso", 5, 0.0) == 5
    summary = limit.summary(0.0)
    assert summary is not None and f"995 {UNKNOWN_ROLES}/controls" in summary


def test_a_clock_going_backwards_refills_nothing() -> None:
    limit = InboundLimit(["dso"], per_s=10, burst=2)
    assert admitted(limit, "dso", 3, 100.0) == 2
    assert admitted(limit, "dso", 3, 50.0) == 0


def test_the_summary_comes_at_once_then_once_a_minute_with_roles_and_topics() -> None:
    limit = InboundLimit(["dso", "aggregator"], per_s=1, burst=1)
    assert limit.summary(0.0) is None  # nothing dropped
    admitted(limit, "dso", 3, 0.0)
    first = limit.summary(0.0)
    assert first is not None and "dropped 2 inbound messages" in first and "2 dso/controls" in first
    admitted(limit, "dso", 5, 10.0)
    limit.admit("aggregator", "cancel", 10.0)
    limit.admit("aggregator", "cancel", 10.0)
    assert limit.summary(30.0) is None  # within the minute
    later = limit.summary(60.0)
    assert later is not None
    assert "dropped 5 inbound" in later and "4 dso/controls" in later
    assert "1 aggregator/cancel" in later
    assert limit.summary(200.0) is None  # nothing new
