"""End to end, the arbitration cases that live in the MQTT layer: a retained message is no
sign of a live dispatcher, and a cancel sent on a group topic cancels and is answered.

One gateway process (the real daemon, real Mosquitto, one SunSpec inverter of the HIL rig)
serves the module.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import ONE_INVERTER, rig_device, start_connected, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = "derms/v1/arb-site"
GROUP = "derms/v1/groups/feeder-7"
CLIENT_ID = "derms-edge-arb-site"
"""The gateway's MQTT client id (the daemon's own, set in the configuration)."""
TIMEOUT_S = 6.0
"""control.dispatcher_timeout_s"""


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(ONE_INVERTER)) as running:
        yield running


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    return write_config(
        workdir / "arbitration.yaml",
        gateway={"id": "arb-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port, "groups": ["feeder-7"], "client_id": CLIENT_ID},
        devices=[rig_device(rig, "inv1", "inverter", poll_interval_s=0.5, backoff_max_s=2)],
        telemetry={"interval_s": 1},
        control={
            "dispatcher_timeout_s": TIMEOUT_S,
            "interval_s": 0.5,
            "revert_s": 6,
            "roles": {
                "dso": {"primacy": 1},
                "customer": {"primacy": 3, "allow": ["max_w_pct", "storage_w"]},
            },
        },
    )


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/responses", f"{ROOT}/status", f"{ROOT}/capability/+")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(config: Path, workdir: Path, probe: MqttProbe) -> Iterator[Process]:
    process = start_connected(config, workdir / "arbitration.log", probe, ROOT, ("inv1",))
    time.sleep(1.0)  # and read
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    """The dso's dispatcher beats every second; the customer's stays silent."""
    client = DsoClient(broker.port, ROOT, heartbeat_roles=("dso",))
    yield client
    client.close()


def response(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 15.0) -> dict[str, Any]:
    return waiting.response(probe, ROOT, mrid, status, timeout_s)


def answer(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 10.0) -> Message:
    """The response message itself (with when it arrived)."""

    def matches(m: Message) -> bool:
        if m.topic != f"{ROOT}/responses":
            return False
        data = m.json()
        return bool(data["mrid"] == mrid and data["status"] == status)

    return probe.wait_for(matches, timeout_s)


def said(probe: MqttProbe, mrid: str) -> list[str]:
    return [
        data["status"]
        for data in (m.json() for m in probe.on(f"{ROOT}/responses"))
        if data["mrid"] == mrid
    ]


def limit(rig: RigThread) -> Any:
    return rig.state("inv1").w_lim_pct


def kick(port: int, client_id: str) -> None:
    """Take over the gateway's MQTT client id for a moment: the broker drops the gateway's
    connection; it reconnects by itself and subscribes again, and the broker then sends it
    every retained message on its topics, flagged retained."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert connected.wait(5), "could not take the gateway's client id over"
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_cancel_on_a_group_topic_cancels_and_is_answered(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    event = {"mrid": "grp-1", "devices": ["inv1"], "duration_s": 60, "control": {"max_w_pct": 40}}
    dso.publish_raw(f"{GROUP}/controls/dso", json.dumps(event))
    response(probe, "grp-1", "started")
    eventually(lambda: limit(rig) == 40, what="inv1 at 40 %")
    # a group this gateway is not in is not its business; another role may not cancel
    dso.publish_raw("derms/v1/groups/feeder-9/controls/dso/cancel", json.dumps({"mrid": "grp-1"}))
    dso.publish_raw(f"{GROUP}/controls/customer/cancel", json.dumps({"mrid": "grp-1"}))
    refused = response(probe, "grp-1", "rejected")
    assert refused["reason"] == "unauthorized"
    assert refused["detail"] == "event grp-1 belongs to role dso, not customer"
    assert limit(rig) == 40
    dso.publish_raw(f"{GROUP}/controls/dso/cancel", json.dumps({"mrid": "grp-1"}))
    cancelled = response(probe, "grp-1", "cancelled")
    assert cancelled["reason"] is None
    eventually(lambda: limit(rig) is None, what="inv1 released at once", timeout_s=3)
    assert said(probe, "grp-1") == ["received", "scheduled", "started", "rejected", "cancelled"]

    # an event sent to this gateway alone is cancelled from the group topic as well
    dso.event("own-1", {"max_w_pct": 55}, devices=["inv1"], duration_s=60)
    response(probe, "own-1", "started")
    eventually(lambda: limit(rig) == 55, what="inv1 at 55 %")
    dso.publish_raw(f"{GROUP}/controls/dso/cancel", json.dumps({"mrid": "own-1"}))
    response(probe, "own-1", "cancelled")
    eventually(lambda: limit(rig) is None, what="inv1 released again", timeout_s=3)

    dso.publish_raw(f"{GROUP}/controls/dso/cancel", json.dumps({"mrid": "grp-unknown"}))
    assert response(probe, "grp-unknown", "rejected")["reason"] == "unknown_event"
    dso.publish_raw(f"{GROUP}/controls/dso/cancel", json.dumps({"mrid": "grp-1"}))

    def refused_again(m: Message) -> bool:
        if m.topic != f"{ROOT}/responses":
            return False
        data = m.json()
        return bool(data["mrid"] == "grp-1" and data["reason"] == "invalid")

    ended = probe.wait_for(refused_again, timeout_s=10).json()
    assert ended["status"] == "rejected"
    assert ended["detail"] == "event grp-1 is already cancelled; nothing to cancel"


def test_retained_messages_do_not_keep_a_silent_dispatcher_alive(
    dso: DsoClient, probe: MqttProbe, rig: RigThread, broker: Mosquitto
) -> None:
    """The customer's dispatcher sends an event and a heartbeat, both retained, then falls
    silent. The gateway loses its connection and subscribes again: the broker hands it both
    again (flagged retained; the event is answered as a repeat), which must not count as the
    dispatcher being heard. The event is aborted ``dispatcher_timeout`` the timeout after the
    live messages, not after their retained copies."""
    event = {"mrid": "ret-1", "devices": ["inv1"], "duration_s": 60, "control": {"max_w_pct": 60}}
    try:
        dso.send("heartbeat/customer", b"{}", retain=True)
        dso.send("controls/customer", event, retain=True)
        heard = time.monotonic()
        response(probe, "ret-1", "started")
        eventually(lambda: limit(rig) == 60, what="inv1 at the customer's 60 %")
        time.sleep(max(0.0, heard + 2.0 - time.monotonic()))
        kicked = time.monotonic()
        kick(broker.port, CLIENT_ID)

        def repeated(m: Message) -> bool:
            if m.topic != f"{ROOT}/responses":
                return False
            data = m.json()
            return bool(data["mrid"] == "ret-1" and data["detail"] == "repeat of a known event")

        repeat = probe.wait_for(repeated, timeout_s=5, after=kicked)
        assert repeat.json()["status"] == "started"
        aborted = answer(probe, "ret-1", "aborted", timeout_s=TIMEOUT_S + 6)
        assert aborted.json()["reason"] == "dispatcher_timeout"
        assert aborted.at > repeat.at  # the retained copies came before the timeout
        # counted from the live messages: a retained copy counted would put it after
        # repeat.at + TIMEOUT_S, at least 3 s later than this
        assert aborted.at - heard < TIMEOUT_S + 1.5, aborted.at - heard
        assert aborted.at - repeat.at < TIMEOUT_S - 1.0, aborted.at - repeat.at
        eventually(lambda: limit(rig) is None, what="inv1 released", timeout_s=3)
        assert said(probe, "ret-1").count("aborted") == 1
    finally:
        dso.send("controls/customer", b"", retain=True)  # clear what the broker keeps
        dso.send("heartbeat/customer", b"", retain=True)
