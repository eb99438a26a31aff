"""Benchmark: the store-and-forward outbox.

    python bench/outbox_bench.py [--dir DIR] [--write docs/benchmarks.md]

Telemetry messages are the gateway's own (``TelemetryMessage`` of an inverter with every
value set, about 330 bytes), 10 devices per round, in an outbox as the daemon opens it (WAL,
``synchronous=FULL``) in DIR (default: a temporary directory; put it on the disk you care
about, e.g. the SD card of a Raspberry Pi).

1. Buffering: rounds of 10 messages added as fast as they go, one transaction each.
2. Bytes written to the disk for one hour of 10 devices at 1 s (3600 rounds, simulated
   without waiting): the steady state, where each round is added and the acknowledged
   rounds are marked done every ``ACK_FLUSH_S`` (5 rounds), as the forwarder does, and an
   outage, where rounds are only added. From the kernel's count of this process's writes to
   the storage layer (/proc/self/io write_bytes; fsync on every commit makes them real).
3. A 1-hour backlog: a gateway process (outbox, forwarder, MQTT session; its own process,
   so its RSS is its own) buffers 36,000 messages while no broker is there; then Mosquitto
   starts, the session connects and the backlog is replayed while a live round is added
   every second. A subscriber in this process stamps arrivals (the same monotonic clock):
   the replay rate achieved, the latency of live messages during the replay, and the
   gateway's RSS. Once at the default ``replay_rate_per_s`` (200, for 20 s), once
   unlimited (100,000/s) until the whole backlog is through.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

from bench.workers import cpu_s, rss_mb, write_section
from derms_edge.config import MqttSection
from derms_edge.model import DeviceState, OperatingState, Quality
from derms_edge.northbound.messages import TelemetryMessage
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.northbound.topics import Topics
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.forward import ACK_FLUSH_S, Forwarder
from tests.support.servers import Mosquitto, free_port

DEVICES = 10
TOPICS = Topics("derms", "bench-site")
MAX_BYTES = 64 * 1024 * 1024  # the default buffer_max_mb
HOUR_ROUNDS = 3600
DEFAULT_RATE = 200.0
UNLIMITED_RATE = 100_000.0


def telemetry_round(outbox: Outbox) -> list[Message]:
    """One round of 10 inverters' telemetry with the next sequence numbers."""
    seq = outbox.next_seq(DEVICES)
    now = datetime.now(UTC)
    state = DeviceState(
        w=4211.0,
        var=-12.5,
        va=4211.4,
        pf=0.999,
        v=230.1,
        hz=50.01,
        a=18.3,
        wh_exported=12_750_000.0,
        wh_imported=0.0,
        state=OperatingState.RUNNING,
    )
    return [
        Message(
            "telemetry",
            TOPICS.telemetry(f"inv{i}"),
            TelemetryMessage.of(
                seq=seq + i,
                device=f"inv{i}",
                kind="inverter",
                quality=Quality.OK,
                ts=now,
                state=state,
            ).encode(),
        )
        for i in range(DEVICES)
    ]


