"""Run the real ``derms-edge run`` daemon as a child process on a generated configuration."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from hil.rig import RigThread
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Process


def rig_device(
    rig: RigThread, device_id: str, kind: str = "inverter", **settings: Any
) -> dict[str, Any]:
    """The configuration of a SunSpec device that the HIL rig serves on loopback."""
    return {
        "id": device_id,
        "kind": kind,
        "protocol": "sunspec",
        "host": "127.0.0.1",
        "port": rig.port(device_id),
        **settings,
    }


def write_config(path: Path, **sections: Any) -> Path:
    """Write a gateway configuration file from sections given as dictionaries."""
    path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return path


def start_gateway(config: Path, log: Path) -> Process:
    """Start ``derms-edge run CONFIG`` with debug-free, unbuffered logging."""
    return Process(
        [sys.executable, "-m", "derms_edge.cli", "run", str(config)],
        log,
        env={"PYTHONUNBUFFERED": "1"},
    )


def start_connected(
    config: Path, log: Path, probe: MqttProbe, root: str, devices: Sequence[str]
) -> Process:
    """Start the daemon and wait until every one of ``devices`` has connected (its
    capability is published under ``root``; ``probe`` must subscribe to it)."""
    process = start_gateway(config, log)
    for device_id in devices:
        topic = f"{root}/capability/{device_id}"

        def published(message: Message, topic: str = topic) -> bool:
            return message.topic == topic

        probe.wait_for(published, timeout_s=20)
    return process


ONE_INVERTER = {
    "tick_s": 0.2,
    "devices": [
        {
            "id": "inv1",
            "type": "pv_1547",
            "w_rtg": 10000,
            "profile": {"kind": "constant", "w": 8000},
            "tau_s": 0,
        }
    ],
}
"""A rig of one IEEE 1547 inverter (10 kW, making 8 kW, answering at once), as the end-to-end
tests of the MQTT side use it."""
