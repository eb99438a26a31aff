"""The gateway's shared words, in SI units; imports nothing else of derms_edge.

- devices: `DeviceKind`, `Quality`, `OperatingState`, `DeviceState`, `Capability`;
- what is asked of one device: `SetpointName`, `SetpointValue`, `Setpoints`;
- what a role may ask: `ControlType`, `Control`, the curves (`VoltVarCurve`, `FixedPf`,
  `CATEGORY_CURVES`) and the EV charger limits (`MIN_EVSE_A`, `MAX_EVSE_A`);
- events and the answers to them: `Event`, `Status`, `Reason`, `Response`.
"""

from derms_edge.model.controls import CONTROL_TYPES, Control, ControlType, ControlValue, number
from derms_edge.model.curves import CATEGORY_CURVES, Excitation, FixedPf, VoltVarCurve, VoltVarMode
from derms_edge.model.device import (
    NOMINAL_V_LN,
    Capability,
    DeviceKind,
    DeviceState,
    OperatingState,
    Quality,
)
from derms_edge.model.events import Event, Reason, Response, Status, superseded_by
from derms_edge.model.evse import MAX_EVSE_A, MIN_EVSE_A, can_signal, limit_refusal, signal_at_most
from derms_edge.model.setpoints import SetpointName, Setpoints, SetpointValue

__all__ = [
    "CATEGORY_CURVES",
    "CONTROL_TYPES",
    "MAX_EVSE_A",
    "MIN_EVSE_A",
    "NOMINAL_V_LN",
    "Capability",
    "Control",
    "ControlType",
    "ControlValue",
    "DeviceKind",
    "DeviceState",
    "Event",
    "Excitation",
    "FixedPf",
    "OperatingState",
    "Quality",
    "Reason",
    "Response",
    "SetpointName",
    "SetpointValue",
    "Setpoints",
    "Status",
    "VoltVarCurve",
    "VoltVarMode",
    "can_signal",
    "limit_refusal",
    "number",
    "signal_at_most",
    "superseded_by",
]
