"""End to end over OPC UA: the real daemon reads the rig's OPC UA charger and battery (one
without security, two over Basic256Sha256 SignAndEncrypt with certificates and a user),
publishes their telemetry on a real Mosquitto, and puts DSO controls on their nodes.

One gateway process serves the module. The rig's servers record every accepted client write
with its Variant type, so each control is checked at the node, with the node's own type.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.devices.evse import EvseState
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import start_connected, start_gateway, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.opcua_nodes import (
    CHARGER_MEASURED,
    EVSE_NS,
    battery_nodes,
    charger_nodes,
)
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

ROOT = "derms/v1/opcua-site"
USERS = {"gateway": "pa55-word"}

RIG = {
    "tick_s": 0.1,
    "devices": [
        {"id": "eva", "type": "opcua_evse", "max_a": 32, "ev_soc_pct": 30, "tau_s": 0.2},
        {
            "id": "evb",
            "type": "opcua_evse",
            "max_a": 32,
            "phases": 3,
            "ev_soc_pct": 40,
            "tau_s": 0.2,
            "users": USERS,
        },
        {
            "id": "batc",
            "type": "opcua_battery",
            "wh_rtg": 10000,
            "w_cha_max": 5000,
            "w_discha_max": 5000,
            "soc_pct": 50,
            "soc_min_pct": 10,
            "soc_max_pct": 90,
            "tau_s": 0.2,
            "users": USERS,
        },
    ],
}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigThread]:
    spec = RigSpec.model_validate({**RIG, "pki_dir": str(tmp_path_factory.mktemp("pki"))})
    with RigThread(spec) as running:
        yield running


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    def secure(device_id: str) -> dict[str, Any]:
        pki = rig.pki(device_id)
        return {
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "certificate": str(pki.client_certificate),
                "private_key": str(pki.client_private_key),
                "server_certificate": str(pki.server_certificate),
            },
            "username": "gateway",
            "password": USERS["gateway"],
        }

    def device(device_id: str, kind: str, nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "id": device_id,
            "kind": kind,
            "protocol": "opcua",
            "endpoint": rig.endpoint(device_id),
            "nodes": nodes,
            "poll_interval_s": 0.5,
            "publishing_interval_ms": 100,
            "backoff_max_s": 1,
            **extra,
        }

    wrong = charger_nodes("eva") | {"w": {"node": f"nsu={EVSE_NS};s=eva.ActualPowr", "scale": -1}}
    measured = {point: charger_nodes("eva")[point] for point in CHARGER_MEASURED}
    return write_config(
        workdir / "opcua.yaml",
        gateway={"id": "opcua-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[
            device("eva", "evse", charger_nodes("eva")),
            # the server says MaxCurrent 32 A: 40 A lets the gateway try what the server refuses
            device("evb", "evse", charger_nodes("evb"), max_a=40, **secure("evb")),
            device("batc", "battery", battery_nodes("batc"), reserve_soc_pct=20, **secure("batc")),
            {**device("eva", "evse", wrong), "id": "typo"},  # on eva's server
            # eva's values again, judged by their own age (a server that refreshes timestamps)
            {**device("eva", "evse", measured, max_value_age_s=1.5), "id": "evs"},
        ],
        telemetry={"interval_s": 0.5},
        control={"interval_s": 0.5, "revert_s": 0},
    )


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(
        broker.port,
        f"{ROOT}/responses",
        f"{ROOT}/active",
        f"{ROOT}/capability/+",
        f"{ROOT}/telemetry/+",
    )
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(config: Path, workdir: Path, probe: MqttProbe) -> Iterator[Process]:
    devices = ("eva", "evb", "batc", "evs")
    process = start_connected(config, workdir / "opcua.log", probe, ROOT, devices)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT)
    yield client
    client.close()


def response(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 15.0) -> dict[str, Any]:
    return waiting.response(probe, ROOT, mrid, status, timeout_s)


def telemetry(probe: MqttProbe, device_id: str, after: float, quality: str = "ok") -> Any:
    return probe.wait_for(
        lambda m: m.topic == f"{ROOT}/telemetry/{device_id}" and m.json()["quality"] == quality,
        after=after,
    ).json()


def writes(rig: RigThread, device_id: str) -> list[tuple[str, str, object]]:
    return rig.call(lambda r: list(r.opcua_device(device_id).writes))


def charger(rig: RigThread, device_id: str) -> EvseState:
    state: EvseState = rig.snapshot(device_id)  # type: ignore[assignment]
    return state


def test_telemetry_on_mqtt_equals_the_servers_values(
    rig: RigThread, probe: MqttProbe, gateway: Process
) -> None:
    for device_id in ("eva", "evb"):  # without security, and over SignAndEncrypt
        message = telemetry(probe, device_id, time.monotonic())
        truth = charger(rig, device_id)
        assert message["w"] == pytest.approx(truth.w, rel=0.02)  # charging: negative
        assert message["w"] < -20000  # 32 A on 3 phases
        assert message["v"] == pytest.approx(truth.v, abs=0.01)
        assert message["a"] == pytest.approx(3 * truth.a, rel=0.02)  # per phase x phases
        assert message["hz"] == pytest.approx(truth.hz, abs=0.01)
        assert message["soc_pct"] == pytest.approx(truth.soc_pct, abs=0.1)
        assert message["wh_imported"] == pytest.approx(truth.wh, rel=0.05, abs=5)  # kWh node
        assert message["state"] == "charging"
    battery = telemetry(probe, "batc", time.monotonic())
    truth_soc = rig.snapshot("batc").soc_pct
    assert battery["soc_pct"] == pytest.approx(truth_soc, abs=0.1)
    assert battery["state"] == "idle"
    capability = probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/batc").json()
    assert capability["wh_rtg"] == 10000
    assert (capability["soc_min_pct"], capability["soc_max_pct"]) == (10, 90)
    ev = probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/eva").json()
    assert (ev["max_a"], ev["phases"]) == (32, 3)


def test_a_wrong_node_id_is_named_and_the_device_stays_offline(
    probe: MqttProbe, gateway: Process, workdir: Path
) -> None:
    assert telemetry(probe, "typo", time.monotonic(), "offline")["device"] == "typo"
    log = (workdir / "opcua.log").read_text()
    line = next(line for line in log.splitlines() if "typo" in line and "ActualPowr" in line)
    assert "nodes.w" in line
    assert "BadNodeIdUnknown" in line
    assert gateway.alive()


def test_evse_max_a_reaches_the_setpoint_node_as_a_float(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("ev-16", {"evse_max_a": 16}, devices=["eva"], duration_s=4)
    response(probe, "ev-16", "started")
    eventually(lambda: ("MaxCurrentSetpoint", "Float", 16.0) in writes(rig, "eva"))
    eventually(lambda: abs(charger(rig, "eva").a - 16) < 0.3, what="the car draws 16 A")
    response(probe, "ev-16", "completed")
    # released: the charger's own maximum again
    eventually(lambda: writes(rig, "eva")[-1] == ("MaxCurrentSetpoint", "Float", 32.0))


def test_evse_max_w_on_the_secure_charger(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    # 4200 W / (3 x 230 V) = 6.09 A: 6.0 A keeps the cap
    dso.event("cap-4k2", {"evse_max_w": 4200}, devices=["evb"], duration_s=4)
    response(probe, "cap-4k2", "started")
    eventually(lambda: ("MaxCurrentSetpoint", "Float", 6.0) in writes(rig, "evb"))
    eventually(lambda: abs(charger(rig, "evb").w + 4140) < 60, what="the car draws 4.14 kW")
    response(probe, "cap-4k2", "completed")


def test_a_bad_status_aborts_the_event_with_its_name(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    before = len(writes(rig, "evb"))
    dso.event("too-much", {"evse_max_a": 36}, devices=["evb"], duration_s=10)
    aborted = response(probe, "too-much", "aborted")
    assert aborted["reason"] == "device_refused"
    assert "BadOutOfRange" in aborted["detail"]
    assert "nodes.max_a_setpoint" in aborted["detail"]
    assert all(value != 36.0 for _, _, value in writes(rig, "evb")[before:])


def test_storage_w_on_the_opcua_battery_reaches_an_int32_node(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    soc = rig.snapshot("batc").soc_pct
    dso.event("dis-2k", {"storage_w": 2000.4}, devices=["batc"], duration_s=3)
    response(probe, "dis-2k", "started")
    # discharge is negative at this battery's charge-positive node, and an integer
    eventually(lambda: ("PowerSetpoint", "Int32", -2000) in writes(rig, "batc"))
    eventually(lambda: rig.snapshot("batc").soc_pct < soc, what="the battery discharges")
    response(probe, "dis-2k", "completed")
    eventually(lambda: writes(rig, "batc")[-1] == ("PowerSetpoint", "Int32", 0))


def test_the_soc_guard_holds_on_the_opcua_battery(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    # 5 kW for an hour from about 50 % of 10 kWh would cross the 20 % reserve
    dso.event("drain", {"storage_w": 5000}, devices=["batc"], duration_s=3600)
    rejected = response(probe, "drain", "rejected")
    assert rejected["reason"] == "soc_limit"
    assert "reserve" in rejected["detail"]


def test_a_server_restart_is_survived_and_the_control_rewritten(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("hold-10", {"evse_max_a": 10}, devices=["eva"], duration_s=60)
    response(probe, "hold-10", "started")
    eventually(lambda: ("MaxCurrentSetpoint", "Float", 10.0) in writes(rig, "eva"))
    rig.restart("eva", down_s=2.0, shift_namespaces=True)  # forgets the setpoint, renumbers
    after = time.monotonic()
    eventually(
        lambda: ("MaxCurrentSetpoint", "Float", 10.0) in writes(rig, "eva"),
        what="the limit written again after the restart",
    )
    eventually(lambda: abs(charger(rig, "eva").a - 10) < 0.3, what="the car back at 10 A")
    assert telemetry(probe, "eva", after)["quality"] == "ok"
    dso.cancel("hold-10")
    response(probe, "hold-10", "cancelled")


def test_a_value_held_still_for_a_minute_stays_ok_on_a_live_subscription(
    probe: MqttProbe, rig: RigThread, gateway: Process
) -> None:
    """OPC UA notifies changes only; the subscription's keep-alives confirm the rest. evs reads
    the same server with max_value_age_s: it judges by the values' own age and goes stale."""
    rig.call(lambda r: r.opcua_device("eva").freeze(True))  # no new value, no new timestamp
    try:
        frozen = time.monotonic() + 1.0  # what was in flight has arrived
        assert telemetry(probe, "evs", frozen, "stale")["device"] == "evs"
        time.sleep(60.0)
        held = [m.json() for m in probe.on(f"{ROOT}/telemetry/eva") if m.at >= frozen]
    finally:
        rig.call(lambda r: r.opcua_device("eva").freeze(False))
    assert len(held) >= 100  # every 0.5 s
    assert {m["quality"] for m in held} == {"ok"}
    assert len({m["w"] for m in held}) == 1  # the value held still
    stamps = [m["ts"] for m in held]
    assert stamps == sorted(stamps) and len(set(stamps)) >= 20  # confirmed again and again
    assert telemetry(probe, "evs", time.monotonic())["quality"] == "ok"


