"""The forwarder: the asyncio task that sends the outbox to the MQTT broker and marks each
row done once the broker acknowledged it.

After every (re)connection the rows already in the outbox are the *backlog*; rows added
since are *live*. Live rows go out at once; the backlog goes out oldest first at
``replay_rate_per_s`` (a token bucket), in the room live rows leave: at most ``window``
messages wait for their PUBACK, the backlog at most ``backlog_window`` of them, so a live
message never waits behind the backlog. The task sleeps until something can happen: a row
added, a PUBACK that frees the window, the next replay token, a (re)connection.

A row goes out only once the commit that wrote it is fsynced (``Outbox.sendable_id``): what
the broker may have seen survives a power cut.

The gateway tells the forwarder what happens (the runtime wires it): ``wake`` when rows were
added or became sendable (live rows go out in that call while connected), ``reconnected``
after every (re)connection, ``published`` when a PUBACK arrived (paho reads it in the event
loop).

A PUBACK for a row the outbox holds in memory (a live round) marks it done at once: it is
never written. Any other PUBACK moves its row to the acknowledged list, written to the
outbox (``done``, one transaction): at once when a response is among them (a response has no
seq to tell a copy by), else every ``ack_flush_s`` or ``ACK_FLUSH_ROWS`` rows, to spare the
SD card. Rows in flight when the connection breaks are sent again by paho after the
reconnection (the same payload, so the same ``seq``); telemetry acknowledged but not yet
marked done when the process dies is sent again by the next start. Those are the only
duplicates, and each carries the seq of the first copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from derms_edge.aio import wait_set
from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox, Row

log = logging.getLogger(__name__)

WINDOW = 100
"""Messages sent and not yet acknowledged, at most."""
BACKLOG_SHARE = 0.75
"""The share of the window the backlog may take; the rest is always free for live rows."""
ACK_FLUSH_S = 5.0
"""Acknowledged telemetry is marked done in the outbox at least this often, s: one commit
per 5 rounds at 1 s rather than one per round writes about 30 % fewer bytes to an SD card
(bench/outbox_bench.py); what a crash leaves unmarked is sent again with its seq."""
ACK_FLUSH_ROWS = 500
"""... or as soon as this many are waiting."""
TICK_S = 0.05
"""The replay's pace granularity: a burst of rate x TICK_S rows at most, s."""


class Session(Protocol):
    """What the forwarder needs of an MQTT session (``northbound.mqtt.MqttSession``)."""

    connected: asyncio.Event

    def send(self, message: Message) -> int | None: ...


