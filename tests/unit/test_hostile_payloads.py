"""What a hostile or broken controls payload gets: one line, no traceback, an answer."""

from __future__ import annotations

import json

import pytest

from derms_edge.northbound.commands import (
    Cancel,
    Controls,
    DefaultControl,
    EventPayload,
    Invalid,
    parse_command,
)
from derms_edge.northbound.topics import Topics

TOPICS = Topics("derms", "site")
CONTROLS = "derms/v1/site/controls/dso"
VALID = {"mrid": "ok", "duration_s": 60, "control": {"max_w_pct": 50}}


def controls(payload: bytes, max_bytes: int = 262_144) -> tuple[EventPayload | Invalid, ...]:
    command = parse_command(TOPICS, CONTROLS, payload, False, max_bytes=max_bytes)
    assert isinstance(command, Controls)
    return command.events


def test_a_payload_over_the_size_limit_is_not_read() -> None:
    (item,) = controls(json.dumps(VALID).encode() + b" " * 300_000)
    assert isinstance(item, Invalid) and item.mrid is None
    assert "over mqtt.max_payload_bytes 262144" in item.detail
    for topic, kind in (
        ("derms/v1/site/controls/dso/cancel", Cancel),
        ("derms/v1/site/default_control/dso", DefaultControl),
    ):
        command = parse_command(TOPICS, topic, b"x" * 2000, True, max_bytes=1024)
        assert isinstance(command, kind)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply"),
        (b'{"mrid": "x", "duration_s": ' + b"9" * 5000 + b"}", "not JSON the gateway can read"),
        (b'{"mrid": "\x80\x81"}', "not UTF-8"),
        (b"", "not JSON"),
    ],
    ids=["20000 deep", "5000 digits", "not UTF-8", "empty"],
)
def test_an_unreadable_payload_is_one_invalid_without_an_mrid(payload: bytes, says: str) -> None:
    (item,) = controls(payload)
    assert isinstance(item, Invalid) and item.mrid is None
    assert says in item.detail


def test_a_window_past_the_year_9999_is_invalid_naming_start_and_the_rest_is_read() -> None:
    far = {**VALID, "mrid": "far", "start": "9999-12-31T23:00:00Z", "duration_s": 7200}
    bad, good = controls(json.dumps([far, VALID]).encode())
    assert isinstance(bad, Invalid) and bad.mrid == "far"
    assert "start: the window" in bad.detail and "after the year 9999" in bad.detail
    assert isinstance(good, EventPayload) and good.mrid == "ok"
