"""The InfluxDB sink: telemetry and response rows of the outbox written as points, batched,
until accepted.

One point per telemetry message (measurement ``der``):

- tags ``gateway``, ``device``, ``kind``: who said it, so one series is one device's history;
- float fields ``w``, ``var``, ``va``, ``pf``, ``v``, ``hz``, ``a``, ``soc_pct``, ``wh_exported``,
  ``wh_imported`` (SI units, as on the telemetry topic; a null value is left out);
- integer field ``seq`` and string fields ``quality`` and ``state`` (per-reading values, not
  identity: as tags they would split a device's history whenever they change);
- the reading's timestamp, in milliseconds.

And one point per response (measurement ``der_response``), so that a dashboard can show events
and their answers on the same time axis as the readings:

- tags ``gateway`` and ``status`` (``received``, ``scheduled``, ``started``, ``rejected`` …);
- string fields ``text`` (always: ``{mrid} {status}``, with ``: {reason}`` when there is one; a
  response without an mrid says ``-``), and ``mrid``, ``reason`` and ``detail`` when present;
- the response's timestamp, in milliseconds.

Rows leave the outbox only when the server has accepted them (HTTP 2xx). Unreachable, 5xx, 429,
408, and the refusals that concern the gateway's credentials or bucket rather than the batch
(401, 403, 404) are retried with capped, jittered exponential backoff, so an outage or a
misconfiguration loses nothing while the buffer lasts. Any other 4xx says this batch can never
be written: it is logged with the server's message and marked done, so it cannot block the queue.
A row that cannot be read as its kind of message is logged and marked done for the same reason.

``influxdb_client`` is imported by ``InfluxSink()`` and ``line_of`` only: a gateway without
InfluxDB never loads it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol, TypeVar, cast

from pydantic import ValidationError

from derms_edge.aio import wait_set
from derms_edge.backoff import backoff_delay
from derms_edge.config import InfluxSection
from derms_edge.errors import Unconvertible
from derms_edge.northbound.messages import ResponseMessage, TelemetryMessage
from derms_edge.schema import problems

log = logging.getLogger(__name__)

SINK: Final = "influx"
"""This sink's name in the outbox."""
MEASUREMENT: Final = "der"
TAGS: Final = ("device", "kind")
"""Tags taken from the message; ``gateway`` is added from the configuration."""
FLOAT_FIELDS: Final = (
    "w",
    "var",
    "va",
    "pf",
    "v",
    "hz",
    "a",
    "soc_pct",
    "wh_exported",
    "wh_imported",
)
INTEGER_FIELDS: Final = ("seq",)
STRING_FIELDS: Final = ("quality", "state")
RESPONSE_MEASUREMENT: Final = "der_response"
RESPONSE_TAGS: Final = ("status",)
RESPONSE_FIELDS: Final = ("mrid", "reason", "detail")
"""String fields of a response point besides ``text``, each written when not null."""

WRITE_TIMEOUT_MS: Final = 10_000
"""One write request, connect and response together."""
FIRST_RETRY_S: Final = 1.0
MAX_RETRY_S: Final = 30.0
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_MAX_MESSAGE: Final = 500


class Row(Protocol):
    """What the sink reads of an outbox row."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class Source(Protocol):
    """The outbox as this sink sees it: rows not yet done by a sink, oldest first."""

    def pending(self, sink: str, limit: int, after_id: int = 0) -> Sequence[Row]: ...
    def done(self, sink: str, ids: Sequence[int]) -> None: ...


_M = TypeVar("_M", TelemetryMessage, ResponseMessage)


def line_of(payload: bytes, gateway: str) -> str:
    """The line-protocol point of one telemetry payload (``TelemetryMessage`` JSON), written
    by influxdb-client's own `Point` (its escaping, its number formats)."""
    message = _read(TelemetryMessage, payload, "telemetry")
    point = _point_of(MEASUREMENT, gateway, message, TAGS)
    for name in FLOAT_FIELDS:
        value = getattr(message, name)
        if value is not None:
            point.field(name, float(value))  # not finite: Point leaves it out
    for name in INTEGER_FIELDS:
        point.field(name, int(getattr(message, name)))
    return _line(point, message, STRING_FIELDS)