class ReplayPace:
    """A token bucket: ``rate_per_s`` rows on average, bursts of ``rate_per_s * tick_s``."""

    def __init__(self, rate_per_s: float, now: float, tick_s: float = TICK_S) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"replay rate must be positive, not {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, rate_per_s * tick_s)
        self._tokens = self.burst
        self._at = now

    def available(self, now: float) -> int:
        """Rows that may go now."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        return int(self._tokens)

    def spend(self, rows: int) -> None:
        """``rows`` went out."""
        self._tokens -= rows

    def wait_s(self, now: float) -> float:
        """Time until the next row may go, s."""
        self.available(now)
        return max(0.0, (1.0 - self._tokens) / self.rate_per_s)


class Forwarder:
    """Delivers the outbox's rows for the MQTT sink over one MQTT session."""

    def __init__(
        self,
        outbox: Outbox,
        session: Session,
        *,
        replay_rate_per_s: float,
        window: int = WINDOW,
        ack_flush_s: float = ACK_FLUSH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._session = session
        self._window = window
        self._backlog_window = max(1, int(window * BACKLOG_SHARE))
        self._ack_flush_s = ack_flush_s
        self._clock = clock
        self._pace = ReplayPace(replay_rate_per_s, clock())
        self._inflight: dict[int, int] = {}  # paho mid -> row id
        self._responses: set[int] = set()  # mids of responses in flight
        self._inflight_backlog: set[int] = set()  # mids of backlog rows
        self._acked: list[int] = []  # row ids acknowledged, not yet marked done
        self._acked_since: float | None = None
        self._acked_response = False
        self._held: set[int] = set()  # row ids in flight or acknowledged: not to send again
        self._live_from = outbox.last_id  # rows up to this id are the backlog
        self._live_cursor = self._live_from
        self._backlog_cursor = 0
        self._live_left = False
        self._backlog_left = False
        self._blocked = False  # the window was full when there was more to send
        self._unsynced = False  # the backlog stopped at rows not fsynced yet
        self._replay_started: float | None = None
        self._replayed = 0
        self._wake = asyncio.Event()

    @property
    def buffered(self) -> int:
        """Rows the broker has not acknowledged yet."""
        return self._outbox.backlog(MQTT) - len(self._acked)

    async def run(self) -> None:
        """Send until cancelled; acknowledged rows are flushed to the outbox on the way out."""
        try:
            while True:
                self._wake.clear()
                now = self._clock()
                if self._acked_since is not None and (
                    self._acked_response
                    or len(self._acked) >= ACK_FLUSH_ROWS
                    or now - self._acked_since >= self._ack_flush_s
                ):
                    self.flush()
                self._blocked = False
                if self._session.connected.is_set():
                    self._send_live()
                    self._send_backlog(now)
                await wait_set(self._wake, self._timeout(now))
        finally:
            self.flush()

    def flush(self) -> None:
        """Mark the acknowledged rows done in the outbox (one transaction)."""
        if not self._acked:
            return
        self._outbox.done(MQTT, self._acked)
        self._held.difference_update(self._acked)
        self._acked = []
        self._acked_since = None
        self._acked_response = False

    # -- choosing what goes next ----------------------------------------------------------

    def _send_live(self) -> None:
        while self._live_left and len(self._inflight) < self._window:
            room = self._window - len(self._inflight)
            rows = self._outbox.pending(
                MQTT, room, after_id=self._live_cursor, up_to=self._outbox.sendable_id
            )
            self._live_left = len(rows) == room
            for row in rows:
                if not self._send(row, backlog=False):
                    self._live_left = True
                    return
                self._live_cursor = row.id
        self._blocked |= self._live_left

    def _send_backlog(self, now: float) -> None:
        while self._backlog_left:
            free = min(
                self._backlog_window - len(self._inflight_backlog),
                self._window - len(self._inflight),
            )
            if free <= 0:
                self._blocked = True
                return
            room = min(free, self._pace.available(now))
            if room <= 0:
                return
            up_to = min(self._live_from, self._outbox.sendable_id)
            backlog = self._outbox.pending(MQTT, room, after_id=self._backlog_cursor, up_to=up_to)
            # rows not fsynced yet wait for on_durable's wake, not for a replay token
            self._unsynced = len(backlog) < room and up_to < self._live_from
            self._backlog_left = len(backlog) == room or self._unsynced
            for row in backlog:
                if row.id not in self._held:
                    if not self._send(row, backlog=True):
                        self._backlog_left = True
                        return
                    self._pace.spend(1)
                    self._replayed += 1
                self._backlog_cursor = row.id
            if self._unsynced:
                return
        if self._replay_started is not None and not (self._backlog_left or self._inflight_backlog):
            elapsed = self._clock() - self._replay_started
            log.info("MQTT: backlog of %d messages replayed in %.1f s", self._replayed, elapsed)
            self._replay_started = None

    def _send(self, row: Row, *, backlog: bool) -> bool:
        mid = self._session.send(row.message)
        if mid is None:
            return False
        self._inflight[mid] = row.id
        self._held.add(row.id)
        if backlog:
            self._inflight_backlog.add(mid)
        if row.kind == "response":
            self._responses.add(mid)
        return True

    def _timeout(self, now: float) -> float | None:
        """How long to sleep unless woken: until the next replay token or ack flush."""
        deadlines = []
        if self._acked_since is not None:
            deadlines.append(self._acked_since + self._ack_flush_s - now)
        connected = self._session.connected.is_set()
        if connected and self._backlog_left and not (self._blocked or self._unsynced):
            deadlines.append(self._pace.wait_s(now))
        return max(0.0, min(deadlines)) if deadlines else None

    # -- what the gateway tells it, in the event loop --------------------------------------

    def wake(self) -> None:
        """Rows were added to the outbox, or became sendable: while connected they go out
        now, in the caller's turn of the event loop rather than the task's next one (a
        telemetry round's messages leave in the round's own wake-up); the task wakes for
        what could not go, and for a backlog (its rows may have become sendable)."""
        self._live_left = True
        if self._session.connected.is_set():
            self._send_live()
        if self._live_left or self._backlog_left:
            self._wake.set()

    def reconnected(self) -> None:
        """Everything not acknowledged so far is the backlog now; rows in flight are paho's
        to send again, so they are skipped (``_held``)."""
        self._live_from = self._outbox.last_id
        self._live_cursor = self._live_from
        self._backlog_cursor = 0
        self._backlog_left = True
        self._replayed = 0
        waiting = self._outbox.backlog(MQTT) - len(self._acked) - len(self._inflight)
        if waiting > 0:
            log.info(
                "MQTT: replaying %d buffered messages at %g/s",
                waiting,
                self._pace.rate_per_s,
            )
            self._replay_started = self._clock()
        self._wake.set()

    def published(self, mid: int) -> None:
        """The message ``mid`` was delivered (its PUBACK came, or QoS 0 went out)."""
        row = self._inflight.pop(mid, None)
        if row is None:
            return  # retained state published directly, not from the outbox
        self._inflight_backlog.discard(mid)
        first = False
        if self._outbox.is_held(row):  # in memory only: done at once, nothing is written
            self._outbox.done(MQTT, [row])
            self._held.discard(row)
        else:
            self._acked.append(row)
            first = self._acked_since is None
            if first:  # the loop's sleep must now end by the flush deadline
                self._acked_since = self._clock()
            if mid in self._responses:
                self._acked_response = True
        self._responses.discard(mid)
        replay_over = self._replay_started is not None and not (
            self._backlog_left or self._inflight_backlog
        )
        if (
            first
            or self._blocked
            or replay_over
            or self._acked_response
            or len(self._acked) >= ACK_FLUSH_ROWS
        ):
            self._blocked = False
            self._wake.set()
