"""Responses said while the broker is away arrive when it is back, end to end.

docs/mqtt-api.md promises it ("a response said while the broker is away arrives when it is
back, and is never dropped"): the real daemon, the HIL rig and a real Mosquitto. A DSO event
is accepted (``received``, ``scheduled``) while the broker is there; the broker is stopped
before the event's window opens and started again (same port) after it has closed, so the
gateway says ``started`` and ``completed`` with no broker to say them to. Its MQTT session
reconnects by itself and the outbox sends the two afterwards.

While the broker is away nobody receives anything: what is proven is that the gateway keeps
the responses and sends them once it is connected again. The DSO's subscriber must be
subscribed when they are sent, and the gateway may well reconnect before it does, so it holds
a persistent session (clean_session=False, a fixed client id, QoS 1) on a broker that saves
its state when stopped: whatever the gateway sends after the broker is back is kept for the
subscriber until it has reconnected too.

Copies: the docs allow a response twice only when it was in flight as the connection broke
(or acknowledged just before a kill). ``received`` and ``scheduled`` are acknowledged before
the broker goes, and ``started`` and ``completed`` are made while it is away, never in flight
as it broke: the contract then promises each status exactly once, in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.dso import DsoClient
from tests.support.gateway import rig_device, start_connected, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.sessions import SessionProbe
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = "derms/v1/outage-site"
RESPONSES = f"{ROOT}/responses"
LEAD_S = 3.0
"""The event's window opens this long after it is sent: time to stop the broker first."""
DURATION_S = 2.0


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    spec = {
        "tick_s": 0.2,
        "devices": [
            {
                "id": "inv1",
                "type": "pv_legacy",
                "w_rtg": 5000,
                "profile": {"kind": "constant", "w": 4000},
                "tau_s": 0,
            }
        ],
    }
    with RigThread(RigSpec.model_validate(spec)) as running:
        yield running


@pytest.fixture(scope="module")
def subscriber(saving_broker: Mosquitto) -> Iterator[SessionProbe]:
    topics = [RESPONSES, f"{ROOT}/status"]
    listener = SessionProbe(saving_broker.port, "outage-dso", ROOT, filters=topics)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(rig: RigThread, saving_broker: Mosquitto, workdir: Path) -> Iterator[Process]:
    config = write_config(
        workdir / "outage.yaml",
        gateway={"id": "outage-site", "state_dir": str(workdir / "state")},
        mqtt={"host": "127.0.0.1", "port": saving_broker.port, "reconnect_max_s": 1},
        devices=[rig_device(rig, "inv1", poll_interval_s=0.5, backoff_max_s=1)],
        telemetry={"interval_s": 1},
        control={"interval_s": 0.5},
    )
    probe = MqttProbe(saving_broker.port, f"{ROOT}/capability/+")
    try:
        process = start_connected(config, workdir / "outage.log", probe, ROOT, ["inv1"])
    finally:
        probe.close()
    yield process
    process.stop()


def utc(offset_s: float = 0.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=offset_s)


def when(message: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(message["ts"]))


def said(subscriber: SessionProbe, mrid: str) -> list[dict[str, object]]:
    """Every response for ``mrid`` the subscriber received, in the order of arrival."""
    found = [m.json() for m in subscriber.on(RESPONSES)]
    return [data for data in found if data["mrid"] == mrid]


def statuses(subscriber: SessionProbe, mrid: str) -> list[object]:
    return [data["status"] for data in said(subscriber, mrid)]


def test_responses_said_while_the_broker_is_away_arrive_after_in_order_once(
    gateway: Process,
    saving_broker: Mosquitto,
    subscriber: SessionProbe,
    rig: RigThread,
) -> None:
    dso = DsoClient(saving_broker.port, ROOT)
    try:
        start = utc(LEAD_S)
        dso.event(
            "outage-1",
            {"max_w_pct": 40},
            devices=["inv1"],
            start=start.isoformat().replace("+00:00", "Z"),
            duration_s=DURATION_S,
        )
        eventually(
            lambda: statuses(subscriber, "outage-1") == ["received", "scheduled"],
            what="received and scheduled while the broker is there",
        )
        saving_broker.stop()
        down = utc()
        assert down < start, "the broker must be gone before the window opens"

        # the gateway goes on controlling with no broker: it starts the event and ends it
        eventually(lambda: rig.state("inv1").w_lim_pct == 40, what="inv1 limited to 40 %")
        eventually(lambda: rig.state("inv1").w_lim_pct is None, what="the limit released")
        eventually(
            lambda: "event outage-1: completed" in gateway.output(), what="completed is said"
        )
        assert statuses(subscriber, "outage-1") == ["received", "scheduled"]
        assert gateway.alive()

        up, back = utc(), time.monotonic()
        saving_broker.start()
        eventually(
            lambda: len(said(subscriber, "outage-1")) >= 4,
            timeout_s=15,
            what="started and completed after the broker is back",
        )

        def emptied() -> bool:
            """The latest status, made after the broker is back, says nothing is buffered
            (one retained from before the outage may come first: its ts is older)."""
            latest = subscriber.statuses(after=back)[-1:]
            return bool(latest) and latest[0]["buffered"] == 0 and when(latest[0]) > up

        eventually(emptied, what="status: nothing buffered any more")
        time.sleep(1.0)  # time for a copy, would one come
    finally:
        dso.close()

    responses = said(subscriber, "outage-1")
    assert [r["status"] for r in responses] == ["received", "scheduled", "started", "completed"]
    started, completed = (when(r) for r in responses[2:])
    assert down < started < completed < up, "both were said while the broker was away"
    assert started >= start - timedelta(seconds=0.1)
    assert "replaying" in gateway.output()
    assert "Traceback" not in gateway.output()
