"""What a station reports, folded into one reading per EVSE (sans-I/O).

MeterValues (2.0.1 and 1.6), TransactionEvent (2.0.1), StartTransaction, StopTransaction
and StatusNotification (both) each step a ``StationState`` to the next: ``fold(state,
version, action, payload)`` is pure and returns the new state. A measurand a message
carries replaces the one before; one it does not carry keeps its last value. Samples of
every context (Sample.Periodic, Sample.Clock, Transaction.Begin/End, Trigger...) apply in
time order; one older than the reading is a backlog and is skipped. Values are scaled to
SI (Wh, W, A, V; kWh/kW, 2.0.1 unitOfMeasure.multiplier); a value that is missing, "NaN",
not a number or in a unit that does not fit stays unknown (None), never 0; unknown
measurands and the EV's own samples are ignored. ``device_state`` gives the gateway's
DeviceState: w positive delivered to the grid, so a charging car is negative (an export
the station does not report counts as none); ``a`` the total current (the phases' sum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ocpp.charge_point import camel_to_snake_case  # type: ignore[import-untyped]

from derms_edge.devices.charger import charging_state
from derms_edge.devices.ocpp.capability import OcppVersion
from derms_edge.errors import DeviceProtocolError
from derms_edge.model import DeviceState, OperatingState


class Charging(StrEnum):
    """What an EVSE is doing, from ChargingState (2.0.1) or the connector status (both)."""

    CHARGING = "charging"
    SUSPENDED_EV = "suspended_ev"
    SUSPENDED_EVSE = "suspended_evse"
    CONNECTED = "connected"
    IDLE = "idle"
    FAULTED = "faulted"
    UNAVAILABLE = "unavailable"


_CHARGING = {
    # 2.0.1 ChargingStateEnumType
    "Charging": Charging.CHARGING,
    "SuspendedEV": Charging.SUSPENDED_EV,
    "SuspendedEVSE": Charging.SUSPENDED_EVSE,
    "EVConnected": Charging.CONNECTED,
    "Idle": Charging.IDLE,
    # 1.6 ChargePointStatus
    "Available": Charging.IDLE,
    "Preparing": Charging.CONNECTED,
    "Finishing": Charging.CONNECTED,
    "Reserved": Charging.IDLE,
    "Unavailable": Charging.UNAVAILABLE,
    "Faulted": Charging.FAULTED,
    # 2.0.1 ConnectorStatusEnumType (Available, Reserved, Unavailable, Faulted above)
    "Occupied": Charging.CONNECTED,
}
_OPERATING = {
    Charging.CHARGING: OperatingState.CHARGING,
    Charging.SUSPENDED_EV: OperatingState.IDLE,
    Charging.SUSPENDED_EVSE: OperatingState.THROTTLED,
    Charging.CONNECTED: OperatingState.IDLE,
    Charging.IDLE: OperatingState.IDLE,
    Charging.FAULTED: OperatingState.FAULT,
    Charging.UNAVAILABLE: OperatingState.OFF,
}

_SCALE = {
    "wh": ("Wh", 1.0),
    "kwh": ("Wh", 1e3),
    "w": ("W", 1.0),
    "kw": ("W", 1e3),
    "a": ("A", 1.0),
    "v": ("V", 1.0),
    "kv": ("V", 1e3),
    "hz": ("Hz", 1.0),
}
"""Units the gateway reads, lower-cased, as (SI unit, factor)."""
_MEASURANDS = {
    "Energy.Active.Import.Register": ("wh_imported", "Wh"),
    "Energy.Active.Export.Register": ("wh_exported", "Wh"),
    "Power.Active.Import": ("w_import", "W"),
    "Power.Active.Export": ("w_export", "W"),
    "Current.Import": ("a", "A"),
    "Voltage": ("v", "V"),
    "Frequency": ("hz", "Hz"),
    "Power.Factor": ("pf", ""),
}
"""Measurands the gateway reads: the reading's field and the SI unit expected."""
_DEFAULT_MEASURAND = "Energy.Active.Import.Register"
_LOCATIONS = ("Outlet", "Body", "Inlet", "Cable")
"""Where a sample may be measured, most wanted first; the EV's own samples are ignored."""
_LINE_TO_LINE = ("L1-L2", "L2-L3", "L3-L1")


