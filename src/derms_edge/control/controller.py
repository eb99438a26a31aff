"""The controller: events in, setpoints and responses out, deterministic given its inputs.

It composes the parts of the core, each a function over small values it hands them:
`admission` (accept or refuse, SoC projection), `lifecycle` (every status change),
`arbitration` (what holds on each device), `soc_guard` (a running storage setpoint),
`setpoints` (per kind) and `export_limit` (the site loop). It keeps the event records the
schedule store persists and never reads a clock, a socket or a file itself, so hours of
schedule run in a test in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from derms_edge.control.admission import (
    Waiting,
    arrival_refusal,
    iso,
    pending,
    repeat_answer,
    start_check,
)
from derms_edge.control.arbitration import (
    Defaults,
    InForce,
    Source,
    SourceKind,
    device_in_force,
    displaces,
    reserve_ahead,
    role_primacy,
    site_in_force,
)
from derms_edge.control.export_limit import ExportCaps, ExportLimiter, limit_export
from derms_edge.control.lifecycle import (
    OPEN,
    TERMINAL,
    Record,
    Trigger,
    admit,
    advance,
)
from derms_edge.control.setpoints import device_setpoints
from derms_edge.control.soc_guard import Stop, guard_storage
from derms_edge.control.soc_watch import SocWatch, frozen, watched
from derms_edge.control.views import CARRIERS, DeviceView, Role
from derms_edge.control.volt_var import EdgeVoltVar
from derms_edge.model import (
    Control,
    ControlType,
    DeviceKind,
    Event,
    Reason,
    Response,
    SetpointName,
    SetpointValue,
    Status,
    number,
    superseded_by,
)

SITE = "site"
"""The key of site-wide controls (export_limit_w) in the active map."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one control step."""

    setpoints: dict[str, dict[SetpointName, SetpointValue]]
    active: dict[str, dict[ControlType, InForce]]
    responses: list[Response]
    changed: list[Record]
    """Records whose status changed (to persist)."""


