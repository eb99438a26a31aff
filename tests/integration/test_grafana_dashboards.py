"""The Grafana dashboards of docs/grafana against what the gateway's InfluxDB sink really writes
to a real VictoriaMetrics: the VictoriaMetrics dashboard's queries run there and return data;
the InfluxDB (Flux) dashboard's queries, which VictoriaMetrics cannot run, name only the
measurements, fields and tags the sink wrote. See docs/grafana/README.md."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from derms_edge.config import InfluxSection
from derms_edge.model import DeviceKind, DeviceState, OperatingState, Quality, Response, Status
from derms_edge.northbound.messages import ResponseMessage, TelemetryMessage
from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.influx import SINK, InfluxSink
from tests.support.victoria import Series, VictoriaMetrics

pytestmark = pytest.mark.integration

DOCS = Path(__file__).parents[2] / "docs" / "grafana"
GATEWAY = "gw-grafana"
DEVICES = {"pv1": DeviceKind.INVERTER, "bat1": DeviceKind.BATTERY, "meter1": DeviceKind.METER}
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
ROUNDS = 6
READING = DeviceState(
    w=-2500.0,
    var=300.0,
    va=2520.0,
    pf=0.99,
    v=231.0,
    hz=50.0,
    a=11.0,
    soc_pct=62.5,
    wh_exported=1000.0,
    wh_imported=2000.0,
    state=OperatingState.RUNNING,
)
FLUX_COLUMNS = {"_time", "_value", "_field", "_measurement"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DOCS / name).read_text())
    return data


def messages() -> list[Message]:
    """Telemetry rounds of every device and a response of every status, as the gateway makes
    them."""
    found = []
    for round_ in range(ROUNDS):
        at = START + timedelta(seconds=10 * round_)
        for offset, (device, kind) in enumerate(DEVICES.items()):
            message = TelemetryMessage.of(
                seq=round_ * len(DEVICES) + offset,
                device=device,
                kind=kind,
                quality=Quality.OK,
                ts=at,
                state=READING,
            )
            found.append(Message("telemetry", f"t/{device}", message.encode()))
    for index, status in enumerate(Status):
        reason = "invalid" if status == Status.REJECTED else None
        response = Response("ev-1", status, START + timedelta(seconds=5 + index), reason)
        found.append(Message("response", "r", ResponseMessage.of(response).encode()))
    return found


@pytest.fixture(scope="module")
def written(victoria: VictoriaMetrics, tmp_path_factory: pytest.TempPathFactory) -> list[Series]:
    """What VictoriaMetrics holds after the gateway's sink wrote `messages` to it."""
    outbox = Outbox(
        tmp_path_factory.mktemp("grafana") / "telemetry.sqlite",
        max_bytes=64 << 20,
        sinks=(MQTT, SINK),
    )
    section = InfluxSection(
        url=victoria.url, token="any", org="utility", bucket="der", flush_interval_ms=50
    )
    sink = InfluxSink(section, outbox, GATEWAY)

    async def deliver() -> None:
        task = asyncio.create_task(sink.run())
        outbox.add(messages())
        sink.wake()
        deadline = time.monotonic() + 10
        while outbox.backlog(SINK) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(deliver())
    outbox.close()
    assert sink.written == ROUNDS * len(DEVICES) + len(Status)
    deadline = time.monotonic() + 15
    while True:  # a new series is searchable up to ~1 s after its write
        series = victoria.export(f'{{__name__=~"der.*", gateway="{GATEWAY}"}}')
        names = {s.name for s in series}
        if {"der_w", "der_soc_pct", "der_response_text"} <= names:
            return series
        if time.monotonic() > deadline:
            raise AssertionError(f"victoria-metrics has {sorted(names)}")
        time.sleep(0.2)


def get(victoria: VictoriaMetrics, path: str, **query: str) -> Any:
    url = f"{victoria.url}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return body["data"]


VARIABLES = {"$gateway": GATEWAY, "$device": "|".join(DEVICES), "$meter": "meter1"}