@dataclass(frozen=True, slots=True)
class EvseReading:
    """The latest of each quantity one EVSE reported; None = not known."""

    w_import: float | None = None
    """Power drawn by the car, W."""
    w_export: float | None = None
    """Power fed back by the car, W."""
    a: float | None = None
    """Total current, A (the sum of the phases reported)."""
    v: float | None = None
    """Mean line-to-neutral voltage, V."""
    hz: float | None = None
    pf: float | None = None
    wh_imported: float | None = None
    wh_exported: float | None = None
    charging: Charging | None = None
    transaction_id: str | None = None
    timestamp: datetime | None = None
    """When the last sampled values applied were measured."""


@dataclass(frozen=True, slots=True)
class StationState:
    """One station's EVSEs by evse id (1.6: connector id; 0 is the station's main meter)."""

    evses: Mapping[int, EvseReading] = field(default_factory=dict)

    def evse(self, evse_id: int) -> EvseReading:
        """The EVSE's reading; empty if it never reported."""
        return self.evses.get(evse_id, EvseReading())

    def with_evse(self, evse_id: int, reading: EvseReading) -> StationState:
        """A new state with this EVSE's reading replaced."""
        return StationState({**self.evses, evse_id: reading})

    def evse_of(self, transaction_id: str) -> int | None:
        """The EVSE running this transaction, if known."""
        for evse_id, reading in self.evses.items():
            if reading.transaction_id == transaction_id:
                return evse_id
        return None


