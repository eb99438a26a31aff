"""``derms-edge init`` against the rig: a Modbus TCP gateway with an inverter, a battery and a
meter whose SunSpec map is at 4096 (as an AccuEnergy AcuRev's), and an OPC UA charger. The
file it writes passes check-config, and the real daemon run on it publishes every device."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import start_gateway
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "derms_edge.cli"]


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    spec = RigSpec.model_validate(
        {
            "devices": [
                {"id": "pv", "type": "pv_legacy", "unit_id": 1, "gateway": "gw"},
                {"id": "bat", "type": "battery", "unit_id": 2, "gateway": "gw"},
                {"id": "acurev", "type": "meter", "unit_id": 3, "gateway": "gw", "base": 4096},
                {"id": "ev1", "type": "opcua_evse"},
            ]
        }
    )
    with RigThread(spec) as running:
        yield running


def init(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "init", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_init_writes_a_file_the_daemon_publishes_every_device_of(
    rig: RigThread, broker: Mosquitto, tmp_path: Path
) -> None:
    site = tmp_path / "site.yaml"
    modbus = f"127.0.0.1:{rig.port('pv')}"
    argv = ["--yes", "--modbus", modbus, "--unit-ids", "1-4", "--base", "4096"]
    argv += ["--opcua", rig.endpoint("ev1"), "--broker", f"127.0.0.1:{broker.port}"]
    argv += ["--gateway-id", "garage", "--out", str(site)]
    done = init(*argv, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4/4" not in done.stderr and "5/5" in done.stderr  # 4 unit ids and 1 server

    text = site.read_text()
    assert "# meter derms-edge HIL (serial acurev) at " in text  # commented, with the nameplate
    assert "password_file:" in text  # what to change for a real broker, as a comment
    devices = {d["id"]: d for d in yaml.safe_load(text)["devices"]}
    assert {i: d["kind"] for i, d in devices.items()} == {
        "inverter": "inverter",
        "battery": "battery",
        "meter": "meter",
        "evse": "evse",
    }
    assert devices["meter"]["base_address"] == 4096
    assert devices["inverter"]["base_address"] == 40000

    checked = subprocess.run(
        [*CLI, "check-config", str(site)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr

    probe = MqttProbe(broker.port, "derms/v1/garage/telemetry/+")
    gateway = start_gateway(site, tmp_path / "gateway.log")
    try:
        for device_id in devices:
            topic = f"derms/v1/garage/telemetry/{device_id}"

            def good(message: Message, topic: str = topic) -> bool:
                return message.topic == topic and message.json()["quality"] == "ok"

            probe.wait_for(good, timeout_s=20)
    finally:
        gateway.signal(signal.SIGTERM)
        gateway.popen.wait(15)
        gateway.stop()
        probe.close()
    meter = probe.on("derms/v1/garage/telemetry/meter")[-1].json()
    assert meter["hz"] == pytest.approx(50.0, abs=0.5)  # read at 4096, decoded


def test_init_asks_on_a_terminal_and_asks_again_after_a_wrong_answer(
    rig: RigThread, tmp_path: Path
) -> None:
    answers = [
        f"127.0.0.1:{rig.port('pv')}",  # Modbus TCP devices to scan
        "",  # no serial port
        "",  # no OPC UA server
        "1-300",  # unit ids: past 247
        "1-2",  # ... asked again
        "home-7",  # site id
        "",  # the broker: the default
        "roof pv",  # the inverter's id: a space is not allowed
        "roof",  # ... asked again
        "",  # the battery's id: the default
        "20",  # its backup reserve
    ]
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*CLI, "init", "--out", "site.yaml"],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        os.write(controller, "".join(f"{a}\n" for a in answers).encode())
        _, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, err
    assert "Modbus TCP devices or gateways to scan" in err
    assert "'roof pv': 1 to 64 letters" in err
    assert "--unit-ids: '1-300': unit ids go from 0 to 247" in err
    config = yaml.safe_load((tmp_path / "site.yaml").read_text())
    assert config["gateway"]["id"] == "home-7"
    assert (config["mqtt"]["host"], config["mqtt"]["port"]) == ("127.0.0.1", 1883)
    assert [(d["id"], d.get("reserve_soc_pct")) for d in config["devices"]] == [
        ("roof", None),
        ("battery", 20.0),
    ]
