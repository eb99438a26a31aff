"""The InfluxDB sink: payload to point, batching, retries and verdicts, against a scripted server.

The server here is a small HTTP handler on loopback that answers the write endpoint with the
statuses a test scripts (a real InfluxDB cannot run here, and victoria-metrics never refuses a
batch); tests/integration/test_influx.py runs the sink against a real victoria-metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from derms_edge.config import InfluxSection
from derms_edge.model import OperatingState, Quality, Response, Status
from derms_edge.northbound.messages import ResponseMessage, TelemetryMessage
from derms_edge.outbox.influx import (
    FLOAT_FIELDS,
    INTEGER_FIELDS,
    RESPONSE_FIELDS,
    RESPONSE_TAGS,
    SINK,
    STRING_FIELDS,
    TAGS,
    InfluxSink,
    Unconvertible,
    Verdict,
    epoch_ms,
    line_of,
    response_line_of,
    verdict_of,
)
from tests.support.servers import LOOPBACK, free_port

TS = datetime(2025, 6, 1, 12, 0, 0, 123000, tzinfo=UTC)
TS_MS = 1748779200123


def telemetry(seq: int = 7, device: str = "pv1", **values: Any) -> bytes:
    fields: dict[str, Any] = {"quality": Quality.OK, "ts": TS + timedelta(seconds=seq)} | values
    return TelemetryMessage(seq=seq, device=device, kind="inverter", **fields).encode()


# payload -> point


def test_every_telemetry_field_has_a_place_in_the_point() -> None:
    placed = {"ts", *TAGS, *FLOAT_FIELDS, *INTEGER_FIELDS, *STRING_FIELDS}
    assert placed == set(TelemetryMessage.model_fields)


def test_every_response_field_has_a_place_in_the_point() -> None:
    placed = {"ts", *RESPONSE_TAGS, *RESPONSE_FIELDS}
    assert placed == set(ResponseMessage.model_fields)


def response(
    mrid: str, status: Status, reason: str | None = None, detail: str | None = None
) -> bytes:
    return ResponseMessage.of(Response(mrid, status, TS, reason, detail)).encode()


def test_a_response_becomes_one_point_with_a_text_for_annotations() -> None:
    assert response_line_of(response("ev-1", Status.STARTED), "gw-1") == (
        f'der_response,gateway=gw-1,status=started mrid="ev-1",text="ev-1 started" {TS_MS}'
    )
    refused = response("", Status.REJECTED, "invalid", 'start: "soon" is not a time')
    assert response_line_of(refused, "gw-1") == (
        "der_response,gateway=gw-1,status=rejected "
        'detail="start: \\"soon\\" is not a time",reason="invalid",text="- rejected: invalid" '
        f"{TS_MS}"
    )
    with pytest.raises(Unconvertible, match="not a response message"):
        response_line_of(b'{"mrid": "e1"}', "gw-1")


def test_a_full_reading_becomes_one_point() -> None:
    # influxdb-client's Point writes a whole float without ".0" (a=20): still a float field,
    # as any number without the "i" suffix is in line protocol
    payload = TelemetryMessage(
        ts=TS,
        seq=42,
        device="pv1",
        kind="inverter",
        quality=Quality.OK,
        w=4567.0,
        var=-12.5,
        va=4600,
        pf=1,
        v=230.1,
        hz=50.01,
        a=20.0,
        soc_pct=None,
        wh_exported=1.2e16,
        wh_imported=0.0,
        state=OperatingState.THROTTLED,
    ).encode()
    assert line_of(payload, "gw-1") == (
        "der,device=pv1,gateway=gw-1,kind=inverter "
        'a=20,hz=50.01,pf=1,quality="ok",seq=42i,state="throttled",v=230.1,va=4600,'
        "var=-12.5,w=4567,wh_exported=1.2e+16,wh_imported=0 "
        f"{TS_MS}"
    )


def test_an_offline_reading_keeps_seq_and_quality_only() -> None:
    payload = TelemetryMessage.of(
        seq=3, device="bat", kind="battery", quality=Quality.OFFLINE, ts=TS, state=None
    ).encode()
    assert line_of(payload, "gw") == (
        f'der,device=bat,gateway=gw,kind=battery quality="offline",seq=3i {TS_MS}'
    )


def test_absent_fields_and_integers_in_float_fields() -> None:
    payload = json.dumps(
        {
            "ts": "2025-06-01T14:00:00.123+02:00",
            "seq": 1,
            "device": "m",
            "kind": "meter",
            "quality": "stale",
            "w": -3,
        }
    ).encode()
    assert line_of(payload, "gw") == (
        f'der,device=m,gateway=gw,kind=meter quality="stale",seq=1i,w=-3 {TS_MS}'
    )


def test_tag_values_are_escaped() -> None:
    line = line_of(telemetry(device="pv 1,a=b"), "gw")
    assert line.startswith(r"der,device=pv\ 1\,a\=b,gateway=gw,kind=inverter ")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (TS, TS_MS),
        (datetime(2025, 6, 1, 14, 0, 0, 123999, tzinfo=timezone(timedelta(hours=2))), TS_MS),
        (datetime(2025, 6, 1, 12, 0, 0, 123000), TS_MS),  # no zone: UTC
        (datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), -1),
    ],
)
def test_timestamps_are_exact_milliseconds(moment: datetime, expected: int) -> None:
    assert epoch_ms(moment) == expected


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xff not json", "not a telemetry message"),
        (b'{"online": true}', "ts: Field required"),
        (telemetry()[:-1] + b',"extra":1}', "extra: Extra inputs are not permitted"),
        (telemetry().replace(b'"inverter"', b'"toaster"'), "kind"),
    ],
)
def test_what_is_not_telemetry_is_unconvertible(payload: bytes, why: str) -> None:
    with pytest.raises(Unconvertible, match=why):
        line_of(payload, "gw")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (204, Verdict.ACCEPTED),
        (200, Verdict.ACCEPTED),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (429, Verdict.RETRY),
        (408, Verdict.RETRY),
        (401, Verdict.RETRY),  # a wrong token: the gateway's problem, not the batch's
        (403, Verdict.RETRY),
        (404, Verdict.RETRY),  # no such bucket (yet)
        (400, Verdict.REJECTED),  # bad line protocol, field type conflict
        (413, Verdict.TOO_LARGE),  # over the server's request size limit: halved
        (422, Verdict.REJECTED),  # outside the bucket's retention
    ],
)
def test_verdicts(status: int, verdict: Verdict) -> None:
    assert verdict_of(status) is verdict


# the sink, against a fake outbox and a scripted server


@dataclass(frozen=True, slots=True)
class FakeRow:
    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass
class FakeOutbox:
    """The outbox's pending/done contract, in memory; records every call."""

    rows: list[FakeRow] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    pending_calls: int = 0

    def add(self, payloads: Sequence[bytes], kind: str = "telemetry") -> None:
        start = len(self.rows) + 1
        self.rows += [FakeRow(start + i, kind, "t", p) for i, p in enumerate(payloads)]

    def pending(self, sink: str, limit: int, after_id: int = 0) -> list[FakeRow]:
        assert sink == SINK
        self.pending_calls += 1
        done = set(self.finished)
        return [r for r in self.rows if r.id > after_id and r.id not in done][:limit]

    def done(self, sink: str, ids: Sequence[int]) -> None:
        assert sink == SINK
        assert not set(ids) & set(self.finished), "marked done twice"
        self.finished += ids


