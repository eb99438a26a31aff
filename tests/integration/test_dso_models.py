"""End to end in a DSO model: the customer's reserve holds against the market's discharge.

The daemon runs with ``control.dso_model: node_independent`` (roles dgo, derm, aggregator,
customer) against the rig's battery over a real Mosquitto. The battery is small (500 Wh) so
its SoC moves fast enough to watch: an aggregator's discharge that the configured reserve
(20 %) would let run stops at the customer's higher reserve, sent while it runs; a role that
may not send a control type is refused, and nothing of it is applied.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import rig_device, start_connected, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

ROOT = "derms/v1/dso-model-site"
CONFIGURED_RESERVE_PCT = 20.0
RIG = {
    "tick_s": 0.2,
    "devices": [
        {
            "id": "bat1",
            "type": "battery",
            "wh_rtg": 500,
            "soc_pct": 60,
            "soc_min_pct": 5,
            "soc_max_pct": 95,
            "tau_s": 0.2,
        },
    ],
}


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(rig: RigThread, broker: Mosquitto, workdir: Path) -> Iterator[Process]:
    config = write_config(
        workdir / "dso-model.yaml",
        gateway={"id": "dso-model-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[
            rig_device(
                rig,
                "bat1",
                "battery",
                poll_interval_s=0.5,
                backoff_max_s=2,
                reserve_soc_pct=CONFIGURED_RESERVE_PCT,
            )
        ],
        telemetry={"interval_s": 1},
        control={"dso_model": "node_independent", "interval_s": 0.5},
    )
    probe = MqttProbe(broker.port, f"{ROOT}/capability/+")
    try:
        process = start_connected(config, workdir / "dso-model.log", probe, ROOT, ["bat1"])
    finally:
        probe.close()
    time.sleep(1.0)  # and read
    yield process
    process.stop()


@pytest.fixture(scope="module")
def probe(broker: Mosquitto, gateway: Process) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/responses")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def parties(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT)
    yield client
    client.close()


def response(probe: MqttProbe, mrid: str, status: str, timeout_s: float = 15.0) -> dict[str, Any]:
    return waiting.response(probe, ROOT, mrid, status, timeout_s)


def soc(rig: RigThread) -> float:
    value = rig.state("bat1").soc_pct
    assert isinstance(value, float)
    return value


def test_the_customers_reserve_stops_an_aggregators_discharge(
    parties: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    start = soc(rig)
    reserve = round(start - 1.5, 1)
    # 3 kW for 2 min would take ~21 % of 500 Wh: well above the configured 20 % reserve
    parties.event("sell", {"storage_w": 3000}, "aggregator", devices=["bat1"], duration_s=120)
    response(probe, "sell", "started")
    eventually(lambda: rig.state("bat1").w > 2500, what="bat1 discharging for the aggregator")
    parties.event(
        "storm", {"reserve_soc_pct": reserve}, "customer", devices=["bat1"], duration_s=600
    )
    response(probe, "storm", "started")
    aborted = response(probe, "sell", "aborted", timeout_s=30)
    assert aborted["reason"] == "soc_limit"
    assert f"reserve {reserve:g} %" in aborted["detail"]
    eventually(lambda: abs(rig.state("bat1").w) < 50, what="bat1 stopped at the customer's reserve")
    held = soc(rig)
    assert reserve - 0.1 <= held < start, f"SoC {held} % (reserve {reserve} %)"
    time.sleep(2.0)
    assert abs(soc(rig) - held) < 0.05, "the battery went on discharging"
    # a new discharge is refused on arrival: the customer's reserve, not the configured one
    parties.event("sell-2", {"storage_w": 1000}, "aggregator", devices=["bat1"], duration_s=60)
    refused = response(probe, "sell-2", "rejected")
    assert refused["reason"] == "soc_limit" and f"reserve {reserve:g} %" in refused["detail"]
    parties.cancel("storm", role="customer")
    response(probe, "storm", "cancelled")


@pytest.mark.parametrize(
    ("role", "control", "forbidden"),
    [
        ("aggregator", {"reserve_soc_pct": 10}, "reserve_soc_pct"),
        ("derm", {"export_limit_w": 0}, "export_limit_w"),
        ("dgo", {"storage_w": 2000}, "storage_w"),
        ("customer", {"volt_var": {"curve": "cat_b"}}, "volt_var"),
    ],
)
def test_a_role_may_send_only_what_its_model_allows(
    parties: DsoClient,
    probe: MqttProbe,
    rig: RigThread,
    role: str,
    control: dict[str, Any],
    forbidden: str,
) -> None:
    mrid = f"not-{role}"
    w_before = rig.state("bat1").w
    parties.event(mrid, control, role, devices=["bat1"], duration_s=60)
    refused = response(probe, mrid, "rejected")
    assert refused["reason"] == "unauthorized"
    assert refused["detail"].startswith(f"role {role} may not send {forbidden} (allowed: ")
    time.sleep(1.0)
    assert abs(rig.state("bat1").w - w_before) < 50


def test_the_customers_retained_default_reserve_holds_until_cleared(
    parties: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    reserve = round(soc(rig) + 5.0, 1)
    parties.send("default_control/customer", {"reserve_soc_pct": reserve}, retain=True)
    time.sleep(1.0)  # the gateway takes it in
    parties.event("sell-3", {"storage_w": 500}, "aggregator", devices=["bat1"], duration_s=10)
    refused = response(probe, "sell-3", "rejected")
    assert refused["reason"] == "soc_limit" and f"reserve {reserve:g} %" in refused["detail"]
    parties.send("default_control/customer", b"", retain=True)
    time.sleep(1.0)
    parties.event("sell-4", {"storage_w": 500}, "aggregator", devices=["bat1"], duration_s=10)
    response(probe, "sell-4", "started")
    eventually(lambda: rig.state("bat1").w > 400, what="bat1 discharging once the default is gone")
    response(probe, "sell-4", "completed", timeout_s=20)
