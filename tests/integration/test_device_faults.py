"""End to end: device faults under a running DSO curtailment, through the real daemon.

One gateway process polls two rig inverters every 0.5 s while a DSO curtailment (40 %) holds
on the legacy one. That inverter then stops answering, answers exceptions, hangs up, closes
its port, answers short reads and misreports a model length; during each outage it restarts
with its registers reset, forgetting the curtailment. Each time telemetry shows it offline,
then ok; the event stays started; and the gateway writes the curtailment again and reads it
back within two poll intervals of the device's first good answer (timed from the rig's own
log of the requests it served). Then it restarts without any outage at all, and reboots with
its model chain moved; finally the other inverter refuses a write, which aborts that event
with the point named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil.rig import Rig, RigThread
from hil.spec import RigSpec
from tests.support import waiting
from tests.support.dso import DsoClient
from tests.support.gateway import rig_device, start_connected, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

ROOT = "derms/v1/fault-site"
POLL_S = 0.5
BACKOFF_MAX_S = POLL_S
"""The longest a device that is back waits for the gateway's next try: the default cap of a
device alone on its link."""
TIMEOUT_S = 0.5
"""Short enough that a request lost in an outage plus the backoff fit in the closed-port bound;
long enough that a busy 2-core CI machine does not turn the rig's first answer into a timeout
(which the rig's log cannot tell from an answer the gateway took)."""
REVERT_S = 3.0
"""Setpoints are kept alive, and checked to be still held, every REVERT_S / 3."""
W_RTG = 5000.0
LIMIT_PCT = 40.0

RIG = {
    "devices": [
        {"id": "inv1", "type": "pv_legacy", "w_rtg": W_RTG, "tau_s": 0},
        {"id": "inv2", "type": "pv_1547", "w_rtg": 10000, "tau_s": 0},
    ]
}


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(RIG)) as running:
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
    rig: RigThread, broker: Mosquitto, workdir: Path, probe: MqttProbe
) -> Iterator[Process]:
    def device(device_id: str) -> dict[str, Any]:
        return rig_device(rig, device_id, poll_interval_s=POLL_S, timeout_s=TIMEOUT_S)

    config = write_config(
        workdir / "faults.yaml",
        gateway={"id": "fault-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[device("inv1"), device("inv2")],
        telemetry={"interval_s": 0.5},
        control={"interval_s": 0.5, "revert_s": REVERT_S, "roles": {"dso": {"primacy": 1}}},
    )
    process = start_connected(config, workdir / "faults.log", probe, ROOT, ("inv1", "inv2"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateway: Process) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT)
    yield client
    client.close()


def limit_pct(rig: RigThread) -> float | None:
    return rig.state("inv1").w_lim_pct


def quality_after(probe: MqttProbe, device: str, quality: str, after: float) -> Message:
    return probe.wait_for(
        lambda m: m.topic == f"{ROOT}/telemetry/{device}" and m.json()["quality"] == quality,
        timeout_s=10,
        after=after,
    )


@dataclass(frozen=True)
class Reapplied:
    """From the rig's request log: the device's first good answer after a moment, then the
    write of the curtailment's enable point and the read that read it back (monotonic s)."""

    answered: float
    written: float
    read_back: float

    @property
    def seconds(self) -> float:
        return self.read_back - self.answered


def explain(timing: Reapplied, rig: RigThread, gateway: Process, since: float) -> str:
    """What a slow re-apply looked like: the device's requests and the gateway's log."""
    accesses = rig.call(lambda r: [a for a in r.devices["inv1"].accesses if a.at >= since])
    requests = "\n".join(
        f"  {a.at - timing.answered:+.3f} s {'write' if a.write else 'read'} "
        f"{a.address} x{a.count} {'ok' if a.ok else 'not answered'}"
        for a in accesses[:60]
    )
    log = "\n".join(gateway.output().splitlines()[-30:])
    return f"{timing}\ninv1's requests:\n{requests}\ngateway log:\n{log}"


def reapplied_since(rig: RigThread, since: float) -> Reapplied | None:
    def find(r: Rig) -> Reapplied | None:
        device = r.devices["inv1"]
        enable = device.image.address(123, "WMaxLim_Ena")  # wherever the chain is now
        log = [a for a in device.accesses if a.at >= since and a.ok]
        covering = [a for a in log if a.address <= enable < a.address + a.count]
        write = next((a for a in covering if a.write), None)
        if not log or write is None:
            return None
        read = next((a for a in covering if not a.write and a.at >= write.at), None)
        return None if read is None else Reapplied(log[0].at, write.at, read.at)

    return rig.call(find)


@pytest.fixture(scope="module")
def curtailed(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> str:
    dso.event("curt", {"max_w_pct": LIMIT_PCT}, devices=["inv1"], duration_s=600)
    waiting.response(probe, ROOT, "curt", "started")
    eventually(lambda: limit_pct(rig) == LIMIT_PCT, what="inv1 curtailed to 40 %")
    return "curt"


def restart(r: Rig) -> float | None:
    """Power-cycle inv1; its limit right after (None: forgotten)."""
    device = r.physics_device("inv1")
    device.restart()
    return device.snapshot().w_lim_pct


FAULTS: dict[str, Callable[[Rig], object]] = {
    "silent": lambda r: r.devices["inv1"].go_silent(),
    "exceptions": lambda r: r.devices["inv1"].answer_exceptions(),
    "hang-up": lambda r: r.devices["inv1"].hang_up(),
    "short-answers": lambda r: r.devices["inv1"].answer_short(),
    "wrong-model-length": lambda r: r.devices["inv1"].misreport_length(103, 0xFFF0),
}


@pytest.mark.parametrize("fault", [*FAULTS, "closed-port"])
def test_a_fault_shows_offline_then_ok_and_the_curtailment_is_back_within_two_polls(
    fault: str, curtailed: str, probe: MqttProbe, rig: RigThread
) -> None:
    began = time.monotonic()
    if fault == "closed-port":
        rig.close_port("inv1")
    else:
        rig.call(FAULTS[fault])
    quality_after(probe, "inv1", "offline", began)
    since = time.monotonic()
    assert rig.call(restart) is None  # the curtailment is forgotten; it answers again
    rig.open_port("inv1")
    quality_after(probe, "inv1", "ok", since)
    timing = eventually(lambda: reapplied_since(rig, since), what="the curtailment written back")
    assert timing.seconds < 2 * POLL_S, timing
    # the device was back at `since`: the gateway's next try comes within its backoff cap
    assert timing.read_back - since < BACKOFF_MAX_S + 2 * POLL_S, timing
    eventually(lambda: limit_pct(rig) == LIMIT_PCT, what="inv1 at 40 % again")
    assert rig.state("inv1").w == pytest.approx(LIMIT_PCT / 100 * W_RTG)
    print(
        f"{fault}: curtailment back {timing.seconds * 1000:.0f} ms after the first answer, "
        f"{(timing.read_back - since) * 1000:.0f} ms after the device was back"
    )


def test_a_restart_between_two_polls_is_found_by_the_keepalive_check(
    curtailed: str, rig: RigThread, gateway: Process
) -> None:
    restarted = time.monotonic()
    assert rig.call(restart) is None  # no request ever fails
    eventually(lambda: limit_pct(rig) == LIMIT_PCT, what="inv1 at 40 % again")
    assert time.monotonic() - restarted < REVERT_S / 3 + 2 * POLL_S
    assert "inv1: 123.WMaxLimPct reads 100.0 where 40.0 was written" in gateway.output()


@pytest.mark.parametrize(
    ("down_s", "moved"),
    [(1.0, {"base": 50000}), (0.0, {"insert_model": 12})],
    ids=["base-moved-after-1-s-down", "model-inserted-no-down-time"],
)
def test_a_reboot_that_moves_the_models_is_rediscovered_and_curtailed_again(
    down_s: float, moved: dict[str, int], curtailed: str, rig: RigThread, gateway: Process
) -> None:
    since = time.monotonic()
    rig.reboot("inv1", down_s, **moved)
    timing = eventually(lambda: reapplied_since(rig, since), what="the curtailment written back")
    assert timing.seconds < 2 * POLL_S, explain(timing, rig, gateway, since)
    eventually(lambda: limit_pct(rig) == LIMIT_PCT, what="inv1 at 40 % at its new addresses")
    print(f"{moved}: curtailment back {timing.seconds * 1000:.0f} ms after the first answer")


def test_the_event_was_held_through_every_outage(
    curtailed: str, probe: MqttProbe, gateway: Process
) -> None:
    statuses = [
        m.json()["status"] for m in probe.on(f"{ROOT}/responses") if m.json()["mrid"] == curtailed
    ]
    assert statuses == ["received", "scheduled", "started"]
    inv2 = [m.json()["quality"] for m in probe.on(f"{ROOT}/telemetry/inv2")]
    assert set(inv2[inv2.index("ok") :]) == {"ok"}  # its neighbour's faults never touched it
    assert gateway.alive()
    assert "Traceback" not in gateway.output()


def test_a_write_the_device_refuses_aborts_the_event_naming_the_point(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    # this inverter takes no limit under 50 %: it answers ILLEGAL DATA VALUE (3)
    rig.call(lambda r: r.physics_device("inv2").image.bound(704, "WMaxLimPct", 50, 100))
    dso.event("too-deep", {"max_w_pct": 30}, devices=["inv2"], duration_s=600)
    aborted = waiting.response(probe, ROOT, "too-deep", "aborted")
    assert aborted["reason"] == "device_refused"
    assert "inv2: 704.WMaxLimPct" in aborted["detail"]
    assert "Modbus exception 3" in aborted["detail"]
    assert rig.state("inv2").w_lim_pct is None
