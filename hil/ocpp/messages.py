"""OCPP payload pieces in the `ocpp` library's snake_case form: charging profiles in, meter
values and composite schedules out, for 2.0.1 and 1.6 (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hil.ocpp.profiles import PURPOSE_NAMES, CompositePeriod, Electrical, Period, Profile
from hil.ocpp.station import PHASE_NAMES, Reading


class BadProfile(ValueError):
    """A charging profile the schema let through but the station cannot read."""


def iso(t: datetime) -> str:
    """UTC timestamp as OCPP writes it, e.g. 2026-12-04T07:00:00.123Z."""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | None, field: str) -> datetime | None:
    """An OCPP dateTime (a naive one taken as UTC); BadProfile names the field."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadProfile(f"{field}: {value!r} is not a dateTime") from exc
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_profile(raw: Mapping[str, Any], evse_id: int, version: str) -> Profile:
    """A SetChargingProfile's profile (2.0.1 chargingProfile / 1.6 csChargingProfiles) for
    evse_id (1.6: connector id)."""
    try:
        schedules = raw["charging_schedule"]
        if version == "2.0.1":
            if len(schedules) != 1:
                raise BadProfile("only one chargingSchedule per profile is supported")
            schedule = schedules[0]
            profile_id = raw["id"]
        else:
            schedule = schedules
            profile_id = raw["charging_profile_id"]
        tx = raw.get("transaction_id")
        return Profile(
            id=int(profile_id),
            stack_level=int(raw["stack_level"]),
            purpose=PURPOSE_NAMES[raw["charging_profile_purpose"]],
            kind=raw["charging_profile_kind"],
            evse_id=evse_id,
            unit=schedule["charging_rate_unit"],
            periods=tuple(
                Period(int(p["start_period"]), float(p["limit"]), p.get("number_phases"))
                for p in schedule["charging_schedule_period"]
            ),
            start_schedule=parse_time(schedule.get("start_schedule"), "startSchedule"),
            duration_s=schedule.get("duration"),
            recurrency=raw.get("recurrency_kind"),
            valid_from=parse_time(raw.get("valid_from"), "validFrom"),
            valid_to=parse_time(raw.get("valid_to"), "validTo"),
            transaction_id=None if tx is None else str(tx),
        )
    except KeyError as exc:
        raise BadProfile(f"missing or unknown {exc.args[0]!r}") from exc


def sampled_values(reading: Reading, version: str, context: str) -> list[dict[str, Any]]:
    """Power.Active.Import (W), Current.Import and Voltage per phase, the energy register (Wh)
    and SoC (%) when the car reports it; 1.6 values are strings."""
    rows: list[tuple[str, float, str, str | None]] = [("Power.Active.Import", reading.w, "W", None)]
    rows += [
        ("Current.Import", a, "A", phase)
        for a, phase in zip(reading.amps, PHASE_NAMES, strict=False)
    ]
    rows += [
        ("Voltage", v, "V", f"{phase}-N") for v, phase in zip(reading.v, PHASE_NAMES, strict=False)
    ]
    rows.append(("Energy.Active.Import.Register", reading.wh, "Wh", None))
    if reading.soc_pct is not None:
        rows.append(("SoC", reading.soc_pct, "Percent", None))
    values = []
    for measurand, value, unit, phase in rows:
        if version == "2.0.1":
            item: dict[str, Any] = {
                "value": round(value, 3),
                "measurand": measurand,
                "context": context,
                "unit_of_measure": {"unit": unit},
            }
        else:
            item = {"value": f"{value:.3f}", "measurand": measurand, "context": context}
            item["unit"] = unit
        if phase is not None:
            item["phase"] = phase
        if measurand == "SoC":
            item["location"] = "EV"
        values.append(item)
    return values


def meter_value(reading: Reading, version: str, context: str) -> dict[str, Any]:
    """One MeterValue: its timestamp and sampled values."""
    return {"timestamp": iso(reading.t), "sampled_value": sampled_values(reading, version, context)}


def schedule_periods(
    periods: list[CompositePeriod], unit: str, electrical: Electrical
) -> list[dict[str, Any]]:
    """Composite periods in `unit`, at most one decimal as the standard allows."""
    return [
        {
            "start_period": p.start_s,
            "limit": round(electrical.in_unit(p.amps, unit), 1),
            "number_phases": electrical.phases,
        }
        for p in periods
    ]
