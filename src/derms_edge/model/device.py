"""Devices as the gateway sees them, whatever they speak: kinds, readings and nameplates,
in SI units."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

NOMINAL_V_LN = 230.0
"""Line-to-neutral voltage assumed where none is measured or known, V (IEC 60038)."""


class DeviceKind(StrEnum):
    """What a device is, by nature (not by vendor or protocol)."""

    INVERTER = "inverter"
    """A PV inverter (or any generator behind one)."""
    BATTERY = "battery"
    """A battery with its inverter: storage that charges and discharges."""
    EVSE = "evse"
    """An EV charger."""
    METER = "meter"
    """A meter, e.g. the site's at the point of connection."""


class Quality(StrEnum):
    """How much a reading can be trusted."""

    OK = "ok"
    UNKNOWN = "unknown"
    """Not tried yet: the gateway has not finished its first attempt to reach the device."""
    STALE = "stale"
    """The last good reading is older than the device's staleness window."""
    OFFLINE = "offline"
    """No good reading at all, or the device is unreachable now."""


class OperatingState(StrEnum):
    """What the device is doing, mapped from SunSpec St / InvSt / ChaSt."""

    OFF = "off"
    SLEEPING = "sleeping"
    STARTING = "starting"
    RUNNING = "running"
    THROTTLED = "throttled"
    SHUTTING_DOWN = "shutting_down"
    FAULT = "fault"
    STANDBY = "standby"
    CHARGING = "charging"
    DISCHARGING = "discharging"
    IDLE = "idle"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One reading of one device.

    Sign convention: positive ``w`` is power delivered to the grid (generation, battery
    discharge); positive ``var`` is reactive power injected (over-excited).
    """

    w: float | None = None
    """Active power, W."""
    var: float | None = None
    """Reactive power, var."""
    va: float | None = None
    """Apparent power, VA."""
    pf: float | None = None
    """Power factor, -1..1 (sign as the device reports it)."""
    v: float | None = None
    """Mean line-to-neutral voltage, V."""
    hz: float | None = None
    """Frequency, Hz."""
    a: float | None = None
    """Total AC current, A."""
    soc_pct: float | None = None
    """Battery state of charge, % of usable capacity."""
    wh_exported: float | None = None
    """Energy delivered to the grid since commissioning, Wh."""
    wh_imported: float | None = None
    """Energy taken from the grid since commissioning, Wh."""
    state: OperatingState | None = None


@dataclass(frozen=True, slots=True)
class Capability:
    """Nameplate and limits of a device, read once at connect."""

    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    version: str | None = None
    w_max: float | None = None
    """Maximum active power, W."""
    v_nom: float | None = None
    """Nominal line-to-neutral voltage, V (the base of per-unit voltages)."""
    va_max: float | None = None
    """Maximum apparent power, VA."""
    var_max_inj: float | None = None
    """Maximum reactive power injected, var."""
    var_max_abs: float | None = None
    """Maximum reactive power absorbed, var (positive number)."""
    wh_rtg: float | None = None
    """Usable energy capacity, Wh."""
    charge_w_max: float | None = None
    """Maximum charge rate, W."""
    discharge_w_max: float | None = None
    """Maximum discharge rate, W."""
    soc_min_pct: float | None = None
    """Lowest state of charge the device allows, %."""
    soc_max_pct: float | None = None
    """Highest state of charge the device allows, %."""
    soc_step_pct: float | None = None
    """The smallest change of state of charge the device can report, % (its point's
    resolution: 10^SoC_SF for SunSpec); None when it does not say."""
    max_a: float | None = None
    """EV chargers: highest current limit, A per phase."""
    phases: int | None = None
    """EV chargers: phases in use (1 or 3)."""
    models: tuple[int, ...] = field(default=())
    """SunSpec models the device offers, in chain order."""
