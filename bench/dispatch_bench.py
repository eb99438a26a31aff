"""Benchmark: dispatch latency, from an MQTT publish to the register write at the device.

    python bench/dispatch_bench.py [--count 1000] [--runs 3] [--write docs/benchmarks.md]

A real Mosquitto, the HIL rig's IEEE 1547 PV inverter (in this process, so the moment a
write reaches the simulated device is stamped on the same monotonic clock) and the real
daemon (`derms-edge run`, its own process). Each dispatch is a new event from the DSO with
a new curtailment value for the inverter; it is timed from just before the publish to the
write of 704 WMaxLimPct arriving at the simulated device. The next dispatch is published
once the gateway has answered this one (its ``started`` response arrived): each is timed on
its own, not queued behind the previous one's read-back, storing and answering.

Each run measures both broker settings: Mosquitto's default `set_tcp_nodelay false` and
true (Nagle on the broker's sockets can hold a small forward behind a delayed ACK of the
gateway's, ~40 ms). With ``--runs`` above 1, the headline figures (median and p99, and
their ratios to the floor's) are summed up as min-median-max over the runs.

The floor, measured in the same run: the raw transport round trip the dispatch cannot
avoid, i.e. one MQTT publish-to-receive through the same broker plus one raw pymodbus
write of the same register to the same simulated device, sample by sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil.devices import SimulatedDevice
from hil.image import PointChange, SunSpecImage
from hil.rig import RigThread
from hil.spec import RigSpec
from tests.support.gateway import start_gateway, write_config
from tests.support.servers import Mosquitto, Process

ROOT = "derms/v1/bench-site"


class WriteStamps:
    """Stamps every client write that reaches the simulated device, by the value written."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.lock = threading.Condition()
        self.seen: dict[int, float] = {}
        assert isinstance(device.image, SunSpecImage)
        address = device.image.address(704, "WMaxLimPct")
        image = device.image
        original = image.apply_write

        def apply_write(start: int, values: Sequence[int]) -> list[PointChange]:
            if start <= address < start + len(values):
                with self.lock:
                    self.seen[int(values[address - start])] = time.monotonic()
                    self.lock.notify_all()
            return original(start, values)

        image.apply_write = apply_write  # type: ignore[method-assign]

    def wait(self, raw: int, timeout_s: float = 10.0) -> float:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while raw not in self.seen:
                if not self.lock.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"no write of {raw} arrived")
            return self.seen.pop(raw)