@dataclass
class Controller:
    """Events in, setpoints and responses out; deterministic given its inputs."""

    roles: Mapping[str, Role]
    dispatcher_timeout_s: float
    limiter: ExportLimiter
    meter: str | None = None
    interval_s: float = 1.0
    """The control step period; storage power is tapered so SoC cannot cross a limit
    within two of them (the device's response lag included)."""
    config_default: Control = field(default_factory=Control)
    max_clock_skew_s: float = 300.0
    """An event created further ahead of the gateway's clock than this is refused."""
    records: dict[str, Record] = field(default_factory=dict)
    """Every event known (finished ones too: repeats and duplicate mrids are answered)."""
    defaults: dict[str, Control] = field(default_factory=dict)
    """Each role's default control (retained on MQTT)."""
    heard: dict[str, datetime] = field(default_factory=dict)
    """When each role's dispatcher was last heard from."""
    _open: dict[str, Record] = field(default_factory=dict)
    """The scheduled and started records: what each step looks at."""
    _edges: dict[str, EdgeVoltVar] = field(default_factory=dict)
    _watches: dict[str, SocWatch] = field(default_factory=dict)
    """Each battery's SoC as last seen to move, and the energy through it since."""
    _waiting: dict[str, Waiting] = field(default_factory=dict)
    """Storage events due to start that wait for a fresh state of charge: open records only
    (`_track` drops an entry with its record's leaving ``_open``)."""
    _arrivals: int = 0
    """The order of receipt given to the newest event."""
    _last_step: datetime | None = None
    _site_loop: bool = False
    """Whether the last step ran the site export loop."""

    # -- inbound -------------------------------------------------------------------------

    def hear(self, role: str, now: datetime) -> None:
        """Any message from a role proves its dispatcher alive."""
        self.heard[role] = now

    def restore(self, records: Iterable[Record], now: datetime) -> None:
        """The records as the schedule store has them (they replace those in memory); a role
        not heard from yet counts as heard now."""
        self.records = {}
        self._open = {}
        self._waiting = {}
        for record in records:
            self.records[record.event.mrid] = record
            self._track(record)
        self._arrivals = max((r.event.arrival for r in self.records.values()), default=0)
        for role in self.roles:
            self.heard.setdefault(role, now)

    def clock_jumped(self, by: timedelta) -> None:
        """The gateway's clock was set ``by`` (forward or back): event windows are wall-clock
        times and stay (a started event set back before its start holds off until then); how
        long a role has been silent does not change with the clock."""
        self.heard = {role: heard + by for role, heard in self.heard.items()}
        if self._last_step is not None:
            self._last_step += by

    def accept(
        self, event: Event, devices: Mapping[str, DeviceView], now: datetime
    ) -> tuple[list[Response], list[Record]]:
        """Check a new event; accepted ones are recorded and answered received + scheduled."""
        known = self.records.get(event.mrid)
        if known is not None:
            return [repeat_answer(event, known.event, known.status, now)], []
        refusal = arrival_refusal(
            event,
            self.roles[event.role],
            devices=self._reserved(self._frozen_marked(devices), now),
            scheduled=self._scheduled(),
            meter=self.meter,
            max_clock_skew_s=self.max_clock_skew_s,
            now=now,
        )
        if refusal is not None:
            return [refusal], []
        self._arrivals += 1
        event = replace(event, arrival=self._arrivals)
        record, responses = admit(event, now, f"from {iso(event.start)} for {event.duration_s:g} s")
        self.records[event.mrid] = record
        self._track(record)
        return responses, [record]

    def cancel(self, mrid: str, role: str, now: datetime) -> tuple[list[Response], list[Record]]:
        """Cancel an event of the same role; the default (or the next event) takes over."""
        record = self.records.get(mrid)
        if record is None:
            return [
                Response.rejected(mrid, now, Reason.UNKNOWN_EVENT, f"no event with mrid {mrid}")
            ], []
        if record.event.role != role:
            detail = f"event {mrid} belongs to role {record.event.role}, not {role}"
            return [Response.rejected(mrid, now, Reason.UNAUTHORIZED, detail)], []
        if record.status in TERMINAL:
            detail = f"event {mrid} is already {record.status}; nothing to cancel"
            return [Response.rejected(mrid, now, Reason.INVALID, detail)], []
        response = advance(record, Trigger.CANCEL, now)
        self._track(record)
        return [response], [record]

    def set_default(self, role: str, control: Control | None) -> str | None:
        """The retained default control of a role (None clears it); why it is refused (no
        such role, or a control type the role may not send), or None when it holds."""
        if control is None:
            self.defaults.pop(role, None)
            return None
        known = self.roles.get(role)
        if known is None:
            return f"no role {role!r} at this gateway (roles: {', '.join(self.roles)})"
        refusal = known.refusal(control)
        if refusal is None:
            self.defaults[role] = control
        return refusal

    def setpoint_refused(
        self,
        device: str,
        name: SetpointName,
        detail: str,
        *,
        active: Mapping[str, Mapping[ControlType, InForce]],
        now: datetime,
    ) -> tuple[list[Response], list[Record]]:
        """A device refused a setpoint: abort the started event it came from."""
        for control_type, held in active.get(device, {}).items():
            if name not in CARRIERS.get(control_type, ()):
                continue
            record = self._started(held.source)
            if record is not None:
                response = advance(record, Trigger.ABORT, now, Reason.DEVICE_REFUSED, detail)
                self._track(record)
                return [response], [record]
        return [], []

    # -- the control step -----------------------------------------------------------------

    def settled(self) -> bool:
        """Whether a step on the same device views would decide just what the last one did,
        however much time has passed since: no event open (none can start, end, be timed
        out or wait for a state of charge), no volt-var run by the gateway (its response
        moves with time), no battery's SoC watched (the energy through it grows with time),
        no site export loop (it integrates). Only then may a step be left out."""
        return (
            self._last_step is not None
            and not self._open  # and so none waiting: those are open records
            and not self._edges
            and not self._watches
            and not self._site_loop
        )

    def step(
        self, devices: Mapping[str, DeviceView], now: datetime, elapsed_s: float | None = None
    ) -> Decision:
        """Advance every event's life to ``now`` and decide every device's setpoints.

        ``elapsed_s``: the time since the previous step on a clock that does not jump (the
        runtime's monotonic clock); by default the difference of the ``now``s."""
        if elapsed_s is None:
            elapsed_s = 0.0 if self._last_step is None else (now - self._last_step).total_seconds()
        dt_s = max(0.0, elapsed_s)
        self._last_step = now
        devices = self._watched(devices, dt_s)
        responses: list[Response] = []
        changed: list[Record] = []

        def move(
            record: Record, trigger: Trigger, reason: str | None = None, detail: str | None = None
        ) -> None:
            responses.append(advance(record, trigger, now, reason, detail))
            self._track(record)
            changed.append(record)

        self._time_out(now, move)
        self._advance(devices, now, move)
        # a clock set back before a started event's start holds it off until then (it does not
        # start twice): windows are wall-clock times, and what holds is what is ordered for now
        events = [
            r.event
            for r in self._open.values()
            if r.status is Status.STARTED and r.event.start <= now
        ]
        defaults = self._defaults()
        active: dict[str, dict[ControlType, InForce]] = {}
        setpoints: dict[str, dict[SetpointName, SetpointValue]] = {}
        for device in devices.values():
            if device.kind == DeviceKind.METER:
                continue
            held = device_in_force(device, events, defaults, self._stronger)
            active[device.id] = held
            storage_w = self._storage(device, held, move)
            setpoints[device.id] = device_setpoints(device, held, storage_w, self._edges, dt_s)
            _show_applied_storage(held, storage_w)
        site = site_in_force(events, defaults) if self.meter is not None else None
        self._site_loop = site is not None
        if site is None:
            self.limiter.reset()
        else:
            active[SITE] = {ControlType.EXPORT_LIMIT_W: site}
            meter = devices.get(self.meter) if self.meter is not None else None
            caps = limit_export(
                self.limiter,
                number(site.value),
                meter=meter,
                devices=devices,
                setpoints=setpoints,
                dt_s=dt_s,
            )
            _apply_export_caps(caps, devices, setpoints, active)
        return Decision(setpoints, active, responses, changed)

    def _time_out(self, now: datetime, move: _Move) -> None:
        """Abort the events of a role whose dispatcher has been silent too long."""
        for role in self.roles:
            silent_s = (now - self.heard.setdefault(role, now)).total_seconds()
            if silent_s <= self.dispatcher_timeout_s:
                continue
            for record in self._open_records(role):
                if record.status is Status.STARTED or record.event.start <= now:
                    move(
                        record,
                        Trigger.ABORT,
                        Reason.DISPATCHER_TIMEOUT,
                        f"role {role} silent for {silent_s:.0f} s (timeout "
                        f"{self.dispatcher_timeout_s:g} s); the default control applies",
                    )

    def _advance(self, devices: Mapping[str, DeviceView], now: datetime, move: _Move) -> None:
        """End, supersede and start the open events, in order of their start."""
        for record in sorted(self._open_records(), key=lambda r: r.event.start):
            event = record.event
            if now >= event.end:
                waited = self._waiting.pop(event.mrid, None)
                if waited is not None:
                    move(
                        record,
                        Trigger.ABORT,
                        Reason.DEVICE_OFFLINE,
                        f"its window ended while it waited: {waited.detail}",
                    )
                    continue
                unseen = record.status is Status.SCHEDULED
                unseen_detail = "its window passed while the gateway was not running"
                move(record, Trigger.END, detail=unseen_detail if unseen else None)
                continue
            rivals = (r.event for r in self._open_records() if displaces(r.event, event, now))
            rival = next(rivals, None)
            if rival is not None:
                move(
                    record,
                    Trigger.SUPERSEDE,
                    superseded_by(rival.mrid),
                    f"event {rival.mrid} (primacy {rival.primacy}) takes over every device "
                    "and control of this one",
                )
            elif record.status is Status.SCHEDULED and event.start <= now:
                check = start_check(event, self._reserved(devices, now), self._scheduled(), now)
                if isinstance(check, Waiting):
                    self._waiting[event.mrid] = check
                elif check is None:
                    move(record, Trigger.START, detail=pending(event, devices))
                else:
                    move(record, Trigger.REFUSE, check.reason, check.detail)

    def _storage(
        self, device: DeviceView, held: Mapping[ControlType, InForce], move: _Move
    ) -> float | None:
        """The storage setpoint the SoC guard lets through; stops the event behind it when
        the guard says so."""
        storage = held.get(ControlType.STORAGE_W)
        if storage is None:
            return None
        limit = held.get(ControlType.MAX_W_PCT)
        reserve = held.get(ControlType.RESERVE_SOC_PCT)
        guarded = guard_storage(
            device.reserved(number(reserve.value) if reserve is not None else None),
            number(storage.value),
            number(limit.value) if limit is not None else None,
            self.interval_s,
        )
        if guarded.stop is not None:
            self._stop(storage.source, guarded.stop, move)
        return guarded.w

    def _stop(self, source: Source, stop: Stop, move: _Move) -> None:
        record = self._started(source)
        if record is not None:
            move(record, Trigger.ABORT, stop.reason, stop.detail)

    def _started(self, source: Source) -> Record | None:
        """The started event a value in force came from, if it came from one."""
        record = self.records.get(source.mrid) if source.mrid is not None else None
        return record if record is not None and record.status is Status.STARTED else None

    def _defaults(self) -> Defaults:
        return Defaults(self.roles, self.defaults, self.config_default)

    def _stronger(self, a: Source, b: Source) -> bool:
        """Whether source ``a`` beats ``b``: events before defaults, then IEEE 2030.5 rules
        between events (primacy, creation time), role primacy between defaults."""
        if (a.kind == SourceKind.EVENT) != (b.kind == SourceKind.EVENT):
            return a.kind == SourceKind.EVENT
        if a.mrid is not None and b.mrid is not None:
            return self.records[a.mrid].event.beats(self.records[b.mrid].event)
        return role_primacy(a, self.roles) < role_primacy(b, self.roles)

    def _watched(self, devices: Mapping[str, DeviceView], dt_s: float) -> dict[str, DeviceView]:
        """The devices with each battery's SoC watched over ``dt_s`` more seconds, and marked
        where it froze."""
        for device in devices.values():
            if device.can(ControlType.STORAGE_W):
                watch = watched(self._watches.get(device.id), device, dt_s)
                if watch is None:
                    self._watches.pop(device.id, None)
                else:
                    self._watches[device.id] = watch
        return self._frozen_marked(devices)

    def _frozen_marked(self, devices: Mapping[str, DeviceView]) -> dict[str, DeviceView]:
        """The devices, a battery whose SoC froze marked so (it counts as unknown)."""
        marked = dict(devices)
        for device_id, watch in self._watches.items():
            device = marked.get(device_id)
            why = frozen(watch, device) if device is not None else None
            if device is not None and why is not None:
                marked[device_id] = replace(device, soc_frozen=why)
        return marked

    def _reserved(self, devices: Mapping[str, DeviceView], now: datetime) -> dict[str, DeviceView]:
        """The devices, each battery's reserve raised to the highest a role holds on it from
        ``now`` on (see `reserve_ahead`): what storage events are accepted and started
        against."""
        defaults = self._defaults()
        return {
            device_id: device.reserved(
                reserve_ahead(self._scheduled(), defaults, device_id, now)
                if device.can(ControlType.RESERVE_SOC_PCT)
                else None
            )
            for device_id, device in devices.items()
        }

    def _track(self, record: Record) -> None:
        """Keep the open index in step with a record's status."""
        if record.status in OPEN:
            self._open[record.event.mrid] = record
        else:
            self._open.pop(record.event.mrid, None)
            self._waiting.pop(record.event.mrid, None)

    def _open_records(self, role: str | None = None) -> list[Record]:
        return [r for r in self._open.values() if role is None or r.event.role == role]

    def _scheduled(self) -> list[Event]:
        """The events not finished: what a storage projection runs through."""
        return [r.event for r in self._open.values()]


