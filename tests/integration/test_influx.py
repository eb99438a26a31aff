"""The InfluxDB sink against a real server that speaks the InfluxDB v2 write API (victoria-metrics),
fed from the real outbox: points arrive as written, and an outage of the server loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from derms_edge.config import InfluxSection
from derms_edge.model import OperatingState, Quality
from derms_edge.northbound.messages import TelemetryMessage
from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.influx import SINK, InfluxSink, epoch_ms
from tests.support.victoria import Series, VictoriaMetrics

pytestmark = pytest.mark.integration

START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def outbox_in(directory: Path) -> Outbox:
    return Outbox(directory / "telemetry.sqlite", max_bytes=64 << 20, sinks=(MQTT, SINK))


def sink_for(victoria: VictoriaMetrics, outbox: Outbox, gateway: str) -> InfluxSink:
    section = InfluxSection(
        url=victoria.url, token="any", org="utility", bucket="der", flush_interval_ms=50
    )
    sink = InfluxSink(section, outbox, gateway, first_retry_s=0.05, max_retry_s=0.5)
    outbox.add_listener(sink.wake)
    return sink


def reading(seq: int, device: str, kind: str = "inverter", **values: Any) -> Message:
    fields: dict[str, Any] = {"quality": Quality.OK, "ts": START + timedelta(seconds=seq)}
    message = TelemetryMessage(seq=seq, device=device, kind=kind, **(fields | values))
    return Message("telemetry", f"der/gw/telemetry/{device}", message.encode())


def series_of(victoria: VictoriaMetrics, gateway: str) -> dict[tuple[str, str], Series]:
    """(field, device) -> the series, for one gateway."""
    return {
        (s.name.removeprefix("der_"), s.labels["device"]): s
        for s in victoria.export(f'{{__name__=~"der_.*", gateway="{gateway}"}}')
    }


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


Found = dict[tuple[str, str], Series]


def eventually_series(
    victoria: VictoriaMetrics, gateway: str, check: Callable[[Found], bool], timeout_s: float = 15.0
) -> Found:
    """The gateway's series once ``check`` holds (a new series shows up to ~1 s late)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = series_of(victoria, gateway)
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"victoria-metrics has, after {timeout_s} s: {sorted(found)}")
        time.sleep(0.2)


def test_points_arrive_with_their_tags_fields_and_timestamps(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    outbox = outbox_in(tmp_path)
    sink = sink_for(victoria, outbox, "gw-points")
    entries = [
        reading(1, "pv1", w=4567.0, var=-120.5, v=230.1, hz=50.01, state=OperatingState.RUNNING),
        reading(2, "pv1", w=4000.0, var=0.0, v=229.9, hz=49.99, state=OperatingState.THROTTLED),
        reading(3, "bat 2,x=y", "battery", w=-1500.0, soc_pct=55.5),
        Message("response", "der/gw/responses", b'{"mrid": "e1", "status": "received"}'),
    ]

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        outbox.add(entries)
        await until(lambda: outbox.backlog(SINK) == 0, 10, "the sink delivers its 3 rows")
        task.cancel()

    asyncio.run(scenario())
    assert sink.written == 3
    assert outbox.backlog(MQTT) == 4  # the other sink's rows are untouched
    found = eventually_series(victoria, "gw-points", lambda f: ("soc_pct", "bat 2,x=y") in f)
    ts = [epoch_ms(START + timedelta(seconds=s)) for s in (1, 2, 3)]
    w = found["w", "pv1"]
    assert w.labels == {"gateway": "gw-points", "device": "pv1", "kind": "inverter"}
    assert (w.values, w.timestamps_ms) == ([4567.0, 4000.0], ts[:2])
    assert found["var", "pv1"].values == [-120.5, 0.0]
    assert found["hz", "pv1"].values == [50.01, 49.99]
    assert found["seq", "pv1"].values == [1, 2]
    assert found["w", "bat 2,x=y"].labels["kind"] == "battery"
    assert (found["soc_pct", "bat 2,x=y"].values, found["soc_pct", "bat 2,x=y"].timestamps_ms) == (
        [55.5],
        ts[2:],
    )
    # null fields are not written; strings arrive (victoria-metrics stores them as 0)
    assert ("soc_pct", "pv1") not in found
    assert ("v", "bat 2,x=y") not in found
    assert found["state", "pv1"].timestamps_ms == ts[:2]
    assert ("state", "bat 2,x=y") not in found
    assert found["quality", "bat 2,x=y"].timestamps_ms == ts[2:]


def test_a_server_outage_loses_nothing_and_writes_nothing_twice(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    devices = ("pv1", "pv2", "bat1")
    outbox = outbox_in(tmp_path)
    sink = sink_for(victoria, outbox, "gw-outage")
    seq = 0

    def telemetry_round() -> None:
        nonlocal seq
        seq += 1
        outbox.add([reading(seq, device) for device in devices])

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        for _ in range(20):
            telemetry_round()
            await asyncio.sleep(0.01)
        await until(lambda: sink.written == 60, 10, "60 points written before the outage")

        victoria.stop()
        for _ in range(100):  # 5 s of telemetry while the server is away
            telemetry_round()
            await asyncio.sleep(0.05)
        assert sink.written == 60
        assert outbox.backlog(SINK) == 300  # rows accumulate in the buffer

        victoria.start()
        for _ in range(20):
            telemetry_round()
            await asyncio.sleep(0.01)
        await until(lambda: outbox.backlog(SINK) == 0, 15, "the backlog is written")
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        if victoria.process is None:
            victoria.start()
    assert sink.written == 3 * seq == 420
    found = eventually_series(
        victoria,
        "gw-outage",
        lambda f: all(("seq", d) in f and len(f["seq", d].values) >= seq for d in devices),
    )
    expected_ts = [epoch_ms(START + timedelta(seconds=s)) for s in range(1, seq + 1)]
    for device in devices:
        written = found["seq", device]
        assert written.values == list(range(1, seq + 1))  # every one, once
        assert written.timestamps_ms == expected_ts
