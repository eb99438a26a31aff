"""The OPC UA devices' physics and address-space contract, without asyncua.

Each device names its variables (`Variable`: BrowseName, OPC UA built-in type, writable),
gives their values now, vets and applies client writes. hil.opcua.server turns that into
nodes `nsu=<namespace_uri>;s=<id>.<Name>` under Objects/<id>.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from hil.devices.base import DeviceState, Fault, make_battery_physics, make_grid
from hil.devices.evse import EvseState, evse_state
from hil.evse_physics import MIN_SIGNAL_A, EvsePhysics, EvseRatings, Vehicle
from hil.physics import (
    IDLE_W,
    BatteryControls,
    ChargeState,
    SimClock,
)
from hil.spec import OpcUaBatterySpec, OpcUaEvseSpec, OpcUaSpec

BAD_OUT_OF_RANGE = "BadOutOfRange"
"""The status name a value outside a setpoint's range is answered with."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable of a device object: its BrowseName and OPC UA built-in type name."""

    name: str
    type: str
    """asyncua VariantType name: Boolean, Byte, UInt16, UInt32, Int32, Float, Double, String."""
    writable: bool = False


Value = bool | int | float | str
Write = tuple[str, str, Value]
"""An accepted client write: (variable name, VariantType name, value)."""


class OpcUaDevice(abc.ABC):
    """A simulated device behind its own OPC UA server; time comes from the rig's clock."""

    kind: ClassVar[str]
    namespace_uri: ClassVar[str]
    variables: ClassVar[tuple[Variable, ...]]

    def __init__(self, spec: OpcUaSpec, clock: SimClock) -> None:
        self.spec = spec
        self.id = spec.id
        self.clock = clock
        self.writes: list[Write] = []
        """Every client write the device accepted, oldest first."""
        self.frozen = False
        """The data source behind the server has stopped: the session and keep-alives go on,
        but no variable changes, not even its source timestamp (a PLC whose field bus died)."""

    def freeze(self, frozen: bool) -> None:
        """Stop (or resume) updating the variables, as a dead data source would."""
        self.frozen = frozen

    @abc.abstractmethod
    def refresh(self) -> None:
        """Step the physics to now."""

    @abc.abstractmethod
    def values(self) -> dict[str, Value]:
        """Every variable's value at the last refresh, by name."""

    @abc.abstractmethod
    def refusal(self, name: str, value: Value) -> str | None:
        """Why a client may not write value (of the right type) to a writable variable: the
        OPC UA status name, or None to accept it."""

    @abc.abstractmethod
    def _apply(self, name: str, value: Value) -> None:
        """Put an accepted setpoint in force (physics stepped to now)."""

    @abc.abstractmethod
    def power_on(self) -> None:
        """Setpoints back to their power-on values (server restart); physics carries on."""

    @abc.abstractmethod
    def snapshot(self) -> EvseState | DeviceState:
        """The physics state now."""

    @abc.abstractmethod
    def grid_power(self) -> tuple[float, float]:
        """The (W, var) delivered to the grid now, for a site meter."""

    def accept(self, name: str, type_name: str, value: Value) -> None:
        """A client write that passed refusal() and asyncua's checks: record and apply it."""
        self.refresh()
        self.writes.append((name, type_name, value))
        self._apply(name, value)


class OpcUaCharger(OpcUaDevice):
    """An EV charger and its car; MaxCurrentSetpoint (A per phase) holds until changed."""

    kind = "opcua_evse"
    namespace_uri = "urn:derms-edge:hil:evse"
    variables = (
        Variable("PlugState", "Boolean"),
        Variable("Mode3State", "UInt16"),
        Variable("ActualPower", "Double"),
        Variable("Voltage", "Double"),
        Variable("Current", "Double"),
        Variable("Frequency", "Double"),
        Variable("EnergyDelivered", "Double"),
        Variable("EvSoC", "Double"),
        Variable("Phases", "Byte"),
        Variable("MaxCurrent", "Float"),
        Variable("MaxCurrentSetpoint", "Float", writable=True),
    )
    spec: OpcUaEvseSpec

    def __init__(self, spec: OpcUaEvseSpec, clock: SimClock) -> None:
        super().__init__(spec, clock)
        self.physics = EvsePhysics(
            EvseRatings(spec.phases, spec.max_a, validity_s=float("inf")),
            Vehicle(spec.ev_wh, spec.ev_max_a),
            make_grid(spec.grid),
            soc_pct=spec.ev_soc_pct,
            safe_a=0.0,  # never signalled: without a watchdog the limit does not expire
            plugged_at=spec.plugged_at_s,
            tau_s=spec.tau_s,
            t0=clock.now(),
        )

    def refresh(self) -> None:
        self.physics.step(self.clock.now())

    def values(self) -> dict[str, Value]:
        """ActualPower is consumed W (positive while charging), EnergyDelivered kWh since
        power-on, Voltage line to neutral, Current per phase."""
        p = self.physics
        return {
            "PlugState": p.plugged(),
            "Mode3State": int(p.state),
            "ActualPower": p.w,
            "Voltage": p.v,
            "Current": p.a,
            "Frequency": p.hz,
            "EnergyDelivered": p.wh / 1000.0,
            "EvSoC": p.soc_pct,
            "Phases": p.ratings.phases,
            "MaxCurrent": p.ratings.max_a,
            "MaxCurrentSetpoint": p.limit_a,
        }

    def refusal(self, name: str, value: Value) -> str | None:
        """MaxCurrentSetpoint is 0 (pause) or 6..max_a A; NaN is neither."""
        amps = float(value)
        if amps == 0 or MIN_SIGNAL_A <= amps <= self.spec.max_a:
            return None
        return BAD_OUT_OF_RANGE

    def _apply(self, name: str, value: Value) -> None:
        self.physics.write_limit(float(value))

    def power_on(self) -> None:
        """The limit back to max_a; the car, its SoC and the energy counter carry on."""
        self.refresh()
        self.physics.write_limit(self.spec.max_a)

    def plug(self, plugged: bool) -> None:
        """Plug the car in now, or unplug it."""
        self.refresh()
        self.physics.plug(plugged)

    def snapshot(self) -> EvseState:
        """The charger and its car now (w positive delivered to the grid, as EvCharger's)."""
        self.refresh()
        return evse_state(self.id, self.physics, Fault.NONE)

    def grid_power(self) -> tuple[float, float]:
        """Drawn at unity power factor."""
        return self.snapshot().w, 0.0


