"""The control loop tells the watchdog it is alive at its own pace; steps that a device
connect asks for do not."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from derms_edge.config import parse_config
from derms_edge.devices.coordinator import DeviceConnected
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.model import Capability
from derms_edge.northbound.commands import Controls, parse_command
from derms_edge.northbound.mqtt import Message
from derms_edge.northbound.topics import Topics
from derms_edge.outbox import durable
from derms_edge.runtime.control_loop import ControlLoop, Tick
from derms_edge.runtime.gateway import build_control_loop
from derms_edge.runtime.supervisor import supervise


def test_only_the_loops_own_steps_feed_the_watchdog(tmp_path: Path) -> None:
    config = parse_config(
        {
            "gateway": {"id": "site", "state_dir": str(tmp_path)},
            "devices": [
                {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}
            ],
            "control": {"interval_s": 0.05},
        }
    )
    ticks: list[None] = []

    async def scenario() -> None:
        pool = LinkPool()  # the pymodbus client wants a running loop
        coordinators = {d.id: build_coordinator(d, pool) for d in config.devices}
        loop = build_control_loop(
            config,
            coordinators,
            Topics("derms", "site"),
            respond=lambda _messages: None,
            publish=lambda _message: None,
            on_tick=lambda: ticks.append(None),
        )
        # what a device connect asks for: no sign that the loop is alive
        loop.handle([DeviceConnected("inv1", Capability())])
        assert ticks == []
        task = asyncio.create_task(loop.run())
        async with asyncio.timeout(5):
            while len(ticks) < 3:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert len(ticks) >= 3


# -- the loop's own guarantees: one task steps, a failing step is a crash, a bad message is not


class Recorder:
    """What the loop hands on: responses (as JSON) and the setpoints commanded."""

    def __init__(self) -> None:
        self.responses: list[dict[str, object]] = []
        self.actives: list[bytes] = []

    def respond(self, messages: Sequence[Message]) -> None:
        self.responses += [json.loads(m.payload) for m in messages]

    def publish(self, message: Message) -> None:
        self.actives.append(message.payload)


def loop_for(tmp_path: Path, recorder: Recorder, **control: object) -> ControlLoop:
    """A control loop on an inverter and a site meter that never answer (nothing is written
    here)."""
    config = parse_config(
        {
            "gateway": {"id": "site", "state_dir": str(tmp_path)},
            "devices": [
                {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"},
                {
                    "id": "meter",
                    "kind": "meter",
                    "protocol": "sunspec",
                    "host": "127.0.0.1",
                    "unit_id": 2,
                },
            ],
            "control": control,
        }
    )
    coordinators = {d.id: build_coordinator(d, LinkPool()) for d in config.devices}
    loop = build_control_loop(
        config,
        coordinators,
        Topics("derms", "site"),
        respond=recorder.respond,
        publish=recorder.publish,
    )
    return loop


def event(mrid: str, pct: float) -> bytes:
    """An event from tomorrow on: nothing here needs the (unreachable) inverter to start it."""
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat()
    body = {"mrid": mrid, "start": start, "duration_s": 600, "control": {"max_w_pct": pct}}
    return json.dumps(body).encode()


def controls(payload: bytes, role: str = "dso") -> Controls:
    (command,) = [
        parse_command(Topics("derms", "site"), f"derms/v1/site/controls/{role}", payload, False)
    ]
    assert isinstance(command, Controls)
    return command


def test_what_arrives_together_is_taken_together_and_stepped_once(tmp_path: Path) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder)
        steps: list[datetime] = []
        step = loop.controller.step

        def counted(views: Any, now: datetime, elapsed_s: float | None = None) -> Any:
            steps.append(now)
            return step(views, now, elapsed_s)

        loop.controller.step = counted  # type: ignore[method-assign]
        loop.handle([controls(event("a", 50)), controls(event("b", 40)), Tick()])
        assert len(steps) == 1
        statuses = [(r["mrid"], r["status"]) for r in recorder.responses]
        assert statuses == [
            ("a", "received"),
            ("a", "scheduled"),
            ("b", "received"),
            ("b", "scheduled"),
            ("a", "superseded"),
        ]
        loop.controller.step = step  # type: ignore[method-assign]
        loop.close()

    asyncio.run(scenario())


def test_a_message_that_cannot_be_handled_is_logged_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder)
        accept = loop.controller.accept

        def broken(*_args: object) -> Any:
            raise OverflowError("date value out of range")

        loop.controller.accept = broken  # type: ignore[method-assign]
        loop.handle([controls(event("bad", 10))])
        loop.controller.accept = accept  # type: ignore[method-assign]
        loop.handle([controls(event("good", 60))])
        assert [(r["mrid"], r["status"], r.get("reason")) for r in recorder.responses] == [
            ("bad", "rejected", "invalid"),  # every event gets its final answer
            ("good", "received", None),
            ("good", "scheduled", None),
        ]
        loop.close()

    asyncio.run(scenario())
    assert any("could not be handled" in r.getMessage() for r in caplog.records)


def test_a_step_that_raises_ends_the_task_the_supervisor_starts_it_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    ticks: list[float] = []

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=0.02)
        loop._on_tick = lambda: ticks.append(time.monotonic())
        step = loop.controller.step
        failures = iter([True, True])

        def failing(views: Any, now: datetime, elapsed_s: float | None = None) -> Any:
            if next(failures, False):
                raise ZeroDivisionError("bug in a step")
            return step(views, now, elapsed_s)

        loop.controller.step = failing  # type: ignore[method-assign]
        task = asyncio.create_task(supervise("control", loop.run, base_s=0.05, cap_s=0.1))
        async with asyncio.timeout(5):
            while len([r for r in caplog.records if "control crashed" in r.getMessage()]) < 2:
                await asyncio.sleep(0.01)
            crashed_at = time.monotonic()
            while not any(t > crashed_at for t in ticks):
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.close()

    asyncio.run(scenario())
    crashes = [r for r in caplog.records if "control crashed" in r.getMessage()]
    assert len(crashes) == 2 and crashes[0].exc_info is not None  # logged, with the traceback


def test_a_step_that_keeps_failing_never_feeds_the_watchdog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The beat follows a completed step at the control interval: a control task that
    crashes at every step, restarted again and again, looks dead to the watchdog."""
    recorder = Recorder()
    ticks: list[None] = []

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=0.02)
        loop._on_tick = lambda: ticks.append(None)

        def failing(_views: Any, _now: datetime, _elapsed_s: float | None = None) -> Any:
            raise ZeroDivisionError("bug in every step")

        loop.controller.step = failing  # type: ignore[method-assign]
        task = asyncio.create_task(supervise("control", loop.run, base_s=0.01, cap_s=0.02))
        async with asyncio.timeout(5):
            while len([r for r in caplog.records if "control crashed" in r.getMessage()]) < 5:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.close()

    asyncio.run(scenario())
    assert ticks == []


