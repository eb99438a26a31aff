"""The MQTT session when things go wrong: the last will, a refused login, a late broker."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import rig_device, start_gateway, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process, free_port, mosquitto_binary, wait_port

ROOT = "derms/v1/edge"


@pytest.fixture(scope="module")
def rig() -> RigThread:
    spec = RigSpec.model_validate({"devices": [{"id": "pv", "type": "pv_legacy"}]})
    running = RigThread(spec).start()
    yield running  # type: ignore[misc]
    running.stop()


def gateway_config(tmp_path: Path, rig: RigThread, mqtt_port: int, **mqtt: object) -> Path:
    return write_config(
        tmp_path / "gateway.yaml",
        gateway={"id": "edge", "state_dir": str(tmp_path / "state")},
        mqtt={"host": "127.0.0.1", "port": mqtt_port, "reconnect_max_s": 1, **mqtt},
        devices=[rig_device(rig, "pv", poll_interval_s=0.5)],
        telemetry={"interval_s": 0.5},
    )


def test_kill_9_leaves_the_last_will(tmp_path: Path, rig: RigThread, broker: Mosquitto) -> None:
    probe = MqttProbe(broker.port, f"{ROOT}/status", f"{ROOT}/telemetry/+")
    gateway = start_gateway(
        gateway_config(tmp_path, rig, broker.port, keepalive_s=5), tmp_path / "g.log"
    )
    try:
        probe.wait_for(lambda m: m.topic.endswith("/telemetry/pv"))
        killed = time.monotonic()
        gateway.signal(signal.SIGKILL)
        status = probe.wait_for(
            lambda m: m.topic.endswith("/status") and not m.json()["online"],
            timeout_s=20,
            after=killed,
        )
        assert status.json()["devices"] == ["pv"]
    finally:
        gateway.stop()
        probe.close()


def test_a_refused_login_is_one_readable_line_and_polling_goes_on(
    tmp_path: Path, rig: RigThread
) -> None:
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # `user root`: a broker started as root keeps its user, so it can read tmp_path
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\nuser root\n"
        f"password_file {tmp_path / 'passwd'}\n"
    )
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([passwd, "-b", "-c", str(tmp_path / "passwd"), "edge", "right"], check=True)

    broker = Process([mosquitto_binary(), "-c", str(conf)], tmp_path / "mosquitto.log")
    wait_port(port)
    gateway = start_gateway(
        gateway_config(tmp_path, rig, port, username="edge", password="wrong"), tmp_path / "g.log"
    )
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            "refused the connection" in gateway.output() and "pv: reading" in gateway.output()
        ):
            time.sleep(0.1)
        time.sleep(2.5)  # more reconnection attempts: the refusal is still logged only once
        refused = [x for x in gateway.output().splitlines() if "refused the connection" in x]
        assert len(refused) == 1, gateway.output()
        assert f"MQTT broker 127.0.0.1:{port} refused the connection: Not authorized" in refused[0]
        assert gateway.alive()
        assert "pv: reading" in gateway.output()  # the device is polled all the same
        assert "Traceback" not in gateway.output()
    finally:
        gateway.stop()
        broker.stop()


def test_a_broker_that_comes_late(tmp_path: Path, rig: RigThread) -> None:
    late = Mosquitto(tmp_path / "late", port=free_port())
    gateway = start_gateway(gateway_config(tmp_path, rig, late.port), tmp_path / "g.log")
    try:
        time.sleep(2)
        assert "nothing accepts connections there (connection refused); retrying" in (
            gateway.output()
        )
        assert "pv: reading" in gateway.output()
        late.start()
        probe = MqttProbe(late.port, f"{ROOT}/#")
        try:
            # paho delivers what it queued while the broker was away, then fresh readings
            probe.wait_for(
                lambda m: m.topic.endswith("/telemetry/pv") and m.json()["quality"] == "ok",
                timeout_s=20,
            )
            status = probe.wait_for(lambda m: m.topic.endswith("/status"))
            assert status.json()["online"] is True
        finally:
            probe.close()
    finally:
        gateway.stop()
        late.stop()