def test_a_subscription_that_falls_silent_goes_stale_then_is_renewed(
    probe: MqttProbe, rig: RigThread, gateway: Process
) -> None:
    """The server's publishing stalls (its sessions still answer reads): past the keep-alive
    promise the values are stale; three missed keep-alives lose the subscription, and a new
    session subscribes again."""
    stalled = rig.call_async(lambda r: r.opcua_servers["evb"].stall_subscriptions())
    assert stalled == 1
    after = time.monotonic()
    stale = probe.wait_for(
        lambda m: m.topic == f"{ROOT}/telemetry/evb" and m.json()["quality"] != "ok", after=after
    )
    assert stale.json()["quality"] == "stale"  # before the subscription counts as lost
    assert stale.at - after >= 2.0  # not before the keep-alive period (2 s) has passed
    renewed = telemetry(probe, "evb", stale.at, "ok")
    assert renewed["w"] == pytest.approx(charger(rig, "evb").w, rel=0.05)


def test_derms_edge_send_publishes_an_event_and_prints_its_answers(
    config: Path, gateway: Process, rig: RigThread
) -> None:
    def send(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "derms_edge.cli", "send", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    sent = send("--devices", "eva", "--control", '{"evse_max_w": 11000}', "--duration-s", "3")
    assert sent.returncode == 0, sent.stderr
    assert [line.split()[1] for line in sent.stdout.splitlines()[1:]] == [
        "received",
        "scheduled",
        "started",
    ]
    # 11000 W / (3 x 230 V) = 15.94 A: rounded down
    eventually(lambda: ("MaxCurrentSetpoint", "Float", pytest.approx(15.9)) in writes(rig, "eva"))
    refused = send("--control", '{"evse_max_a": 3}')
    assert refused.returncode == 2
    assert "not sent: control.evse_max_a: 3.0 A cannot be signalled" in refused.stderr
    rejected = send("--devices", "batc", "--control", '{"evse_max_w": 4200}')
    assert rejected.returncode == 1
    assert "rejected  not_applicable" in rejected.stdout


def test_setpoints_a_killed_gateway_left_behind_are_replaced_when_it_is_back(
    config: Path,
    workdir: Path,
    gateway: Process,
    dso: DsoClient,
    probe: MqttProbe,
    rig: RigThread,
) -> None:
    """OPC UA has no revert timer: a gateway that dies leaves its last setpoints in force. When
    it is back, it writes every mapped setpoint at once: what is in force then, or the release.
    The battery stops discharging unsupervised; the charger goes from the 8 A of an event that
    ended to the 50 % curtailment still running, never through its full 32 A."""
    dso.event("cap-50pct", {"max_w_pct": 50}, devices=["eva"], duration_s=120)
    dso.event("left-8a", {"evse_max_a": 8}, devices=["eva"], duration_s=4)
    dso.event("left-1500w", {"storage_w": 1500}, devices=["batc"], duration_s=4)
    for mrid in ("cap-50pct", "left-8a", "left-1500w"):
        response(probe, mrid, "started")
    eventually(lambda: writes(rig, "eva")[-1] == ("MaxCurrentSetpoint", "Float", 8.0))
    eventually(lambda: writes(rig, "batc")[-1] == ("PowerSetpoint", "Int32", -1500))
    gateway.signal(signal.SIGKILL)
    gateway.popen.wait(10)
    time.sleep(5)  # two events end while nobody watches
    assert writes(rig, "eva")[-1] == ("MaxCurrentSetpoint", "Float", 8.0)
    assert rig.snapshot("batc").w == pytest.approx(1500, abs=1)  # still discharging
    before = len(writes(rig, "eva"))
    back = start_gateway(config, workdir / "opcua-back.log")
    try:
        eventually(
            lambda: writes(rig, "batc")[-1] == ("PowerSetpoint", "Int32", 0),
            what="the battery stopped by the gateway that came back",
        )
        eventually(lambda: abs(rig.snapshot("batc").w) < 1, what="the battery idle")
        eventually(lambda: len(writes(rig, "eva")) > before, what="the charger written")
        # 50 % of the 32 A the server reports: decided with the capability, before any write
        assert writes(rig, "eva")[before] == ("MaxCurrentSetpoint", "Float", 16.0)
        dso.cancel("cap-50pct")
        eventually(
            lambda: writes(rig, "eva")[-1] == ("MaxCurrentSetpoint", "Float", 32.0),
            what="the charger's limit released to its 32 A",
        )
    finally:
        back.stop()