def test_what_a_failed_step_changed_is_stored_and_answered_after_the_restart(
    tmp_path: Path,
) -> None:
    """A step that raised after it had started an event neither stored nor answered that:
    the restarted loop reloads the schedule from the store and starts it again, once."""
    recorder = Recorder()
    export = json.dumps(
        {"mrid": "cap", "duration_s": 600, "control": {"export_limit_w": 3000}}
    ).encode()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=0.05)
        step = loop.controller.step
        failures = iter([True])

        def fails_after_its_moves(views: Any, now: datetime, elapsed_s: float | None = None) -> Any:
            decision = step(views, now, elapsed_s)
            if next(failures, False):
                raise ZeroDivisionError("bug after the lifecycle moved")
            return decision

        loop.controller.step = fails_after_its_moves  # type: ignore[method-assign]
        loop.post(controls(export))
        task = asyncio.create_task(supervise("control", loop.run, base_s=0.01, cap_s=0.02))
        async with asyncio.timeout(5):
            while ("cap", "started") not in [(r["mrid"], r["status"]) for r in recorder.responses]:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # a few more steps: no second "started"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        (record,) = loop.store.load(datetime.now(UTC))
        assert str(record.status) == "started"
        loop.close()

    asyncio.run(scenario())
    statuses = [(r["mrid"], r["status"]) for r in recorder.responses]
    assert statuses == [("cap", "received"), ("cap", "scheduled"), ("cap", "started")]