class OpcUaBattery(OpcUaDevice):
    """A battery whose PowerSetpoint (W, positive = charge) holds until changed."""

    kind = "opcua_battery"
    namespace_uri = "urn:derms-edge:hil:battery"
    variables = (
        Variable("ActivePower", "Double"),
        Variable("Voltage", "Double"),
        Variable("Frequency", "Double"),
        Variable("SoC", "Double"),
        Variable("SoCMin", "Double"),
        Variable("SoCMax", "Double"),
        Variable("CapacityWh", "UInt32"),
        Variable("MaxChargePower", "Double"),
        Variable("MaxDischargePower", "Double"),
        Variable("OperatingState", "String"),
        Variable("PowerSetpoint", "Int32", writable=True),
    )
    spec: OpcUaBatterySpec

    def __init__(self, spec: OpcUaBatterySpec, clock: SimClock) -> None:
        super().__init__(spec, clock)
        self.physics = make_battery_physics(
            spec, max(spec.w_cha_max, spec.w_discha_max), clock.now()
        )
        self.ratings = self.physics.ratings

    def refresh(self) -> None:
        self.physics.step(self.clock.now())

    def values(self) -> dict[str, Value]:
        """BMS convention: ActivePower and PowerSetpoint are positive while charging."""
        p, r = self.physics, self.ratings
        state = "Charging" if p.w < -IDLE_W else "Discharging" if p.w > IDLE_W else "Idle"
        return {
            "ActivePower": -p.w,
            "Voltage": p.v,
            "Frequency": p.hz,
            "SoC": min(max(p.soc_pct, 0.0), 100.0),
            "SoCMin": r.soc_min_pct,
            "SoCMax": r.soc_max_pct,
            "CapacityWh": round(r.wh_rtg),
            "MaxChargePower": r.w_cha_max,
            "MaxDischargePower": r.w_discha_max,
            "OperatingState": state,
            "PowerSetpoint": round(-p.controls.w_set),
        }

    def refusal(self, name: str, value: Value) -> str | None:
        """PowerSetpoint is -MaxDischargePower..MaxChargePower W."""
        if -self.ratings.w_discha_max <= float(value) <= self.ratings.w_cha_max:
            return None
        return BAD_OUT_OF_RANGE

    def _apply(self, name: str, value: Value) -> None:
        self.physics.controls.w_set = -float(value)

    def power_on(self) -> None:
        """The setpoint back to 0 W; the SoC and the energy counters carry on."""
        self.refresh()
        self.physics.controls = BatteryControls()

    def snapshot(self) -> DeviceState:
        """Like the SunSpec battery's: w (and w_set) positive delivered to the grid."""
        self.refresh()
        p = self.physics
        return DeviceState(
            id=self.id,
            kind=self.kind,
            t_s=p.t,
            w=p.w,
            var=0.0,
            v=p.v,
            hz=p.hz,
            state=ChargeState(p.charge_state).name,
            connected=True,
            fault=Fault.NONE,
            wh_injected=p.wh_injected,
            wh_absorbed=p.wh_absorbed,
            soc_pct=p.soc_pct,
            w_set=p.controls.w_set,
        )

    def grid_power(self) -> tuple[float, float]:
        """Active power only: the battery runs at unity power factor."""
        self.refresh()
        return self.physics.w, 0.0


def build_opcua_device(spec: OpcUaSpec, clock: SimClock) -> OpcUaDevice:
    """The OPC UA device a spec describes."""
    if isinstance(spec, OpcUaEvseSpec):
        return OpcUaCharger(spec, clock)
    return OpcUaBattery(spec, clock)
