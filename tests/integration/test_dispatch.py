"""End to end: DSO controls over a real Mosquitto, through the real daemon, into the rig.

One gateway process serves the module: every control function reaches the simulated
devices over Modbus TCP, and every response status and reason of the contract is seen on
``{root}/responses``. The last test kills the daemon with SIGKILL mid-event and restarts it.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from hil.devices.evse import EvCharger, EvseState
from hil.physics import PvPhysics
from hil.rig import Rig, RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import rig_device, start_connected, start_gateway, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

ROOT = "derms/v1/dispatch-site"
PROFILE = Path(__file__).parents[2] / "configs" / "profiles" / "hil-evse.yaml"
REVERT_S = 6.0

RIG = {
    "tick_s": 0.2,
    "devices": [
        {
            "id": "inv1",
            "type": "pv_legacy",
            "w_rtg": 5000,
            "profile": {"kind": "constant", "w": 4000},
            "tau_s": 0,
        },
        {
            "id": "inv2",
            "type": "pv_1547",
            "w_rtg": 10000,
            "profile": {"kind": "constant", "w": 8000},
            "tau_s": 0,
        },
        {
            "id": "bat1",
            "type": "battery",
            "wh_rtg": 10000,
            "soc_pct": 50,
            "soc_min_pct": 5,
            "soc_max_pct": 95,
            "tau_s": 0.2,
        },
        {"id": "ev1", "type": "evse", "max_a": 32, "ev_soc_pct": 30, "tau_s": 0.2},
        {
            "id": "meter1",
            "type": "meter",
            "site": ["inv1", "inv2", "bat1", "ev1"],
            "load": {"kind": "constant", "w": 1000},
        },
    ],
}


def now_iso(offset_s: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
        yield running


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    def device(device_id: str, kind: str, **extra: Any) -> dict[str, Any]:
        return rig_device(rig, device_id, kind, poll_interval_s=0.5, backoff_max_s=2, **extra)

    evse = {
        "id": "ev1",
        "kind": "evse",
        "protocol": "modbus",
        "host": "127.0.0.1",
        "port": rig.port("ev1"),
        "poll_interval_s": 0.5,
        **yaml.safe_load(PROFILE.read_text()),
    }
    return write_config(
        workdir / "dispatch.yaml",
        gateway={"id": "dispatch-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port, "groups": ["feeder-7"]},
        devices=[
            device("inv1", "inverter"),
            device("inv2", "inverter"),
            device("bat1", "battery", reserve_soc_pct=20),
            evse,
            device("meter1", "meter"),
        ],
        telemetry={"interval_s": 1},
        control={
            "dispatcher_timeout_s": 8,
            "interval_s": 0.5,
            "revert_s": REVERT_S,
            "roles": {
                "dso": {"primacy": 1},
                "aggregator": {"primacy": 2, "allow": ["storage_w", "evse_max_a"]},
                "customer": {"primacy": 3, "allow": ["max_w_pct", "storage_w"]},
            },
        },
    )


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/responses", f"{ROOT}/active", f"{ROOT}/capability/+")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(config: Path, workdir: Path, probe: MqttProbe) -> Iterator[Process]:
    devices = ("inv1", "inv2", "bat1", "ev1", "meter1")
    process = start_connected(config, workdir / "dispatch.log", probe, ROOT, devices)
    time.sleep(1.0)  # and read
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT, heartbeat_roles=("dso", "aggregator"))
    yield client
    client.close()


def response(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 15.0) -> dict[str, Any]:
    return waiting.response(probe, ROOT, mrid, status, timeout_s)


def responses(probe: MqttProbe, mrid: str) -> list[str]:
    """The statuses said for this event, in order. A copy of a response (the very same
    payload, sent again by the outbox after a kill -9 that came before its PUBACK was
    recorded) counts once."""
    payloads = dict.fromkeys(m.payload for m in probe.on(f"{ROOT}/responses"))
    return [data["status"] for data in map(json.loads, payloads) if data["mrid"] == mrid]


def pv(rig: RigThread, device_id: str) -> Any:
    return rig.state(device_id)


def test_curtailment_on_legacy_and_ieee_1547_inverters(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.event("curt-1", {"max_w_pct": 40}, devices=["inv1", "inv2"], duration_s=4)
    for status in ("received", "scheduled", "started"):
        response(probe, "curt-1", status)
    eventually(
        lambda: pv(rig, "inv1").w_lim_pct == 40 and pv(rig, "inv2").w_lim_pct == 40,
        what="both inverters limited to 40 %",
    )
    eventually(lambda: abs(pv(rig, "inv2").w - 4000) < 100, what="inv2 at 40 % of 10 kW")
    response(probe, "curt-1", "completed")
    eventually(
        lambda: pv(rig, "inv1").w_lim_pct is None and pv(rig, "inv2").w_lim_pct is None,
        what="limits released after the event",
    )
    assert responses(probe, "curt-1") == ["received", "scheduled", "started", "completed"]


@pytest.mark.parametrize(
    ("payload", "role", "reason", "in_detail"),
    [
        (b"{not json", "dso", "invalid", "not JSON"),
        (
            {"mrid": "bad-type", "duration_s": "long", "control": {"max_w_pct": 5}},
            "dso",
            "invalid",
            "duration_s",
        ),
        (
            {"mrid": "bad-range", "duration_s": 60, "control": {"max_w_pct": 150}},
            "dso",
            "invalid",
            "control.max_w_pct",
        ),
        (
            {"mrid": "bad-evse", "duration_s": 60, "control": {"evse_max_a": 3}},
            "dso",
            "invalid",
            "IEC 61851",
        ),
        (
            {
                "mrid": "late",
                "start": "2020-01-01T00:00:00Z",
                "duration_s": 60,
                "control": {"max_w_pct": 5},
            },
            "dso",
            "expired",
            "ended at",
        ),
        (
            {"mrid": "agg-curtail", "duration_s": 60, "control": {"max_w_pct": 5}},
            "aggregator",
            "unauthorized",
            "may not send max_w_pct",
        ),
        (
            {"mrid": "agg-primacy", "primacy": 1, "duration_s": 60, "control": {"storage_w": 100}},
            "aggregator",
            "unauthorized",
            "primacy 1",
        ),
        (
            {"mrid": "who", "duration_s": 60, "control": {"max_w_pct": 5}},
            "hacker",
            "unauthorized",
            "no role 'hacker'",
        ),
        (
            {"mrid": "nowhere", "devices": ["nope"], "duration_s": 60, "control": {"max_w_pct": 5}},
            "dso",
            "not_applicable",
            "nope",
        ),
        (
            {
                "mrid": "pv-storage",
                "devices": ["inv1"],
                "duration_s": 60,
                "control": {"storage_w": 100},
            },
            "dso",
            "not_applicable",
            "storage_w",
        ),
        (
            {"mrid": "too-much", "duration_s": 7200, "control": {"storage_w": 5000}},
            "dso",
            "soc_limit",
            "reserve 20",
        ),
    ],
)
def test_rejections_name_the_reason(
    dso: DsoClient, probe: MqttProbe, payload: Any, role: str, reason: str, in_detail: str
) -> None:
    mrid = payload.get("mrid") if isinstance(payload, dict) else None
    after = time.monotonic()
    dso.send(f"controls/{role}", payload)

    def matches(m: Message) -> bool:
        data = m.json()
        return bool(
            m.topic == f"{ROOT}/responses" and data["mrid"] == mrid and data["status"] == "rejected"
        )

    rejected = probe.wait_for(matches, after=after).json()
    assert rejected["reason"] == reason
    assert in_detail in rejected["detail"]


def test_duplicate_supersede_and_cancel(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    dso.event(
        "sup-a", {"max_w_pct": 70}, devices=["inv2"], duration_s=60, creation_time=now_iso(-10)
    )
    response(probe, "sup-a", "started")
    dso.event("sup-a", {"max_w_pct": 20}, devices=["inv2"], duration_s=60)
    assert response(probe, "sup-a", "rejected")["reason"] == "duplicate"
    dso.event("sup-b", {"max_w_pct": 30}, devices=["inv2"], duration_s=60)
    assert response(probe, "sup-a", "superseded")["reason"] == "superseded_by:sup-b"
    eventually(lambda: pv(rig, "inv2").w_lim_pct == 30, what="the newer event's 30 %")
    dso.send("controls/dso/cancel", {"mrid": "sup-b"})
    response(probe, "sup-b", "cancelled")
    eventually(lambda: pv(rig, "inv2").w_lim_pct is None, what="released after cancel")
    dso.send("controls/dso/cancel", {"mrid": "never-sent"})
    assert response(probe, "never-sent", "rejected")["reason"] == "unknown_event"


def test_group_topic_and_fixed_power_factor(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.publish_raw(
        "derms/v1/groups/feeder-7/controls/dso",
        json.dumps(
            {
                "mrid": "pf-1",
                "devices": ["inv1"],
                "duration_s": 5,
                "control": {"fixed_pf": {"pf": 0.95, "excitation": "absorb"}},
            }
        ),
    )
    response(probe, "pf-1", "started")
    eventually(
        lambda: pv(rig, "inv1").pf is not None and abs(abs(pv(rig, "inv1").pf) - 0.95) < 0.01,
        what="inv1 at PF 0.95",
    )
    assert pv(rig, "inv1").var < 0  # absorbing
    response(probe, "pf-1", "completed")


def test_volt_var_native_in_the_device(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    dso.event(
        "vv-native",
        {"volt_var": {"curve": "cat_b", "mode": "native"}},
        devices=["inv2"],
        duration_s=6,
    )
    response(probe, "vv-native", "started")

    def curve() -> Any:
        return rig.call(
            lambda r: cast(PvPhysics, r.physics_device("inv2").physics).controls.volt_var
        )

    points = eventually(curve, what="a volt-var curve active in inv2")
    assert [round(v / 230.0, 3) for v, _ in points] == [0.92, 0.98, 1.02, 1.08]
    response(probe, "vv-native", "completed")


def test_volt_var_in_the_gateway(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    rig.call(lambda r: r.physics_device("inv2").set_voltage(1.06 * 230.0))
    try:
        dso.event(
            "vv-edge",
            {"volt_var": {"curve": "cat_b", "mode": "edge", "response_time_s": 2}},
            devices=["inv2"],
            duration_s=10,
        )
        response(probe, "vv-edge", "started")
        # 1.06 pu on Cat B: Q = -44 % x (1.06 - 1.02) / (1.08 - 1.02) = -29.3 % of 10 kVA
        eventually(
            lambda: (
                pv(rig, "inv2").var_set is not None and abs(pv(rig, "inv2").var_set + 2933) < 150
            ),
            what="inv2 var setpoint near -2933 var",
        )
    finally:
        rig.call(lambda r: r.physics_device("inv2").set_voltage(None))
    response(probe, "vv-edge", "completed", timeout_s=20)


def test_device_refusal_aborts_the_event(dso: DsoClient, probe: MqttProbe) -> None:
    # the legacy inverter's 126 curves take 4 points; a 6-point curve cannot be written
    points = [[0.9, 40], [0.95, 20], [0.98, 0], [1.02, 0], [1.05, -20], [1.1, -40]]
    dso.event(
        "vv-refused",
        {"volt_var": {"points": points, "mode": "native"}},
        devices=["inv1"],
        duration_s=30,
    )
    aborted = response(probe, "vv-refused", "aborted")
    assert aborted["reason"] == "device_refused"
    assert "inv1" in aborted["detail"]


def test_storage_setpoint_and_soc_guard(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    dso.event("charge", {"storage_w": -2000}, role="aggregator", devices=["bat1"], duration_s=5)
    response(probe, "charge", "started")
    eventually(lambda: abs(rig.state("bat1").w + 2000) < 50, what="bat1 charging at 2 kW")
    response(probe, "charge", "completed")
    dso.event("drain", {"storage_w": 1000}, role="aggregator", devices=["bat1"], duration_s=60)
    response(probe, "drain", "started")
    eventually(lambda: rig.state("bat1").w > 900, what="bat1 discharging")

    def at_reserve(r: Rig) -> None:
        r.physics_device("bat1").physics.soc_pct = 20.0  # type: ignore[union-attr]

    rig.call(at_reserve)
    aborted = response(probe, "drain", "aborted")
    assert aborted["reason"] == "soc_limit" and "reserve 20" in aborted["detail"]
    eventually(lambda: abs(rig.state("bat1").w) < 50, what="bat1 stopped at the reserve")
    assert rig.state("bat1").soc_pct >= 20.0 - 0.05


def test_aggregator_never_exceeds_dso_curtailment(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    rig.call(lambda r: setattr(r.physics_device("bat1").physics, "soc_pct", 60.0))
    time.sleep(1.5)  # the gateway reads the new SoC
    dso.event("bat-cap", {"max_w_pct": 20}, devices=["bat1"], duration_s=8)
    dso.event("agg-dis", {"storage_w": 4000}, role="aggregator", devices=["bat1"], duration_s=8)
    response(probe, "agg-dis", "started")
    eventually(lambda: abs(rig.state("bat1").w - 1000) < 60, what="discharge held to 20 % of 5 kW")
    response(probe, "agg-dis", "completed")


def test_storage_for_a_silent_battery_waits_for_a_fresh_soc(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    """Accepted, not started and not written while the battery's SoC is not fresh; started
    (and written) once the battery answers again."""
    rig.call(lambda r: r.device("bat1").go_silent())
    try:
        time.sleep(2.5)  # past 3 poll intervals: the SoC is stale
        dso.event("blind", {"storage_w": -500}, role="aggregator", devices=["bat1"], duration_s=30)
        response(probe, "blind", "scheduled")
        time.sleep(2.0)
        assert responses(probe, "blind") == ["received", "scheduled"]  # waits, unstarted
    finally:
        rig.call(lambda r: r.device("bat1").clear_faults())
    started = response(probe, "blind", "started")
    assert started.get("reason") is None
    eventually(lambda: rig.state("bat1").w_set == -500, what="bat1 charging at 500 W")
    dso.cancel("blind", role="aggregator")
    response(probe, "blind", "cancelled")
    # the answer does not wait for the device: the release is written after it, and the
    # next test's "never written" must not see this event's -500 W
    eventually(lambda: rig.state("bat1").w_set in (None, 0), what="bat1 released")


def test_storage_for_a_battery_silent_all_its_window_ends_aborted_device_offline(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    rig.call(lambda r: r.device("bat1").go_silent())
    try:
        time.sleep(2.5)
        dso.event("never", {"storage_w": 500}, role="aggregator", devices=["bat1"], duration_s=3)
        aborted = response(probe, "never", "aborted")
        assert aborted["reason"] == "device_offline" and "bat1" in aborted["detail"]
        assert responses(probe, "never") == ["received", "scheduled", "aborted"]
        assert rig.state("bat1").w_set in (None, 0)  # never written
    finally:
        rig.call(lambda r: r.device("bat1").clear_faults())
    time.sleep(3.0)  # back online before the next test


def test_ev_charger_current_limit(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    dso.event("ev-16", {"evse_max_a": 16}, role="aggregator", devices=["ev1"], duration_s=5)
    response(probe, "ev-16", "started")

    def charger() -> EvseState:
        return rig.call(lambda r: cast(EvCharger, r.device("ev1")).snapshot())

    eventually(lambda: charger().limit_a == 16, what="charger limited to 16 A")
    eventually(lambda: abs(charger().a - 16) < 0.5, what="the car draws 16 A")
    response(probe, "ev-16", "completed")


def test_ev_charger_power_cap_under_an_aggregator_current(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    # a 4.2 kW cap (EnWG 14a) on 3 phases at 230 V: 4200 / 690 = 6.09 A, written as 6.0 A
    dso.event("cap-4k2", {"evse_max_w": 4200}, devices=["ev1"], duration_s=6)
    dso.event("agg-32", {"evse_max_a": 32}, role="aggregator", devices=["ev1"], duration_s=6)
    response(probe, "cap-4k2", "started")
    response(probe, "agg-32", "started")

    def charger() -> EvseState:
        return rig.call(lambda r: cast(EvCharger, r.device("ev1")).snapshot())

    eventually(lambda: charger().limit_a == 6.0, what="charger limited to 6.0 A")
    eventually(lambda: abs(charger().w + 3 * 230 * 6.0) < 50, what="the car draws 4.14 kW")
    assert -charger().w <= 4200
    active = probe.wait_for(
        lambda m: (
            m.topic == f"{ROOT}/active"
            and {"evse_max_w", "evse_max_a"} <= set(m.json()["devices"]["ev1"])
        )
    ).json()["devices"]["ev1"]
    assert active["evse_max_w"] == {
        "value": 4200,
        "source": "event",
        "mrid": "cap-4k2",
        "role": "dso",
    }
    assert active["evse_max_a"]["mrid"] == "agg-32"
    response(probe, "cap-4k2", "completed")


def test_site_export_limit(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    # 4 kW + 8 kW of PV, 1 kW of load, the car unplugged: the site exports 11 kW
    rig.call(lambda r: cast(EvCharger, r.device("ev1")).plug(False))
    dso.event("export-3k", {"export_limit_w": 3000}, duration_s=40)
    response(probe, "export-3k", "started")

    def export_w() -> float:
        return float(rig.state("meter1").w)

    eventually(lambda: export_w() < 3000, timeout_s=30, what="export under 3 kW")
    samples = []
    for _ in range(10):
        samples.append(export_w())
        time.sleep(0.5)
    assert max(samples) < 3000 + 100, samples
    assert min(samples) > 3000 - 1500, samples  # not curtailed far more than needed
    active = probe.wait_for(
        lambda m: m.topic == f"{ROOT}/active" and "export_limit_w" in m.json()["site"]
    ).json()
    assert active["site"]["export_limit_w"]["mrid"] == "export-3k"
    dso.send("controls/dso/cancel", {"mrid": "export-3k"})
    response(probe, "export-3k", "cancelled")
    rig.call(lambda r: cast(EvCharger, r.device("ev1")).plug(True))


def test_default_control_and_dispatcher_timeout(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    dso.send("default_control/dso", {"max_w_pct": 90}, retain=True)
    eventually(lambda: pv(rig, "inv1").w_lim_pct == 90, what="the default 90 % applied")
    dso.send(
        "controls/customer",
        {"mrid": "cust-1", "devices": ["inv1"], "duration_s": 120, "control": {"max_w_pct": 60}},
    )
    response(probe, "cust-1", "started")
    eventually(lambda: pv(rig, "inv1").w_lim_pct == 60, what="the customer's 60 %")
    aborted = response(probe, "cust-1", "aborted", timeout_s=20)
    assert aborted["reason"] == "dispatcher_timeout"
    eventually(lambda: pv(rig, "inv1").w_lim_pct == 90, what="back to the default")
    dso.send("default_control/dso", b"", retain=True)
    eventually(lambda: pv(rig, "inv1").w_lim_pct is None, what="default cleared")


def test_a_limit_for_a_device_that_is_down_is_written_when_it_is_back_and_after_a_reboot(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    """Never refused because the inverter does not answer: started, pending named, written
    within a poll (plus the backoff) of its answering, and again after it restarts."""
    rig.call(lambda r: r.device("inv1").go_silent())
    try:
        time.sleep(2.5)  # a poll timed out: inv1 is offline
        dso.event("while-down", {"max_w_pct": 35}, devices=["inv1"], duration_s=60)
        started = response(probe, "while-down", "started")
        assert "inv1 (offline)" in started["detail"]
        time.sleep(1.0)
        assert pv(rig, "inv1").w_lim_pct is None  # nobody could write it
    finally:
        rig.call(lambda r: r.device("inv1").clear_faults())
    back = time.monotonic()
    eventually(lambda: pv(rig, "inv1").w_lim_pct == 35, what="inv1 at 35 %", timeout_s=5)
    assert time.monotonic() - back < 0.5 + 2 + 1  # a poll, the 2 s backoff cap, a margin
    rig.call(lambda r: r.device("inv1").restart())  # forgets its limit
    eventually(lambda: pv(rig, "inv1").w_lim_pct == 35, what="inv1 at 35 % again", timeout_s=8)
    dso.cancel("while-down")
    response(probe, "while-down", "cancelled")
    eventually(lambda: pv(rig, "inv1").w_lim_pct is None, what="inv1 released")


def test_kill_9_mid_event_resumes_and_devices_revert_on_their_own(
    dso: DsoClient,
    probe: MqttProbe,
    rig: RigThread,
    gateway: Process,
    config: Path,
    workdir: Path,
) -> None:
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    dso.event("long", {"max_w_pct": 55}, devices=["inv2"], duration_s=60, creation_time=created)
    dso.event("brief", {"max_w_pct": 35}, devices=["inv1"], duration_s=4)
    # the same whole-second creation_time, received later: it wins, also after the kill
    dso.event("tie", {"max_w_pct": 45}, devices=["inv2"], duration_s=50, creation_time=created)
    response(probe, "long", "started")
    response(probe, "brief", "started")
    response(probe, "tie", "started")
    eventually(lambda: pv(rig, "inv2").w_lim_pct == 45, what="inv2 at 45 %")
    gateway.signal(signal.SIGKILL)
    gateway.popen.wait(10)
    # nobody refreshes the revert timers now: the devices fall back by themselves
    eventually(
        lambda: pv(rig, "inv2").w_lim_pct in (None, 100),
        timeout_s=REVERT_S + 5,
        what="inv2 reverted without the gateway",
    )
    restarted = start_gateway(config, workdir / "dispatch-restart.log")
    try:
        response(probe, "brief", "completed", timeout_s=20)
        eventually(lambda: pv(rig, "inv2").w_lim_pct == 45, what="inv2 at 45 % again")
        time.sleep(1.0)
        assert pv(rig, "inv2").w_lim_pct == 45  # the order of receipt survived the kill
        assert responses(probe, "long").count("started") == 1
        assert responses(probe, "tie").count("started") == 1
        assert responses(probe, "brief") == ["received", "scheduled", "started", "completed"]
    finally:
        restarted.stop()
