"""``derms-edge doctor`` on a site that works and on one where much is wrong: a real Mosquitto
(plain, with passwords, with TLS), the rig's inverter, real files; only the answers of
timedatectl and systemctl are given (the test machine has no systemd of its own)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trustme

from derms_edge.cli import main
from derms_edge.config import MqttSection
from derms_edge.diagnostics import system
from derms_edge.diagnostics.broker import broker as check_broker
from derms_edge.diagnostics.result import Mark
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import ONE_INVERTER, rig_device, write_config
from tests.support.opcua_nodes import battery_nodes
from tests.support.servers import Mosquitto, MosquittoTls, free_port

(INVERTER,) = ONE_INVERTER["devices"]
RIG = {
    **ONE_INVERTER,
    "devices": [INVERTER, {**INVERTER, "id": "inv2"}, {"id": "batc", "type": "opcua_battery"}],
}


COMMON_ONLY = [0x5375, 0x6E53, 1, 66, *([0] * 66), 0xFFFF, 0]
"""A SunSpec map with the common model only: it answers, but has nothing the gateway reads."""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigThread]:
    image = tmp_path_factory.mktemp("doctor-rig") / "common-only.json"
    image.write_text(json.dumps({"base": 40000, "registers": COMMON_ONLY}))
    common_only = {"id": "common", "type": "replay", "file": str(image)}
    spec = {**RIG, "devices": [*RIG["devices"], common_only]}
    with RigThread(RigSpec.model_validate(spec)) as running:
        yield running


def host_says(synchronised: str, unit: str) -> Any:
    """What timedatectl and systemctl answer on the host the test plays."""

    def run(command: Sequence[str]) -> str | None:
        match list(command):
            case ["timedatectl", *_]:
                return f"{synchronised}\n"
            case ["systemctl", "show", _, "-p", "WorkingDirectory", "--value"]:
                return "\n"
            case ["systemctl", "show", *_]:
                return unit
            case _:
                return None

    return run


RUNNING = (
    "LoadState=loaded\nActiveState=active\nSubState=running\nExecMainStatus=0\nResult=success\n"
)
FAILED = (
    "LoadState=loaded\nActiveState=failed\nSubState=failed\nExecMainStatus=1\nResult=exit-code\n"
)


def doctor(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], run: Any
) -> tuple[int, list[str]]:
    monkeypatch.setattr(system, "run_tool", run)
    code = main(["doctor", str(config)])
    return code, capsys.readouterr().out.splitlines()


def test_a_working_site_passes_with_a_warning_for_a_kind_its_models_contradict(
    rig: RigThread,
    broker: Mosquitto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    battery = {
        "id": "batc",
        "kind": "battery",
        "protocol": "opcua",
        "endpoint": rig.endpoint("batc"),
        "nodes": battery_nodes("batc"),
    }
    config = write_config(
        tmp_path / "site.yaml",
        gateway={"id": "doctor-ok", "state_dir": str(tmp_path / "state")},
        mqtt={"port": broker.port},
        devices=[
            rig_device(rig, "inv1"),
            battery,
            rig_device(rig, "inv2", "meter"),  # an inverter said to be a meter
        ],
    )
    code, lines = doctor(config, monkeypatch, capsys, host_says("yes", RUNNING))
    items = [line for line in lines if line[:2] in ("✓ ", "! ", "✗ ")]
    assert code == 0, "\n".join(lines)
    passed = "\n".join(line for line in items if line.startswith("✓ "))
    (warning,) = [line for line in items if not line.startswith("✓ ")]
    assert f"MQTT broker 127.0.0.1:{broker.port}: login as anonymous accepted" in passed
    assert "device inv1 (127.0.0.1:" in passed and "models 1, 701" in passed
    assert f"device batc ({rig.endpoint('batc')}) answers: OPC UA" in passed
    assert passed.count("answers") == 2 and ": battery" in passed and ": inverter" in passed
    assert "clock synchronised" in passed and "service: derms-edge.service running" in passed
    assert (
        warning.startswith("! device inv2") and "inverter, but configured as kind meter" in warning
    )


def test_a_broken_site_fails_and_says_what_to_do_for_each_item(
    rig: RigThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    password.chmod(0o644)
    closed = free_port()
    config = write_config(
        tmp_path / "site.yaml",
        gateway={"id": "doctor-bad", "state_dir": str(tmp_path / "state")},
        mqtt={"port": closed, "username": "gw", "password_file": str(password)},
        devices=[
            {
                "id": "ghost",
                "kind": "inverter",
                "protocol": "sunspec",
                "host": "127.0.0.1",
                "port": free_port(),
                "timeout_s": 0.5,
            },
            rig_device(rig, "common"),
        ],
    )
    code, lines = doctor(config, monkeypatch, capsys, host_says("no", FAILED))
    assert code == 1
    failed = {
        line: advice.strip()
        for line, advice in zip(lines, [*lines[1:], ""], strict=True)
        if line.startswith("✗ ")
    }
    assert all(advice.startswith("→ ") for advice in failed.values()), "\n".join(lines)
    text = "\n".join(failed)
    assert f"✗ MQTT broker 127.0.0.1:{closed} unreachable" in text
    assert "✗ device ghost (127.0.0.1:" in text
    assert "✗ device common (127.0.0.1:" in text and "models 1: none the gateway reads" in text
    assert f"✗ mqtt.password_file: {password} is readable by others (mode 0644)" in text
    assert "✗ clock not synchronised" in text
    assert "✗ service: derms-edge.service failed" in text
    assert any("chmod 640" in advice for advice in failed.values())
    assert any("connection refused" in advice for advice in failed.values())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("doctor-pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    for name, leaf in (
        ("broker", ca.issue_cert("127.0.0.1", common_name="broker")),
        ("gw", ca.issue_cert("gw.test", common_name="gw")),
    ):
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
        (directory / f"{name}.key").chmod(0o600)
    (directory / "acl").write_text("user gw\ntopic readwrite #\n")
    return directory


def test_the_broker_check_tells_tls_from_login_from_unreachable(pki: Path, tmp_path: Path) -> None:
    tls = MosquittoTls(pki / "ca.pem", pki / "broker.pem", pki / "broker.key", pki / "acl")
    secured = Mosquitto(tmp_path / "tls", tls=tls).start()
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "gw", "right"], check=True)
    locked = Mosquitto(tmp_path / "locked", options=f"password_file {passwords}\nuser root\n")
    locked.config.write_text(
        locked.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
    )
    try:
        locked.start()
        good = {"ca_file": pki / "ca.pem", "cert_file": pki / "gw.pem", "key_file": pki / "gw.key"}
        ok = check_broker(MqttSection(port=secured.port, tls=good), timeout_s=3)
        assert [c.mark for c in ok] == [Mark.PASS] * 3, ok
        assert "TLS certificate chained" in ok[1].title

        wrong_ca = {**good, "ca_file": pki / "other-ca.pem"}
        refused = check_broker(MqttSection(port=secured.port, tls=wrong_ca), timeout_s=3)
        assert [c.mark for c in refused] == [Mark.PASS, Mark.FAIL]
        assert "TLS refused" in refused[1].title
        assert refused[1].advice is not None and "not signed by" in refused[1].advice

        login = check_broker(
            MqttSection(port=locked.port, username="gw", password="wrong"), timeout_s=3
        )
        assert [c.mark for c in login] == [Mark.PASS, Mark.FAIL]
        assert "login as gw refused" in login[1].title
    finally:
        secured.stop()
        locked.stop()


def test_devices_are_asked_at_the_same_time(tmp_path: Path) -> None:
    """Three devices that take connections and never answer: each costs its timeouts (three
    bases tried), together no more than one of them does."""
    import asyncio
    import socket
    import time

    from derms_edge.config import parse_config
    from derms_edge.diagnostics.devices import devices

    silent = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        config = parse_config(
            {
                "gateway": {"id": "silent", "state_dir": str(tmp_path)},
                "devices": [
                    {"id": f"mute{n}", "kind": "inverter", "protocol": "sunspec",
                     "host": "127.0.0.1", "port": server.getsockname()[1], "timeout_s": 0.4}
                    for n, server in enumerate(silent)
                ],
            }
        )  # fmt: skip
        started = time.monotonic()
        checks = asyncio.run(devices(config))
        took_s = time.monotonic() - started
    finally:
        for server in silent:
            server.close()
    assert [c.mark for c in checks] == [Mark.FAIL] * 3
    assert all("does not answer" in c.title for c in checks)
    assert 0.8 < took_s < 2.4  # about one device's three timeouts of 0.4 s, not three devices'