class ScriptedInflux:
    """An HTTP server whose write endpoint answers the scripted statuses, then 204."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.script: list[int] = []
        self.requests: list[tuple[str, list[str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                outer.requests.append((self.path, body.split("\n")))
                status = outer.script.pop(0) if outer.script else 204
                reply = b""
                if status != 204:
                    reply = json.dumps({"code": "x", "message": f"scripted {status}"}).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def batches(self) -> list[list[str]]:
        return [lines for _, lines in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def influx() -> Iterator[ScriptedInflux]:
    server = ScriptedInflux()
    yield server
    server.close()


def sink_for(
    url: str, outbox: FakeOutbox, batch_size: int = 3, flush_interval_ms: int = 20
) -> InfluxSink:
    section = InfluxSection(
        url=url,
        token="secret",
        org="utility",
        bucket="der",
        batch_size=batch_size,
        flush_interval_ms=flush_interval_ms,
    )
    return InfluxSink(section, outbox, "gw", first_retry_s=0.02, max_retry_s=0.1)


async def run_until(sink: InfluxSink, condition: Any, timeout_s: float = 10.0) -> None:
    task = asyncio.create_task(sink.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_full_batches_go_at_once_and_the_rest_after_the_interval(influx: ScriptedInflux) -> None:
    outbox = FakeOutbox()
    outbox.add([telemetry(seq) for seq in range(7)])
    sink = sink_for(influx.url, outbox, batch_size=3, flush_interval_ms=200)

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(0.1)
        assert [len(b) for b in influx.batches()] == [3, 3]  # the 7th waits for more
        await asyncio.sleep(0.2)
        assert [len(b) for b in influx.batches()] == [3, 3, 1]
        task.cancel()

    asyncio.run(scenario())
    assert outbox.finished == list(range(1, 8))
    assert sink.written == 7
    path, first = influx.requests[0]
    assert path.startswith("/api/v2/write?")
    assert "bucket=der" in path and "org=utility" in path and "precision=ms" in path
    assert first == [line_of(telemetry(seq), "gw") for seq in range(3)]


def test_wake_brings_new_rows_in_without_rereading_the_batch(influx: ScriptedInflux) -> None:
    outbox = FakeOutbox()
    sink = sink_for(influx.url, outbox, batch_size=4, flush_interval_ms=60_000)

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(0.05)
        for seq in range(4):
            outbox.add([telemetry(seq)])
            sink.wake()
            await asyncio.sleep(0.01)
        async with asyncio.timeout(5):
            while len(outbox.finished) < 4:
                await asyncio.sleep(0.005)
        task.cancel()

    asyncio.run(scenario())
    assert [len(b) for b in influx.batches()] == [4]  # the batch filled: no wait for the interval
    assert outbox.pending_calls <= 6  # the first look, one per wake, one after the write


def test_an_outage_keeps_the_batch_until_the_server_takes_it(
    influx: ScriptedInflux, caplog: pytest.LogCaptureFixture
) -> None:
    influx.script = [503, 500, 429, 401]
    outbox = FakeOutbox()
    outbox.add([telemetry(seq) for seq in range(2)])
    sink = sink_for(influx.url, outbox)
    with caplog.at_level(logging.DEBUG, logger="derms_edge.outbox.influx"):
        asyncio.run(run_until(sink, lambda: len(outbox.finished) == 2))
    batches = influx.batches()
    assert len(batches) == 5 and all(b == batches[0] for b in batches)  # the same batch, resent
    assert outbox.finished == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the outage, once
    assert "HTTP 503: scripted 503" in warnings[0]
    recovered = [r.getMessage() for r in caplog.records if "again after" in r.getMessage()]
    assert len(recovered) == 1 and "4 failed writes" in recovered[0]


def test_a_server_that_is_not_there_yet() -> None:
    port = free_port()
    outbox = FakeOutbox()
    outbox.add([telemetry(1)])
    sink = sink_for(f"http://{LOOPBACK}:{port}", outbox)
    later: list[ScriptedInflux] = []

    async def scenario() -> None:
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(0.3)  # several refused connections
        assert outbox.finished == []
        later.append(ScriptedInflux(port))
        async with asyncio.timeout(5):
            while not outbox.finished:
                await asyncio.sleep(0.005)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        for server in later:
            server.close()
    assert later[0].batches() == [[line_of(telemetry(1), "gw")]]


def test_a_batch_refused_for_good_is_dropped_and_the_queue_moves_on(
    influx: ScriptedInflux, caplog: pytest.LogCaptureFixture
) -> None:
    influx.script = [400]
    outbox = FakeOutbox()
    outbox.add([telemetry(seq) for seq in range(5)])
    sink = sink_for(influx.url, outbox)
    with caplog.at_level(logging.INFO, logger="derms_edge.outbox.influx"):
        asyncio.run(run_until(sink, lambda: len(outbox.finished) == 5))
    assert [len(b) for b in influx.batches()] == [3, 2]
    assert (sink.written, sink.rejected) == (2, 3)
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "rejected 3 points for good (HTTP 400: scripted 400)" in error


def test_a_batch_over_the_size_limit_is_sent_in_halves_until_it_fits(
    influx: ScriptedInflux, caplog: pytest.LogCaptureFixture
) -> None:
    # 8 points: too large; 4: too large; 2 + 2, then the other 4 whole
    influx.script = [413, 413]
    outbox = FakeOutbox()
    outbox.add([telemetry(seq) for seq in range(8)])
    sink = sink_for(influx.url, outbox, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="derms_edge.outbox.influx"):
        asyncio.run(run_until(sink, lambda: len(outbox.finished) == 8))
    assert [len(b) for b in influx.batches()] == [8, 4, 2, 2, 4]
    assert [line for batch in influx.batches()[2:] for line in batch] == [
        line_of(telemetry(seq), "gw") for seq in range(8)
    ]
    assert (sink.written, sink.rejected) == (8, 0)
    assert not caplog.records


def test_a_single_point_over_the_size_limit_is_dropped_alone(influx: ScriptedInflux) -> None:
    influx.script = [413, 413]  # 2 points: too large; the first alone too: dropped
    outbox = FakeOutbox()
    outbox.add([telemetry(seq) for seq in range(2)])
    sink = sink_for(influx.url, outbox, batch_size=2)
    asyncio.run(run_until(sink, lambda: len(outbox.finished) == 2))
    assert [len(b) for b in influx.batches()] == [2, 1, 1]
    assert (sink.written, sink.rejected) == (1, 1)


def test_rows_that_cannot_be_read_are_skipped_and_marked_done(
    influx: ScriptedInflux, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = FakeOutbox()
    outbox.add([telemetry(1), b"garbage", telemetry(2)])
    outbox.add([b'{"mrid": "e1"}', response("e1", Status.RECEIVED)], kind="response")
    with caplog.at_level(logging.WARNING, logger="derms_edge.outbox.influx"):
        asyncio.run(run_until(sink_for(influx.url, outbox), lambda: len(outbox.finished) == 5))
    assert [line for batch in influx.batches() for line in batch] == [
        *(line_of(telemetry(seq), "gw") for seq in (1, 2)),
        response_line_of(response("e1", Status.RECEIVED), "gw"),
    ]
    warnings = [r.getMessage() for r in caplog.records]
    assert "outbox row 2 dropped, not a telemetry message" in warnings[0]
    assert "outbox row 4 dropped, not a response message" in warnings[1]


def test_only_rejects_left_means_no_request(influx: ScriptedInflux) -> None:
    outbox = FakeOutbox()
    outbox.add([b"garbage"])
    asyncio.run(run_until(sink_for(influx.url, outbox), lambda: outbox.finished == [1]))
    assert influx.requests == []


def test_cancelling_during_an_outage_leaves_the_rows_in_the_outbox(influx: ScriptedInflux) -> None:
    influx.script = [503] * 1000
    outbox = FakeOutbox()
    outbox.add([telemetry(1)])
    asyncio.run(run_until(sink_for(influx.url, outbox), lambda: len(influx.requests) >= 3))
    assert outbox.finished == []


LAZY = """
import sys
from derms_edge.config import InfluxSection
from derms_edge.outbox.influx import InfluxSink
print("influxdb_client" in sys.modules)
section = InfluxSection(url="http://127.0.0.1:1", token="t", org="o", bucket="b")
InfluxSink(section, None, "gw")
print("influxdb_client" in sys.modules)
"""


def test_influxdb_client_is_imported_only_when_a_sink_is_built() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["False", "True"]
