"""The broker link secured, end to end: Mosquitto with a TLS listener that requires client
certificates (``use_identity_as_username``) and the ACL file ``derms-edge acl`` prints, the
real daemon, the rig's inverter.

Certificates come from trustme: one CA for the broker and every client, each client named by
its certificate's common name (the gateway ``tls-site``, the roles ``dgo`` and
``aggregator``), and a second CA the broker's certificate is not signed by.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import ONE_INVERTER, rig_device, start_gateway, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, MosquittoTls, Process
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

GATEWAY = "tls-site"
ROOT = f"derms/v1/{GATEWAY}"
PASSWORD = "Pw-4c9f1e-never-logged"
"""The broker password in mqtt.password_file: it must appear in no log line and no message."""


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    directory: Path

    def pair(self, name: str) -> tuple[Path, Path]:
        return self.directory / f"{name}.pem", self.directory / f"{name}.key"

    def context(self, name: str) -> ssl.SSLContext:
        """A client's TLS context: trusts the CA, presents ``name``'s certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        cert, key = self.pair(name)
        context.load_cert_chain(str(cert), str(key))
        return context


def _write_secret(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o640)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    leaves = {
        "broker": ca.issue_cert("127.0.0.1", "localhost", common_name="broker"),
        **{name: ca.issue_cert(f"{name}.test", common_name=name) for name in
           (GATEWAY, "dgo", "aggregator")},
    }  # fmt: skip
    for name, leaf in leaves.items():
        (directory / f"{name}.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
        _write_secret(directory / f"{name}.key", leaf.private_key_pem.bytes())
    return Pki(directory / "ca.pem", directory / "other-ca.pem", directory)


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(ONE_INVERTER)) as running:
        yield running


