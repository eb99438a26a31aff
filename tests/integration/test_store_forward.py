"""Store and forward, end to end: 10 rig devices reporting every second through the real
daemon to a real Mosquitto that goes away for 60 s, a daemon killed with a backlog, and one
killed while the broker is up (held rounds: at most the last one may be lost).

The subscriber holds a persistent session (clean_session=False, QoS 1) on a broker that
saves its state when stopped, so whatever the gateway sends after the broker is back is kept
for the subscriber until it has reconnected too: what it receives is what the gateway sent.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import rig_device, write_config
from tests.support.servers import Mosquitto
from tests.support.sessions import Running, SessionProbe
from tests.support.waiting import eventually

ROOT = "derms/v1/sf-site"
DEVICES = [f"pv{i}" for i in range(10)]
OUTAGE_S = 60.0
REPLAY_RATE = 200


@pytest.fixture(scope="module")
def rig() -> Iterator[RigThread]:
    devices = [
        {"id": d, "type": "pv_legacy", "profile": {"kind": "constant", "w": 1000 + 100 * i}}
        for i, d in enumerate(DEVICES)
    ]
    with RigThread(RigSpec.model_validate({"devices": devices})) as running:
        yield running


@pytest.fixture(scope="module")
def probe(saving_broker: Mosquitto) -> Iterator[SessionProbe]:
    listener = SessionProbe(saving_broker.port, "sf-probe", ROOT)
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def gateway(
    rig: RigThread, saving_broker: Mosquitto, probe: SessionProbe, workdir: Path
) -> Iterator[Running]:
    config = write_config(
        workdir / "store-forward.yaml",
        gateway={"id": "sf-site", "state_dir": str(workdir / "state")},
        mqtt={"host": "127.0.0.1", "port": saving_broker.port, "reconnect_max_s": 1},
        devices=[rig_device(rig, d, poll_interval_s=1) for d in DEVICES],
        telemetry={"interval_s": 1, "replay_rate_per_s": REPLAY_RATE},
    )
    running = Running(config, workdir / "store-forward.log")
    yield running
    if running.process.alive():
        running.process.stop()


def steady(probe: SessionProbe) -> int:
    """Wait for three rounds in which every device is ok; the highest seq so far."""
    start = time.monotonic()

    def ok_rounds() -> bool:
        ok = [m for m in probe.telemetry(after=start) if m.json()["quality"] == "ok"]
        return len(ok) >= 3 * len(DEVICES)

    eventually(ok_rounds, timeout_s=30, what="three rounds of good telemetry")
    return max(probe.seqs())


def stop_between_rounds(broker: Mosquitto) -> None:
    """Stop the broker half-way between two telemetry rounds (they are aligned to the
    second), when nothing is in flight: no PUBACK is lost, so no copy is expected."""
    time.sleep((0.5 - time.time() % 1) % 1)
    broker.stop()


def complete(probe: SessionProbe, first: int, at_least: int) -> list[int]:
    """Wait until every seq from ``first`` to one at or beyond ``at_least`` has arrived."""

    def done() -> list[int] | None:
        seqs = probe.seqs()
        top = max(seqs)
        if top < at_least or not set(range(first, top + 1)) <= set(seqs):
            return None
        return seqs

    found: list[int] = eventually(done, timeout_s=60, what=f"every seq from {first}")
    return found


def test_a_60_s_outage_is_filled_in_order_exactly_once(
    gateway: Running, saving_broker: Mosquitto, probe: SessionProbe
) -> None:
    steady(probe)
    first = min(probe.seqs())
    stop_between_rounds(saving_broker)
    before = max(probe.seqs())
    time.sleep(OUTAGE_S)
    assert gateway.process.alive()
    back = time.monotonic()
    saving_broker.start()
    buffered = int(OUTAGE_S) * len(DEVICES)
    seqs = complete(probe, first, at_least=before + buffered + 3 * len(DEVICES))

    counts = Counter(seqs)
    assert [s for s, n in counts.items() if n > 1] == [], "a seq arrived twice"
    assert sorted(counts) == list(range(min(seqs), max(seqs) + 1)), "a gap"
    assert min(seqs) <= before + 1

    after = probe.seqs(after=back)
    assert after[0] == before + 1, "the backlog starts where the outage began"
    stamps = {m.json()["seq"]: m.json()["ts"] for m in probe.telemetry(after=back)}
    span = datetime.fromisoformat(stamps[before + buffered]) - datetime.fromisoformat(
        stamps[before + 1]
    )
    assert span.total_seconds() >= OUTAGE_S - 3, "each keeps the ts of its reading"
    # live rounds jump ahead while the backlog is replayed: what arrives below the highest
    # seq seen so far is the rest of the backlog, and it comes in its original order
    highest = 0
    behind = []
    for seq in after:
        if seq < highest:
            behind.append(seq)
        highest = max(highest, seq)
    assert behind == sorted(behind)
    assert len(behind) > 2 * len(DEVICES), "live rounds went out while the backlog was replayed"

    replayed = eventually(
        lambda: re.search(
            r"backlog of (\d+) messages replayed in ([\d.]+) s", gateway.process.output()
        ),
        what="the replay's log line",
    )
    count, seconds = int(replayed[1]), float(replayed[2])
    assert buffered <= count <= buffered + 2 * len(DEVICES)  # a round more while reconnecting
    assert seconds >= 0.8 * count / REPLAY_RATE  # paced, not all at once
    assert "Traceback" not in gateway.process.output()
    statuses = probe.statuses(after=back)
    assert max(s["buffered"] for s in statuses) >= buffered - 2 * len(DEVICES)
    final = eventually(
        lambda: (s := probe.statuses(after=back)) and s[-1]["buffered"] == 0 and s[-1],
        what="status: nothing buffered",
    )
    assert final["online"] is True and final["dropped"] == 0
    assert final["device_quality"] == dict.fromkeys(DEVICES, "ok")


def test_kill_9_with_a_backlog_loses_nothing(
    gateway: Running, saving_broker: Mosquitto, probe: SessionProbe
) -> None:
    steady(probe)
    stop_between_rounds(saving_broker)
    before = max(probe.seqs())
    time.sleep(5)  # five rounds buffered
    gateway.kill_and_restart()  # the broker is still away: it buffers on
    time.sleep(5)
    start = time.monotonic()
    saving_broker.start()
    complete(probe, before + 1, at_least=before + 8 * len(DEVICES))

    received = [m for m in probe.telemetry() if m.json()["seq"] > before]
    by_seq: dict[int, set[bytes]] = {}
    for message in received:
        by_seq.setdefault(message.json()["seq"], set()).add(message.payload)
    assert sorted(by_seq) == list(range(before + 1, max(by_seq) + 1)), "a gap"
    assert all(len(copies) == 1 for copies in by_seq.values()), "a seq with two payloads"
    after = [m.json()["seq"] for m in received if m.at >= start]
    assert after[0] == before + 1
    assert "Traceback" not in gateway.process.output()


def test_kill_9_with_the_broker_up_loses_at_most_the_last_round(
    gateway: Running, saving_broker: Mosquitto, probe: SessionProbe
) -> None:
    """Rounds the broker acknowledges in time are never written (telemetry.store_every_round
    false): a kill can cost the round in flight, never more, and seq never repeats."""
    steady(probe)
    time.sleep((1.5 - time.time() % 1) % 1)  # half-way between rounds (aligned to the second)
    start, start_wall = time.monotonic(), time.time()
    time.sleep(5.503 - time.time() % 1)  # 3 ms after a round began: it may be in flight
    kill_wall = time.time()
    gateway.kill()
    time.sleep(0.5)  # what the broker had is delivered by now
    dead = time.monotonic()
    gateway.restart()
    rounds_begun = int(kill_wall) - int(start_wall)
    before = sorted(m.json()["seq"] for m in probe.telemetry(after=start) if m.at < dead)
    eventually(lambda: len(probe.seqs(after=dead)) >= 3 * len(DEVICES), what="three rounds")

    # every round begun before the kill arrived, whole and once, but the last one at most
    assert before == list(range(before[0], before[-1] + 1)), "a gap, or a seq twice"
    assert len(before) % len(DEVICES) == 0, "a round split"
    assert rounds_begun - 1 <= len(before) // len(DEVICES) <= rounds_begun
    assert min(probe.seqs(after=dead)) > before[-1], "a seq given again after the kill"
    assert "Traceback" not in gateway.process.output()
