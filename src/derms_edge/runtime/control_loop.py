"""The control loop: the one task that steps the controller.

Everything that can change a decision is put in its inbox (`ControlLoop.post`): validated
commands from MQTT, a device connected or refusing a setpoint, a wake-up at an event's start
or end (APScheduler only posts these; it never runs a step) or at the control interval.

Event windows are wall-clock times; the step measures the control interval on the monotonic
clock (its Tick comes on the wall clock's multiples of it, with the other timers), and
every input the loop takes compares the two before it is handled. When the wall clock jumped
(a Raspberry Pi without a real-time clock, set by NTP after it booted), the jump is taken
before anything stamped with the new time (a heartbeat heard a moment after the jump is not
moved by it) and the schedule is evaluated again at once:
APScheduler is woken, the controller told (how long a dispatcher was silent does not change
with the clock), and the step judges every window at the new time, so no event starts
twice, none is lost and a completed one does not restart.
The loop takes what is there, lets the controller handle each, steps it once, and hands the
decision on: the setpoints to the coordinators, the responses to the outbox (after the
schedule store has them: a response is never ahead of the store), the values in force to
the retained ``active`` topic. Nothing else calls the controller.

Only what a write needs comes before it: the command was validated (northbound; what failed
validation is never taken, so it never reaches a device), the controller took it and
stepped, and the coordinators have their setpoints. Then the loop yields one pass of the
event loop, in which each coordinator it woke sends its write, and only then does what
follows: the changed records are stored (one transaction for the whole batch), the
scheduler's wake-ups set, the ``active`` values published, and the responses handed to the
outbox once the store's own thread has fsynced that transaction (`ScheduleStore`: the event
loop never waits for the disk; an answer never says what a power cut could undo, and
answers go out in the order decided). A signed message is still remembered (replay memory)
before the step: it is never taken twice, even across a crash in between (a power cut
before the store's fsync can forget it, but then no answer said it was taken).

A step that raises ends the task: what the batch's messages had changed before it is
stored and answered first, then the supervisor logs the failure and starts the task again,
and the loop reloads the controller's schedule from the store, so a status change the
failed step made in memory but never stored or answered is made again, and said. The watchdog's beat
follows a step that completed at the control interval, so a step that keeps failing is
seen. A message the controller cannot handle is logged and the loop goes on; storing and
answering are not guarded: their failure ends the task, as a step's does.

At the control interval with nothing else taken, the step is left out when it could not
decide anything new: the controller is settled (`Controller.settled`: no event open, no
edge volt-var, no SoC watch, no export loop: nothing that moves with time) and no device's
view changed in what the control core reads (`DeviceView.control_inputs`: quality,
capability, power, voltage, state of charge...). Anything else taken (a command, a
heartbeat, a refusal) makes the next interval step again, and so does a restart. The
watchdog's beat follows the interval's step or that check.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Literal, TypeVar, assert_never

from derms_edge.aio import to_boundary
from derms_edge.control import (
    SITE,
    TERMINAL,
    Controller,
    Decision,
    DeviceView,
    InForce,
    Record,
    Role,
)
from derms_edge.devices.coordinator import DeviceConnected, DeviceCoordinator, SetpointRefused
from derms_edge.model import Control, Event, Reason, Response, Status
from derms_edge.northbound.commands import (
    Cancel,
    CancelPayload,
    Command,
    Controls,
    DefaultControl,
    EventPayload,
    Heartbeat,
    Invalid,
)
from derms_edge.northbound.messages import (
    ActiveMessage,
    ActiveValue,
    ResponseMessage,
    control_value_data,
)
from derms_edge.northbound.mqtt import Message
from derms_edge.northbound.topics import Topics
from derms_edge.runtime.device_views import DeviceViews
from derms_edge.runtime.dispatches import DispatchLog
from derms_edge.runtime.replay import ReplayGuard, repeat
from derms_edge.runtime.schedule_store import ScheduleStore

if TYPE_CHECKING:  # APScheduler (and multiprocessing, tzlocal under it) loads with a first event
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)

T = TypeVar("T")


def utc_now() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Tick:
    """The control interval came round (edge volt-var, the export loop, the SoC guard)."""


@dataclass(frozen=True, slots=True)
class Boundary:
    """An event's start or end is due."""


