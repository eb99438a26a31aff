"""What the control core is told: the roles that may command, and each device as it is now."""

from __future__ import annotations

from dataclasses import dataclass, replace

from derms_edge.control.soc import BatteryLimits
from derms_edge.model import (
    Capability,
    Control,
    ControlType,
    DeviceKind,
    DeviceState,
    Quality,
    SetpointName,
)

CARRIERS: dict[ControlType, tuple[SetpointName, ...]] = {
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
    # a reserve is held by the SoC guard on the storage setpoints the gateway writes
    ControlType.RESERVE_SOC_PCT: (SetpointName.STORAGE_W,),
}
"""The setpoints that can carry a control type to a device (any one of them will do)."""
APPLIES_TO: dict[ControlType, frozenset[DeviceKind]] = {
    ControlType.MAX_W_PCT: frozenset({DeviceKind.INVERTER, DeviceKind.BATTERY, DeviceKind.EVSE}),
    ControlType.VOLT_VAR: frozenset({DeviceKind.INVERTER, DeviceKind.BATTERY}),
    ControlType.FIXED_PF: frozenset({DeviceKind.INVERTER, DeviceKind.BATTERY}),
    ControlType.STORAGE_W: frozenset({DeviceKind.BATTERY}),
    ControlType.EVSE_MAX_A: frozenset({DeviceKind.EVSE}),
    ControlType.EVSE_MAX_W: frozenset({DeviceKind.EVSE}),
    ControlType.RESERVE_SOC_PCT: frozenset({DeviceKind.BATTERY}),
}
"""The kinds of device a control type applies to (export_limit_w applies to the site)."""


CONTROL_READS = ("w", "v", "soc_pct")
"""The only fields of a reading (`DeviceState`) the control core reads: power (SoC watch,
export loop), voltage (edge volt-var, an EV charger's power cap), state of charge (guard,
admission, watch). tests/unit/test_control_skip.py fails when it reads another."""


@dataclass(frozen=True, slots=True)
class Role:
    """A party allowed to send controls."""

    name: str
    primacy: int
    allow: frozenset[ControlType]

    def refusal(self, control: Control) -> str | None:
        """Why this role may not send ``control`` (a type it is not allowed), or None."""
        forbidden = sorted(control.types - self.allow)
        if not forbidden:
            return None
        return (
            f"role {self.name} may not send {', '.join(forbidden)} "
            f"(allowed: {', '.join(sorted(self.allow))})"
        )


@dataclass(frozen=True, slots=True)
class DeviceView:
    """What the control core needs to know about one device now."""

    id: str
    kind: DeviceKind
    quality: Quality
    state: DeviceState | None = None
    capability: Capability | None = None
    supports: frozenset[SetpointName] | None = None
    """None until the device has connected once (then judged by its kind)."""
    reserve_soc_pct: float | None = None
    """Batteries: the reserve the configuration gives it, % SoC (raised by `reserved`)."""
    efficiency: float = 0.95
    soc_frozen_after_wh: float | None = None
    """Batteries: the energy through it after which an unmoved SoC counts as frozen (None:
    the default, see `control.soc_watch`)."""
    max_a: float | None = None
    """EV chargers: the highest current limit, A per phase."""
    phases: int | None = None
    """EV chargers: phases in use."""
    soc_frozen: str | None = None
    """Batteries: why the state of charge counts as frozen (it did not move while energy
    went through), or None. The controller sets it; a frozen SoC is not a known one."""

    def can(self, control_type: ControlType) -> bool:
        """Whether this device can carry a control of this type."""
        if self.kind not in APPLIES_TO.get(control_type, frozenset()):
            return False
        if self.supports is None:
            return True
        return any(name in self.supports for name in CARRIERS[control_type])

    @property
    def soc_known(self) -> bool:
        """A fresh state of charge: read within the staleness window, and not frozen."""
        return (
            self.quality is Quality.OK
            and self.state is not None
            and self.state.soc_pct is not None
            and self.soc_frozen is None
        )

    def control_inputs(self) -> tuple[object, ...]:
        """Everything of this view the control core can read: its fields, the reading
        reduced to `CONTROL_READS` (an energy counter that moved changes no decision)."""
        state = self.state
        read = None if state is None else tuple(getattr(state, name) for name in CONTROL_READS)
        return (
            self.id,
            self.kind,
            self.quality,
            read,
            self.capability,
            self.supports,
            self.reserve_soc_pct,
            self.efficiency,
            self.soc_frozen_after_wh,
            self.max_a,
            self.phases,
            self.soc_frozen,
        )

    def reserved(self, reserve_soc_pct: float | None) -> DeviceView:
        """This device with its reserve raised to ``reserve_soc_pct`` (a role's, in force);
        a reserve is never lowered this way."""
        if reserve_soc_pct is None or reserve_soc_pct <= (self.reserve_soc_pct or 0.0):
            return self
        return replace(self, reserve_soc_pct=reserve_soc_pct)

    def battery_limits(self) -> BatteryLimits | None:
        """SoC limits and ratings for projections; None when the capacity is unknown. The
        reserve is the highest of the device's minimum SoC and `reserve_soc_pct`, at most the
        device's maximum (a reserve above it holds the battery from discharging at all)."""
        cap = self.capability
        if cap is None or cap.wh_rtg is None or cap.wh_rtg <= 0:
            return None
        max_pct = cap.soc_max_pct if cap.soc_max_pct is not None else 100.0
        reserve = min(max(cap.soc_min_pct or 0.0, self.reserve_soc_pct or 0.0), max_pct)
        return BatteryLimits(
            capacity_wh=cap.wh_rtg,
            reserve_pct=reserve,
            max_pct=max_pct,
            efficiency=self.efficiency,
            charge_w_max=cap.charge_w_max,
            discharge_w_max=cap.discharge_w_max,
        )
