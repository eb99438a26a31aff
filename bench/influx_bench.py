"""Benchmark: how fast the InfluxDB sink drains a telemetry backlog into a real server.

    python bench/influx_bench.py [--rows 50000] [--batch 500 5000]

A real victoria-metrics (InfluxDB v2 write API) on loopback and the real SQLite outbox holding
``--rows`` telemetry messages (as after an outage: 3 devices, full readings). For each batch
size the sink runs until the outbox has no row left for it; the figure is points accepted per
second, end to end (read from SQLite, converted, written, marked done). Also measured alone:
the conversion (payload to line protocol) and the raw writes of ready lines with
influxdb-client, one request after another, which is the floor the sink cannot beat.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from derms_edge.config import InfluxSection
from derms_edge.model import OperatingState, Quality
from derms_edge.northbound.messages import TelemetryMessage
from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.influx import SINK, InfluxSink, line_of
from tests.support.victoria import VictoriaMetrics

DEVICES = ("pv1", "pv2", "bat1")


def payloads(rows: int, start: datetime) -> list[bytes]:
    return [
        TelemetryMessage(
            ts=start + timedelta(seconds=n // len(DEVICES)),
            seq=n + 1,
            device=DEVICES[n % len(DEVICES)],
            kind="inverter",
            quality=Quality.OK,
            w=4567.0 + n,
            var=-120.5,
            va=4600.0,
            pf=0.99,
            v=230.1,
            hz=50.01,
            a=20.0,
            wh_exported=1.2e7 + n,
            wh_imported=0.0,
            state=OperatingState.RUNNING,
        ).encode()
        for n in range(rows)
    ]


async def drain(sink: InfluxSink, outbox: Outbox) -> float:
    started = time.perf_counter()
    task = asyncio.create_task(sink.run())
    while outbox.backlog(SINK):  # noqa: ASYNC110 (the outbox has no event for "done")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    task.cancel()
    return elapsed


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--rows", type=int, default=50_000)
    args.add_argument("--batch", type=int, nargs="+", default=[500, 5000])
    options = args.parse_args()
    print(f"# {platform.python_version()} on {platform.machine()}, {options.rows} rows")
    with tempfile.TemporaryDirectory() as tmp:
        victoria = VictoriaMetrics(Path(tmp) / "vm").start()
        try:
            start = datetime.now(UTC) - timedelta(days=1)
            data = payloads(options.rows, start)

            began = time.perf_counter()
            lines = [line_of(p, "bench") for p in data]
            convert_s = time.perf_counter() - began
            print(f"conversion: {options.rows / convert_s:,.0f} points/s")

            for size in options.batch:
                section = InfluxSection(
                    url=victoria.url, token="t", org="o", bucket="b", batch_size=size
                )
                outbox = Outbox(Path(tmp) / f"{size}.sqlite", max_bytes=1 << 30, sinks=(MQTT, SINK))
                gateway = f"bench-{size}"
                outbox.add([Message("telemetry", "t", p) for p in data])
                sink = InfluxSink(section, outbox, gateway)
                writer = InfluxSink(section, outbox, "raw")
                began = time.perf_counter()
                for first in range(0, len(lines), size):
                    assert writer.write(lines[first : first + size]).verdict.name == "ACCEPTED"
                raw_s = time.perf_counter() - began
                elapsed = asyncio.run(drain(sink, outbox))
                print(
                    f"batch {size}: sink {options.rows / elapsed:,.0f} points/s "
                    f"({elapsed:.2f} s); raw influxdb-client writes {options.rows / raw_s:,.0f} "
                    f"points/s"
                )
                outbox.close()
            count = sum(
                len(s.values) for s in victoria.export('{__name__="der_seq", gateway=~"bench-.*"}')
            )
            print(f"victoria-metrics holds {count} seq samples of the sink's runs")
        finally:
            victoria.stop()


if __name__ == "__main__":
    main()