def _snake(payload: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = camel_to_snake_case(dict(payload))
    return result


def _number(raw: Any) -> float | None:
    """A finite number from a 2.0.1 number or a 1.6 string; None for anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            return None
    else:
        return None
    return value if math.isfinite(value) else None


def _sample(sv: Mapping[str, Any]) -> _Sample | None:
    """One sampledValue in SI; None when the gateway does not read it (an unknown measurand,
    one of the EV's). The value is None when it is not a number or its unit does not fit."""
    measurand = sv.get("measurand") or _DEFAULT_MEASURAND
    location = sv.get("location") or "Outlet"
    if measurand not in _MEASURANDS or location not in _LOCATIONS:
        return None
    name, si_unit = _MEASURANDS[measurand]
    signed = sv.get("format") == "SignedData" or sv.get("signed_meter_value") is not None
    uom = sv.get("unit_of_measure")
    multiplier: Any = 0
    if isinstance(uom, Mapping):  # 2.0.1: {unit, multiplier}
        unit, multiplier = uom.get("unit"), uom.get("multiplier") or 0
    else:  # 1.6: unit
        unit = sv.get("unit")
    value = None if sv.get("format") == "SignedData" else _number(sv.get("value"))
    factor = 1.0  # no unit: the measurand's own SI unit (the standard's default, Wh, is
    if unit is not None and si_unit:  # meant for energy; a current without a unit is in A)
        si, factor = _SCALE.get(str(unit).lower(), ("?", 1.0))
        if si != si_unit:
            value = None
    if value is not None:
        if not isinstance(multiplier, int) or isinstance(multiplier, bool):
            value = None
        else:
            value = value * factor * 10.0**multiplier
    phase = sv.get("phase")
    return _Sample(name, phase if isinstance(phase, str) else None, value, location, signed)


@dataclass(frozen=True, slots=True)
class _Sample:
    name: str
    phase: str | None
    value: float | None
    location: str
    signed: bool


def _combine(name: str, samples: Sequence[_Sample]) -> float | None:
    """One field from its samples at their best location: a value without a phase is the
    total; else the phases' sum (current, power, energy) or mean (voltage, line-to-line
    taken to line-to-neutral; frequency; power factor). A phase reported but unreadable
    makes the result unknown; a phase not reported at all (a car on one phase) is not
    counted."""
    best = min(_LOCATIONS.index(s.location) for s in samples)
    here = [s for s in samples if _LOCATIONS.index(s.location) == best]
    whole = [s.value for s in here if s.phase is None]
    if whole:
        return whole[-1]
    by_phase = {s.phase: s.value for s in here if s.phase not in (None, "N")}
    values = [v for v in by_phase.values() if v is not None]
    if not by_phase or len(values) < len(by_phase):
        return None
    if name == "v":
        ln = [
            v / math.sqrt(3) if p in _LINE_TO_LINE else v
            for p, v in by_phase.items()
            if v is not None
        ]
        return sum(ln) / len(ln)
    if name in ("hz", "pf"):
        return sum(values) / len(values)
    return sum(values)


def _time(raw: Any, where: str) -> datetime:
    """A sample's timestamp, UTC when the station gives no zone."""
    try:
        t = datetime.fromisoformat(str(raw))
    except ValueError:
        raise DeviceProtocolError(f"{where}: timestamp {raw!r} is not ISO 8601") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _apply_meter_values(reading: EvseReading, meter_values: Any, where: str) -> EvseReading:
    """The reading with ``meter_values`` (a list of {timestamp, sampledValue}) applied in
    time order (stations do not always list them so); entries older than the reading are
    skipped (an offline backlog must not overwrite the present). A signed sample's value
    counts only where the message has no plain sample of that measurand: a KEBA P30 sends
    its signed energy in kWh without a unit (m-hegele/notes, keba-invalid-meter-start-stop)."""
    if not isinstance(meter_values, list):
        raise DeviceProtocolError(f"{where}: meterValue is not a list")
    entries: list[tuple[datetime, list[_Sample]]] = []
    for mv in meter_values:
        if not isinstance(mv, Mapping) or not isinstance(mv.get("sampled_value"), list):
            raise DeviceProtocolError(f"{where}: a meterValue without a sampledValue list")
        read = [_sample(sv) for sv in mv["sampled_value"] if isinstance(sv, Mapping)]
        entries.append((_time(mv.get("timestamp"), where), [s for s in read if s is not None]))
    plain = {s.name for _, samples in entries for s in samples if not s.signed}
    for timestamp, samples in sorted(entries, key=lambda e: e[0]):
        if reading.timestamp is not None and timestamp < reading.timestamp:
            continue
        grouped: dict[str, list[_Sample]] = {}
        for s in samples:
            if not (s.signed and s.name in plain):
                grouped.setdefault(s.name, []).append(s)
        changes: dict[str, Any] = {n: _combine(n, vals) for n, vals in grouped.items()}
        reading = replace(reading, **changes, timestamp=timestamp)
    return reading


def _evse_id(p: Mapping[str, Any], key: str, where: str) -> int:
    value = p.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DeviceProtocolError(f"{where}: {key} {value!r} is not an evse id")
    return value


def _ended(reading: EvseReading) -> EvseReading:
    """A reading after its transaction ended: no transaction, power and current unknown
    until the next sample (never a stale charging power)."""
    return replace(reading, transaction_id=None, w_import=None, w_export=None, a=None)


def fold(
    state: StationState, version: OcppVersion, action: str, payload: Mapping[str, Any]
) -> StationState:
    """The station state after one message from the station (its action and its payload,
    raw camelCase or as the ``ocpp`` library hands it). Actions that say nothing about
    readings leave the state as it was. 1.6 StartTransaction needs the id the CSMS gave:
    use ``start_transaction``."""
    p = _snake(payload)
    where = f"{action} ({version})"
    if action == "MeterValues":
        key = "evse_id" if version is OcppVersion.V201 else "connector_id"
        evse_id = _evse_id(p, key, where)
        reading = _apply_meter_values(state.evse(evse_id), p.get("meter_value"), where)
        return state.with_evse(evse_id, reading)
    if action == "StatusNotification":
        key = "evse_id" if version is OcppVersion.V201 else "connector_id"
        status = p.get("connector_status" if version is OcppVersion.V201 else "status")
        evse_id = _evse_id(p, key, where)
        reading = state.evse(evse_id)
        charging = _CHARGING.get(str(status))
        if version is OcppVersion.V201 and charging is Charging.CONNECTED:
            charging = reading.charging or charging  # Occupied: TransactionEvent says more
        return state.with_evse(evse_id, replace(reading, charging=charging))
    if action == "TransactionEvent" and version is OcppVersion.V201:
        return _transaction_event(state, p, where)
    if action == "StopTransaction" and version is OcppVersion.V16:
        return _stop_transaction(state, p, where)
    return state


def _transaction_event(state: StationState, p: Mapping[str, Any], where: str) -> StationState:
    info = p.get("transaction_info")
    if not isinstance(info, Mapping) or not isinstance(info.get("transaction_id"), str):
        raise DeviceProtocolError(f"{where}: transactionInfo.transactionId is missing")
    transaction_id = info["transaction_id"]
    evse = p.get("evse")
    evse_id = evse.get("id") if isinstance(evse, Mapping) else state.evse_of(transaction_id)
    if not isinstance(evse_id, int):
        raise DeviceProtocolError(f"{where}: transaction {transaction_id} on no known evse")
    reading = replace(state.evse(evse_id), transaction_id=transaction_id)
    if "meter_value" in p:
        reading = _apply_meter_values(reading, p["meter_value"], where)
    charging = _CHARGING.get(str(info.get("charging_state")))
    if charging is not None:
        reading = replace(reading, charging=charging)
    if p.get("event_type") == "Ended":
        reading = replace(_ended(reading), charging=charging or Charging.IDLE)
    return state.with_evse(evse_id, reading)


def start_transaction(
    state: StationState, payload: Mapping[str, Any], transaction_id: int
) -> StationState:
    """1.6 StartTransaction with the transaction id the CSMS gave it: the connector's
    transaction and its meter at the start (meterStart, Wh)."""
    p = _snake(payload)
    evse_id = _evse_id(p, "connector_id", "StartTransaction (1.6)")
    reading = state.evse(evse_id)
    wh = _number(p.get("meter_start"))
    return state.with_evse(
        evse_id,
        replace(
            reading,
            transaction_id=str(transaction_id),
            wh_imported=wh if wh is not None else reading.wh_imported,
        ),
    )


def _stop_transaction(state: StationState, p: Mapping[str, Any], where: str) -> StationState:
    transaction_id = p.get("transaction_id")
    evse_id = state.evse_of(str(transaction_id))
    if evse_id is None:
        return state  # a transaction the gateway never saw start: nothing to attribute
    reading = state.evse(evse_id)
    if "transaction_data" in p:
        reading = _apply_meter_values(reading, p["transaction_data"], where)
    wh = _number(p.get("meter_stop"))
    if wh is not None:
        reading = replace(reading, wh_imported=wh)
    charging = reading.charging if reading.charging is not Charging.CHARGING else None
    return state.with_evse(evse_id, replace(_ended(reading), charging=charging))


def device_state(state: StationState, evse_id: int) -> DeviceState:
    """The gateway's DeviceState of one EVSE: w = export - import (a charging car is
    negative), the operating state from the station's charging state, else from the power."""
    r = state.evse(evse_id)
    if r.w_import is None and r.w_export is None:
        w = None
    else:
        w = (r.w_export or 0.0) - (r.w_import or 0.0)
    operating = _OPERATING[r.charging] if r.charging is not None else charging_state(w, r.a, r.v)
    return DeviceState(
        w=w,
        pf=r.pf,
        v=r.v,
        hz=r.hz,
        a=r.a,
        wh_imported=r.wh_imported,
        wh_exported=r.wh_exported,
        state=operating,
    )