def site(rig: RigThread, pki: Pki, workdir: Path, port: int, name: str, **tls: Any) -> Path:
    cert, key = pki.pair(GATEWAY)
    password = workdir / "mqtt.password"
    _write_secret(password, f"{PASSWORD}\n".encode())
    return write_config(
        workdir / f"{name}.yaml",
        gateway={"id": GATEWAY, "state_dir": str(workdir / f"state-{name}")},
        mqtt={
            "host": "127.0.0.1",
            "port": port,
            "username": GATEWAY,
            "password_file": str(password),
            "tls": {"ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key), **tls},
            "reconnect_max_s": 2,
        },
        devices=[rig_device(rig, "inv1", "inverter", poll_interval_s=0.5)],
        telemetry={"interval_s": 1},
        control={
            "interval_s": 0.5,
            "revert_s": 0,
            "dso_model": "node_independent",  # dgo, derm, aggregator, customer
        },
    )


@pytest.fixture(scope="module")
def broker(
    pki: Pki, rig: RigThread, tmp_path_factory: pytest.TempPathFactory, workdir: Path
) -> Iterator[Mosquitto]:
    directory = tmp_path_factory.mktemp("mosquitto-tls")
    server = Mosquitto(directory)  # its port, for the configuration the ACL is made from
    config = site(rig, pki, workdir, server.port, "acl-source")
    acl = subprocess.run(
        [sys.executable, "-m", "derms_edge.cli", "acl", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (directory / "acl").write_text(acl)
    cert, key = pki.pair("broker")
    tls = MosquittoTls(pki.ca, cert, key, directory / "acl")
    server = Mosquitto(directory, server.port, tls=tls).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def probe(broker: Mosquitto, pki: Pki) -> Iterator[MqttProbe]:
    """The grid operator's view: what the gateway publishes (its identity may read it)."""
    listener = MqttProbe(broker.port, f"{ROOT}/#", tls=pki.context("dgo"))
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(
    rig: RigThread, pki: Pki, broker: Mosquitto, workdir: Path, probe: MqttProbe
) -> Iterator[Process]:
    config = site(rig, pki, workdir, broker.port, "site")
    command = [sys.executable, "-m", "derms_edge.cli", "run", str(config), "--log-level", "DEBUG"]
    process = Process(command, workdir / "site.log", env={"PYTHONUNBUFFERED": "1"})
    probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/inv1", timeout_s=20)
    yield process
    process.stop()


def test_telemetry_flows_and_the_grid_operators_control_applies(
    gateway: Process, probe: MqttProbe, broker: Mosquitto, pki: Pki, rig: RigThread
) -> None:
    # the capability comes at connect, the first reading a moment later: a round at a
    # second's boundary between the two says `unknown`, as the contract has it
    probe.wait_for(
        lambda m: m.topic == f"{ROOT}/telemetry/inv1" and m.json()["quality"] == "ok",
        after=time.monotonic(),
    )
    dso = DsoClient(broker.port, ROOT, tls=pki.context("dgo"))
    try:
        dso.event("tls-1", {"max_w_pct": 35}, role="dgo", duration_s=60)
        waiting.response(probe, ROOT, "tls-1", "started", 15)
        eventually(lambda: rig.state("inv1").w_lim_pct == 35, what="inv1 at 35 %")
        dso.cancel("tls-1", role="dgo")
        waiting.response(probe, ROOT, "tls-1", "cancelled", 15)
    finally:
        dso.close()


def test_send_acts_as_a_role_with_its_certificate(
    gateway: Process, rig: RigThread, pki: Pki, workdir: Path, broker: Mosquitto
) -> None:
    """Under the ACL the gateway's identity may not send controls: `send --cert --key` as the
    grid operator may, and its event applies."""
    config = workdir / "site.yaml"
    cert, key = pki.pair("dgo")

    def send(*identity: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "derms_edge.cli", "send", str(config), *identity]
        command += ["--role", "dgo"]
        command += ["--control", '{"max_w_pct": 55}', "--duration-s", "6", "--wait-s", "8"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    as_gateway = send()
    assert as_gateway.returncode != 0  # the broker drops it: no answer comes
    assert rig.state("inv1").w_lim_pct != 55
    as_dgo = send("--cert", str(cert), "--key", str(key))
    assert as_dgo.returncode == 0, as_dgo.stdout + as_dgo.stderr
    eventually(lambda: rig.state("inv1").w_lim_pct == 55, what="inv1 at the dgo's 55 %")
    eventually(lambda: rig.state("inv1").w_lim_pct is None, what="released after its 6 s")


def test_an_aggregator_cannot_publish_on_the_grid_operators_topic(
    gateway: Process, probe: MqttProbe, broker: Mosquitto, pki: Pki, rig: RigThread
) -> None:
    aggregator = DsoClient(broker.port, ROOT, tls=pki.context("aggregator"))
    try:
        sent = time.monotonic()
        aggregator.send("controls/dgo", {"mrid": "forged", "duration_s": 60,
                                         "control": {"max_w_pct": 5}})  # fmt: skip
        aggregator.event("own", {"max_w_pct": 60}, role="aggregator", duration_s=60)
        waiting.response(probe, ROOT, "own", "started", 15)  # its own topic works
    finally:
        aggregator.close()
    time.sleep(1.0)
    answered = {m.json()["mrid"] for m in probe.on(f"{ROOT}/responses") if m.at >= sent}
    assert "forged" not in answered  # the broker never delivered it
    assert rig.state("inv1").w_lim_pct == 60


def test_no_secret_in_the_log_or_on_mqtt(gateway: Process, probe: MqttProbe) -> None:
    probe.wait_for(lambda m: m.topic == f"{ROOT}/telemetry/inv1", after=time.monotonic())
    log = gateway.log.read_text()
    assert "DEBUG" in log  # the most talkative level
    assert PASSWORD not in log
    assert not [m.topic for m in probe.messages if PASSWORD.encode() in m.payload]


def test_a_gateway_with_the_wrong_ca_refuses_the_broker(
    rig: RigThread, pki: Pki, broker: Mosquitto, workdir: Path
) -> None:
    config = site(rig, pki, workdir, broker.port, "wrong-ca", ca_file=str(pki.other_ca))
    process = start_gateway(config, workdir / "wrong-ca.log")
    try:
        eventually(
            lambda: "not signed by" in process.log.read_text(), timeout_s=15, what="the refusal"
        )
        eventually(
            lambda: "inv1: reading" in process.log.read_text(),
            timeout_s=10,
            what="the devices polled meanwhile",
        )
        time.sleep(5.0)  # reconnects at most every 2 s: several more refusals
        assert process.alive()
    finally:
        process.stop()
    log = process.log.read_text()
    refusals = [line for line in log.splitlines() if "not signed by" in line]
    assert len(refusals) == 1, refusals  # once, not once per retry
    assert (
        f"MQTT broker 127.0.0.1:{broker.port}: its certificate is not signed by the CA in "
        in (refusals[0])
    )
    assert "check mqtt.tls.ca_file" in refusals[0]


def test_a_gateway_without_a_client_certificate_is_told_what_to_check(
    rig: RigThread, pki: Pki, broker: Mosquitto, workdir: Path
) -> None:
    """The broker requires a certificate; over TLS 1.3 it closes the connection after the
    handshake, before its CONNACK: logged once, with the setting to check."""
    config = site(rig, pki, workdir, broker.port, "no-cert")
    text = (
        config.read_text()
        .replace("  cert_file:", "  #cert_file:")
        .replace("  key_file:", "  #key_file:")
    )
    config.write_text(text)
    process = start_gateway(config, workdir / "no-cert.log")
    try:
        eventually(
            lambda: "mqtt.tls.cert_file" in process.log.read_text(), timeout_s=15, what="refusal"
        )
        time.sleep(5.0)  # several more attempts
        assert process.alive()
    finally:
        process.stop()
    said = [line for line in process.log.read_text().splitlines() if "ERROR" in line]
    assert len(said) == 1, said
    assert "it may require a client certificate (mqtt.tls.cert_file and key_file)" in said[0]


def test_a_key_others_can_read_is_refused_with_the_fix(
    rig: RigThread, pki: Pki, broker: Mosquitto, workdir: Path
) -> None:
    config = site(rig, pki, workdir, broker.port, "exposed")
    _, key = pki.pair(GATEWAY)
    key.chmod(0o644)
    try:
        for command in ("check-config", "run"):
            done = subprocess.run(
                [sys.executable, "-m", "derms_edge.cli", command, str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert done.returncode == 2, (command, done.stdout, done.stderr)
            assert f"mqtt.tls.key_file: {key} is readable by others (mode 0644)" in done.stderr
            assert f"chmod 640 {key}; chown root:derms-edge {key}" in done.stderr
    finally:
        key.chmod(0o640)
