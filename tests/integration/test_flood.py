"""A flood on the controls topics: 20,000 messages as fast as one paho client publishes them
(valid-looking events and arrays, garbage, oversize payloads, cancels and defaults, from the
configured role and from invented ones; unsigned, or signed with a key the gateway does not
know), on a gateway that requires signed controls. The daemon stays up with its memory
bounded, telemetry goes on, the excess is dropped unread (counted in status.rejected_inbound,
and not answered), nothing of the flood reaches the inverter, and a valid signed control sent
afterwards is applied within 5 s. Real Mosquitto, the HIL rig, the real daemon."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from joserfc.jwk import OKPKey
from paho.mqtt.enums import CallbackAPIVersion

from derms_edge.northbound.signed import sign
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.dso import DsoClient
from tests.support.gateway import ONE_INVERTER, rig_device, start_connected, write_config
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, Process
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = "derms/v1/flood-site"
FLOOD = 20_000
MAX_PAYLOAD_BYTES = 1024
DSO = OKPKey.generate_key("Ed25519")
STRANGER = OKPKey.generate_key("Ed25519")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto that delivers every message of the flood: as installed it drops QoS 0
    messages for a subscriber more than 1000 behind (`max_queued_messages`), which on a busy
    machine hid part of the flood from the daemon and so from its counter."""
    server = Mosquitto(
        tmp_path_factory.mktemp("mosquitto-flood"), options="max_queued_messages 0\n"
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    with RigThread(RigSpec.model_validate(ONE_INVERTER)) as running:
        yield running


@pytest.fixture(scope="module")
def probe(broker: Mosquitto) -> Iterator[MqttProbe]:
    listener = MqttProbe(
        broker.port,
        f"{ROOT}/telemetry/#",
        f"{ROOT}/responses",
        f"{ROOT}/status",
        f"{ROOT}/capability/#",
    )
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(
    rig: RigThread, broker: Mosquitto, workdir: Path, probe: MqttProbe
) -> Iterator[Process]:
    (workdir / "dso.pub.pem").write_bytes(DSO.as_pem(private=False))
    config = write_config(
        workdir / "flood.yaml",
        gateway={"id": "flood-site", "state_dir": str(workdir / "state")},
        mqtt={"port": broker.port, "max_payload_bytes": MAX_PAYLOAD_BYTES},
        devices=[rig_device(rig, "inv1", "inverter", poll_interval_s=0.5)],
        telemetry={"interval_s": 1},
        control={
            "interval_s": 0.5,
            "revert_s": 30,
            "require_signed": True,
            "roles": {"dso": {"primacy": 1, "keys": [str(workdir / "dso.pub.pem")]}},
        },
    )
    process = start_connected(config, workdir / "flood.log", probe, ROOT, ("inv1",))
    yield process
    process.stop()


def flood_messages(count: int) -> Iterator[tuple[str, bytes]]:
    """The mix: a fifth each of events, arrays, garbage, oversize and cancels/defaults, on the
    configured role (dso), an unconfigured one (aggregator) and invented ones."""
    chance = random.Random(12)
    for index in range(count):
        role = chance.choice(["dso", "dso", "aggregator", f"r{index}"])
        event = {"mrid": f"f{index}", "duration_s": 2, "control": {"max_w_pct": index % 100}}
        match index % 5:
            case 0 if index % 2:
                yield f"{ROOT}/controls/{role}", json.dumps(event).encode()
            case 0:
                yield f"{ROOT}/controls/{role}", sign(json.dumps(event).encode(), STRANGER)
            case 1:
                yield f"{ROOT}/controls/{role}", json.dumps([event, event, {"x": 1}]).encode()
            case 2:
                yield f"{ROOT}/controls/{role}", chance.randbytes(chance.randint(0, 300))
            case 3:
                yield f"{ROOT}/controls/{role}", b"[" * (MAX_PAYLOAD_BYTES + 500)
            case _:
                kind = chance.choice(["controls/dso/cancel", "default_control/dso"])
                yield f"{ROOT}/{kind}", json.dumps({"mrid": f"f{index - 1}"}).encode()


def publish_flood(port: int) -> None:
    """Publish the flood at QoS 0 as fast as one client can, and wait until it is sent."""
    flooder = paho.Client(CallbackAPIVersion.VERSION2)
    flooder.max_queued_messages_set(0)
    flooder.connect("127.0.0.1", port)
    flooder.loop_start()
    for topic, payload in flood_messages(FLOOD):
        flooder.publish(topic, payload, qos=0)
    while flooder.want_write():
        time.sleep(0.01)
    flooder.disconnect()
    flooder.loop_stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """The daemon's resident memory every 50 ms, in a thread, until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(rss_kib(self.pid))

    def stop(self) -> int:
        """The peak, KiB."""
        self._stop.set()
        self._thread.join()
        return max(self.samples)


def test_a_flood_is_dropped_unread_and_a_control_afterwards_applies(
    rig: RigThread, broker: Mosquitto, probe: MqttProbe, gateway: Process
) -> None:
    """Measured here (2 cores): the flood takes about 1 s to publish; the daemon's RSS peaks
    about 5 MiB over its resting size (asserted: under 40 MiB over)."""
    time.sleep(1.5)  # settled: a status with the counter at 0
    assert rig.state("inv1").w_lim_pct is None
    rest_kib = rss_kib(gateway.pid)
    sampler = RssSampler(gateway.pid)
    start = time.monotonic()
    publish_flood(broker.port)
    published = time.monotonic()

    def status() -> dict[str, int]:
        (latest,) = probe.on(f"{ROOT}/status")[-1:]
        return dict(latest.json())

    # drained: the counter has held still for over two telemetry rounds
    seen: list[tuple[float, int]] = []

    def settled() -> bool:
        count = status()["rejected_inbound"]
        if not seen or seen[-1][1] != count:
            seen.append((time.monotonic(), count))
        return count > 0 and time.monotonic() - seen[-1][0] > 2.5

    eventually(settled, timeout_s=40, what="the flood drained")
    drained = time.monotonic()
    peak_kib = sampler.stop()
    assert gateway.alive
    rejected = status()["rejected_inbound"]
    answered = [m for m in probe.on(f"{ROOT}/responses") if start <= m.at <= drained]
    elapsed = drained - start
    # the buckets: dso, and one shared by every role it does not know, 100 + 20/s each
    allowance = 2 * (100 + 20 * elapsed)
    assert rejected >= FLOOD - allowance, (rejected, elapsed)
    assert len(answered) <= 3 * allowance, len(answered)  # an array is answered per event
    print(
        f"flood: published in {published - start:.2f} s, drained in {elapsed:.1f} s; "
        f"rejected_inbound {rejected}, {len(answered)} answers; RSS rest {rest_kib} KiB, "
        f"peak {peak_kib} KiB"
    )
    assert peak_kib - rest_kib < 40 * 1024, (rest_kib, peak_kib)
    # telemetry went on (a round a second): no gap over 5 s between flood start and drained
    beats = [m.at for m in probe.on(f"{ROOT}/telemetry/inv1") if start <= m.at <= drained]
    gaps = [b - a for a, b in zip([start, *beats], [*beats, drained], strict=True)]
    print(f"telemetry during the flood: {len(beats)} rounds, longest gap {max(gaps):.2f} s")
    assert max(gaps) < 5.0, gaps
    flood_writes = rig.call(
        lambda r: sum(1 for a in r.devices["inv1"].accesses if a.write and a.at >= start)
    )
    assert flood_writes == 0, flood_writes  # none of the flood reached the inverter

    time.sleep(1.0)  # the dso's allowance refills (20 a second)
    dso = DsoClient(broker.port, ROOT)
    try:
        sent = time.monotonic()
        control = {
            "mrid": "after-flood",
            "creation_time": datetime.now(UTC).isoformat(),
            "duration_s": 60,
            "control": {"max_w_pct": 37},
        }
        dso.send("controls/dso", sign(json.dumps(control).encode(), DSO))
        eventually(lambda: rig.state("inv1").w_lim_pct == 37, timeout_s=5, what="applied")
        print(f"the control after the flood applied in {time.monotonic() - sent:.2f} s")
    finally:
        dso.close()
