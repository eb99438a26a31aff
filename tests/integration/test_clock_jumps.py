"""End to end: the gateway's wall clock set an hour forward, then back, with events in force.

A Raspberry Pi has no real-time clock: until NTP syncs it runs from the last shutdown time,
then jumps. The real daemon runs under libfaketime (Debian's ``faketime``; scripts/test
installs it), which moves the process's wall clock by what a file says while its monotonic
clock runs on untouched, as an NTP step does. Mosquitto, the rig and the DSO keep the real
time.
"""

from __future__ import annotations

import glob
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.dso import DsoClient
from tests.support.gateway import rig_device, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = "derms/v1/clock-site"
RIG = {
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


def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.fail("libfaketime is missing: apt-get install faketime (scripts/test does)")
    return found[0]


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
        yield running


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/responses", f"{ROOT}/capability/+")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def offset(workdir: Path) -> Path:
    path = workdir / "clock-offset"
    path.write_text("+0\n")
    return path


@pytest.fixture(scope="module")
def gateway(
    rig: RigThread, broker: Mosquitto, workdir: Path, probe: MqttProbe, offset: Path
) -> Iterator[Process]:
    config = write_config(
        workdir / "clock.yaml",
        gateway={"id": "clock-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[rig_device(rig, "inv1", "inverter", poll_interval_s=0.5, backoff_max_s=1)],
        telemetry={"interval_s": 1},
        control={"interval_s": 0.5, "revert_s": 30, "dispatcher_timeout_s": 60},
    )
    process = Process(
        [sys.executable, "-m", "derms_edge.cli", "run", str(config)],
        workdir / "clock.log",
        env={
            "PYTHONUNBUFFERED": "1",
            "LD_PRELOAD": libfaketime(),
            "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        },
    )
    probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/inv1", timeout_s=20)
    time.sleep(1.0)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT, heartbeat_roles=("dso",))
    yield client
    client.close()


def at(seconds: float) -> str:
    """A moment ``seconds`` from now on the real clock, as the DSO writes it."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def statuses(probe: MqttProbe, mrid: str) -> list[str]:
    found = [m.json() for m in probe.on(f"{ROOT}/responses")]
    return [data["status"] for data in found if data["mrid"] == mrid]


def response(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 15.0) -> dict[str, str]:
    def matches(m: Message) -> bool:
        data = json.loads(m.payload)
        return m.topic == f"{ROOT}/responses" and data["mrid"] == mrid and data["status"] == status

    found: dict[str, str] = probe.wait_for(matches, timeout_s).json()
    return found


def test_an_hour_forward_then_back_no_event_starts_twice_none_restarts(
    dso: DsoClient, probe: MqttProbe, rig: RigThread, offset: Path, gateway: Process
) -> None:
    # in force, for two hours; due in 30 min for 10 min; due in 65 min for 2 h
    dso.event("running", {"max_w_pct": 40}, duration_s=7200)
    dso.event("skipped", {"max_w_pct": 20}, start=at(1800), duration_s=600)
    dso.event("later", {"max_w_pct": 30}, start=at(3900), duration_s=7200)
    response(probe, "running", "started")
    for mrid in ("skipped", "later"):  # all three stored before the clock moves
        response(probe, mrid, "scheduled")
    eventually(lambda: rig.state("inv1").w_lim_pct == 40, what="inv1 at 40 %")

    offset.write_text("+1h\n")  # NTP sets the clock an hour forward
    dso.send(f"{ROOT}/heartbeat/dso", {})  # heard at the new time, before the next tick
    eventually(lambda: "the clock jumped +36" in gateway.output(), what="the jump seen")
    completed = response(probe, "skipped", "completed")  # its window lies in the skipped hour
    assert completed["detail"]
    time.sleep(2.0)
    assert statuses(probe, "running") == ["received", "scheduled", "started"]
    assert statuses(probe, "later") == ["received", "scheduled"]  # 5 min to go, not now
    assert rig.state("inv1").w_lim_pct == 40  # no dispatcher timeout, no gap

    offset.write_text("+0\n")  # and back: an hour earlier than the last step
    dso.send(f"{ROOT}/heartbeat/dso", {})
    eventually(lambda: "the clock jumped -36" in gateway.output(), what="the jump back seen")
    time.sleep(2.0)
    assert statuses(probe, "running") == ["received", "scheduled", "started"]
    assert statuses(probe, "skipped") == ["received", "scheduled", "completed"]  # not reopened
    assert statuses(probe, "later") == ["received", "scheduled"]
    assert rig.state("inv1").w_lim_pct == 40
    dso.cancel("running")
    response(probe, "running", "cancelled")
    eventually(lambda: rig.state("inv1").w_lim_pct is None, what="released")
    assert gateway.alive() and "Traceback" not in gateway.output()
