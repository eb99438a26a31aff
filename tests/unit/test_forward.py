"""The forwarder against a fake MQTT session: live at once, the backlog paced and in order,
rows done on acknowledgement, nothing sent twice by the forwarder itself."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from derms_edge.northbound.mqtt import Message
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.forward import Forwarder, ReplayPace


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeSession:
    """Takes messages like paho: QoS 1 always (sent on connection), QoS 0 only while
    connected; acknowledges what it sent while connected, unless told to hold."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.sent: list[tuple[int, Message, float]] = []
        self.hold = False
        self.unacked: list[int] = []
        self._mid = 0
        self._on_connected: list[Callable[[], None]] = []
        self._on_published: list[Callable[[int], None]] = []

    def on_connected(self, callback: Callable[[], None]) -> None:
        self._on_connected.append(callback)

    def on_published(self, callback: Callable[[int], None]) -> None:
        self._on_published.append(callback)

    def send(self, message: Message) -> int | None:
        if message.qos == 0 and not self.connected.is_set():
            return None
        self._mid += 1
        self.sent.append((self._mid, message, time.monotonic()))
        if self.hold or not self.connected.is_set():
            self.unacked.append(self._mid)
        else:
            asyncio.get_running_loop().call_soon(self.ack, self._mid)
        return self._mid

    def ack(self, mid: int) -> None:
        for callback in self._on_published:
            callback(mid)

    def connect(self) -> None:
        self.connected.set()
        for callback in self._on_connected:
            callback()

    def seqs(self) -> list[int]:
        return [json.loads(m.payload)["seq"] for _mid, m, _at in self.sent]


def wired(forwarder: Forwarder, outbox: Outbox, session: FakeSession) -> Forwarder:
    """The forwarder told what the gateway tells it (runtime.gateway wires the same)."""
    outbox.add_listener(forwarder.wake)
    loop = asyncio.get_running_loop()
    outbox.on_durable(functools.partial(loop.call_soon_threadsafe, forwarder.wake))
    session.on_connected(forwarder.reconnected)
    session.on_published(forwarder.published)
    return forwarder


