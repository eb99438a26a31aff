"""The dispatcher: MQTT controls in, the control core stepped, setpoints and responses out.

The imperative shell around `control.engine.Controller`: it validates inbound payloads,
persists every accepted event before answering, runs the control step on APScheduler's
asyncio scheduler (every ``control.interval_s`` and exactly at each event's start and
end), hands each device's setpoints to its coordinator, hands responses to ``respond`` (the
daemon stores them in the outbox, which delivers them) and publishes the retained ``active``
map through ``publish``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from derms_edge.config import AnyDevice, Config, OpcUaDevice, ProfileDevice, StorageSettings
from derms_edge.control.engine import (
    SITE,
    TERMINAL,
    Controller,
    Decision,
    DeviceView,
    InForce,
    Record,
    Role,
)
from derms_edge.control.events import Event, Reason, Response, Status, value_data
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.control.store import ScheduleStore
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.errors import ControlRefused
from derms_edge.model import Capability, SetpointName
from derms_edge.northbound.commands import (
    EventPayload,
    Invalid,
    parse_cancel,
    parse_default,
    parse_events,
)
from derms_edge.northbound.messages import ActiveMessage, ActiveValue, ResponseMessage
from derms_edge.northbound.mqtt import Publication
from derms_edge.northbound.topics import InboundTopic, Topics

log = logging.getLogger(__name__)

SCHEDULE_FILE = "schedule.sqlite"


def utc_now() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(UTC)


def _meter(config: Config) -> str | None:
    if config.control.export_limit.meter is not None:
        return config.control.export_limit.meter
    meters = [d.id for d in config.devices if d.kind == "meter"]
    return meters[0] if len(meters) == 1 else None


class Dispatcher:
    """Runs the control contract for one gateway."""

    def __init__(
        self,
        config: Config,
        coordinators: Mapping[str, DeviceCoordinator],
        publish: Callable[[Publication], None],
        topics: Topics,
        *,
        respond: Callable[[Sequence[Publication]], None],
        on_tick: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        control = config.control
        self._config = config
        self._coordinators = coordinators
        self._publish = publish
        self._respond = respond
        self._on_tick = on_tick
        """Called at every step the control loop's own scheduler runs: it is alive."""
        self._topics = topics
        self._clock = clock
        self._rng = rng or random.Random()
        self.roles = {
            name: Role(name, role.primacy, frozenset(role.allow))
            for name, role in control.roles.items()
        }
        export = control.export_limit
        self.controller = Controller(
            roles=self.roles,
            dispatcher_timeout_s=control.dispatcher_timeout_s,
            limiter=ExportLimiter(
                export.gain, export.max_step_pct, export.deadband_w, interval_s=control.interval_s
            ),
            meter=_meter(config),
            interval_s=control.interval_s,
            config_default=control.default.to_control(),
        )
        self.store = ScheduleStore(config.gateway.state_dir / SCHEDULE_FILE)
        now = clock()
        self.controller.restore(self.store.load(now), now)
        for role, default in self.store.load_defaults().items():
            if role in self.roles:
                self.controller.set_default(role, default)
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._active: dict[str, dict[str, InForce]] | None = None
        self._last: Decision | None = None

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Step the controller until cancelled."""
        self._scheduler.start()
        self._scheduler.add_job(
            self._step_job,
            "interval",
            seconds=self._config.control.interval_s,
            id="control-step",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        for record in self.controller.records.values():
            self._schedule(record.event)
        try:
            await self._step_job()
            await asyncio.Event().wait()
        finally:
            self._scheduler.shutdown(wait=False)
            self.store.close()

    async def _step_job(self) -> None:
        if self._on_tick is not None:
            self._on_tick()
        self.step()

    def _schedule(self, event: Event) -> None:
        """Wake the control step exactly at the event's start and end."""
        now = self._clock()
        for label, moment in (("start", event.start), ("end", event.end)):
            if moment > now:
                self._scheduler.add_job(
                    self._step_job,
                    "date",
                    run_date=moment,
                    id=f"{event.mrid}:{label}",
                    replace_existing=True,
                    misfire_grace_time=None,
                )

    def step(self) -> None:
        """One control step: lifecycle, arbitration, setpoints to the coordinators."""
        now = self._clock()
        decision = self.controller.step(self.views(), now)
        self._last = decision
        self._answer(decision.responses, decision.changed, now)
        for device_id, setpoints in decision.setpoints.items():
            self._coordinators[device_id].command(setpoints)
        self._publish_active(decision, now)

    def views(self) -> dict[str, DeviceView]:
        """What the control core needs from every device now."""
        efficiency = self._config.control.efficiency
        views = {}
        for device in self._config.devices:
            coordinator = self._coordinators[device.id]
            reading = coordinator.reading
            capability = coordinator.capability
            storage = device if isinstance(device, StorageSettings) else None
            max_a, phases = _charger(device, capability)
            views[device.id] = DeviceView(
                id=device.id,
                kind=device.kind,
                quality=coordinator.quality(),
                state=reading.state if reading is not None else None,
                capability=capability,
                supports=coordinator.driver.supports() if capability is not None else None,
                reserve_soc_pct=storage.reserve_soc_pct if storage is not None else None,
                efficiency=(storage.efficiency if storage is not None else None) or efficiency,
                max_a=max_a,
                phases=phases,
            )
        return views

    # -- inbound --------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """One inbound MQTT message (called in the event loop)."""
        inbound = self._topics.parse_inbound(topic)
        if inbound is None:
            return
        now = self._clock()
        try:
            self._handle(inbound, payload, retained, now)
        except Exception:  # a bad message must never take the gateway down
            log.exception("control message on %s could not be handled", topic)

    def _handle(self, inbound: InboundTopic, payload: bytes, retained: bool, now: datetime) -> None:
        if inbound.role not in self.roles:
            self._unknown_role(inbound, payload, now)
            return
        if not retained:
            self.controller.hear(inbound.role, now)
        match inbound.kind:
            case "heartbeat":
                return
            case "controls":
                self._events(inbound.role, payload, now)
            case "cancel":
                cancel = parse_cancel(payload)
                if isinstance(cancel, Invalid):
                    self._answer([_invalid(cancel, now)], [], now)
                    return
                responses, changed = self.controller.cancel(cancel.mrid, inbound.role, now)
                self._answer(responses, changed, now)
            case "default_control":
                self._default(inbound.role, payload)
        self.step()

    def _unknown_role(self, inbound: InboundTopic, payload: bytes, now: datetime) -> None:
        detail = f"no role {inbound.role!r} at this gateway (roles: {', '.join(self.roles)})"
        log.warning("%s on %s: %s", inbound.kind, inbound.role, detail)
        if inbound.kind in ("controls", "cancel"):
            mrids = [getattr(item, "mrid", None) for item in parse_events(payload)]
            self._answer(
                [
                    Response(mrid or "", Status.REJECTED, now, Reason.UNAUTHORIZED, detail)
                    for mrid in mrids
                ],
                [],
                now,
            )

    def _events(self, role: str, payload: bytes, now: datetime) -> None:
        views = self.views()
        for item in parse_events(payload):
            if isinstance(item, Invalid):
                self._answer([_invalid(item, now)], [], now)
                continue
            event = self._event(item, role, now)
            responses, changed = self.controller.accept(event, views, now)
            self._answer(responses, changed, now)
            if changed:
                self._schedule(event)

    def _event(self, payload: EventPayload, role: str, now: datetime) -> Event:
        start = payload.start or now
        if payload.randomize_start_s:
            start += timedelta(seconds=self._rng.uniform(0, payload.randomize_start_s))
        return Event(
            mrid=payload.mrid,
            role=role,
            primacy=self.roles[role].primacy if payload.primacy is None else payload.primacy,
            creation_time=payload.creation_time or now,
            start=start,
            duration_s=payload.duration_s,
            control=payload.control.to_control(),
            devices=tuple(payload.devices) if payload.devices is not None else None,
            randomize_start_s=payload.randomize_start_s,
            body=json.dumps(payload.model_dump(mode="json", exclude_unset=True), sort_keys=True),
        )

    def _default(self, role: str, payload: bytes) -> None:
        if not payload.strip():  # an empty retained message clears the default
            self.controller.set_default(role, None)
            self.store.save_default(role, None)
            return
        now = self._clock()
        control = parse_default(payload)
        if isinstance(control, Invalid):
            self._answer([_refused_default(role, Reason.INVALID, control.detail, now)], [], now)
            return
        value = control.to_control()
        forbidden = sorted(value.types - self.roles[role].allow)
        if forbidden:
            detail = f"role {role} may not send {', '.join(forbidden)}"
            self._answer([_refused_default(role, Reason.UNAUTHORIZED, detail, now)], [], now)
            return
        self.controller.set_default(role, value)
        self.store.save_default(role, value)

    def on_refused(self, device_id: str, name: SetpointName, refusal: ControlRefused) -> None:
        """A device did not take a setpoint: abort the event it came from."""
        if self._last is None:
            return
        now = self._clock()
        responses, changed = self.controller.applied_failed(
            device_id, name, Reason.DEVICE_REFUSED, str(refusal), active=self._last.active, now=now
        )
        self._answer(responses, changed, now)

    # -- outbound -------------------------------------------------------------------------

    def _answer(self, responses: list[Response], changed: list[Record], now: datetime) -> None:
        """Persist first, then say it: a response is never ahead of the store."""
        self.store.save(changed, now)
        for record in changed:
            if record.status in TERMINAL:  # its start and end wake-ups are not needed any more
                for label in ("start", "end"):
                    if self._scheduler.get_job(f"{record.event.mrid}:{label}") is not None:
                        self._scheduler.remove_job(f"{record.event.mrid}:{label}")
        for response in responses:
            level = logging.WARNING if response.status is Status.REJECTED else logging.INFO
            log.log(
                level,
                "event %s: %s %s %s",
                response.mrid,
                response.status,
                response.reason or "",
                response.detail or "",
            )
        if responses:
            self._respond(
                [
                    Publication(self._topics.responses, ResponseMessage.of(r).encode(), qos=1)
                    for r in responses
                ]
            )

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
        self._publish(Publication(self._topics.active, message.encode(), qos=1, retain=True))


def _active_value(in_force: InForce) -> ActiveValue:
    source = in_force.source
    return ActiveValue(
        value=value_data(in_force.value),
        source=source.kind,
        mrid=source.mrid,
        role=source.role,
    )


def _invalid(invalid: Invalid, now: datetime) -> Response:
    return Response(invalid.mrid or "", Status.REJECTED, now, Reason.INVALID, invalid.detail)


def _refused_default(role: str, reason: Reason, detail: str, now: datetime) -> Response:
    """A refused default control is answered like an event, without an mrid."""
    return Response("", Status.REJECTED, now, reason, f"default_control/{role}: {detail}")


def _charger(device: AnyDevice, capability: Capability | None) -> tuple[float | None, int | None]:
    """An EV charger's highest current limit (A per phase) and phases: configured, else read."""
    if isinstance(device, ProfileDevice):
        return device.profile.max_a, device.profile.phases
    if isinstance(device, OpcUaDevice) and device.kind == "evse":
        read = capability.max_a if capability is not None else None
        return device.max_a or read, device.phases
    return None, None
