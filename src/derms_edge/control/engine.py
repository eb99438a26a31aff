"""The control core: event lifecycle, arbitration, SoC guard and setpoints, without I/O.

`Controller` is given events (already validated), the devices' latest states and the time;
it answers with responses and the setpoints each device should have. It keeps the event
records the schedule store persists, and never reads a clock, a socket or a file itself,
so hours of schedule run in a test in milliseconds and the HIL rig can reuse it unchanged.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from derms_edge.control.arbitration import REACTIVE, displaces, resolve
from derms_edge.control.curves import EdgeVoltVar
from derms_edge.control.events import (
    MAX_EVSE_A,
    MIN_EVSE_A,
    Control,
    ControlType,
    ControlValue,
    Event,
    Reason,
    Response,
    Status,
    VoltVarCurve,
    number,
    superseded_by,
)
from derms_edge.control.export_limit import ExportLimiter, Inverter
from derms_edge.control.soc import (
    BatteryLimits,
    Segment,
    headroom_w,
    hold_at_limit,
    project,
    violation_detail,
)
from derms_edge.model import (
    NOMINAL_V_LN,
    Capability,
    DeviceState,
    Quality,
    SetpointName,
    SetpointValue,
)

log = logging.getLogger(__name__)

TERMINAL = frozenset(
    {Status.COMPLETED, Status.CANCELLED, Status.SUPERSEDED, Status.REJECTED, Status.ABORTED}
)
SITE = "site"
"""The key of site-wide controls (export_limit_w) in the active map."""

# which setpoint a control type needs on a device, by device kind
_NEEDS: dict[ControlType, tuple[SetpointName, ...]] = {
    # a battery without a limit point is still curtailed: its storage setpoint is capped
    ControlType.MAX_W_PCT: (
        SetpointName.MAX_W_PCT,
        SetpointName.EVSE_MAX_A,
        SetpointName.STORAGE_W,
    ),
    ControlType.VOLT_VAR: (SetpointName.VOLT_VAR, SetpointName.VAR),
    ControlType.FIXED_PF: (SetpointName.FIXED_PF,),
    ControlType.STORAGE_W: (SetpointName.STORAGE_W,),
    ControlType.EVSE_MAX_A: (SetpointName.EVSE_MAX_A,),
    ControlType.EVSE_MAX_W: (SetpointName.EVSE_MAX_A,),
}
_KINDS: dict[ControlType, frozenset[str]] = {
    ControlType.MAX_W_PCT: frozenset({"inverter", "battery", "evse"}),
    ControlType.VOLT_VAR: frozenset({"inverter", "battery"}),
    ControlType.FIXED_PF: frozenset({"inverter", "battery"}),
    ControlType.STORAGE_W: frozenset({"battery"}),
    ControlType.EVSE_MAX_A: frozenset({"evse"}),
    ControlType.EVSE_MAX_W: frozenset({"evse"}),
}


@dataclass(frozen=True, slots=True)
class Role:
    """A party allowed to send controls."""

    name: str
    primacy: int
    allow: frozenset[ControlType]


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the control core needs to know about one device now."""

    id: str
    kind: str
    quality: Quality
    state: DeviceState | None = None
    capability: Capability | None = None
    supports: frozenset[SetpointName] | None = None
    """None until the device has connected once (then judged by its kind)."""
    reserve_soc_pct: float | None = None
    efficiency: float = 0.95
    max_a: float | None = None
    """EV chargers: the highest current limit, A per phase."""
    phases: int | None = None
    """EV chargers: phases in use."""

    def can(self, control_type: ControlType) -> bool:
        """Whether this device can carry a control of this type."""
        if self.kind not in _KINDS.get(control_type, frozenset()):
            return False
        if self.supports is None:
            return True
        return any(name in self.supports for name in _NEEDS[control_type])

    @property
    def soc_known(self) -> bool:
        """A fresh state of charge: read within the staleness window."""
        return (
            self.quality is Quality.OK and self.state is not None and self.state.soc_pct is not None
        )

    def battery_limits(self) -> BatteryLimits | None:
        """SoC limits and ratings for projections; None when the capacity is unknown."""
        cap = self.capability
        if cap is None or cap.wh_rtg is None or cap.wh_rtg <= 0:
            return None
        reserve = max(cap.soc_min_pct or 0.0, self.reserve_soc_pct or 0.0)
        return BatteryLimits(
            capacity_wh=cap.wh_rtg,
            reserve_pct=reserve,
            max_pct=cap.soc_max_pct if cap.soc_max_pct is not None else 100.0,
            efficiency=self.efficiency,
            charge_w_max=cap.charge_w_max,
            discharge_w_max=cap.discharge_w_max,
        )


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value in force came from."""

    kind: str
    """"event", "default" or "export_limit"."""
    role: str | None = None
    mrid: str | None = None


@dataclass(frozen=True, slots=True)
class InForce:
    """One control value in force and its source."""

    value: ControlValue
    source: Source


@dataclass(slots=True)
class Record:
    """An accepted event and where it is in its life."""

    event: Event
    status: Status


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
    records: dict[str, Record] = field(default_factory=dict)
    """Every event known (finished ones too: repeats and duplicate mrids are answered)."""
    _open: dict[str, Record] = field(default_factory=dict)
    """The scheduled and started records: what each step looks at."""
    defaults: dict[str, Control] = field(default_factory=dict)
    heard: dict[str, datetime] = field(default_factory=dict)
    _edge: dict[str, EdgeVoltVar] = field(default_factory=dict)
    _last_tick: datetime | None = None

    # -- inbound -------------------------------------------------------------------------

    def hear(self, role: str, now: datetime) -> None:
        """Any message from a role proves its dispatcher alive."""
        self.heard[role] = now

    def restore(self, records: Iterable[Record], now: datetime) -> None:
        """Records from the schedule store after a restart; every role counts as heard now."""
        for record in records:
            self.records[record.event.mrid] = record
            self._track(record)
        for role in self.roles:
            self.heard.setdefault(role, now)

    def accept(
        self, event: Event, devices: Mapping[str, DeviceView], now: datetime
    ) -> tuple[list[Response], list[Record]]:
        """Check a new event; accepted ones are recorded and answered received + scheduled."""
        known = self.records.get(event.mrid)
        if known is not None:
            if known.event.body == event.body:
                return [
                    Response(event.mrid, known.status, now, detail="repeat of a known event")
                ], []
            return [
                _reject(
                    event.mrid,
                    now,
                    Reason.DUPLICATE,
                    f"mrid {event.mrid} is already used by an event with a different body "
                    f"(status {known.status})",
                )
            ], []
        refusal = self._refusal(event, devices, now)
        if refusal is not None:
            return [refusal], []
        record = Record(event, Status.SCHEDULED)
        self.records[event.mrid] = record
        self._track(record)
        responses = [
            Response(event.mrid, Status.RECEIVED, now),
            Response(
                event.mrid,
                Status.SCHEDULED,
                now,
                detail=f"from {_iso(event.start)} for {event.duration_s:g} s",
            ),
        ]
        return responses, [record]

    def cancel(self, mrid: str, role: str, now: datetime) -> tuple[list[Response], list[Record]]:
        """Cancel an event of the same role; the default (or the next event) takes over."""
        record = self.records.get(mrid)
        if record is None:
            return [_reject(mrid, now, Reason.UNKNOWN_EVENT, f"no event with mrid {mrid}")], []
        if record.event.role != role:
            return [
                _reject(
                    mrid,
                    now,
                    Reason.UNAUTHORIZED,
                    f"event {mrid} belongs to role {record.event.role}, not {role}",
                )
            ], []
        if record.status in TERMINAL:
            return [
                _reject(
                    mrid,
                    now,
                    Reason.INVALID,
                    f"event {mrid} is already {record.status}; nothing to cancel",
                )
            ], []
        record.status = Status.CANCELLED
        self._track(record)
        return [Response(mrid, Status.CANCELLED, now)], [record]

    def set_default(self, role: str, control: Control | None) -> None:
        """The retained default control of a role (None clears it)."""
        if control is None:
            self.defaults.pop(role, None)
        else:
            self.defaults[role] = control

    def _refusal(
        self, event: Event, devices: Mapping[str, DeviceView], now: datetime
    ) -> Response | None:
        role = self.roles[event.role]
        forbidden = sorted(event.control.types - role.allow)
        if forbidden:
            return _reject(
                event.mrid,
                now,
                Reason.UNAUTHORIZED,
                f"role {role.name} may not send {', '.join(forbidden)} "
                f"(allowed: {', '.join(sorted(role.allow))})",
            )
        if event.primacy < role.primacy:
            return _reject(
                event.mrid,
                now,
                Reason.UNAUTHORIZED,
                f"primacy {event.primacy} is stronger than role {role.name}'s {role.primacy}",
            )
        if event.end <= now:
            return _reject(
                event.mrid,
                now,
                Reason.EXPIRED,
                f"the event ended at {_iso(event.end)}, before it arrived ({_iso(now)})",
            )
        unknown = [d for d in event.devices or () if d not in devices]
        if unknown:
            return _reject(
                event.mrid,
                now,
                Reason.NOT_APPLICABLE,
                f"devices: no device {', '.join(unknown)} at this gateway "
                f"(devices: {', '.join(devices)})",
            )
        problem = self._inapplicable(event, devices)
        if problem is not None:
            return _reject(event.mrid, now, Reason.NOT_APPLICABLE, problem)
        if ControlType.STORAGE_W in event.control.types:
            return self._storage_refusal(event, devices, now)
        return None

    def _inapplicable(self, event: Event, devices: Mapping[str, DeviceView]) -> str | None:
        for control_type in sorted(event.control.types):
            if control_type is ControlType.EXPORT_LIMIT_W:
                if self.meter is None:
                    return "export_limit_w needs a meter (a kind: meter device); there is none"
                continue
            targets = _targets(event, devices)
            able = [d for d in targets if d.can(control_type)]
            if not able:
                named = ", ".join(d.id for d in targets) or "none"
                return f"{control_type}: no targeted device can do it (devices: {named})"
            if event.devices is not None and len(able) < len(targets):
                unable = ", ".join(d.id for d in targets if not d.can(control_type))
                return f"{control_type}: {unable} cannot do it"
        amps = event.control.evse_max_a
        for device in _targets(event, devices):
            if amps is not None and device.max_a is not None and amps > device.max_a:
                return (
                    f"evse_max_a {amps:g} A is above {device.id}'s maximum "
                    f"{device.max_a:g} A per phase"
                )
        value = event.control.storage_w
        for device in _targets(event, devices):
            if value is None or not device.can(ControlType.STORAGE_W):
                continue
            cap = device.capability
            rating = (
                None if cap is None else (cap.discharge_w_max if value > 0 else cap.charge_w_max)
            )
            if rating is not None and abs(value) > rating:
                direction = "discharge" if value > 0 else "charge"
                return (
                    f"storage_w {value:g} W is beyond {device.id}'s {direction} rating {rating:g} W"
                )
        return None

    def _storage_refusal(
        self, event: Event, devices: Mapping[str, DeviceView], now: datetime
    ) -> Response | None:
        for device in _targets(event, devices):
            if not device.can(ControlType.STORAGE_W):
                continue
            refusal = self._soc_check(device, event, now, include=event)
            if refusal is not None:
                return refusal
        return None

    def _soc_check(
        self, device: DeviceView, event: Event, now: datetime, include: Event | None
    ) -> Response | None:
        """Project the battery over its storage schedule; refuse ``event`` if it breaks a limit."""
        limits = device.battery_limits()
        if not device.soc_known or limits is None:
            what = "capacity" if limits is None else "state of charge"
            return _reject(
                event.mrid,
                now,
                Reason.SOC_UNKNOWN,
                f"{device.id}: {what} unknown or stale (quality {device.quality}); "
                "no storage activation without it",
            )
        assert device.state is not None and device.state.soc_pct is not None
        soc = device.state.soc_pct
        with_event = project(limits, soc, now, self._timeline(device, now, include))
        violation = with_event.first_violation
        if violation is None:
            return None
        without = project(limits, soc, now, self._timeline(device, now, None)).first_violation
        if without is not None and without.at <= violation.at and violation.mrid != event.mrid:
            return None  # the schedule was already infeasible before this event
        return _reject(
            event.mrid, now, Reason.SOC_LIMIT, f"{device.id}: {violation_detail(violation)}"
        )

    def _timeline(self, device: DeviceView, now: datetime, extra: Event | None) -> list[Segment]:
        """The storage setpoint in force over time on one battery, from the schedule."""
        events = [
            r.event
            for r in self._open.values()
            if r.event.control.storage_w is not None and _applies(r.event, device.id)
        ]
        if extra is not None:
            events.append(extra)
        edges = sorted({t for e in events for t in (e.start, e.end) if t > now} | {now})
        segments: list[Segment] = []
        for start, end in itertools.pairwise(edges):
            winner = resolve([e for e in events if e.start <= start < e.end], ControlType.STORAGE_W)
            if winner is not None and winner.control.storage_w is not None:
                segments.append(Segment(start, end, winner.control.storage_w, winner.mrid))
        return segments

    # -- the control step -----------------------------------------------------------------

    def step(self, devices: Mapping[str, DeviceView], now: datetime) -> Decision:
        """Advance every event's life to ``now`` and decide every device's setpoints."""
        dt_s = 0.0 if self._last_tick is None else (now - self._last_tick).total_seconds()
        self._last_tick = now
        responses: list[Response] = []
        changed: list[Record] = []

        def move(
            record: Record, status: Status, reason: str | None = None, detail: str | None = None
        ) -> None:
            record.status = status
            self._track(record)
            responses.append(Response(record.event.mrid, status, now, reason, detail))
            changed.append(record)

        self._lifecycle(devices, now, move)
        active_events = [r.event for r in self._open.values() if r.status is Status.STARTED]
        defaults = self._defaults()
        active: dict[str, dict[ControlType, InForce]] = {}
        setpoints: dict[str, dict[SetpointName, SetpointValue]] = {}
        for device in devices.values():
            if device.kind == "meter":
                continue
            in_force = self._in_force(device, active_events, defaults)
            active[device.id] = in_force
            setpoints[device.id] = self._setpoints(device, in_force, dt_s, move, now)
        site = self._site(active_events)
        if site is not None:
            active[SITE] = {ControlType.EXPORT_LIMIT_W: site}
            self._limit_export(number(site.value), devices, active, setpoints, dt_s)
        else:
            self.limiter.reset()
        return Decision(setpoints, active, responses, changed)

    def _lifecycle(self, devices: Mapping[str, DeviceView], now: datetime, move: _Move) -> None:
        for role in self.roles:
            heard = self.heard.setdefault(role, now)
            silent_s = (now - heard).total_seconds()
            if silent_s <= self.dispatcher_timeout_s:
                continue
            for record in self._live(role):
                if record.status is Status.STARTED or record.event.start <= now:
                    move(
                        record,
                        Status.ABORTED,
                        Reason.DISPATCHER_TIMEOUT,
                        f"role {role} silent for {silent_s:.0f} s (timeout "
                        f"{self.dispatcher_timeout_s:g} s); the default control applies",
                    )
        for record in sorted(self._live(), key=lambda r: r.event.start):
            event = record.event
            if now >= event.end:
                if record.status is Status.STARTED:
                    move(record, Status.COMPLETED)
                else:
                    move(
                        record,
                        Status.COMPLETED,
                        detail="its window passed while the gateway was not running",
                    )
                continue
            rival = next((r.event for r in self._live() if displaces(r.event, event, now)), None)
            if rival is not None:
                move(
                    record,
                    Status.SUPERSEDED,
                    superseded_by(rival.mrid),
                    f"event {rival.mrid} (primacy {rival.primacy}) takes over every device "
                    "and control of this one",
                )
                continue
            if record.status is Status.SCHEDULED and event.start <= now:
                refusal = self._activation_refusal(event, devices, now)
                if refusal is not None:
                    move(record, Status.REJECTED, refusal.reason, refusal.detail)
                else:
                    move(record, Status.STARTED)

    def _track(self, record: Record) -> None:
        """Keep the open index in step with a record's status."""
        if record.status in TERMINAL:
            self._open.pop(record.event.mrid, None)
        else:
            self._open[record.event.mrid] = record

    def _live(self, role: str | None = None) -> list[Record]:
        return [r for r in self._open.values() if role is None or r.event.role == role]

    def _activation_refusal(
        self, event: Event, devices: Mapping[str, DeviceView], now: datetime
    ) -> Response | None:
        targets = [
            d for d in _targets(event, devices) if any(d.can(t) for t in event.control.types)
        ]
        if targets and all(d.quality is Quality.OFFLINE for d in targets):
            return _reject(
                event.mrid,
                now,
                Reason.DEVICE_OFFLINE,
                f"every targeted device is offline ({', '.join(d.id for d in targets)})",
            )
        if event.control.storage_w is None:
            return None
        for device in targets:
            if device.can(ControlType.STORAGE_W):
                refusal = self._soc_check(device, event, now, include=None)
                if refusal is not None:
                    return refusal
        return None

    def _in_force(
        self,
        device: DeviceView,
        events: list[Event],
        defaults: Mapping[ControlType, InForce],
    ) -> dict[ControlType, InForce]:
        mine = [e for e in events if _applies(e, device.id)]
        result: dict[ControlType, InForce] = {}
        for control_type in ControlType:
            if control_type is ControlType.EXPORT_LIMIT_W or not device.can(control_type):
                continue
            winner = resolve(mine, control_type)
            if winner is not None:
                value = winner.control.items()[control_type]
                result[control_type] = InForce(value, Source("event", winner.role, winner.mrid))
                continue
            if control_type in defaults:
                result[control_type] = defaults[control_type]
        if all(t in result for t in REACTIVE):  # one reactive mode at a time: the stronger's
            vv, pf = (result[t].source for t in REACTIVE)
            del result[ControlType.VOLT_VAR if self._stronger(pf, vv) else ControlType.FIXED_PF]
        return result

    def _stronger(self, a: Source, b: Source) -> bool:
        """Whether source ``a`` beats ``b``: events before defaults, then IEEE 2030.5 rules
        between events (primacy, creation time), role primacy between defaults."""
        if (a.kind == "event") != (b.kind == "event"):
            return a.kind == "event"
        if a.mrid is not None and b.mrid is not None:
            return self.records[a.mrid].event.beats(self.records[b.mrid].event)
        return _role_primacy(a, self.roles) < _role_primacy(b, self.roles)

    def _defaults(self) -> dict[ControlType, InForce]:
        """Every control's default in force, the same for every device."""
        found = {t: self._default(t) for t in ControlType}
        return {t: value for t, value in found.items() if value is not None}

    def _default(self, control_type: ControlType) -> InForce | None:
        """The default of the strongest role that sets this control, else the config's."""
        for role in sorted(self.defaults, key=lambda r: self.roles[r].primacy):
            value = self.defaults[role].items().get(control_type)
            if value is not None:
                return InForce(value, Source("default", role))
        value = self.config_default.items().get(control_type)
        return None if value is None else InForce(value, Source("default"))

    def _site(self, events: list[Event]) -> InForce | None:
        if self.meter is None:
            return None
        winner = resolve(events, ControlType.EXPORT_LIMIT_W)
        if winner is not None and winner.control.export_limit_w is not None:
            return InForce(winner.control.export_limit_w, Source("event", winner.role, winner.mrid))
        return self._default(ControlType.EXPORT_LIMIT_W)

    def _setpoints(
        self,
        device: DeviceView,
        in_force: dict[ControlType, InForce],
        dt_s: float,
        move: _Move,
        now: datetime,
    ) -> dict[SetpointName, SetpointValue]:
        result: dict[SetpointName, SetpointValue] = {}
        supports = device.supports or frozenset()
        limit = in_force.get(ControlType.MAX_W_PCT)
        if device.kind == "evse":
            amps = _evse_amps(device, in_force)
            if amps is not None:
                result[SetpointName.EVSE_MAX_A] = amps
        elif limit is not None and (
            device.supports is None or SetpointName.MAX_W_PCT in device.supports
        ):
            result[SetpointName.MAX_W_PCT] = number(limit.value)
        curve = in_force.get(ControlType.VOLT_VAR)
        if curve is not None:
            assert isinstance(curve.value, VoltVarCurve)
            self._volt_var(device, curve.value, supports, dt_s, result)
        else:
            self._edge.pop(device.id, None)
        pf = in_force.get(ControlType.FIXED_PF)
        if pf is not None:
            result[SetpointName.FIXED_PF] = pf.value
        storage = in_force.get(ControlType.STORAGE_W)
        if storage is not None:
            w = self._guarded_storage(device, storage, limit, move, now)
            if w is not None:
                result[SetpointName.STORAGE_W] = w
        return result

    def _volt_var(
        self,
        device: DeviceView,
        curve: VoltVarCurve,
        supports: frozenset[SetpointName],
        dt_s: float,
        result: dict[SetpointName, SetpointValue],
    ) -> None:
        native = curve.mode == "native" or (
            curve.mode == "auto" and SetpointName.VOLT_VAR in supports
        )
        if native:
            result[SetpointName.VOLT_VAR] = curve
            return
        cap, state = device.capability, device.state
        if cap is None or cap.v_nom is None or state is None or state.v is None:
            return
        va = cap.va_max or cap.w_max
        if va is None:
            return
        edge = self._edge.get(device.id)
        if edge is None:
            edge = self._edge[device.id] = EdgeVoltVar(curve, va)
        edge.curve = curve  # a new curve moves Q through the response filter, not in a jump
        if device.quality is Quality.OK:
            result[SetpointName.VAR] = edge.update(state.v / cap.v_nom, dt_s)

    def _guarded_storage(
        self,
        device: DeviceView,
        storage: InForce,
        limit: InForce | None,
        move: _Move,
        now: datetime,
    ) -> float | None:
        """The storage setpoint the SoC limits and any curtailment allow; None = no control."""
        w = number(storage.value)
        event = self._event_of(storage)
        limits = device.battery_limits()
        if not device.soc_known or limits is None:
            if event is not None and self.records[event].status is Status.STARTED:
                move(
                    self.records[event],
                    Status.ABORTED,
                    Reason.SOC_UNKNOWN,
                    f"{device.id}: state of charge unknown or stale (quality {device.quality}); "
                    "storage control stopped",
                )
            return None
        assert device.state is not None and device.state.soc_pct is not None
        soc = device.state.soc_pct
        held = hold_at_limit(limits, soc, w)
        if held == w and w != 0:
            discharge_w, charge_w = headroom_w(limits, soc, 2 * self.interval_s)
            held = min(w, discharge_w) if w > 0 else max(w, -charge_w)
        elif held != w and event is not None:
            edge = "reserve" if w > 0 else "maximum"
            bound = limits.reserve_pct if w > 0 else limits.max_pct
            move(
                self.records[event],
                Status.ABORTED,
                Reason.SOC_LIMIT,
                f"{device.id}: SoC {device.state.soc_pct:.1f} % reached the {edge} "
                f"{bound:g} %; storage_w {w:g} W stopped",
            )
        if limit is not None and held > 0 and device.capability is not None:
            w_max = device.capability.discharge_w_max or device.capability.w_max
            if w_max is not None:
                held = min(held, number(limit.value) / 100.0 * w_max)
        return held

    def _event_of(self, in_force: InForce) -> str | None:
        mrid = in_force.source.mrid
        return mrid if mrid is not None and mrid in self.records else None

    def _limit_export(
        self,
        limit_w: float,
        devices: Mapping[str, DeviceView],
        active: dict[str, dict[ControlType, InForce]],
        setpoints: dict[str, dict[SetpointName, SetpointValue]],
        dt_s: float,
    ) -> None:
        """Run the export loop on the meter and cap the generators' limits with its output."""
        assert self.meter is not None
        meter = devices.get(self.meter)
        export_w = None
        if meter is not None and meter.quality is Quality.OK and meter.state is not None:
            export_w = meter.state.w
        generators: dict[str, Inverter] = {}
        for device in devices.values():
            cap = device.capability
            if (
                device.kind != "inverter"
                or not device.can(ControlType.MAX_W_PCT)
                or cap is None
                or cap.w_max is None
            ):
                continue
            own = setpoints[device.id].get(SetpointName.MAX_W_PCT)
            w_now = device.state.w if device.state is not None and device.state.w else 0.0
            generators[device.id] = Inverter(
                cap.w_max, max(w_now, 0.0), number(own) if own is not None else 100.0
            )
        if not generators:
            return
        for device_id, pct in self.limiter.step(export_w, limit_w, generators, dt_s).items():
            if pct < generators[device_id].cap_pct:
                setpoints[device_id][SetpointName.MAX_W_PCT] = pct
                active[device_id][ControlType.MAX_W_PCT] = InForce(pct, Source("export_limit"))

    def applied_failed(
        self,
        device: str,
        name: SetpointName,
        reason: Reason,
        detail: str,
        *,
        active: Mapping[str, Mapping[ControlType, InForce]],
        now: datetime,
    ) -> tuple[list[Response], list[Record]]:
        """A device refused a setpoint: abort the event it came from."""
        for control_type, in_force in active.get(device, {}).items():
            if name not in _NEEDS.get(control_type, ()):
                continue
            mrid = self._event_of(in_force)
            record = self.records.get(mrid) if mrid is not None else None
            if record is not None and record.status is Status.STARTED:
                record.status = Status.ABORTED
                self._track(record)
                return [Response(record.event.mrid, Status.ABORTED, now, reason, detail)], [record]
        return [], []