class _Move(Protocol):
    """Records a status change inside a step (and the response that says so)."""

    def __call__(
        self,
        record: Record,
        trigger: Trigger,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None: ...


def _show_applied_storage(held: dict[ControlType, InForce], storage_w: float | None) -> None:
    """``active`` says what is applied: the storage setpoint as the SoC guard and a
    curtailment let it through (still from its event), none where the guard let none."""
    storage = held.get(ControlType.STORAGE_W)
    if storage is None:
        return
    if storage_w is None:
        del held[ControlType.STORAGE_W]
    elif storage_w != storage.value:
        held[ControlType.STORAGE_W] = InForce(storage_w, storage.source)


def _apply_export_caps(
    caps: ExportCaps,
    devices: Mapping[str, DeviceView],
    setpoints: dict[str, dict[SetpointName, SetpointValue]],
    active: dict[str, dict[ControlType, InForce]],
) -> None:
    """Lower the inverters' limits the export loop asks for; in its open-loop fallback also
    cap the batteries' discharge to what the export limit leaves, shared in proportion to
    what each was to discharge."""
    source = Source(SourceKind.EXPORT_LIMIT_FALLBACK if caps.open_loop else SourceKind.EXPORT_LIMIT)
    for device_id, pct in caps.inverters.items():
        setpoints[device_id][SetpointName.MAX_W_PCT] = pct
        active[device_id][ControlType.MAX_W_PCT] = InForce(pct, source)
    if caps.discharge_w is None:
        return
    discharging = {
        device_id: number(points[SetpointName.STORAGE_W])
        for device_id, points in setpoints.items()
        if devices[device_id].kind == DeviceKind.BATTERY
        and number(points.get(SetpointName.STORAGE_W, 0.0)) > 0
    }
    total_w = sum(discharging.values())
    if total_w <= caps.discharge_w:
        return
    for device_id, w in discharging.items():
        capped = caps.discharge_w * w / total_w
        setpoints[device_id][SetpointName.STORAGE_W] = capped
        active[device_id][ControlType.STORAGE_W] = InForce(capped, source)