CLOCK_JUMP_S = 2.0
"""A difference between the wall clock's and the monotonic clock's progress from one input to
the next beyond this is a jump of the clock, s (NTP slews small errors without jumping; the
control interval's Tick keeps the inputs at most an interval apart)."""

Input = Command | DeviceConnected | SetpointRefused | Tick | Boundary
"""What the control loop's inbox takes."""


class ControlLoop:
    """The control side of one gateway: its controller, schedule store and inbox."""

    def __init__(
        self,
        controller: Controller,
        store: ScheduleStore,
        views: DeviceViews,
        coordinators: Mapping[str, DeviceCoordinator],
        topics: Topics,
        *,
        interval_s: float,
        respond: Callable[[Sequence[Message]], object],
        publish: Callable[[Message], None],
        on_tick: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.controller = controller
        self.store = store
        self._views = views
        self._coordinators = coordinators
        self._topics = topics
        self._interval_s = interval_s
        self._respond = respond
        self._publish = publish
        self._on_tick = on_tick
        """Called after a step at the control interval completed: the loop is alive."""
        self._clock = clock
        self._monotonic = monotonic
        self._stepped: float | None = None
        """Monotonic time of the last step (or of the last one left out)."""
        self._inputs: list[tuple[object, ...]] | None = None
        """What the control core read of the devices at the last step, while nothing else
        was taken since; None: the next interval steps."""
        self._seen: tuple[datetime, float] | None = None
        """The wall and monotonic clocks when the last input was taken: a jump is measured
        from there."""
        # B311: draws randomize_start_s delays (spreading load); it guards no secret
        self._rng = rng or random.Random()  # nosec B311
        self._replay = replay
        """Present when controls must be signed: their replay window and memory."""
        self._inbox: asyncio.Queue[Input] = asyncio.Queue()
        self._scheduler: AsyncIOScheduler | None = None
        """Started with the first event boundary to wait for while the loop runs."""
        self._running = False
        self._active: dict[str, dict[str, InForce]] | None = None
        self._last: Decision | None = None
        self._pending = _Pending()
        """What the batch being handled decided that follows the hand-off of setpoints."""
        self._next_tick: asyncio.TimerHandle | None = None
        self._unanswered: deque[tuple[int, list[Message]]] = deque()
        """Responses decided, each batch's with the number of the store's commit that must be
        fsynced before they are handed on (in order)."""
        self.dispatches = DispatchLog()
        """The last controls message taken and its latest answer (for the status)."""

    def post(self, item: Input) -> None:
        """Put something that may change a decision in the inbox (from the event loop)."""
        self._inbox.put_nowait(item)

    async def run(self) -> None:
        """Take the inbox, step, hand the decision on; until cancelled. A loop timer
        (``_tick``) posts a Tick at once and then every control interval; APScheduler a
        Boundary at each event's start and end (it is started with the first boundary to wait
        for: a gateway that has none never loads it)."""
        self._restore()
        self._inputs = None
        self._running = True
        loop = asyncio.get_running_loop()
        self.store.on_durable(lambda: loop.call_soon_threadsafe(self._answer_durable))
        try:
            for record in self.controller.records.values():
                if record.status not in TERMINAL:
                    self._wake_at_boundaries(record.event)
            self._tick()
            while True:
                inputs = [await self._inbox.get()]
                while not self._inbox.empty():
                    inputs.append(self._inbox.get_nowait())
                tick = self._decide(inputs)
                if self._pending.active is not None:  # a step ran: coordinators commanded
                    # one pass of the event loop: each coordinator just commanded runs up to
                    # its first wait, which is sending its write; storing and answering after
                    await asyncio.sleep(0)
                self._finish(tick)
        finally:
            if self._next_tick is not None:
                self._next_tick.cancel()
                self._next_tick = None
            self._running = False
            scheduler, self._scheduler = self._scheduler, None
            if scheduler is not None and scheduler.running:
                scheduler.shutdown(wait=False)

    def close(self) -> None:
        """Close the schedule store, what it committed fsynced, and hand on the responses that
        waited for it (at the gateway's shutdown: before the outbox closes)."""
        self.store.on_durable(None)
        self.store.close()
        self._answer_durable()

    def handle(self, inputs: Sequence[Input]) -> None:
        """Let the controller take every input, step once if any asks for it, hand the
        setpoints on, then store, answer and publish what follows (``run`` does the same with
        what the inbox holds, yielding to the coordinators before storing; a test may call
        it directly; this call also waits, blocking, for the store's fsync, so it answers at
        once). Each input is taken at its own time: an event's creation time defaults to the
        moment it is taken."""
        self._finish(self._decide(inputs))
        self.store.wait_durable()
        self._answer_durable()

    def _decide(self, inputs: Sequence[Input]) -> bool:
        """Take the inputs, step, command the coordinators; whether a Tick was among them.
        What follows the hand-off is left in ``_pending``; when this raises, what was
        decided before the failure is stored and answered first."""
        step = tick = False
        views: dict[str, DeviceView] | None = None
        try:
            for item in inputs:
                now = self._clock()
                step |= self._clock_checked(now)
                if not isinstance(item, Tick):
                    self._inputs = None  # it may have changed the controller: step next time
                match item:
                    case Tick():
                        tick = True
                    case Boundary() | DeviceConnected():
                        step = True
                    case SetpointRefused():
                        self._refused(item, now)
                    case Command():
                        step |= self._take(item, now)
                    case _:
                        assert_never(item)
            if tick and not step:
                views = self._views()
                step = self._step_due(views)
            if step:
                self._step(self._clock(), self._monotonic(), views)
        except BaseException:
            self._finish(tick=False)
            raise
        return tick

    def _finish(self, tick: bool) -> None:
        """What follows the hand-off: persist first, then say it (a response is never ahead
        of the store, nor of its fsync: `_answer_durable`), then the scheduler's wake-ups and
        the values in force; the watchdog's beat after a step at the control interval."""
        pending, self._pending = self._pending, _Pending()
        if pending.changed:
            self.store.save(pending.changed, pending.at)
        for save_default in pending.defaults:
            save_default()
        for wake in pending.wake_ups:
            wake()
        for response in pending.responses:
            level = logging.WARNING if response.status is Status.REJECTED else logging.INFO
            log.log(
                level,
                "event %s: %s %s %s",
                response.mrid,
                response.status,
                response.reason or "",
                response.detail or "",
            )
        self.dispatches.answered(pending.responses)
        if pending.responses:
            messages = [
                Message("response", self._topics.responses, ResponseMessage.of(r).encode())
                for r in pending.responses
            ]
            self._unanswered.append((self.store.commits, messages))
            self._answer_durable()
        if pending.active is not None:
            self._publish_active(*pending.active)
        if tick and self._on_tick is not None:
            self._on_tick()

    def _answer_durable(self) -> None:
        """Hand on the responses whose commit the store has fsynced, in the order decided."""
        durable = self.store.durable
        while self._unanswered and self._unanswered[0][0] <= durable:
            self._respond(self._unanswered.popleft()[1])

    def _restore(self) -> None:
        """The schedule and the roles' defaults as the store has them: at the start, and again
        after a step failed half way (what it changed in memory only is made again)."""
        now = self._clock()
        self.controller.restore(self.store.load(now), now)
        self.controller.defaults.clear()
        for role, default in self.store.load_defaults().items():
            refusal = self.controller.set_default(role, default)
            if refusal is not None:
                log.warning(
                    "the stored default control of role %s is not applied: %s", role, refusal
                )

    # -- commands ---------------------------------------------------------------------------

    def _take(self, command: Command, now: datetime) -> bool:
        """Let the controller take a command; whether a step must follow."""
        if isinstance(command, Controls) and command.events:
            self.dispatches.taken(command.role, command.events[-1].mrid, now)
        role = self.controller.roles.get(command.role)
        if role is None:
            self._unknown_role(command, now)
            return False
        # a retained message proves nothing about its sender now, nor does an unsigned one
        # where signatures are required
        unproven = self._replay is not None and command.signed is None
        if not command.retained and (isinstance(command, Heartbeat) or not unproven):
            self.controller.hear(role.name, now)
        match command:
            case Heartbeat():
                return False
            case Controls():
                views = self._views()
                for item in command.events:
                    if not self._replayed(command, item, now):
                        self._event(role, item, views, now)
                self._remember(command, command.events)
            case Cancel():
                if not self._replayed(command, command.request, now):
                    self._cancel(role, command.request, now)
                self._remember(command, [command.request])
            case DefaultControl():
                self._default(role, command.control, now)
        return True

    def _replayed(
        self, command: Command, item: EventPayload | CancelPayload | Invalid, now: datetime
    ) -> bool:
        """Whether a signed event or cancel was answered here as a repeat or as not fresh
        (it is not taken then)."""
        if self._replay is None or command.signed is None or isinstance(item, Invalid):
            return False
        answer: Response | None
        if self._replay.seen(command.signed):
            answer = repeat(item.mrid, self.controller.records.get(item.mrid), now)
        else:
            answer = self._replay.refusal(item.mrid, item.creation_time, now)
        if answer is not None:
            self._answer([answer], [], now)
        return answer is not None

    def _remember(
        self, command: Command, items: Sequence[EventPayload | CancelPayload | Invalid]
    ) -> None:
        """Remember a signed message taken now (the first time) until the skew window after
        the latest of its creation times and its events' ends."""
        if self._replay is None or command.signed is None or self._replay.seen(command.signed):
            return
        now = self._clock()
        moments = [now]
        for item in items:
            if isinstance(item, EventPayload):
                spread = timedelta(seconds=item.duration_s + item.randomize_start_s)
                moments.append((item.start or now) + spread)
            if not isinstance(item, Invalid) and item.creation_time is not None:
                moments.append(item.creation_time)
        self._replay.remember(command.signed, max(moments), now)

    def _event(
        self,
        role: Role,
        item: EventPayload | Invalid,
        views: Mapping[str, DeviceView],
        now: datetime,
    ) -> None:
        if isinstance(item, Invalid):
            self._answer([_invalid(item, now)], [], now)
            return
        spread_s = item.randomize_start_s
        delay_s = self._rng.uniform(0, spread_s) if spread_s else 0.0

        def accept() -> tuple[Event, list[Response], list[Record]]:
            event = item.to_event(role=role.name, primacy=role.primacy, now=now, delay_s=delay_s)
            return event, *self.controller.accept(event, views, now)

        taken = _guarded(f"event {item.mrid} of role {role.name}", accept)
        if taken is UNHANDLED:
            unhandled = Invalid(item.mrid, "the gateway could not handle this event (logged)")
            self._answer([_invalid(unhandled, now)], [], now)
            return
        event, responses, changed = taken
        self._answer(responses, changed, now)
        if changed:
            self._pending.wake_ups.append(lambda: self._wake_at_boundaries(event))

    def _cancel(self, role: Role, request: CancelPayload | Invalid, now: datetime) -> None:
        if isinstance(request, Invalid):
            self._answer([_invalid(request, now)], [], now)
            return
        taken = _guarded(
            f"cancel of {request.mrid} by role {role.name}",
            lambda: self.controller.cancel(request.mrid, role.name, now),
        )
        if taken is not UNHANDLED:
            self._answer(*taken, now)

    def _default(self, role: Role, control: Control | Invalid | None, now: datetime) -> None:
        if isinstance(control, Invalid):
            refused = _refused_default(role.name, control.reason, control.detail, now)
            self._answer([refused], [], now)
            return
        refusal = _guarded(
            f"default control of role {role.name}",
            lambda: self.controller.set_default(role.name, control),
        )
        if refusal is UNHANDLED:
            return
        if refusal is not None:
            self._answer([_refused_default(role.name, Reason.UNAUTHORIZED, refusal, now)], [], now)
            return
        self._pending.defaults.append(lambda: self.store.save_default(role.name, control))

    def _unknown_role(self, command: Command, now: datetime) -> None:
        roles = ", ".join(self.controller.roles)
        detail = f"no role {command.role!r} at this gateway (roles: {roles})"
        log.warning("%s from %s: %s", type(command).__name__, command.role, detail)
        match command:
            case Controls():
                mrids = [item.mrid for item in command.events]
            case Cancel():
                mrids = [command.request.mrid]
            case _:
                return
        responses = [
            Response.rejected(mrid or "", now, Reason.UNAUTHORIZED, detail) for mrid in mrids
        ]
        self._answer(responses, [], now)

    def _refused(self, refused: SetpointRefused, now: datetime) -> None:
        """A device did not take a setpoint: the event it came from is aborted."""
        if self._last is None:
            return
        self._answer(
            *self.controller.setpoint_refused(
                refused.device_id,
                refused.name,
                str(refused.refusal),
                active=self._last.active,
                now=now,
            ),
            now,
        )

    # -- the step and its outputs -------------------------------------------------------------

    def _step_due(self, views: Mapping[str, DeviceView]) -> bool:
        """At the control interval: whether to step (see the module's docstring). When not,
        the interval counts as stepped: the next step's elapsed time is one interval."""
        if (
            self._inputs is not None
            and self.controller.settled()
            and self._inputs == _control_inputs(views)
        ):
            self._stepped = self._monotonic()
            return False
        return True

    def _step(self, now: datetime, at: float, views: Mapping[str, DeviceView] | None) -> None:
        elapsed_s = None if self._stepped is None else at - self._stepped
        self._stepped = at
        views = self._views() if views is None else views
        self._inputs = None  # until this step completed
        decision = self.controller.step(views, now, elapsed_s)
        self._inputs = _control_inputs(views)
        self._last = decision
        self._answer(decision.responses, decision.changed, now)
        for device_id, setpoints in decision.setpoints.items():
            self._coordinators[device_id].command(setpoints)
        self._pending.active = (decision, now)

    def _answer(self, responses: list[Response], changed: list[Record], now: datetime) -> None:
        """Leave the responses and the changed records for `_finish`, which stores before it
        answers: a response is never ahead of the store."""
        pending = self._pending
        # as they are now: the controller changes its records in place, and a failing step
        # after this must not have its changes stored (they are made again after a restart)
        pending.changed += [Record(record.event, record.status) for record in changed]
        pending.at = now
        for record in changed:
            if record.status in TERMINAL:  # its wake-ups are not needed any more
                pending.wake_ups.append(partial(self._forget_boundaries, record.event.mrid))
        pending.responses += responses

    def _publish_active(self, decision: Decision, now: datetime) -> None:
        active = {
            device: {str(t): v for t, v in values.items()}
            for device, values in decision.active.items()
        }
        if active == self._active:
            return
        self._active = active
        message = ActiveMessage(
            ts=now,
            devices={
                device: {t: _active_value(v) for t, v in values.items()}
                for device, values in active.items()
                if device != SITE
            },
            site={t: _active_value(v) for t, v in active.get(SITE, {}).items()},
        )
        self._publish(Message("state", self._topics.active, message.encode(), retain=True))

    # -- wake-ups ---------------------------------------------------------------------------

    def _tick(self) -> None:
        """Post a Tick, and the next on the wall clock's next multiple of the control interval,
        in the wake-up of the gateway's other timers of the same period (`to_boundary`); a
        jump of the wall clock moves a Tick by less than an interval (the step measures its
        elapsed time on the monotonic clock). A timer, not a task: at one device the task's
        wake-up cost more than the posting."""
        self.post(Tick())
        loop = asyncio.get_running_loop()
        self._next_tick = loop.call_later(to_boundary(self._interval_s), self._tick)

    def _clock_checked(self, now: datetime) -> bool:
        """Whether the wall clock jumped since the last input (then the jump is taken)."""
        mono = self._monotonic()
        seen, self._seen = self._seen, (now, mono)
        if seen is None:
            return False
        drift_s = (now - seen[0]).total_seconds() - (mono - seen[1])
        if abs(drift_s) <= CLOCK_JUMP_S:
            return False
        self._clock_jumped(timedelta(seconds=drift_s))
        return True

    def _clock_jumped(self, by: timedelta) -> None:
        log.warning(
            "the clock jumped %+.1f s; the schedule is evaluated again at %s",
            by.total_seconds(),
            self._clock().isoformat(),
        )
        self.controller.clock_jumped(by)
        if self._scheduler is not None:
            self._scheduler.wakeup()  # its timer waits on the monotonic clock

    async def _post_boundary(self) -> None:
        self.post(Boundary())

    def _wake_at_boundaries(self, event: Event) -> None:
        """Wake the loop exactly at the event's start and end."""
        if not self._running:
            return
        now = self._clock()
        for label, moment in (("start", event.start), ("end", event.end)):
            if moment > now:
                self._boundary_scheduler().add_job(
                    self._post_boundary,
                    "date",
                    run_date=moment,
                    id=f"{event.mrid}:{label}",
                    replace_existing=True,
                    misfire_grace_time=None,
                )

    def _boundary_scheduler(self) -> AsyncIOScheduler:
        """The scheduler of event boundaries, started on first use (in the running loop)."""
        if self._scheduler is None:
            from apscheduler.schedulers.asyncio import AsyncIOScheduler

            scheduler = AsyncIOScheduler(timezone=UTC)
            scheduler.start()
            self._scheduler = scheduler
        return self._scheduler

    def _forget_boundaries(self, mrid: str) -> None:
        if self._scheduler is None:
            return
        for label in ("start", "end"):
            if self._scheduler.get_job(f"{mrid}:{label}") is not None:
                self._scheduler.remove_job(f"{mrid}:{label}")


@dataclass(slots=True)
class _Pending:
    """What a batch decided that follows the hand-off of setpoints, in the order decided."""

    changed: list[Record] = field(default_factory=list)
    """Records to store (one transaction) before any response is handed on."""
    at: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    """When the last of them changed (the store's ``updated``)."""
    responses: list[Response] = field(default_factory=list)
    defaults: list[Callable[[], None]] = field(default_factory=list)
    """Roles' default controls to store."""
    wake_ups: list[Callable[[], None]] = field(default_factory=list)
    """The scheduler's wake-ups to set or remove, in order."""
    active: tuple[Decision, datetime] | None = None
    """The last step's decision, whose values in force are published."""


class _Unhandled(enum.Enum):
    UNHANDLED = "unhandled"


UNHANDLED = _Unhandled.UNHANDLED
"""What `_guarded` gives for a message the controller raised on."""


def _guarded(what: str, decide: Callable[[], T]) -> T | Literal[_Unhandled.UNHANDLED]:
    """The controller's answer to one message; UNHANDLED, logged, when it raises: a message
    that cannot be handled must not take the loop down. Only the controller's work is
    guarded: storing and answering run outside, and their failures end the task."""
    try:
        return decide()
    except Exception:
        log.exception("%s could not be handled", what)
        return UNHANDLED


def _control_inputs(views: Mapping[str, DeviceView]) -> list[tuple[object, ...]]:
    """What the control core can read of every device (see `DeviceView.control_inputs`)."""
    return [view.control_inputs() for view in views.values()]


def _active_value(in_force: InForce) -> ActiveValue:
    source = in_force.source
    return ActiveValue(
        value=control_value_data(in_force.value),
        source=source.kind.value,
        mrid=source.mrid,
        role=source.role,
    )


def _invalid(invalid: Invalid, now: datetime) -> Response:
    return Response.rejected(invalid.mrid or "", now, invalid.reason, invalid.detail)


def _refused_default(role: str, reason: Reason, detail: str, now: datetime) -> Response:
    """A refused default control is answered like an event, without an mrid."""
    return Response.rejected("", now, reason, f"default_control/{role}: {detail}")