class _Move(Protocol):
    """Records a status change inside a step (and the response that says so)."""

    def __call__(
        self, record: Record, status: Status, reason: str | None = None, detail: str | None = None
    ) -> None: ...


def _evse_amps(device: DeviceView, in_force: dict[ControlType, InForce]) -> float | None:
    """A charger's current limit: its own limit, capped by a curtailment (% of its maximum)
    and by a power cap (W converted at the measured voltage); the lowest holds."""
    caps: list[float] = []
    amps = in_force.get(ControlType.EVSE_MAX_A)
    if amps is not None:
        caps.append(number(amps.value))
    limit = in_force.get(ControlType.MAX_W_PCT)
    if limit is not None and device.max_a is not None:
        caps.append(signalled(number(limit.value) / 100.0 * device.max_a, device.max_a))
    power = in_force.get(ControlType.EVSE_MAX_W)
    if power is not None:
        caps.append(amps_for_power(number(power.value), device))
    return min(caps, default=None)


def amps_for_power(w: float, device: DeviceView) -> float:
    """The current limit per phase that keeps a charger at or under ``w``: I = P / (n x V_LN).

    V is the measured line-to-neutral voltage while the reading is fresh; otherwise the
    nominal voltage plus 10 % (the top of the EN 50160 band), so an unknown voltage can only
    make the limit lower. Rounded down to 0.1 A and clamped to {0} or [6, max_a].
    """
    phases = device.phases or 3
    state = device.state
    if device.quality is Quality.OK and state is not None and state.v is not None and state.v > 0:
        v = state.v
    else:
        v_nom = device.capability.v_nom if device.capability is not None else None
        v = (v_nom or NOMINAL_V_LN) * 1.1
    amps = math.floor(w / (phases * v) * 10.0 + 1e-9) / 10.0
    return signalled(amps, device.max_a if device.max_a is not None else MAX_EVSE_A)


def signalled(amps: float, max_a: float) -> float:
    """The highest current at or under ``amps`` a charger can signal (IEC 61851): {0} or
    [6, max_a]. Below 6 A the only value that respects a limit is pause."""
    return 0.0 if amps < MIN_EVSE_A else min(amps, max_a)


def _role_primacy(source: Source, roles: Mapping[str, Role]) -> int:
    """The primacy of a source's role; the configuration's own default comes last."""
    return roles[source.role].primacy if source.role is not None and source.role in roles else 256


def _applies(event: Event, device_id: str) -> bool:
    return event.devices is None or device_id in event.devices


def _targets(event: Event, devices: Mapping[str, DeviceView]) -> list[DeviceView]:
    if event.devices is None:
        return [d for d in devices.values() if d.kind != "meter"]
    return [devices[d] for d in event.devices if d in devices]


def _reject(mrid: str, now: datetime, reason: Reason, detail: str) -> Response:
    return Response(mrid, Status.REJECTED, now, reason, detail)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
