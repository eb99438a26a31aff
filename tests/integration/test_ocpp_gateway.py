"""End to end over OCPP: the real daemon is the CSMS of the rig's two charging stations (a
2.0.1 one that takes station-wide profiles, a 1.6J one that refuses them), publishes their
EVSEs' telemetry on a real Mosquitto and turns DSO limits into charging profiles that the
stations' simulated cars obey."""

from __future__ import annotations

import signal
import socket
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
from tests.support.gateway import start_connected, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process, free_port
from tests.support.waiting import eventually

ROOT = "derms/v1/ocpp-site"
V = 230.0
VALID_S = 10
PASSWORD = "correct-horse-battery"
"""The profiles' fail-safe validity: short, so the tests see a refresh and an expiry."""


@pytest.fixture(scope="module")
def csms_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def rig(csms_port: int) -> Iterator[RigThread]:
    url = f"ws://127.0.0.1:{csms_port}/ocpp"
    common = {
        "type": "ocpp_evse",
        "csms_url": url,
        "meter_interval_s": 0.5,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.5,
        "tau_s": 0.2,
    }
    spec = RigSpec.model_validate(
        {
            "tick_s": 0.1,
            "devices": [
                {**common, "id": "ev1", "version": "2.0.1", "station_id": "CP-0042", "max_a": 16},
                {
                    **common,
                    "id": "ev2",
                    "version": "1.6",
                    "station_id": "CP-0043",
                    "max_a": 32,
                    "phases": 1,
                    "reject_station_wide_profiles": True,
                },
                {
                    **common,
                    "id": "ev4",
                    "version": "2.0.1",
                    "station_id": "CP-0044",
                    "max_a": 16,
                    "reject_station_wide_profiles": True,
                },
                # security profile 1: HTTP Basic, the right password and a wrong one
                {**common, "id": "ev5", "station_id": "CP-0045", "password": PASSWORD},
                {**common, "id": "ev6", "station_id": "CP-0046", "password": "guessed-1234"},
            ],
        }
    )
    with RigThread(spec) as running:
        yield running


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(
        broker.port, f"{ROOT}/responses", f"{ROOT}/capability/+", f"{ROOT}/telemetry/+"
    )
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(
    rig: RigThread, broker: Mosquitto, workdir: Path, probe: MqttProbe, csms_port: int
) -> Iterator[Process]:
    def device(device_id: str, station_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": device_id,
            "kind": "evse",
            "protocol": "ocpp",
            "station_id": station_id,
            "evse": 1,
            "poll_interval_s": 0.5,
            "backoff_max_s": 1,
            **extra,
        }

    for station in ("CP-0045", "CP-0046"):
        secret = workdir / f"{station}.password"
        secret.write_text(f"{PASSWORD}\n")
        secret.chmod(0o600)
    config = write_config(
        workdir / "ocpp.yaml",
        gateway={"id": "ocpp-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        ocpp={
            "listen": f"127.0.0.1:{csms_port}",
            "heartbeat_interval_s": 10,
            "profile_valid_s": VALID_S,
        },
        devices=[
            device("ev1", "CP-0042"),
            device("ev2", "CP-0043", ocpp_version="1.6", phases=1),
            # a connector the station does not have: it refuses every profile there
            device("ev3", "CP-0043", ocpp_version="1.6", evse=2),
            device("ev4", "CP-0044"),
            device("ev5", "CP-0045", password_file=str(workdir / "CP-0045.password")),
            device("ev6", "CP-0046", password_file=str(workdir / "CP-0046.password")),
        ],
        telemetry={"interval_s": 0.5},
        control={"interval_s": 0.5, "revert_s": 0},
    )
    process = start_connected(
        config, workdir / "ocpp.log", probe, ROOT, ("ev1", "ev2", "ev3", "ev4")
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT)
    yield client
    client.close()


def charger(rig: RigThread, device_id: str) -> EvseState:
    state: EvseState = rig.snapshot(device_id)  # type: ignore[assignment]
    return state