def test_a_jump_of_the_wall_clock_is_seen_within_an_interval_and_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The interval runs on the monotonic clock; when the wall clock is set an hour forward,
    the next interval says so once, and the controller shifts its dispatchers' liveness."""
    recorder = Recorder()
    offset = [timedelta(0)]

    def wall() -> datetime:
        return datetime.now(UTC) + offset[0]

    async def scenario() -> None:
        config = parse_config(
            {
                "gateway": {"id": "site", "state_dir": str(tmp_path)},
                "devices": [
                    {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}
                ],
                "control": {"interval_s": 0.05},
            }
        )
        coordinators = {d.id: build_coordinator(d, LinkPool()) for d in config.devices}
        loop = build_control_loop(
            config,
            coordinators,
            Topics("derms", "site"),
            respond=recorder.respond,
            publish=recorder.publish,
            clock=wall,
        )
        ticks: list[float] = []
        loop._on_tick = lambda: ticks.append(time.monotonic())
        task = asyncio.create_task(loop.run())
        async with asyncio.timeout(5):
            while len(ticks) < 3:
                await asyncio.sleep(0.01)
            heard = loop.controller.heard["dso"]
            offset[0] = timedelta(hours=1)
            while not any("the clock jumped" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
            count = len(ticks)
            while len(ticks) < count + 3:  # the cadence goes on
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        shifted = loop.controller.heard["dso"] - heard
        assert timedelta(minutes=59) < shifted < timedelta(minutes=61)
        loop.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    jumps = [r.getMessage() for r in caplog.records if "the clock jumped" in r.getMessage()]
    assert len(jumps) == 1 and "+3600" in jumps[0]


def test_the_store_commits_to_its_wal_and_its_own_thread_fsyncs(tmp_path: Path) -> None:
    """The event loop never waits for the disk: the schedule store's commits are written to
    its WAL (they survive kill -9) and fsynced by a thread of its own."""

    async def scenario() -> None:
        loop = loop_for(tmp_path, Recorder())
        pragma = loop.store._db.execute
        assert pragma("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert pragma("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the thread fsyncs
        assert pragma("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # and checkpoints
        thread = loop.store._syncer._thread
        assert thread.is_alive() and thread.name == "schedule-fsync"
        loop.close()
        assert not thread.is_alive()

    asyncio.run(scenario())


def test_a_store_that_fails_to_write_lets_no_answer_out(tmp_path: Path) -> None:
    """A store that fails to write lets no answer out, and ends the loop's task."""
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder)

        def broken(*_args: object) -> None:
            raise OSError(28, "No space left on device")

        loop.store.save = broken  # type: ignore[method-assign]
        with pytest.raises(OSError, match="No space left"):
            loop.handle([controls(event("e", 50))])
        assert recorder.responses == []
        loop.close()

    asyncio.run(scenario())


def test_nothing_is_answered_before_the_store_has_fsynced_it(
    tmp_path: Path, fsync_blocked: threading.Event
) -> None:
    """While the store's fsync takes its time (an SD card), the event loop goes on, the event
    is stored (in the WAL) and no answer is handed on; a later answer that stored nothing
    (a payload refused) waits behind it: answers go out in the order decided, each once
    what it says is on disk."""
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=60)
        task = asyncio.create_task(loop.run())
        loop.post(controls(event("ev-1", 50)))
        async with asyncio.timeout(5):
            while not loop.store.commits:  # stored, not fsynced
                await asyncio.sleep(0.01)
        loop.post(controls(b'{"mrid": "bad", "control": {"max_w_pct": 250}}'))
        for _ in range(20):  # the loop is not held up by the disk
            await asyncio.sleep(0.01)
        assert loop.dispatches.last is not None and loop.dispatches.last.mrid == "bad"
        assert [r.event.mrid for r in loop.store.load(datetime.now(UTC))] == ["ev-1"]
        assert recorder.responses == []
        fsync_blocked.set()
        async with asyncio.timeout(5):
            while len(recorder.responses) < 3:
                await asyncio.sleep(0.01)
        assert [(r["mrid"], r["status"]) for r in recorder.responses] == [
            ("ev-1", "received"),
            ("ev-1", "scheduled"),
            ("bad", "rejected"),
        ]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.close()

    asyncio.run(scenario())


def test_closing_the_loop_fsyncs_and_hands_on_the_waiting_answers(
    tmp_path: Path, fsync_blocked: threading.Event
) -> None:
    """At shutdown the answers still waiting for the store's fsync are handed on (to the
    outbox, which keeps them for the next start): none is lost."""
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=60)
        loop._finish(loop._decide([controls(event("ev-1", 50))]))
        assert recorder.responses == [] and loop.store.commits == 1
        fsync_blocked.set()
        loop.close()

    asyncio.run(scenario())
    assert [r["status"] for r in recorder.responses] == ["received", "scheduled"]