def response_line_of(payload: bytes, gateway: str) -> str:
    """The line-protocol point of one response payload (``ResponseMessage`` JSON)."""
    message = _read(ResponseMessage, payload, "response")
    point = _point_of(RESPONSE_MEASUREMENT, gateway, message, RESPONSE_TAGS)
    text = f"{message.mrid or '-'} {message.status}"
    point.field("text", f"{text}: {message.reason}" if message.reason else text)
    return _line(point, message, RESPONSE_FIELDS)


def _read(model: type[_M], payload: bytes, what: str) -> _M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise Unconvertible(f"not a {what} message: {problems(exc)[0]}") from exc


def _point_of(measurement: str, gateway: str, message: object, tags: tuple[str, ...]) -> Any:
    """A new `Point` (influxdb_client's: unannotated, hence Any) with its tags."""
    from influxdb_client.client.write.point import Point

    point = cast(Callable[[str], Any], Point)(measurement).tag("gateway", gateway)
    for name in tags:
        point.tag(name, str(getattr(message, name)))
    return point


def _line(point: Any, message: TelemetryMessage | ResponseMessage, strings: tuple[str, ...]) -> str:
    """The point with its string fields (those not null) and time, in line protocol."""
    for name in strings:
        value = getattr(message, name)
        if value is not None:
            point.field(name, str(value))
    point.time(epoch_ms(message.ts), "ms")
    line: str = point.to_line_protocol()
    return line


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since 1970 UTC, exactly (a moment without a zone is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


_CONVERTERS: Final[dict[str, Callable[[bytes, str], str]]] = {
    "telemetry": line_of,
    "response": response_line_of,
}
"""The point of an outbox row, by its kind."""


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    """The server is away or refuses the gateway: the same batch is sent again later."""
    REJECTED = "rejected"
    """The server refuses this batch for good: it is dropped."""
    TOO_LARGE = "too large"
    """The request is over the server's size limit (413): its halves are sent instead."""


_RETRIED_4XX: Final = frozenset({401, 403, 404, 408, 429})


def verdict_of(status: int) -> Verdict:
    """What an HTTP status of the write endpoint means for the batch."""
    if 200 <= status < 300:
        return Verdict.ACCEPTED
    if status == 413:
        return Verdict.TOO_LARGE
    if status in _RETRIED_4XX or status >= 500 or status < 400:
        return Verdict.RETRY
    return Verdict.REJECTED


@dataclass(frozen=True, slots=True)
class WriteResult:
    verdict: Verdict
    detail: str = ""
    """For people: the server's status and message, or the transport error."""
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Point:
    """An outbox row as this sink writes it."""

    id: int
    line: str | None
    """The row's point in line protocol; None: the row is marked done without being written."""


class InfluxSink:
    """Writes the outbox's telemetry to InfluxDB.

    ``run()`` until cancelled; ``wake()`` after rows are added to the outbox.
    """

    def __init__(
        self,
        section: InfluxSection,
        outbox: Source,
        gateway_id: str,
        *,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
    ) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.section = section
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.written = 0
        """Points the server has accepted since the start."""
        self.rejected = 0
        """Rows dropped: refused by the server for good, or not telemetry."""
        self._wake = asyncio.Event()
        # Any: influxdb_client's annotations are partial (untyped close(), str constants
        # where WritePrecision is declared)
        self._client: Any = InfluxDBClient(
            url=section.url, token=section.token, org=section.org, timeout=WRITE_TIMEOUT_MS
        )
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)
        self._outage_since: float | None = None
        self._failed_attempts = 0

    def wake(self) -> None:
        """Rows were added: look at them now rather than at the next flush interval."""
        self._wake.set()

    async def run(self) -> None:
        """Collect, write, mark done; forever. Cancelling it leaves unwritten rows in the outbox."""
        try:
            while True:
                points = await self._collect()
                await self._deliver(points)
        finally:
            self._write_api.close()
            self._client.close()

    async def _collect(self) -> list[_Point]:
        """The next batch: as soon as it is full, or when its oldest row has waited an interval."""
        loop = asyncio.get_running_loop()
        interval_s = self.section.flush_interval_ms / 1000
        size = self.section.batch_size
        points: list[_Point] = []
        deadline: float | None = None
        while True:
            self._wake.clear()
            after = points[-1].id if points else 0
            points.extend(
                self._point(row) for row in self.outbox.pending(SINK, size - len(points), after)
            )
            now = loop.time()
            if points and deadline is None:
                deadline = now + interval_s
            if len(points) >= size or (deadline is not None and now >= deadline):
                return points
            await wait_set(self._wake, (deadline or now + interval_s) - now)

    def _point(self, row: Row) -> _Point:
        convert = _CONVERTERS.get(row.kind)
        if convert is None:  # no other kind is kept in the outbox
            return _Point(row.id, None)
        try:
            return _Point(row.id, convert(row.payload, self.gateway_id))
        except Unconvertible as exc:
            log.warning("InfluxDB: outbox row %d dropped, %s", row.id, exc)
            self.rejected += 1
            return _Point(row.id, None)

    async def _deliver(self, points: list[_Point]) -> None:
        """Write the batch until the server accepts or rejects every point of it; then mark
        its rows done. A batch over the server's size limit is sent in halves."""
        lines = [point.line for point in points if point.line is not None]
        requests = [lines] if lines else []
        attempt = 0
        while requests:
            request = requests[0]
            result = await asyncio.to_thread(self.write, request)
            if result.verdict is Verdict.TOO_LARGE and len(request) > 1:
                half = len(request) // 2
                requests[:1] = [request[:half], request[half:]]
                continue
            if result.verdict is Verdict.RETRY:
                delay = backoff_delay(attempt, self.first_retry_s, self.max_retry_s)
                if result.retry_after_s is not None:
                    delay = max(delay, min(result.retry_after_s, self.max_retry_s))
                self._unreachable(result, len(request), delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self._reached()
            requests.pop(0)
            attempt = 0
            if result.verdict is Verdict.ACCEPTED:
                self.written += len(request)
            else:
                self.rejected += len(request)
                log.error(
                    "InfluxDB at %s rejected %d points for good (%s); they are dropped",
                    self.section.url,
                    len(request),
                    result.detail,
                )
        self.outbox.done(SINK, [point.id for point in points])

    def _unreachable(self, result: WriteResult, points: int, delay_s: float) -> None:
        self._failed_attempts += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "InfluxDB at %s cannot take telemetry (%s); %d points and what follows stay "
                "in the buffer, retrying with backoff up to %g s",
                self.section.url,
                result.detail,
                points,
                self.max_retry_s,
            )
        else:
            log.debug(
                "InfluxDB write failed again (%s); next try in %.1f s", result.detail, delay_s
            )

    def _reached(self) -> None:
        if self._outage_since is not None:
            log.info(
                "InfluxDB at %s takes telemetry again after %.0f s and %d failed writes",
                self.section.url,
                time.monotonic() - self._outage_since,
                self._failed_attempts,
            )
            self._outage_since = None
            self._failed_attempts = 0

    def write(self, lines: list[str]) -> WriteResult:
        """One blocking write request (run it in a worker thread); never raises an Exception."""
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._write_api.write(
                bucket=self.section.bucket,
                org=self.section.org,
                record=lines,
                write_precision="ms",
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            message = str(exc.message or exc.reason or "")[:_MAX_MESSAGE]
            return WriteResult(verdict_of(status), f"HTTP {status}: {message}", _seconds(exc))
        except (HTTPError, OSError) as exc:
            return WriteResult(Verdict.RETRY, str(exc.__cause__ or exc))
        except Exception as exc:  # a bug here must not end the sink, nor drop the batch
            log.exception("InfluxDB write failed unexpectedly")
            return WriteResult(Verdict.RETRY, f"{type(exc).__name__}: {exc}")
        return WriteResult(Verdict.ACCEPTED)


def _seconds(exc: object) -> float | None:
    """A Retry-After header given in seconds (an HTTP date is ignored: the backoff applies)."""
    value = getattr(exc, "retry_after", None)
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
