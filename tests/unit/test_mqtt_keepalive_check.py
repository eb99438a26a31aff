"""How often the MQTT session lets paho check the keepalive (`misc_interval_s`)."""

from __future__ import annotations

import pytest

from derms_edge.config.sections import MqttSection
from derms_edge.northbound.mqtt import misc_interval_s


@pytest.mark.parametrize(
    ("keepalive_s", "expected"), [(5, 1.0), (9, 1.0), (10, 2.0), (30, 6.0), (3600, 720.0)]
)
def test_paho_checks_every_fifth_of_the_keepalive_in_whole_seconds(
    keepalive_s: int, expected: float
) -> None:
    assert misc_interval_s(keepalive_s) == expected


def test_every_keepalive_the_configuration_accepts_gets_its_pingreq_in_time() -> None:
    # a PINGREQ leaves at most one interval after it is due; the broker gives up on the
    # client after 1.5 keepalives of silence (MQTT 3.1.1, 3.1.2.10); and at least a second
    # between checks
    bounds = MqttSection.model_fields["keepalive_s"].metadata
    low = next(bound.ge for bound in bounds if hasattr(bound, "ge"))
    high = next(bound.le for bound in bounds if hasattr(bound, "le"))
    for keepalive_s in range(low, high + 1):
        interval = misc_interval_s(keepalive_s)
        assert interval >= 1.0, keepalive_s
        assert keepalive_s + interval < 1.5 * keepalive_s, keepalive_s
