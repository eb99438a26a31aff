"""Home Assistant discovery payloads: every template rendered as Home Assistant renders it
(tests/support/ha_templates.py) against payloads made by the gateway's own publishing code,
and the number, unit and classes each sensor shows."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from derms_edge.config import parse_config
from derms_edge.errors import ConfigError
from derms_edge.model import Capability, DeviceKind, DeviceState, OperatingState, Quality
from derms_edge.northbound.acl import grants
from derms_edge.northbound.homeassistant import (
    DeviceInfo,
    config_filter,
    discovery_messages,
    is_birth,
    is_own_config,
)
from derms_edge.northbound.messages import ActiveMessage, ActiveValue, TelemetryMessage
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.reporting import status_message
from tests.support.ha_templates import EXPECTED, available, render, state_of

TOPICS = Topics("derms", "site-1")
PREFIX = "homeassistant"
NOW = datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)
DEVICES = {
    "inv1": DeviceInfo(
        DeviceKind.INVERTER,
        Capability(manufacturer="Fronius", model="Symo 3.0-3-S", version="1.2", models=(1, 113)),
    ),
    "bat.1": DeviceInfo(DeviceKind.BATTERY),
    "ev1": DeviceInfo(DeviceKind.EVSE),
    "meter1": DeviceInfo(DeviceKind.METER),
}
READING = DeviceState(
    w=4211.5,
    var=-120.25,
    va=4213.0,
    pf=-0.97,
    v=230.1,
    hz=50.02,
    a=18.3,
    soc_pct=55.5,
    wh_exported=12_750_000.0,
    wh_imported=3_100.0,
    state=OperatingState.RUNNING,
)
# Home Assistant's discovery topic (homeassistant/components/mqtt/discovery.py)
DISCOVERY_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def configs() -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in discovery_messages(PREFIX, TOPICS, DEVICES)}


def entities(device_id: str) -> dict[str, dict[str, Any]]:
    """The entities of one device by their key (the unique id's last part)."""
    return {
        c["unique_id"].rsplit(":", 1)[1]: c
        for c in configs().values()
        if c["device"]["identifiers"] == [f"derms-edge:site-1:{device_id}"]
    }


def telemetry(device_id: str, quality: Quality = Quality.OK, seq: int = 7) -> bytes:
    kind = DEVICES[device_id].kind
    message = TelemetryMessage.of(
        seq=seq, device=device_id, kind=kind, quality=quality, ts=NOW, state=READING
    )
    return message.encode()


def status(online: bool) -> bytes:
    kinds = {d: i.kind for d, i in DEVICES.items()}
    message = status_message(
        TOPICS,
        kinds,
        online=online,
        quality=dict.fromkeys(kinds, Quality.OK),
        buffered=3,
        dropped=0,
        rejected_inbound=0,
    )
    return message.payload


@pytest.mark.parametrize("device_id", list(DEVICES))
def test_every_reading_shows_its_number_unit_and_class(device_id: str) -> None:
    payload = telemetry(device_id)
    sent = json.loads(payload)
    readings = {
        k: c
        for k, c in entities(device_id).items()
        if c["state_topic"] == TOPICS.telemetry(device_id)
    }
    numeric = {k for k, c in readings.items() if "state_class" in c}
    kind = DEVICES[device_id].kind
    assert numeric == set(EXPECTED) - ({"soc_pct"} if kind != DeviceKind.BATTERY else set())
    for key in numeric:
        config = readings[key]
        unit, device_class, state_class = EXPECTED[key]
        assert state_of(config, payload) == sent[key] == getattr(READING, key), key
        assert config.get("unit_of_measurement") == unit, key
        assert (config["device_class"], config["state_class"]) == (device_class, state_class)
    assert state_of(readings["quality"], payload) == "ok"
    assert state_of(readings["state"], payload) == "running"
    assert set(readings["state"]["options"]) == {str(s) for s in OperatingState} - {"unknown"}


def test_an_offline_device_reads_unknown_and_is_unavailable() -> None:
    payload = telemetry("bat.1", Quality.OFFLINE)
    readings = entities("bat.1")
    assert state_of(readings["soc_pct"], payload) is None  # the value is null: unknown
    assert state_of(readings["wh_exported"], payload) is None
    assert state_of(readings["state"], payload) is None
    assert state_of(readings["quality"], payload) == "offline"
    latest = {TOPICS.status: status(True), TOPICS.telemetry("bat.1"): payload}
    assert available(readings["w"], latest) is False  # the device's quality says so
    assert available(readings["quality"], latest) is True  # the quality itself shows
    assert state_of(readings["quality"], telemetry("bat.1", Quality.UNKNOWN)) is None


def test_availability_follows_the_gateway_status_and_the_device_quality() -> None:
    config = entities("inv1")["w"]
    assert config["availability_mode"] == "all"
    ok, stale = telemetry("inv1"), telemetry("inv1", Quality.STALE)
    online, gone = status(True), status(False)  # the last will is status(False)
    for (gateway, device), expected in {
        (online, ok): True,
        (online, stale): False,
        (gone, ok): False,
        (gone, stale): False,
    }.items():
        latest = {TOPICS.status: gateway, TOPICS.telemetry("inv1"): device}
        assert available(config, latest) is expected
    assert available(config, {TOPICS.status: online}) is None  # no telemetry yet
    gateway = {
        c["unique_id"].rsplit(":", 1)[1]: c
        for c in configs().values()
        if c["device"]["identifiers"] == ["derms-edge:site-1"]
    }
    assert render(gateway["online"]["value_template"], online) == "ON"
    assert render(gateway["online"]["value_template"], gone) == "OFF"
    assert "availability" not in gateway["online"]  # it says offline itself
    assert state_of(gateway["buffered"], online) == 3


def active(**devices: dict[str, ActiveValue]) -> bytes:
    site = {"export_limit_w": ActiveValue(value=5000.0, source="event", mrid="e1", role="dso")}
    return ActiveMessage(ts=NOW, devices=devices, site=site).encode()


def test_the_controls_in_force_and_their_sources() -> None:
    payload = active(
        inv1={
            "max_w_pct": ActiveValue(value=42.5, source="export_limit"),
            "volt_var": ActiveValue(
                value={"points": [[0.92, 44.0], [1.08, -44.0]]}, source="default", role="dso"
            ),
        },
        **{
            "bat.1": {
                "storage_w": ActiveValue(
                    value=-3000.0, source="event", mrid="e2", role="aggregator"
                )
            }
        },
        ev1={},
    )
    inverter, battery, charger = entities("inv1"), entities("bat.1"), entities("ev1")
    assert state_of(inverter["max_w_pct"], payload) == 42.5
    assert inverter["max_w_pct"]["unit_of_measurement"] == "%"
    assert (
        state_of(inverter["controls"], payload)
        == "max_w_pct: export_limit, volt_var: default (dso)"
    )
    assert state_of(battery["storage_w"], payload) == -3000.0
    assert (battery["storage_w"]["unit_of_measurement"], battery["storage_w"]["device_class"]) == (
        "W",
        "power",
    )
    assert state_of(battery["max_w_pct"], payload) is None  # not in force: unknown
    assert state_of(battery["reserve_soc_pct"], payload) is None
    assert state_of(battery["controls"], payload) == "storage_w: event (aggregator)"
    assert state_of(charger["evse_max_a"], payload) is None
    assert state_of(charger["controls"], payload) == "none"
    assert "max_w_pct" not in entities("meter1")  # a meter carries no control
    site = {
        c["unique_id"].rsplit(":", 1)[1]: c
        for c in configs().values()
        if c["device"]["identifiers"] == ["derms-edge:site-1"]
    }
    assert state_of(site["export_limit_w"], payload) == 5000.0
    assert state_of(site["controls"], payload) == "export_limit_w: event (dso)"
    # a device missing from the message (the gateway's first active) is unknown, not an error
    assert state_of(inverter["max_w_pct"], active()) is None


def test_devices_topics_and_ids() -> None:
    found = configs()
    for topic, config in found.items():
        prefix, _, rest = topic.partition("/")
        assert prefix == PREFIX
        match = DISCOVERY_TOPIC.fullmatch(rest)
        assert match is not None, topic
        assert match["node_id"] == "site-1"
        assert is_own_config(PREFIX, TOPICS, topic)
        assert match["component"] in ("sensor", "binary_sensor")
        assert config["state_topic"].startswith("derms/v1/site-1/")
    assert len({c["unique_id"] for c in found.values()}) == len(found)
    inverter = entities("inv1")["w"]["device"]
    assert inverter == {
        "identifiers": ["derms-edge:site-1:inv1"],
        "name": "inv1",
        "model": "Symo 3.0-3-S",
        "manufacturer": "Fronius",
        "sw_version": "1.2",
        "via_device": "derms-edge:site-1",
    }
    assert entities("bat.1")["w"]["device"]["model"] == "battery"  # nameplate not read yet
    assert "homeassistant/sensor/site-1/bat_1-w/config" in found
    assert config_filter(PREFIX, TOPICS) == "homeassistant/+/site-1/+/config"
    assert not is_own_config(PREFIX, TOPICS, "homeassistant/sensor/site-2/inv1-w/config")
    assert is_birth(PREFIX, "homeassistant/status", b"online")
    assert not is_birth(PREFIX, "homeassistant/status", b"offline")


def config_with(**extra: Any) -> dict[str, Any]:
    devices = [
        {"id": "pv.1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"},
        {"id": "pv_1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.2"},
    ]
    return {"gateway": {"id": "gw"}, "devices": devices, **extra}


def test_the_section_is_off_when_absent_and_ids_must_not_clash() -> None:
    assert parse_config(config_with()).homeassistant is None
    with pytest.raises(ConfigError, match=r"'pv\.1' and 'pv_1' would share"):
        parse_config(config_with(homeassistant={}))
    ok = config_with(homeassistant={"discovery_prefix": "ha"})
    ok["devices"][1]["id"] = "pv2"
    section = parse_config(ok).homeassistant
    assert section is not None and section.discovery_prefix == "ha"
    with pytest.raises(ConfigError, match=r"'derms' is mqtt\.prefix"):
        parse_config(ok | {"homeassistant": {"discovery_prefix": "derms"}})


def test_the_acl_grants_the_discovery_topics_only_with_the_section() -> None:
    ok = config_with(homeassistant={}, mqtt={"username": "gw"})
    ok["devices"][1]["id"] = "pv2"
    [gateway, *_roles] = grants(parse_config(ok))
    assert "homeassistant/+/gw/+/config" in gateway.write
    assert {"homeassistant/+/gw/+/config", "homeassistant/status"} <= set(gateway.read)
    del ok["homeassistant"]
    [gateway, *_roles] = grants(parse_config(ok))
    assert not [t for t in (*gateway.write, *gateway.read) if t.startswith("homeassistant/")]
