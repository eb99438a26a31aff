"""End to end: the daemon reads the rig's simulated and replayed real devices over Modbus TCP
and publishes status, capability and telemetry on a real Mosquitto."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from derms_edge.runtime.gateway import DECISION_WAIT_S
from hil.rig import RigThread
from hil.spec import RigSpec, resolve_file
from tests.support.gateway import rig_device, start_gateway, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process, free_port

DATA = Path(__file__).parents[1] / "data" / "sunspec-real"
ROOT = "derms/v1/it-site"

SIMULATED = [
    {
        "id": "pv_legacy",
        "type": "pv_legacy",
        "w_rtg": 5000,
        "profile": {"kind": "constant", "w": 3200},
        "tau_s": 0,
    },
    {
        "id": "pv_1547",
        "type": "pv_1547",
        "w_rtg": 10000,
        "profile": {"kind": "constant", "w": 6400},
        "tau_s": 0,
    },
    {"id": "bat", "type": "battery", "wh_rtg": 10000, "soc_pct": 60, "soc_min_pct": 10},
]
REPLAYED = {
    # device id: (fixture file, gateway kind)
    "fronius_symo": ("fronius-symo-3.0-3-s-float113.json", "inverter"),
    "fronius_eco": ("fronius-eco-27.0-3-s-float113.json", "inverter"),
    "solaredge": ("solaredge-se33.3k-103.json", "inverter"),
    "sma": ("sma-sb3.6-1av-41.json", "inverter"),
    "fimer": ("fimer-pvs-3q58.json", "inverter"),
    "outback": ("outback-oghi8048a-der.json", "battery"),
    "veris": ("veris-e51c2-203.json", "meter"),
    "accuenergy": ("accuenergy-acuvim-ii-204.json", "meter"),
}


def rig_spec(garbage: Path) -> RigSpec:
    replayed = [
        {"id": device_id, "type": "replay", "file": str(DATA / file)}
        for device_id, (file, _kind) in REPLAYED.items()
    ]
    ieee = {
        "id": "sunspec2_1547",
        "type": "replay",
        "file": str(resolve_file(Path("sunspec2:tests/test_data/device_1547.json"), DATA)),
    }
    bad = {"id": "garbage", "type": "replay", "file": str(garbage)}
    return RigSpec.model_validate({"tick_s": 0.2, "devices": [*SIMULATED, *replayed, ieee, bad]})


@pytest.fixture(scope="module")
def garbage_image(workdir: Path) -> Path:
    """A device whose model chain is garbage: model 103 claiming 9000 registers."""
    path = workdir / "garbage.json"
    path.write_text(json.dumps({"base": 40000, "registers": [0x5375, 0x6E53, 103, 9000, 1, 2]}))
    return path


@pytest.fixture(scope="module")
def rig(garbage_image: Path) -> Iterator[RigThread]:
    with RigThread(rig_spec(garbage_image)) as running:
        yield running


def device_entry(rig: RigThread, device_id: str, kind: str) -> dict[str, Any]:
    return rig_device(rig, device_id, kind, poll_interval_s=0.5, timeout_s=0.5, backoff_max_s=2)


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    devices = [
        device_entry(rig, "pv_legacy", "inverter"),
        device_entry(rig, "pv_1547", "inverter"),
        device_entry(rig, "bat", "battery"),
        device_entry(rig, "sunspec2_1547", "inverter"),
        device_entry(rig, "garbage", "inverter"),
        *(device_entry(rig, device_id, kind) for device_id, (_f, kind) in REPLAYED.items()),
        {**device_entry(rig, "bat", "battery"), "id": "nowhere", "port": free_port()},
    ]
    return write_config(
        workdir / "gateway.yaml",
        gateway={"id": "it-site", "state_dir": str(workdir / "state")},
        mqtt={"host": "127.0.0.1", "port": broker.port, "prefix": "derms"},
        devices=devices,
        telemetry={"interval_s": 1},
    )


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/#")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(config: Path, probe: MqttProbe, workdir: Path) -> Iterator[Process]:
    process = start_gateway(config, workdir / "gateway.log")
    yield process
    if process.alive():
        process.stop()


def telemetry(probe: MqttProbe, device: str, quality: str = "ok", after: float = 0.0) -> Any:
    def match(m: Message) -> bool:
        return m.topic == f"{ROOT}/telemetry/{device}" and m.json()["quality"] == quality

    return probe.wait_for(match, after=after).json()


def test_status_is_online_with_every_device(gateway: Process, probe: MqttProbe) -> None:
    status = probe.wait_for(lambda m: m.topic == f"{ROOT}/status").json()
    assert status["online"] is True
    assert status["version"]
    assert status["ts"].endswith("Z")
    assert set(status["devices"]) >= {"pv_legacy", "bat", "fronius_symo", "nowhere"}


def test_legacy_inverter_matches_the_simulator(
    gateway: Process, probe: MqttProbe, rig: RigThread
) -> None:
    message = telemetry(probe, "pv_legacy")
    truth = rig.state("pv_legacy")
    assert message["kind"] == "inverter"
    assert message["w"] == pytest.approx(truth.w, abs=50)  # 1 % of 5 kW
    assert message["w"] == pytest.approx(3200, abs=50)
    assert message["v"] == pytest.approx(truth.v, abs=0.5)
    assert message["hz"] == pytest.approx(truth.hz, abs=0.01)
    assert message["state"] == "running"
    assert message["soc_pct"] is None


def test_ieee_1547_inverter_matches_the_simulator(
    gateway: Process, probe: MqttProbe, rig: RigThread
) -> None:
    message = telemetry(probe, "pv_1547")
    truth = rig.state("pv_1547")
    assert message["w"] == pytest.approx(truth.w, abs=100)
    assert message["w"] == pytest.approx(6400, abs=100)
    assert message["v"] == pytest.approx(truth.v, abs=0.5)
    assert message["hz"] == pytest.approx(truth.hz, abs=0.01)


def test_battery_state_of_charge(gateway: Process, probe: MqttProbe, rig: RigThread) -> None:
    message = telemetry(probe, "bat")
    truth = rig.state("bat")
    assert message["kind"] == "battery"
    assert truth.soc_pct is not None
    assert message["soc_pct"] == pytest.approx(truth.soc_pct, abs=0.5)
    assert message["w"] == pytest.approx(truth.w, abs=50)


def test_capabilities_are_retained(gateway: Process, probe: MqttProbe) -> None:
    def capability(device: str) -> Any:
        return probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/{device}").json()

    battery = capability("bat")
    assert battery["models"] == [1, 103, 124, 713, 802]
    assert battery["wh_rtg"] == pytest.approx(10000)
    assert battery["charge_w_max"] == pytest.approx(5000)
    assert battery["soc_min_pct"] == pytest.approx(10)
    inverter = capability("pv_legacy")
    assert inverter["models"] == [1, 103, 120, 121, 123, 126]
    assert inverter["w_max"] == pytest.approx(5000)
    assert capability("pv_1547")["models"][:2] == [1, 701]
    late = MqttProbe(probe.port, f"{ROOT}/capability/+")
    try:
        retained = late.wait_for(lambda m: m.topic == f"{ROOT}/capability/bat")
        assert retained.retain
    finally:
        late.close()


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("fronius_symo", {"w": 70.0, "hz": 50.05, "wh_exported": 11937020.0, "state": "running"}),
        ("fronius_eco", {"w": 22520.0, "hz": 49.97, "wh_exported": 39170800.0}),
        ("solaredge", {"w": 24767.0, "hz": 59.99, "a": 86.89, "wh_exported": 17534384.0}),
        ("sma", {"w": 3680.0, "hz": 49.99, "a": 15.1, "v": 244.0, "pf": -1.0}),  # PF a fraction
        ("fimer", {"w": 141380.0, "hz": 49.99, "a": 320.1, "wh_exported": 459493000.0}),
        ("outback", {"w": 0.0, "hz": 60.0, "soc_pct": 100.0, "v": 120.0}),
        ("veris", {"w": -6540.0, "hz": 60.01, "a": 53.48, "pf": 0.9925}),  # W negated (import +)
        ("accuenergy", {"w": 0.0, "hz": 0.0}),
    ],
)
def test_real_devices_decode_as_captured(
    gateway: Process, probe: MqttProbe, device: str, expected: dict[str, Any]
) -> None:
    message = telemetry(probe, device)
    for field, value in expected.items():
        if isinstance(value, float):
            assert message[field] == pytest.approx(value, rel=1e-6, abs=1e-9), field
        else:
            assert message[field] == value, field


def test_pysunspec2_ieee_1547_image(gateway: Process, probe: MqttProbe) -> None:
    message = telemetry(probe, "sunspec2_1547")
    assert message["kind"] == "inverter"
    assert message["w"] is not None
    assert message["hz"] is not None


def test_unreachable_and_garbage_devices_are_offline_and_disturb_nobody(
    gateway: Process, probe: MqttProbe
) -> None:
    for device in ("nowhere", "garbage"):
        message = telemetry(probe, device, quality="offline")
        values = {
            k: v for k, v in message.items() if k not in {"ts", "seq", "device", "kind", "quality"}
        }
        assert set(values.values()) == {None}
    assert telemetry(probe, "pv_legacy")["quality"] == "ok"
    log = gateway.output()
    assert "garbage" in log
    assert "Traceback" not in log


def test_a_meter_takes_no_controls_so_its_connect_waits_for_no_decision(
    gateway: Process, probe: MqttProbe
) -> None:
    """Only devices that take controls wait for the controller's decision after a connect
    (DECISION_WAIT_S); a meter would wait in vain and warn at every start."""
    first = datetime.fromisoformat(telemetry(probe, "veris")["ts"])
    probe.wait_for(
        lambda m: (
            m.topic == f"{ROOT}/telemetry/veris"
            and datetime.fromisoformat(m.json()["ts"])
            > first + timedelta(seconds=DECISION_WAIT_S + 1)
        )
    )
    log = gateway.output()
    assert not [
        line
        for line in log.splitlines()
        if "no control decision" in line and ("veris" in line or "accuenergy" in line)
    ]


def test_seq_increases_by_one_per_message(gateway: Process, probe: MqttProbe) -> None:
    first = telemetry(probe, "pv_legacy")["seq"]
    probe.wait_for(
        lambda m: m.topic.startswith(f"{ROOT}/telemetry/") and m.json()["seq"] >= first + 40
    )
    seqs = sorted(
        m.json()["seq"] for m in probe.messages if m.topic.startswith(f"{ROOT}/telemetry/")
    )
    window = [s for s in seqs if first <= s <= first + 40]
    assert window == list(range(first, first + 41))


def test_length_mismatch_is_reported_once(gateway: Process, probe: MqttProbe) -> None:
    telemetry(probe, "accuenergy")
    log = gateway.output()
    mismatch = [line for line in log.splitlines() if "accuenergy" in line and "204" in line]
    assert len(mismatch) == 1, mismatch


def test_sigterm_publishes_offline_and_exits_cleanly(gateway: Process, probe: MqttProbe) -> None:
    import time

    telemetry(probe, "pv_legacy")
    before = time.monotonic()
    gateway.signal(signal.SIGTERM)
    assert gateway.popen.wait(15) == 0
    status = probe.wait_for(lambda m: m.topic == f"{ROOT}/status", after=before).json()
    assert status["online"] is False