def test_a_failed_fsync_thread_holds_no_answer_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store's fsync fails, it says so loudly and the answers go out all the same
    (holding them back for ever helps no one)."""

    def failing(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable.os, "fsync", failing)
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=60)
        loop.handle([controls(event("ev-1", 50))])
        loop.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(scenario())
    assert [r["status"] for r in recorder.responses] == ["received", "scheduled"]
    assert any("schedule store: the fsync thread failed" in m for m in caplog.messages)


def test_the_boundary_scheduler_starts_with_the_first_event_and_stops_with_the_loop(
    tmp_path: Path,
) -> None:
    """APScheduler (about 4 MB with what it imports) is started only when an event has a
    boundary to wait for; it then holds the event's start and end, and stops with the loop."""
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=0.05)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.2)
        assert loop._scheduler is None  # running, with nothing to wait for
        loop.post(controls(event("ev-1", 50)))
        async with asyncio.timeout(5):
            while loop._scheduler is None:
                await asyncio.sleep(0.01)
        scheduler = loop._scheduler
        assert scheduler.running
        assert {job.id for job in scheduler.get_jobs()} == {"ev-1:start", "ev-1:end"}
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert loop._scheduler is None and not scheduler.running
        loop.close()

    asyncio.run(scenario())


def test_the_setpoints_go_out_first_then_the_store_then_the_answers(tmp_path: Path) -> None:
    """Only what a write needs precedes it: the coordinator has its setpoints before the
    schedule is stored, and every answer still follows the store (a response is never ahead
    of it); a payload that failed validation is answered and commands nothing."""
    order: list[str] = []
    recorder = Recorder()

    async def scenario() -> None:
        loop = loop_for(tmp_path, recorder, interval_s=60)
        inverter = loop._coordinators["inv1"]
        command = inverter.command

        def commanded(setpoints: Any) -> None:
            order.append(f"command {sorted(map(str, setpoints))}")
            command(setpoints)

        inverter.command = commanded  # type: ignore[method-assign]
        save = loop.store.save

        def saved(records: Any, now: datetime) -> None:
            records = list(records)
            order.append(f"save {[(r.event.mrid, str(r.status)) for r in records]}")
            save(records, now)

        loop.store.save = saved  # type: ignore[method-assign]

        def respond(messages: Sequence[Message]) -> None:
            stored = {r.event.mrid: str(r.status) for r in loop.store.load(datetime.now(UTC))}
            for message in messages:
                answer = json.loads(message.payload)
                order.append(f"respond {answer['mrid']} {answer['status']}")
                if answer["status"] != "rejected":  # the store has the event already
                    assert answer["mrid"] in stored, (answer, stored)
            recorder.respond(messages)

        loop._respond = respond
        task = asyncio.create_task(loop.run())
        async with asyncio.timeout(5):
            while loop._last is None:  # the first Tick's step is over
                await asyncio.sleep(0.01)
            order.clear()
            now = json.dumps({"mrid": "now", "duration_s": 600, "control": {"max_w_pct": 40}})
            loop.post(controls(now.encode()))
            loop.post(controls(b'{"mrid": "bad", "duration_s": -1, "control": {"max_w_pct": 1}}'))
            while ("now", "started") not in [(r["mrid"], r["status"]) for r in recorder.responses]:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.close()

    asyncio.run(scenario())
    assert order == [
        "command ['max_w_pct']",
        "save [('now', 'scheduled'), ('now', 'started')]",
        "respond now received",
        "respond now scheduled",
        "respond bad rejected",
        "respond now started",
    ]


def test_the_interval_ticks_on_the_wall_clocks_multiples(tmp_path: Path) -> None:
    """After the first, each Tick comes on a multiple of the interval on the wall clock, in
    the wake-up of the gateway's other timers of that period (started half way into an
    interval: a relative timer would stay half an interval off)."""
    phases: list[float] = []

    async def scenario() -> None:
        loop = loop_for(tmp_path, Recorder(), interval_s=0.2)
        loop._on_tick = lambda: phases.append(time.time() % 0.2)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.9)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        loop.close()

    time.sleep(0.2 - (time.time() - 0.1) % 0.2)
    asyncio.run(scenario())
    ticks = phases[1:]  # the first comes at once
    assert len(ticks) >= 3
    assert all(phase < 0.07 for phase in ticks), ticks