def written_bytes() -> int:
    """Bytes this process caused to be written to the storage layer."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


# -- 1 and 2: in this process ----------------------------------------------------------------


def buffering(directory: Path, rounds: int = 3000) -> dict[str, float]:
    outbox = Outbox(directory / "add.sqlite", max_bytes=MAX_BYTES)
    batches = [telemetry_round(outbox) for _ in range(rounds)]
    started = time.perf_counter()
    for batch in batches:
        outbox.add(batch)
    elapsed = time.perf_counter() - started
    outbox.close()
    return {
        "messages_per_s": rounds * DEVICES / elapsed,
        "commits_per_s": rounds / elapsed,
        "ms_per_round": 1000 * elapsed / rounds,
        "payload_bytes": len(batches[0][0].payload),
    }


def bytes_per_hour(directory: Path, *, acknowledged: bool) -> dict[str, float]:
    name = "steady" if acknowledged else "outage"
    outbox = Outbox(directory / f"{name}.sqlite", max_bytes=MAX_BYTES)
    for _ in range(60):  # warm up: the file and its WAL exist
        ids = outbox.add(telemetry_round(outbox))
        outbox.done(MQTT, ids)
    acked: list[int] = []
    commits = 0
    flush_every = round(ACK_FLUSH_S)  # rounds of 1 s
    payload = len(telemetry_round(outbox)[0].payload)
    before = written_bytes()
    started = time.perf_counter()
    for index in range(HOUR_ROUNDS):
        ids = outbox.add(telemetry_round(outbox))
        commits += 1
        if acknowledged:
            acked += ids  # its PUBACKs arrive within milliseconds
            if (index + 1) % flush_every == 0:
                outbox.done(MQTT, acked)
                acked = []
                commits += 1
    elapsed = time.perf_counter() - started
    written = written_bytes() - before
    size = outbox.size_bytes()
    outbox.close()
    return {
        "mb_per_hour": written / 1e6,
        "gb_per_day": written * 24 / 1e9,
        "kb_per_round": written / HOUR_ROUNDS / 1e3,
        "commits_per_hour": commits,
        "payload_mb_per_hour": HOUR_ROUNDS * DEVICES * payload / 1e6,
        "file_mb": size / 1e6,
        "simulated_in_s": elapsed,
    }


# -- 3: the gateway's side of a replay, in its own process -----------------------------------


async def replay_worker(directory: Path, port: int, rate: float, seconds: float) -> None:
    """Buffer an hour, say so, wait for "go", connect and replay with live rounds beside."""
    outbox = Outbox(directory / "backlog.sqlite", max_bytes=MAX_BYTES)
    session = MqttSession(
        MqttSection(host="127.0.0.1", port=port, reconnect_max_s=1),
        client_id="bench-gateway",
        will=Message("state", TOPICS.status, b'{"online": false}', qos=1, retain=True),
    )
    forwarder = Forwarder(outbox, session, replay_rate_per_s=rate)
    outbox.add_listener(forwarder.wake)  # as the gateway wires it (runtime/gateway.py)
    outbox.on_durable(
        functools.partial(asyncio.get_running_loop().call_soon_threadsafe, forwarder.wake)
    )
    session.on_connected(forwarder.reconnected)
    session.on_published(forwarder.published)
    task = asyncio.create_task(forwarder.run())
    idle_mb = rss_mb()[0]
    for index in range(HOUR_ROUNDS):
        outbox.add(telemetry_round(outbox))
        if index % 100 == 0:
            await asyncio.sleep(0)  # the forwarder wakes and finds no connection
    buffered_mb = rss_mb()[0]
    print(
        json.dumps(
            {
                "backlog": outbox.backlog(MQTT),
                "idle_rss_mb": idle_mb,
                "buffered_rss_mb": buffered_mb,
                "file_mb": (directory / "backlog.sqlite").stat().st_size / 1e6,
            }
        ),
        flush=True,
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    session.start()
    await session.connected.wait()  # rows added before this are the backlog
    cpu_before = cpu_s()
    live: dict[int, float] = {}
    started = time.monotonic()
    while time.monotonic() - started < seconds and forwarder.buffered > 0:
        entries = telemetry_round(outbox)
        added = time.monotonic()
        outbox.add(entries)
        live.update((json.loads(e.payload)["seq"], added) for e in entries)
        await asyncio.sleep(1.0)
    await asyncio.sleep(1.0)  # the last live round arrives
    cpu = cpu_s() - cpu_before
    rss, peak = rss_mb()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.stop([])
    outbox.close()
    print(
        json.dumps({"live_added": live, "cpu_s": cpu, "replay_rss_mb": rss, "peak_rss_mb": peak}),
        flush=True,
    )


class Stamps:
    """A subscriber stamping each telemetry seq's arrival."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[int, float] = {}
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_connect = lambda c, *_: c.subscribe(TOPICS.telemetry("+"), qos=1)
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("the subscriber could not subscribe")

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        seq = json.loads(m.payload)["seq"]
        self.arrived.setdefault(seq, time.monotonic())

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def replay(directory: Path, rate: float, seconds: float) -> dict[str, Any]:
    directory.mkdir(parents=True)
    port = free_port()
    argv = [sys.executable, str(SCRIPT), "--worker", str(directory), str(port), str(rate)]
    worker = subprocess.Popen(
        [*argv, "--seconds", str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert worker.stdin is not None and worker.stdout is not None
    buffered = json.loads(worker.stdout.readline())
    broker = Mosquitto(directory / "mosquitto", port=port).start()
    stamps = Stamps(port)
    try:
        worker.stdin.write("go\n")
        worker.stdin.flush()
        result = json.loads(worker.stdout.readline())
        worker.wait(30)
    finally:
        stamps.close()
        broker.stop()
    backlog = sorted(at for seq, at in stamps.arrived.items() if seq <= buffered["backlog"])
    live = result["live_added"]
    latencies = [stamps.arrived[int(s)] - at for s, at in live.items() if int(s) in stamps.arrived]
    during = [
        stamps.arrived[int(s)] - at
        for s, at in live.items()
        if int(s) in stamps.arrived and backlog and at < backlog[-1]
    ]
    span = backlog[-1] - backlog[0] if len(backlog) > 1 else float("nan")
    return {
        **buffered,
        "rate": rate,
        "replayed": len(backlog),
        "replay_s": span,
        "achieved_per_s": (len(backlog) - 1) / span,
        "live_sent": len(live),
        "live_lost": len(live) - len(latencies),
        "live_median_ms": 1000 * statistics.median(latencies),
        "live_max_ms": 1000 * max(latencies),
        "live_during_replay": len(during),
        "live_during_median_ms": 1000 * statistics.median(during) if during else float("nan"),
        "cpu_ms_per_message": 1000 * result["cpu_s"] / max(1, len(backlog) + len(latencies)),
        "replay_rss_mb": result["replay_rss_mb"],
        "peak_rss_mb": result["peak_rss_mb"],
    }


# -- report ----------------------------------------------------------------------------------


def report(figures: dict[str, dict[str, Any]], directory: str) -> str:
    add, steady, outage = figures["add"], figures["steady"], figures["outage"]
    paced, unlimited = figures["paced"], figures["unlimited"]
    rows = [
        (
            "buffering: messages added per second (rounds of 10)",
            f"**{add['messages_per_s']:,.0f}** ({add['commits_per_s']:,.0f} commits/s, "
            f"{add['ms_per_round']:.2f} ms per round)",
        ),
        (
            "written to disk, 10 devices at 1 s, steady (add + PUBACKs marked done)",
            f"**{steady['mb_per_hour']:.0f} MB/h** ({steady['gb_per_day']:.2f} GB/day, "
            f"{steady['kb_per_round']:.1f} kB per round, "
            f"{steady['commits_per_hour']:,} fsynced commits per hour)",
        ),
        (
            "written to disk, 10 devices at 1 s, broker away (add only)",
            f"{outage['mb_per_hour']:.0f} MB/h ({outage['kb_per_round']:.1f} kB per round); "
            f"buffer after 1 h: {outage['file_mb']:.1f} MB",
        ),
        ("the messages themselves, for comparison", f"{steady['payload_mb_per_hour']:.0f} MB/h"),
        ("1-hour backlog (36,000 messages): file", f"{paced['file_mb']:.1f} MB"),
        (
            "gateway RSS: idle / 36,000 buffered / replaying (peak)",
            f"{paced['idle_rss_mb']:.1f} / {paced['buffered_rss_mb']:.1f} / "
            f"{paced['replay_rss_mb']:.1f} ({paced['peak_rss_mb']:.1f}) MB",
        ),
        (
            "replay at `replay_rate_per_s: 200`",
            f"**{paced['achieved_per_s']:.1f} messages/s** achieved "
            f"({paced['replayed']:,} in {paced['replay_s']:.1f} s)",
        ),
        ("live messages during that replay: median / max latency", live(paced)),
        (
            "replay unlimited (100,000/s): the whole hour",
            f"**{unlimited['achieved_per_s']:,.0f} messages/s** ({unlimited['replayed']:,} in "
            f"{unlimited['replay_s']:.1f} s), CPU {unlimited['cpu_ms_per_message']:.3f} ms "
            "per message",
        ),
        ("live messages during the unlimited replay: median / max latency", live(unlimited)),
        (
            "gateway RSS during the unlimited replay (peak)",
            f"{unlimited['replay_rss_mb']:.1f} ({unlimited['peak_rss_mb']:.1f}) MB",
        ),
    ]
    table = "\n".join(f"| {label} | {value} |" for label, value in rows)
    return f"""
## Store and forward: the outbox

Command: `python bench/outbox_bench.py --write docs/benchmarks.md`.
Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, \
{datetime.now(UTC).date().isoformat()}; the outbox in `{directory}`.

Telemetry of 10 inverters ({add["payload_bytes"]:.0f} bytes per message), one round per
transaction, WAL with `synchronous=FULL` (an fsync per commit), as the daemon runs it.

| figure | value |
|---|---|
{table}
"""


def live(figures: dict[str, Any]) -> str:
    return (
        f"{figures['live_during_median_ms']:.1f} / {figures['live_max_ms']:.1f} ms "
        f"({figures['live_during_replay']} messages, {figures['live_lost']} lost)"
    )


def main() -> int:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--dir", type=Path, help="where the outboxes are written")
    top.add_argument("--seconds", type=float, default=20.0, help="of the paced replay")
    top.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    top.add_argument("--worker", nargs=3, metavar=("DIR", "PORT", "RATE"), help=argparse.SUPPRESS)
    args = top.parse_args()
    if args.worker:
        directory, port, rate = args.worker
        asyncio.run(replay_worker(Path(directory), int(port), float(rate), args.seconds))
        return 0
    base = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    add = buffering(base)
    print("buffering:", json.dumps(add), flush=True)
    steady = bytes_per_hour(base, acknowledged=True)
    print("steady:", json.dumps(steady), flush=True)
    outage = bytes_per_hour(base, acknowledged=False)
    print("outage:", json.dumps(outage), flush=True)
    paced = replay(base / "paced", DEFAULT_RATE, args.seconds)
    print("paced:", json.dumps(paced), flush=True)
    unlimited = replay(base / "unlimited", UNLIMITED_RATE, 300.0)
    print("unlimited:", json.dumps(unlimited), flush=True)
    figures = {"add": add, "steady": steady, "outage": outage, "paced": paced}
    write_section(args.write, report(figures | {"unlimited": unlimited}, str(base.parent)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