def in_force(rig: RigThread, device_id: str, amps: float) -> None:
    """The station's composite limit becomes ``amps`` soon after ``started``. The answer says
    the window opened, and goes out once the schedule store has fsynced it; the
    SetChargingProfile is a call and its reply over the websocket, and may land a few
    milliseconds after the answer (measured: up to 9 ms)."""
    eventually(lambda: charger(rig, device_id).limit_a == amps, 2.0, f"{device_id} at {amps} A")


def telemetry(probe: MqttProbe, device_id: str, after: float) -> Any:
    return probe.wait_for(
        lambda m: (
            m.topic == f"{ROOT}/telemetry/{device_id}"
            and m.json()["quality"] == "ok"
            and m.json()["w"] is not None
        ),  # the first MeterValues comes a moment after the boot
        after=after,
    ).json()


def test_the_stations_telemetry_arrives_with_the_simulated_figures(
    rig: RigThread, probe: MqttProbe, gateway: Process
) -> None:
    message = telemetry(probe, "ev1", time.monotonic())
    truth = charger(rig, "ev1")
    assert message["w"] == pytest.approx(truth.w, rel=0.03)  # charging: negative
    assert message["w"] < -10000  # 16 A on 3 phases
    assert message["a"] == pytest.approx(3 * truth.a, rel=0.03)
    assert message["v"] == pytest.approx(V, abs=0.5)
    assert message["state"] == "charging"
    one_phase = telemetry(probe, "ev2", time.monotonic())
    assert one_phase["w"] == pytest.approx(-32 * V, rel=0.03)
    ev2 = probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/ev2").json()
    assert (ev2["phases"], ev2["manufacturer"]) == (1, "derms-edge")  # configured; 1.6 boot
    capability = probe.wait_for(lambda m: m.topic == f"{ROOT}/capability/ev1").json()
    assert capability["manufacturer"] == "derms-edge"
    assert capability["phases"] == 3
    assert capability["max_a"] == 16  # the station's EVSE.Power MaxSet over 3 x 230 V


def test_a_station_with_the_right_password_is_read_one_with_a_wrong_one_never(
    rig: RigThread, probe: MqttProbe, gateway: Process, workdir: Path
) -> None:
    message = telemetry(probe, "ev5", time.monotonic())
    assert message["w"] == pytest.approx(charger(rig, "ev5").w, rel=0.03)
    time.sleep(2)  # several of ev6's reconnects (every 0.2-0.5 s)
    assert not [m for m in probe.messages if m.topic == f"{ROOT}/telemetry/ev6" and m.json()["w"]]
    refusals = [
        line
        for line in (workdir / "ocpp.log").read_text().splitlines()
        if "refused station 'CP-0046'" in line
    ]
    assert len(refusals) == 1, refusals  # once, not at every retry
    assert "HTTP Basic" in refusals[0] and PASSWORD not in refusals[0]