def bench_client() -> paho.Client:
    """A paho client with TCP_NODELAY: the bench's own Nagle must not hold a publish that
    follows its PUBACK of a response behind the broker's delayed ACK."""
    client = paho.Client(CallbackAPIVersion.VERSION2)

    def on_socket_open(_client: paho.Client, _userdata: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = on_socket_open
    return client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def mqtt_floor(port: int, count: int) -> list[float]:
    """One-way publish-to-receive through the broker, QoS 1, same payload size."""
    got = threading.Event()
    received: list[float] = []
    sub = bench_client()

    def on_message(*_: Any) -> None:
        received.append(time.monotonic())
        got.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("bench/floor", qos=1)
    sub.loop_start()
    pub = bench_client()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    time.sleep(0.5)
    samples = []
    payload = b"x" * 160
    for _ in range(count):
        got.clear()
        t0 = time.monotonic()
        pub.publish("bench/floor", payload, qos=1)
        got.wait(5)
        samples.append(received[-1] - t0)
    for client in (pub, sub):
        client.disconnect()
        client.loop_stop()
    return samples


def modbus_floor(port: int, address: int, stamps: WriteStamps, count: int) -> list[float]:
    """One raw pymodbus write of WMaxLimPct (enable left off) until it reaches the device."""

    async def run() -> list[float]:
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        samples = []
        for i in range(count):
            raw = 100 + i % 400
            t0 = time.monotonic()
            await client.write_registers(address, [raw], device_id=1)
            samples.append(await asyncio.to_thread(stamps.wait, raw) - t0)
        client.close()
        return samples

    return asyncio.run(run())


def measure(
    count: int, *, nodelay: bool, daemon: Callable[[Path, Path], Process] = start_gateway
) -> Run:
    """Dispatch latencies and the floors, through a fresh broker and gateway; ``daemon``
    starts the gateway (bench/dispatch_trace.py starts it with its stamps)."""
    work = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    broker = Mosquitto(work)
    if nodelay:  # Mosquitto's default (false) lets Nagle hold a reply behind a delayed ACK
        broker.config.write_text(broker.config.read_text() + "set_tcp_nodelay true\n")
    broker.start()
    spec = RigSpec.model_validate(
        {"devices": [{"id": "inv1", "type": "pv_1547", "w_rtg": 10000, "tau_s": 0}]}
    )
    with RigThread(spec) as rig:
        device = rig.call(lambda r: r.device("inv1"))
        stamps = WriteStamps(device)
        config = write_config(
            work / "bench.yaml",
            gateway={"id": "bench-site", "state_dir": str(work / "state")},
            mqtt={"port": broker.port},
            devices=[
                {
                    "id": "inv1",
                    "kind": "inverter",
                    "protocol": "sunspec",
                    "host": "127.0.0.1",
                    "port": rig.port("inv1"),
                    "poll_interval_s": 1.0,
                }
            ],
            telemetry={"interval_s": 5},
            control={
                "revert_s": 0,
                "dispatcher_timeout_s": 86400,
                # the bench dispatches back to back, far over a role's default 20/s
                "rate_limit": {"per_s": 100_000, "burst": 1_000_000},
            },
        )
        gateway = daemon(config, work / "gateway.log")
        client = bench_client()
        started: set[str] = set()
        answered = threading.Condition()

        def on_response(*args: Any) -> None:
            response = json.loads(args[-1].payload)
            if response.get("status") == "started":
                with answered:
                    started.add(response["mrid"])
                    answered.notify_all()

        client.on_message = on_response
        client.connect("127.0.0.1", broker.port)
        client.subscribe(f"{ROOT}/responses", qos=1)
        client.loop_start()
        time.sleep(4.0)  # the gateway connected and read the inverter
        latencies: list[float] = []
        sent: list[float] = []
        try:
            for i in range(count):
                pct = 10 + (i % 80)  # a new value every time, WMaxLimPct_SF -1: raw = 10 x %
                event = {
                    "mrid": f"bench-{i}",
                    "devices": ["inv1"],
                    "duration_s": 86400,
                    "creation_time": datetime.now(UTC).isoformat(),
                    "control": {"max_w_pct": pct},
                }
                t0 = time.monotonic()
                client.publish(f"{ROOT}/controls/dso", json.dumps(event), qos=1)
                latencies.append(stamps.wait(pct * 10) - t0)
                sent.append(t0)
                with answered:  # the gateway is done with this one
                    if not answered.wait_for(lambda i=i: f"bench-{i}" in started, 10):
                        raise TimeoutError(f"bench-{i} was not answered started")
        finally:
            client.disconnect()
            client.loop_stop()
            gateway.stop()
        assert isinstance(device.image, SunSpecImage)
        address = device.image.address(704, "WMaxLimPct")
        mqtt = mqtt_floor(broker.port, count)
        modbus = modbus_floor(rig.port("inv1"), address, stamps, count)
    broker.stop()
    return Run(latencies, mqtt, modbus, sent)


@dataclass(frozen=True)
class Run:
    """One broker setting measured once: latencies and floors, s."""

    latencies: list[float]
    mqtt: list[float]
    modbus: list[float]
    sent: list[float]
    """When each dispatch was published (monotonic clock, s)."""

    @property
    def floor(self) -> list[float]:
        return [a + b for a, b in zip(self.mqtt, self.modbus, strict=True)]

    def headline(self) -> dict[str, float]:
        """Median and p99 (ms) of the dispatches and the floor, and their ratios."""
        floor = self.floor
        figures = {
            "median ms": statistics.median(self.latencies) * 1e3,
            "p99 ms": percentile(self.latencies, 0.99) * 1e3,
            "floor median ms": statistics.median(floor) * 1e3,
            "floor p99 ms": percentile(floor, 0.99) * 1e3,
        }
        figures["median / floor median"] = figures["median ms"] / figures["floor median ms"]
        figures["p99 / floor p99"] = figures["p99 ms"] / figures["floor p99 ms"]
        return figures


AIMS = {False: (3, 6), True: (2, 4)}
"""The aims (median ratio, p99 ratio) by set_tcp_nodelay."""


def setting(nodelay: bool) -> str:
    return "true" if nodelay else "false (Mosquitto's default)"


def table(run: Run, nodelay: bool, label: str) -> list[str]:
    """One run of one broker setting as a Markdown table."""
    latencies = run.latencies
    tenth = max(1, len(latencies) // 10)
    rows = [
        ("gateway: publish to register write", latencies),
        (f"gateway: first {tenth} dispatches", latencies[:tenth]),
        (f"gateway: last {tenth} dispatches", latencies[-tenth:]),
        ("floor: MQTT publish-to-receive", run.mqtt),
        ("floor: one raw pymodbus write", run.modbus),
        ("floor: MQTT + one Modbus write", run.floor),
    ]
    figures = run.headline()
    median_aim, p99_aim = AIMS[nodelay]
    return [
        f"#### Broker with `set_tcp_nodelay {setting(nodelay)}`{label}",
        "",
        "| path | median ms | p99 ms |",
        "|---|---|---|",
        *(
            f"| {name} | {statistics.median(v) * 1e3:.2f} | {percentile(v, 0.99) * 1e3:.2f} |"
            for name, v in rows
        ),
        "",
        f"Dispatch / floor: median **{figures['median / floor median']:.2f}x** "
        f"(aim: within {median_aim}x), p99 **{figures['p99 / floor p99']:.2f}x** "
        f"(aim: within {p99_aim}x).",
        "",
    ]


def summary(runs: dict[bool, list[Run]]) -> list[str]:
    """min-median-max over the runs of each headline figure, per broker setting."""
    lines = [
        "| broker `set_tcp_nodelay` | figure | min | median | max |",
        "|---|---|---|---|---|",
    ]
    for nodelay, measured in runs.items():
        heads = [run.headline() for run in measured]
        for name in heads[0]:
            values = [h[name] for h in heads]
            unit = "x" if "/" in name else ""
            lines.append(
                f"| {'true' if nodelay else 'false'} | {name} | {min(values):.2f}{unit} | "
                f"{statistics.median(values):.2f}{unit} | {max(values):.2f}{unit} |"
            )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="runs of both broker settings")
    parser.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    args = parser.parse_args()
    runs: dict[bool, list[Run]] = {False: [], True: []}
    tables: list[str] = []
    for index in range(args.runs):
        label = f", run {index + 1} of {args.runs}" if args.runs > 1 else ""
        for nodelay in (False, True):
            run = measure(args.count, nodelay=nodelay)
            runs[nodelay].append(run)
            measured = table(run, nodelay, label)
            tables += measured
            print("\n".join(measured), file=sys.stderr, flush=True)
    lines = [
        "## Dispatch latency: MQTT publish to the register write at the device",
        "",
        f"Command: `python bench/dispatch_bench.py --count {args.count} --runs {args.runs}`.",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        f"{args.count} dispatches a run, each a new DSO event with a new `max_w_pct` for an "
        "IEEE 1547 PV inverter on the HIL rig, timed from before the publish to the arrival "
        "of the 704 `WMaxLimPct` write at the simulated device (same monotonic clock), the "
        "next published once the gateway answered `started`; with Mosquitto as installed "
        "and with `set_tcp_nodelay true`.",
        "",
        f"### Summary: min-median-max over {args.runs} run(s)",
        "",
        *summary(runs),
        "### Each run",
        "",
        *tables,
    ]
    print("\n".join(lines))
    if args.write is not None:
        with args.write.open("a", encoding="utf-8") as doc:
            doc.write("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