def rows(outbox: Outbox, count: int, qos: int = 1) -> list[int]:
    first = outbox.next_seq(count)
    return outbox.add(
        [
            Message("telemetry", f"t/{i}", json.dumps({"seq": first + i}).encode(), qos)
            for i in range(count)
        ]
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    opened = Outbox(tmp_path / "telemetry.sqlite", max_bytes=100_000_000)
    yield opened
    opened.close()


@contextlib.asynccontextmanager
async def forwarding(forwarder: Forwarder) -> AsyncIterator[None]:
    task = asyncio.create_task(forwarder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


def test_the_pace_is_a_token_bucket() -> None:
    pace = ReplayPace(200, now=0.0)
    assert pace.burst == 10
    assert pace.available(0.0) == 10
    pace.spend(10)
    assert pace.available(0.0) == 0
    assert pace.wait_s(0.0) == pytest.approx(0.005)
    assert pace.available(0.025) == 5
    assert pace.available(10.0) == 10  # no more than a burst after a pause
    with pytest.raises(ValueError, match="positive"):
        ReplayPace(0, now=0.0)


@in_loop
async def test_live_rows_go_at_once_and_are_done_when_acknowledged(outbox: Outbox) -> None:
    session = FakeSession()
    forwarder = wired(
        Forwarder(outbox, session, replay_rate_per_s=100, ack_flush_s=0.05), outbox, session
    )
    async with forwarding(forwarder):
        session.connect()
        rows(outbox, 10)
        await until(lambda: len(session.sent) == 10)
        assert session.seqs() == list(range(1, 11))
        await until(lambda: outbox.backlog(MQTT) == 0)
        assert forwarder.buffered == 0


@in_loop
async def test_live_rows_go_out_within_the_add_while_connected(outbox: Outbox) -> None:
    """A telemetry round's messages are handed to the session by the add itself, in the
    round's turn of the event loop, not in the forwarder task's next one. While the broker
    is away nothing goes; after the connection what waited goes as the backlog."""
    session = FakeSession()
    forwarder = wired(Forwarder(outbox, session, replay_rate_per_s=100), outbox, session)
    async with forwarding(forwarder):
        rows(outbox, 1)
        await asyncio.sleep(0.1)
        assert session.sent == []
        session.connect()
        held_round(outbox)  # the first moves the seq reservation: sent once fsynced
        await until(lambda: len(session.sent) == 4 and outbox.sendable_id == outbox.last_id)
        held_round(outbox)
        assert session.seqs() == list(range(1, 8))  # no await between: sent by the add


def held_round(outbox: Outbox) -> None:
    """A round added while connected: held in memory (sendable once the seq reservation that
    covers it is fsynced)."""
    first = outbox.next_seq(3)
    outbox.add(
        [Message("telemetry", "t", json.dumps({"seq": first + i}).encode()) for i in range(3)],
        hold=True,
    )


@in_loop
async def test_the_backlog_goes_in_order_at_its_rate_beside_live_rows(outbox: Outbox) -> None:
    rows(outbox, 300)  # buffered while the broker was away
    session = FakeSession()
    forwarder = wired(Forwarder(outbox, session, replay_rate_per_s=300), outbox, session)
    async with forwarding(forwarder):
        assert forwarder.buffered == 300
        started = time.monotonic()
        session.connect()
        await asyncio.sleep(0.3)
        rows(outbox, 10)  # a live round in the middle of the replay
        await until(lambda: len(session.sent) == 310)
        elapsed = time.monotonic() - started
    seqs = session.seqs()
    backlog = [s for s in seqs if s <= 300]
    assert backlog == list(range(1, 301))
    live_at = seqs.index(301)
    assert seqs[live_at : live_at + 10] == list(range(301, 311))  # live: at once, together
    assert 50 < live_at < 250  # ... while the backlog was still going
    assert 0.8 < elapsed < 1.6  # 300 at 300/s
    times = [at for _mid, m, at in session.sent if json.loads(m.payload)["seq"] <= 300]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 250 < rate < 350


@in_loop
async def test_a_slow_broker_never_starves_live_rows(outbox: Outbox) -> None:
    rows(outbox, 500)
    session = FakeSession()
    session.hold = True  # no PUBACKs: the window fills up
    forwarder = wired(
        Forwarder(outbox, session, replay_rate_per_s=100_000, window=20), outbox, session
    )
    async with forwarding(forwarder):
        session.connect()
        await until(lambda: len(session.sent) == 15)  # the backlog's share of the window
        await asyncio.sleep(0.1)
        assert len(session.sent) == 15
        rows(outbox, 5)
        await until(lambda: len(session.sent) == 20)
        assert session.seqs()[15:] == [501, 502, 503, 504, 505]


@in_loop
async def test_rows_in_flight_at_a_disconnection_are_not_sent_twice(outbox: Outbox) -> None:
    session = FakeSession()
    forwarder = wired(
        Forwarder(outbox, session, replay_rate_per_s=1000, ack_flush_s=0.05), outbox, session
    )
    async with forwarding(forwarder):
        session.connect()
        session.hold = True
        rows(outbox, 5)
        await until(lambda: len(session.sent) == 5)
        session.connected.clear()  # the broker went away with 5 rows unacknowledged
        rows(outbox, 5, qos=0)  # QoS 0 is not taken while disconnected: it waits here
        rows(outbox, 5)  # QoS 1 is, like paho does
        await asyncio.sleep(0.1)
        assert session.seqs() == list(range(1, 6))
        session.hold = False
        session.connect()  # paho sends the 5 in flight again itself; they are acknowledged
        for mid in session.unacked:
            session.ack(mid)
        await until(lambda: outbox.backlog(MQTT) == 0)
    assert sorted(session.seqs()) == list(range(1, 16))


@in_loop
async def test_an_acknowledged_response_is_done_at_once(outbox: Outbox) -> None:
    session = FakeSession()
    forwarder = wired(
        Forwarder(outbox, session, replay_rate_per_s=100, ack_flush_s=60), outbox, session
    )
    async with forwarding(forwarder):
        session.connect()
        rows(outbox, 3)
        await until(lambda: forwarder.buffered == 0)
        assert outbox.backlog(MQTT) == 3  # telemetry acknowledgements wait for the flush
        outbox.add([Message("response", "r", b"{}")])
        await until(lambda: outbox.backlog(MQTT) == 0)  # a response's flushes everything


@in_loop
async def test_cancelled_it_flushes_what_was_acknowledged(outbox: Outbox) -> None:
    session = FakeSession()
    forwarder = wired(
        Forwarder(outbox, session, replay_rate_per_s=100, ack_flush_s=60), outbox, session
    )
    async with forwarding(forwarder):
        session.connect()
        rows(outbox, 4)
        await until(lambda: forwarder.buffered == 0)
    assert outbox.backlog(MQTT) == 0


@in_loop
async def test_a_held_round_acknowledged_is_done_at_once_and_never_written(
    outbox: Outbox,
) -> None:
    session = FakeSession()
    forwarder = wired(Forwarder(outbox, session, replay_rate_per_s=100), outbox, session)
    session.connect()
    async with forwarding(forwarder):
        for _ in range(5):
            first = outbox.next_seq(10)
            outbox.add(
                [
                    Message("telemetry", f"t/{i}", json.dumps({"seq": first + i}).encode())
                    for i in range(10)
                ],
                hold=True,
            )
            await until(lambda: outbox.backlog(MQTT) == 0)  # at once, not at the 5 s flush
        assert session.seqs() == list(range(1, 51))
        session.hold = True  # the broker stops acknowledging: the round is written next add
        ids = outbox.add([Message("telemetry", "t/0", b'{"seq": 51}')], hold=True)
        await until(lambda: len(session.unacked) == 1)
        rows(outbox, 1)
        assert not outbox.is_held(ids[0])
        stored = outbox._db.execute("SELECT id FROM message ORDER BY id").fetchall()
        assert [r[0] for r in stored] == [ids[0], ids[0] + 1]
        await until(lambda: len(session.unacked) == 2)
        for mid in session.unacked:  # PUBACKs that come late: done at the next ack flush
            session.ack(mid)
        assert (forwarder.buffered, outbox.backlog(MQTT)) == (0, 2)


def test_nothing_written_is_sent_before_its_commit_is_fsynced(
    outbox: Outbox, fsync_blocked: threading.Event
) -> None:
    async def scenario() -> None:
        session = FakeSession()
        forwarder = wired(Forwarder(outbox, session, replay_rate_per_s=1000), outbox, session)
        async with forwarding(forwarder):
            rows(outbox, 5)  # the backlog of an outage, its last commit not fsynced yet
            session.connect()
            rows(outbox, 5)  # a live round, written (a response would be too)
            await asyncio.sleep(0.2)
            assert session.sent == []
            fsync_blocked.set()
            await until(lambda: len(session.sent) == 10)
        assert sorted(session.seqs()) == list(range(1, 11))

    asyncio.run(scenario())