def test_a_dso_power_cap_becomes_a_station_wide_profile_the_car_obeys(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    # 4200 W / (3 x 230 V) = 6.09 A: 6.0 A keeps the cap
    dso.event("cap-4k2", {"evse_max_w": 4200}, devices=["ev1"], duration_s=5)
    waiting.response(probe, ROOT, "cap-4k2", "started")
    in_force(rig, "ev1", 6.0)  # the station's composite
    eventually(lambda: abs(charger(rig, "ev1").a - 6.0) < 0.05, what="the car draws 6 A")
    assert -charger(rig, "ev1").w <= 4200
    waiting.response(probe, ROOT, "cap-4k2", "completed")
    # released: the profile is cleared and the car takes the station's 16 A again
    eventually(lambda: abs(charger(rig, "ev1").a - 16.0) < 0.2, what="the car draws 16 A")


def test_a_curtailment_in_percent_is_a_share_of_the_stations_max_a(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("ev1-half", {"max_w_pct": 50}, devices=["ev1"], duration_s=30)
    waiting.response(probe, ROOT, "ev1-half", "started")
    in_force(rig, "ev1", 8.0)  # 50 % of 16 A
    dso.cancel("ev1-half")
    eventually(lambda: charger(rig, "ev1").limit_a == 16.0, what="released")


def test_a_station_that_refuses_station_wide_profiles_is_limited_by_tx_default(
    dso: DsoClient, probe: MqttProbe, rig: RigThread, workdir: Path
) -> None:
    dso.event("ev2-10a", {"evse_max_a": 10}, devices=["ev2"], duration_s=30)
    waiting.response(probe, ROOT, "ev2-10a", "started")
    eventually(lambda: abs(charger(rig, "ev2").a - 10.0) < 0.2, what="the car draws 10 A")
    log = (workdir / "ocpp.log").read_text()
    assert "falling back to a TxDefaultProfile" in log
    dso.cancel("ev2-10a")
    eventually(lambda: abs(charger(rig, "ev2").a - 32.0) < 0.3, what="the car draws 32 A")


def test_a_2_0_1_station_that_refuses_station_wide_profiles_too(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("ev4-9a", {"evse_max_a": 9}, devices=["ev4"], duration_s=30)
    waiting.response(probe, ROOT, "ev4-9a", "started")
    in_force(rig, "ev4", 9.0)  # held by the TxDefaultProfile on EVSE 1
    dso.cancel("ev4-9a")
    eventually(lambda: charger(rig, "ev4").limit_a == 16.0, what="released")


def test_a_limit_the_station_refuses_aborts_the_event_with_its_status(
    dso: DsoClient, probe: MqttProbe
) -> None:
    dso.event("ev3-10a", {"evse_max_a": 10}, devices=["ev3"], duration_s=30)
    aborted = waiting.response(probe, ROOT, "ev3-10a", "aborted")
    assert aborted["reason"] == "device_refused"
    assert "SetChargingProfile tx_default evse 2" in aborted["detail"]
    assert "station answered Rejected" in aborted["detail"]


def test_a_rebooted_station_gets_its_limit_again(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("ev1-8a", {"evse_max_a": 8}, devices=["ev1"], duration_s=60)
    waiting.response(probe, ROOT, "ev1-8a", "started")
    in_force(rig, "ev1", 8.0)
    boots = rig.call(lambda r: len(r.ocpp_client("ev1").boots))
    rig.call_async(lambda r: r.reboot_station("ev1"))
    assert charger(rig, "ev1").limit_a == 16.0  # the reboot forgot the profile
    eventually(lambda: rig.call(lambda r: len(r.ocpp_client("ev1").boots)) > boots)
    eventually(lambda: charger(rig, "ev1").limit_a == 8.0, what="the profile re-installed")
    eventually(lambda: abs(charger(rig, "ev1").a - 8.0) < 0.05, what="the car draws 8 A")
    dso.cancel("ev1-8a")
    eventually(lambda: charger(rig, "ev1").limit_a == 16.0, what="released")


def test_the_profile_is_refreshed_and_lapses_after_a_kill_9(
    dso: DsoClient, probe: MqttProbe, rig: RigThread, gateway: Process
) -> None:
    """Last in the module: it kills the gateway."""
    dso.event("ev1-7a", {"evse_max_a": 7}, devices=["ev1"], duration_s=120)
    waiting.response(probe, ROOT, "ev1-7a", "started")
    in_force(rig, "ev1", 7.0)
    held_since = time.monotonic()
    # the gateway re-issues the profile halfway to its validTo: it outlives its first validity
    while time.monotonic() - held_since < VALID_S + 1:
        assert charger(rig, "ev1").limit_a == 7.0
        time.sleep(0.5)
    gateway.signal(signal.SIGKILL)
    killed = time.monotonic()
    assert charger(rig, "ev1").limit_a == 7.0  # held by the station alone
    eventually(lambda: charger(rig, "ev1").limit_a == 16.0, VALID_S + 3, "the profile expires")
    assert time.monotonic() - killed <= VALID_S + 1


def test_a_taken_listen_address_is_named_and_the_daemon_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "taken.yaml",
            gateway={"id": "taken", "state_dir": str(tmp_path / "state")},
            ocpp={"listen": f"127.0.0.1:{port}"},
            devices=[{"id": "ev1", "kind": "evse", "protocol": "ocpp", "station_id": "CP-1"}],
        )
        run = [sys.executable, "-m", "derms_edge.cli", "run", str(config)]
        done = subprocess.run(run, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert f"ocpp.listen: cannot listen on 127.0.0.1:{port}: " in done.stderr
    assert "Traceback" not in done.stderr
