"""The setpoints one device gets from the controls in force on it, by what the device is.

- A curtailment (max_w_pct) is the device's active power limit; on an EV charger it is a
  share of its highest current, and a battery without a limit point has its discharge capped
  (by the SoC guard, which computes the storage setpoint).
- An EV charger's current limit is the lowest of its own limit, a curtailment and a power
  cap (W turned into A per phase at the measured voltage), as IEC 61851 can signal it.
- A volt-var curve runs in the device where it can (or where the event says native), else
  in the gateway: the measured voltage in, a reactive power setpoint out, through the
  IEEE 1547 open-loop response (`volt_var.EdgeVoltVar`, one per device, kept by the caller).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping

from derms_edge.control.arbitration import InForce
from derms_edge.control.views import DeviceView
from derms_edge.control.volt_var import EdgeVoltVar
from derms_edge.model import (
    MAX_EVSE_A,
    NOMINAL_V_LN,
    ControlType,
    DeviceKind,
    Quality,
    SetpointName,
    SetpointValue,
    VoltVarCurve,
    number,
    signal_at_most,
)


def device_setpoints(
    device: DeviceView,
    in_force: Mapping[ControlType, InForce],
    storage_w: float | None,
    edges: MutableMapping[str, EdgeVoltVar],
    dt_s: float,
) -> dict[SetpointName, SetpointValue]:
    """Every setpoint ``device`` gets from ``in_force``; ``storage_w`` is the storage
    setpoint the SoC guard let through (None: none). ``edges`` keeps each device's edge
    volt-var between steps, ``dt_s`` seconds apart."""
    result: dict[SetpointName, SetpointValue] = {}
    limit = in_force.get(ControlType.MAX_W_PCT)
    if device.kind == DeviceKind.EVSE:
        amps = evse_amps(device, in_force)
        if amps is not None:
            result[SetpointName.EVSE_MAX_A] = amps
    elif limit is not None and (
        device.supports is None or SetpointName.MAX_W_PCT in device.supports
    ):
        result[SetpointName.MAX_W_PCT] = number(limit.value)
    curve = in_force.get(ControlType.VOLT_VAR)
    if curve is not None:
        assert isinstance(curve.value, VoltVarCurve)
        result |= _volt_var(device, curve.value, edges, dt_s)
    else:
        edges.pop(device.id, None)
    pf = in_force.get(ControlType.FIXED_PF)
    if pf is not None:
        result[SetpointName.FIXED_PF] = pf.value
    if storage_w is not None:
        result[SetpointName.STORAGE_W] = storage_w
    return result


def _volt_var(
    device: DeviceView,
    curve: VoltVarCurve,
    edges: MutableMapping[str, EdgeVoltVar],
    dt_s: float,
) -> dict[SetpointName, SetpointValue]:
    """The curve itself for a device that runs it, else the var setpoint the gateway's edge
    volt-var gives at the measured voltage (none while the voltage is not fresh)."""
    supports = device.supports or frozenset()
    if curve.mode == "native" or (curve.mode == "auto" and SetpointName.VOLT_VAR in supports):
        return {SetpointName.VOLT_VAR: curve}
    cap, state = device.capability, device.state
    if cap is None or cap.v_nom is None or state is None or state.v is None:
        return {}
    va = cap.va_max or cap.w_max
    if va is None:
        return {}
    edge = edges.get(device.id)
    if edge is None:
        edge = edges[device.id] = EdgeVoltVar(curve, va)
    edge.curve = curve  # a new curve moves Q through the response filter, not in a jump
    if device.quality is not Quality.OK:
        return {}
    return {SetpointName.VAR: edge.update(state.v / cap.v_nom, dt_s)}


def evse_amps(device: DeviceView, in_force: Mapping[ControlType, InForce]) -> float | None:
    """A charger's current limit: its own limit, capped by a curtailment (% of its maximum)
    and by a power cap (W converted at the measured voltage); the lowest holds."""
    caps: list[float] = []
    amps = in_force.get(ControlType.EVSE_MAX_A)
    if amps is not None:
        caps.append(number(amps.value))
    limit = in_force.get(ControlType.MAX_W_PCT)
    if limit is not None and device.max_a is not None:
        caps.append(signal_at_most(number(limit.value) / 100.0 * device.max_a, device.max_a))
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
    return signal_at_most(amps, device.max_a if device.max_a is not None else MAX_EVSE_A)
