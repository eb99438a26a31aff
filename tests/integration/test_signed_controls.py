"""End to end with signed controls required: a real Mosquitto, the real daemon, the rig.

A signed event is applied once; unsigned, wrongly signed, another role's, stale and future
ones are each answered and write nothing to the inverter; the gateway remembers a signed
message it refused across a restart, when replaying it would otherwise pass.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from derms_edge.cli.send import build_event, send
from derms_edge.config import load_config
from derms_edge.devices.sunspec.controls import DER_CTL_AC
from derms_edge.northbound.commands import EventPayload
from derms_edge.northbound.signed import sign as sign_jws
from hil.rig import Rig, RigThread
from hil.spec import RigSpec
from tests.support.dso import DsoClient
from tests.support.gateway import ONE_INVERTER, rig_device, start_connected, write_config
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

ROOT = "derms/v1/signed-site"
SKEW_S = 10
QUIET_S = 1.5
"""How long a refused message is watched for a write that must not come, s."""
DSO = OKPKey.generate_key("Ed25519")
AGGREGATOR = OKPKey.generate_key("Ed25519")
STRANGER = OKPKey.generate_key("Ed25519")


def sign(body: dict[str, Any], key: OKPKey) -> bytes:
    return sign_jws(json.dumps(body).encode(), key)


def event(mrid: str, *, created_s: float = 0.0, duration_s: float = 60) -> dict[str, Any]:
    """A curtailment of inv1 to 40 %, created ``created_s`` from now."""
    created = datetime.now(UTC) + timedelta(seconds=created_s)
    return {
        "mrid": mrid,
        "creation_time": created.isoformat(),
        "duration_s": duration_s,
        "control": {"max_w_pct": 40},
    }


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(ONE_INVERTER)) as running:
        yield running


@pytest.fixture(scope="module")
def config(rig: RigThread, broker: Mosquitto, workdir: Path) -> Path:
    for name, key in (("dso", DSO), ("aggregator", AGGREGATOR)):
        (workdir / f"{name}.pub.pem").write_bytes(key.as_pem(private=False))
    return write_config(
        workdir / "signed.yaml",
        gateway={"id": "signed-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port},
        devices=[rig_device(rig, "inv1", poll_interval_s=0.5, backoff_max_s=2)],
        telemetry={"interval_s": 1},
        control={
            "require_signed": True,
            "max_clock_skew_s": SKEW_S,
            "interval_s": 0.5,
            "revert_s": 0,
            "roles": {
                "dso": {"primacy": 1, "keys": [str(workdir / "dso.pub.pem")]},
                "aggregator": {"primacy": 2, "keys": [str(workdir / "aggregator.pub.pem")]},
            },
        },
    )


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(broker.port, f"{ROOT}/responses", f"{ROOT}/capability/+")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateways(config: Path, workdir: Path, probe: MqttProbe) -> Iterator[list[Process]]:
    """The running daemon (a test that restarts it puts the new one in its place)."""
    running = [start_connected(config, workdir / "signed.log", probe, ROOT, ["inv1"])]
    yield running
    running[-1].stop()


@pytest.fixture(scope="module")
def dso(broker: Mosquitto, gateways: list[Process]) -> Iterator[DsoClient]:
    client = DsoClient(broker.port, ROOT)
    yield client
    client.close()


def writes(rig: RigThread, since: float) -> int:
    """Control writes inv1 took since ``since`` (time.monotonic()): to its 704 DERCtlAC, where
    max_w_pct goes. Not the 715 ControllerHb, which the gateway's keepalive increments
    while a setpoint is in force (a moment after the limit, and on)."""

    def count(r: Rig) -> int:
        device = r.physics_device("inv1")
        control = device.image.model_range(DER_CTL_AC)
        taken = (a for a in device.accesses if a.write and a.ok and a.at >= since)
        return sum(1 for a in taken if a.address in control)

    return rig.call(count)


def limit(rig: RigThread) -> Any:
    return rig.state("inv1").w_lim_pct


def answer(probe: MqttProbe, since: float, mrid: str | None, status: str) -> dict[str, Any]:
    """The first response for ``mrid`` (None: a refusal without one) with ``status``."""

    def matches(message: Message) -> bool:
        data = json.loads(message.payload)
        return data["mrid"] == mrid and data["status"] == status

    return dict(json.loads(probe.wait_for(matches, after=since, timeout_s=15).payload))


def test_a_signed_event_is_applied_once(dso: DsoClient, probe: MqttProbe, rig: RigThread) -> None:
    signed = sign(event("signed-1"), DSO)
    sent = time.monotonic()
    dso.send("controls/dso", signed)
    answer(probe, sent, "signed-1", "started")
    eventually(lambda: limit(rig) == 40, what="inv1 limited to 40 %")
    assert writes(rig, sent) >= 1
    again = time.monotonic()
    dso.send("controls/dso", signed)  # the same JWS, replayed
    repeat = answer(probe, again, "signed-1", "started")
    assert repeat["detail"] == "repeat of a signed message; not taken again"
    time.sleep(QUIET_S)
    assert writes(rig, again) == 0
    cancel = {"mrid": "signed-1", "creation_time": datetime.now(UTC).isoformat()}
    dso.send("controls/dso/cancel", sign(cancel, DSO))
    answer(probe, again, "signed-1", "cancelled")
    eventually(lambda: limit(rig) is None, what="the limit released")


@pytest.mark.parametrize(
    ("made", "mrid", "reason", "in_detail"),
    [
        (lambda: json.dumps(event("plain")).encode(), None, "unauthorized", "not a JWS"),
        (lambda: sign(event("stranger"), STRANGER), None, "unauthorized", STRANGER.thumbprint()),
        (
            lambda: sign(event("aggregator"), AGGREGATOR),
            None,
            "unauthorized",
            "key of role aggregator",
        ),
        (lambda: sign(event("stale", created_s=-3 * SKEW_S), DSO), "stale", "replayed", "behind"),
        (lambda: sign(event("future", created_s=3 * SKEW_S), DSO), "future", "invalid", "ahead"),
    ],
    ids=["unsigned", "unknown-key", "another-roles-key", "stale", "future"],
)
def test_what_is_refused_is_answered_and_writes_nothing(
    dso: DsoClient,
    probe: MqttProbe,
    rig: RigThread,
    made: Callable[[], bytes],
    mrid: str | None,
    reason: str,
    in_detail: str,
) -> None:
    """Each payload is made when its case runs: its creation_time is relative to now, not to
    when the suite was collected (minutes earlier in a full run)."""
    sent = time.monotonic()
    dso.send("controls/dso", made())
    refused = answer(probe, sent, mrid, "rejected")
    assert refused["reason"] == reason
    assert in_detail in refused["detail"]
    time.sleep(QUIET_S)
    assert writes(rig, sent) == 0
    assert limit(rig) is None


def test_a_tampered_signed_event_is_refused(
    dso: DsoClient, probe: MqttProbe, rig: RigThread
) -> None:
    header, payload, signature = sign(event("tampered"), DSO).split(b".")
    other = sign({**event("tampered"), "control": {"max_w_pct": 0}}, DSO).split(b".")[1]
    sent = time.monotonic()
    dso.send("controls/dso", b".".join([header, other, signature]))
    refused = answer(probe, sent, None, "rejected")
    assert refused["reason"] == "unauthorized"
    assert (
        refused["detail"] == f"role dso: the signature does not verify with kid {DSO.thumbprint()}"
    )
    time.sleep(QUIET_S)
    assert writes(rig, sent) == 0
    assert payload != other


def test_the_replay_memory_outlives_a_restart(
    dso: DsoClient,
    probe: MqttProbe,
    rig: RigThread,
    gateways: list[Process],
    config: Path,
    workdir: Path,
) -> None:
    """Created 12 s ahead (skew 10 s): refused as invalid now; after the restart it would
    pass, but it was seen."""
    ahead = sign(event("ahead", created_s=SKEW_S + 2), DSO)
    signed_at = time.monotonic()
    dso.send("controls/dso", ahead)
    assert answer(probe, signed_at, "ahead", "rejected")["reason"] == "invalid"
    gateways[-1].stop()
    gateways.append(start_connected(config, workdir / "signed-2.log", probe, ROOT, ["inv1"]))
    waiting_s = 3.0 - (time.monotonic() - signed_at)
    if waiting_s > 0:
        time.sleep(waiting_s)  # now inside the window of its creation_time
    assert time.monotonic() - signed_at < 2 * SKEW_S, "the restart took too long to tell"
    again = time.monotonic()
    dso.send("controls/dso", ahead)
    replayed = answer(probe, again, "ahead", "rejected")
    assert replayed["reason"] == "replayed"
    time.sleep(QUIET_S)
    assert writes(rig, again) == 0
    assert limit(rig) is None


def test_send_signs_with_its_key(
    config: Path, probe: MqttProbe, rig: RigThread, gateways: list[Process]
) -> None:
    """`derms-edge send --sign KEY` as its function: the gateway starts what it signed."""
    out = io.StringIO()
    built = build_event('{"max_w_pct": 40}', duration_s=2, devices=["inv1"], mrid="cli-signed")
    assert isinstance(built, EventPayload)
    assert send(load_config(config), "dso", built, wait_s=15, out=out, key=DSO) == 0
    assert f"signed by kid {DSO.thumbprint()}" in out.getvalue()
    assert "started" in out.getvalue()
    eventually(lambda: limit(rig) is None, what="the limit released after 2 s")
