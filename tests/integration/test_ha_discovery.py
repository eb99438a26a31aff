"""End to end: Home Assistant discovery from the real daemon on a real Mosquitto, reading the
HIL rig. The retained config messages appear for every device, their templates give what the
daemon's real telemetry says, a device removed from the configuration has its configs removed
at the next start (found from the broker's retained messages), and Home Assistant's birth
message has every config published again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import publish

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import rig_device, start_gateway, write_config
from tests.support.ha_templates import EXPECTED, available, state_of
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process

pytestmark = pytest.mark.integration

GATEWAY = "ha-site"
ROOT = f"derms/v1/{GATEWAY}"
PREFIX = "ha-test"
KINDS = {"pv": "inverter", "bat": "battery", "meter": "meter"}
RIG = {
    "tick_s": 0.2,
    "devices": [
        {
            "id": "pv",
            "type": "pv_1547",
            "w_rtg": 10000,
            "profile": {"kind": "constant", "w": 6400},
            "tau_s": 0,
        },
        {"id": "bat", "type": "battery", "wh_rtg": 10000, "soc_pct": 60, "soc_min_pct": 10},
        {"id": "meter", "type": "meter", "site": ["pv", "bat"]},
    ],
}
OTHER = f"{PREFIX}/sensor/another-gateway/pv-w/config"
"""Another gateway's config: never this gateway's to remove."""


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
        yield running


def config_file(rig: RigThread, broker: Mosquitto, workdir: Path, devices: list[str]) -> Path:
    return write_config(
        workdir / "ha.yaml",
        gateway={"id": GATEWAY, "state_dir": str(workdir / "ha-state")},
        mqtt={"host": "127.0.0.1", "port": broker.port},
        devices=[rig_device(rig, d, KINDS[d], poll_interval_s=0.5, timeout_s=0.5) for d in devices],
        telemetry={"interval_s": 1},
        homeassistant={"discovery_prefix": PREFIX},
    )


def retained(broker: Mosquitto, topic_filter: str) -> dict[str, bytes]:
    """The broker's retained messages under a filter: a new subscriber gets them first, so
    they are all in once a message published after the subscription arrives."""
    probe = MqttProbe(broker.port, topic_filter, f"{PREFIX}/marker")
    try:
        publish.single(f"{PREFIX}/marker", b"end", qos=1, port=broker.port)
        probe.wait_for(lambda m: m.topic == f"{PREFIX}/marker")
        return {m.topic: m.payload for m in probe.messages if m.retain}
    finally:
        probe.close()


def latest(probe: MqttProbe, predicate: Any = lambda _m: True) -> dict[str, Message]:
    found: dict[str, Message] = {}
    for message in list(probe.messages):
        if predicate(message):
            found[message.topic] = message
    return found


def check_templates(configs: dict[str, dict[str, Any]], payloads: dict[str, bytes]) -> None:
    """Every template of every device's configs rendered against the gateway's latest
    retained state and telemetry: the numbers are the telemetry's, with their units and
    classes, and every entity is available."""
    checked = 0
    for device, kind in KINDS.items():
        telemetry = payloads[f"{ROOT}/telemetry/{device}"]
        sent = json.loads(telemetry)
        device_configs = [c for c in configs.values() if c["device"]["name"] == device]
        assert device_configs, device
        for config in device_configs:
            assert config["device"]["via_device"] == f"derms-edge:{GATEWAY}"
            key = config["unique_id"].rsplit(":", 1)[1]
            value = state_of(config, payloads[config["state_topic"]])  # renders, always
            assert available(config, payloads) is True, config["unique_id"]
            if key == "quality":
                assert value == "ok"
            if key not in EXPECTED:
                continue
            unit, device_class, state_class = EXPECTED[key]
            assert value == sent[key], (device, key, value, sent[key])
            assert config.get("unit_of_measurement") == unit
            assert (config["device_class"], config["state_class"]) == (device_class, state_class)
            checked += 1
        if kind == "battery":
            assert 0 < sent["soc_pct"] <= 100  # a real number, rendered above
    assert checked == 3 * 9 + 1  # every numeric reading of every device, SoC once


def test_discovery_configs_follow_the_devices_and_home_assistant(
    rig: RigThread, broker: Mosquitto, workdir: Path
) -> None:
    publish.single(OTHER, b'{"name": "not ours"}', qos=1, retain=True, port=broker.port)
    probe = MqttProbe(broker.port, f"{PREFIX}/#", f"{ROOT}/#")
    gateway: Process | None = start_gateway(
        config_file(rig, broker, workdir, list(KINDS)), workdir / "ha-1.log"
    )
    try:
        # every device's telemetry, ok, and the inverter's config with its nameplate
        for device in KINDS:
            probe.wait_for(
                lambda m, d=device: (
                    m.topic == f"{ROOT}/telemetry/{d}" and m.json()["quality"] == "ok"
                ),
                timeout_s=20,
            )
        probe.wait_for(
            lambda m: (
                m.topic == f"{PREFIX}/sensor/{GATEWAY}/pv-w/config"
                and "manufacturer" in m.json()["device"]
            )
        )
        configs = {t: m.json() for t, m in latest(probe, lambda m: "/config" in m.topic).items()}
        configs.pop(OTHER)
        on_broker = retained(broker, f"{PREFIX}/+/{GATEWAY}/+/config")
        assert {t: json.loads(p) for t, p in on_broker.items()} == configs  # all retained
        state = latest(probe, lambda m: m.topic.startswith(ROOT))
        check_templates(configs, {t: m.payload for t, m in state.items()})

        # a restart without the battery: its configs are removed, found on the broker
        gateway.stop()
        gateway = None
        bat_topics = {t for t, c in configs.items() if c["device"]["name"] == "bat"}
        assert len(bat_topics) > 10
        restarted_at = time.monotonic()
        gateway = start_gateway(
            config_file(rig, broker, workdir, ["pv", "meter"]), workdir / "ha-2.log"
        )
        for topic in bat_topics:
            probe.wait_for(lambda m, t=topic: m.topic == t and m.payload == b"", after=restarted_at)
        left = retained(broker, f"{PREFIX}/#")
        assert not bat_topics & set(left)
        assert set(configs) - bat_topics <= set(left)
        assert left[OTHER] == b'{"name": "not ours"}'

        # Home Assistant restarts: its birth message has every config published again (after
        # a telemetry round of the restarted gateway: its announce at connect is long done)
        probe.wait_for(lambda m: m.topic == f"{ROOT}/telemetry/pv", after=restarted_at)
        time.sleep(0.5)
        born_at = time.monotonic()
        publish.single(f"{PREFIX}/status", b"online", qos=1, port=broker.port)
        for topic in set(configs) - bat_topics:
            probe.wait_for(lambda m, t=topic: m.topic == t and m.payload != b"", after=born_at)
    finally:
        if gateway is not None:
            gateway.stop()
        probe.close()
        publish.single(OTHER, b"", qos=1, retain=True, port=broker.port)