def filled(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def promql_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, expression) of every panel and annotation."""
    queries = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    return queries


def test_every_victoriametrics_query_returns_the_written_data(
    victoria: VictoriaMetrics, written: list[Series]
) -> None:
    dashboard = load("derms-edge-victoriametrics.json")
    queries = promql_queries(dashboard)
    assert len(queries) == 7
    window = {
        "start": str(START.timestamp() - 1),
        "end": str((START + timedelta(seconds=10 * ROUNDS)).timestamp()),
        "step": "1s",
    }
    for what, expr in queries:
        result = get(victoria, "/api/v1/query_range", query=filled(expr), **window)["result"]
        assert result, f"{what}: {filled(expr)} returned nothing"
        labels = [r["metric"] for r in result]
        if what == "Export at the meter":
            assert [m["device"] for m in labels] == ["meter1"]
        elif what == "State of charge":
            assert [m["device"] for m in labels] == ["bat1"]
        elif what == "Refused":
            assert [m["status"] for m in labels] == ["rejected"]
        elif what == "Events":
            assert {m["status"] for m in labels} == {str(s) for s in Status} - {"rejected"}
        else:
            assert {m["device"] for m in labels} == set(DEVICES), what
    expected = {"gateway": {GATEWAY}, "device": set(DEVICES), "meter": {"meter1"}}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert match is not None, variable["query"]
        selector, label = filled(match[1]), match[2]
        values = get(victoria, f"/api/v1/label/{label}/values", **{"match[]": selector})
        assert set(values) >= expected[variable["name"]], variable["name"]
        if variable["name"] == "meter":
            assert values == ["meter1"]


def flux_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, query) of every panel, annotation and variable."""
    queries = [
        (panel["title"], target["query"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    queries += [
        (a["name"], a["target"]["query"]) for a in dashboard["annotations"]["list"] if "target" in a
    ]
    queries += [
        (v["name"], v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"
    ]
    return queries


def test_every_flux_query_names_only_what_the_gateway_writes(written: list[Series]) -> None:
    dashboard = load("derms-edge.json")
    queries = flux_queries(dashboard)
    assert len(queries) == 10
    named = {m for _w, q in queries for m in re.findall(r'r\._measurement == "([^"]+)"', q)}
    assert named == {"der", "der_response"}

    def measurement_of(series: str) -> str:  # the longest measurement that prefixes it
        return max((m for m in named if series.startswith(f"{m}_")), key=len, default="")

    fields: dict[str, set[str]] = {m: set() for m in named}
    tags: dict[str, set[str]] = {m: set() for m in named}
    for series in written:
        measurement = measurement_of(series.name)
        if measurement:
            fields[measurement].add(series.name.removeprefix(f"{measurement}_"))
            tags[measurement] |= set(series.labels)
    assert {"w", "var", "v", "soc_pct"} <= fields["der"]
    for what, query in queries:
        [measurement] = set(re.findall(r'r\._measurement == "([^"]+)"', query))
        for field in re.findall(r'r\._field == "([^"]+)"', query):
            assert field in fields[measurement], f"{what}: no field {field} in {measurement}"
        used = set(re.findall(r"\br\.(\w+)", query)) - {"_measurement", "_field"}
        used |= set(re.findall(r'\btag: "(\w+)"', query))
        for kept in re.findall(r"keep\(columns: \[([^\]]*)\]\)", query):
            used |= set(re.findall(r'"(\w+)"', kept)) - FLUX_COLUMNS
        assert used, what
        assert used <= tags[measurement], f"{what}: tags {used - tags[measurement]} not written"


def test_the_flux_dashboard_s_structure() -> None:
    dashboard = load("derms-edge.json")
    source = {"type": "influxdb", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        assert panel["datasource"] == source, panel["title"]
        assert [t["datasource"] for t in panel["targets"]] == [source], panel["title"]
        assert "v.timeRangeStart" in panel["targets"][0]["query"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "bucket", "gateway", "device", "meter"}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "influxdb",
    )
    assert variables["device"]["multi"] and variables["device"]["includeAll"]
    for name in ("gateway", "device", "meter"):
        assert variables[name]["datasource"] == source
    annotations = [a for a in dashboard["annotations"]["list"] if "target" in a]
    assert all(a["datasource"] == source for a in annotations)
    shown = {
        s for a in annotations for s in re.findall(r'r\.status == "(\w+)"', a["target"]["query"])
    }
    assert shown == {str(s) for s in Status}  # every response, refused ones apart


def test_the_provisioning_snippets_match_the_dashboards() -> None:
    readme = (DOCS / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)]
    sources = {d["type"]: d for b in blocks for d in b.get("datasources", [])}
    [provider] = [p for b in blocks for p in b.get("providers", [])]
    assert provider["type"] == "file" and provider["options"]["path"] in readme
    assert sources["influxdb"]["jsonData"]["version"] == "Flux"
    for file, kind in (
        ("derms-edge.json", "influxdb"),
        ("derms-edge-victoriametrics.json", "prometheus"),
    ):
        variables = {v["name"]: v for v in load(file)["templating"]["list"]}
        assert variables["datasource"]["query"] == kind
        assert variables["datasource"]["current"]["value"] == sources[kind]["uid"], file
