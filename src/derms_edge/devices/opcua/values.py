"""Node values to SI readings and SI setpoints to node values: pure, without asyncua.

A node's value becomes SI by ``NodePoint.factor`` (scale x unit); a setpoint goes the other
way (÷ factor), then into the node's data type: integers rounded half away from zero, and
anything outside the type's range refused before it is sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from derms_edge.config import OpcUaPointName
from derms_edge.devices.charger import charging_state
from derms_edge.model import DeviceKind, DeviceState, OperatingState

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "SByte": (-(2**7), 2**7 - 1),
    "Byte": (0, 2**8 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
"""OPC UA integer data types (VariantType names) and their ranges."""
FLOAT_LIMITS: dict[str, float] = {"Float": 3.4028234663852886e38, "Double": 1.7976931348623157e308}
"""OPC UA floating-point data types and their largest finite magnitude."""
NUMBER_TYPES = frozenset(INTEGER_RANGES) | frozenset(FLOAT_LIMITS)
FLOAT32_TOLERANCE = 1e-6
"""Relative difference a Float read-back may show (24-bit mantissa)."""

BATTERY_IDLE_W = 50.0
"""Battery power below which (either way) it counts as idle, W."""

MEASUREMENTS: tuple[OpcUaPointName, ...] = (
    "w", "var", "va", "pf", "v", "hz", "a", "soc_pct", "wh_exported", "wh_imported", "state",
)  # fmt: skip
"""Points read in every reading (subscribed to, or polled)."""
CAPABILITIES: tuple[OpcUaPointName, ...] = (
    "w_max", "va_max", "wh_rtg", "charge_w_max", "discharge_w_max",
    "soc_min_pct", "soc_max_pct", "max_a",
)  # fmt: skip
"""Points read once at connect."""


def to_si(raw: object, factor: float) -> float | None:
    """A node's numeric value in SI units; None for anything that is not a finite number."""
    if isinstance(raw, bool):
        raw = int(raw)
    if not isinstance(raw, int | float) or not math.isfinite(raw):
        return None
    return float(raw) * factor


def to_node(si: float, factor: float, type_name: str) -> int | float:
    """A setpoint in SI units as the node's value; ValueError says why it cannot be.

    ``type_name`` is the node's VariantType name (``Float``, ``UInt16``, ...).
    """
    if not math.isfinite(si):
        raise ValueError(f"{si} is not a finite number")
    raw = si / factor
    if not math.isfinite(raw):  # a tiny factor: past every data type's range
        raise ValueError(f"{si} / factor {factor:g} is outside the {type_name} range")
    if type_name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_name]
        rounded = int(math.copysign(math.floor(abs(raw) + 0.5), raw))
        if not low <= rounded <= high:
            raise ValueError(f"{raw:g} is outside the {type_name} range {low}..{high}")
        return rounded
    if type_name in FLOAT_LIMITS:
        if abs(raw) > FLOAT_LIMITS[type_name]:
            raise ValueError(f"{raw:g} is outside the {type_name} range")
        return raw
    raise ValueError(f"a {type_name} node does not take a number")


def same_value(written: int | float, read: object, type_name: str) -> bool:
    """Whether a read-back value is the written one, as far as the data type resolves it."""
    if isinstance(read, bool) or not isinstance(read, int | float):
        return False
    if type_name in INTEGER_RANGES:
        return read == written
    tolerance = FLOAT32_TOLERANCE if type_name == "Float" else 1e-12
    return math.isclose(read, written, rel_tol=tolerance, abs_tol=1e-9)


def state_text(raw: object) -> str:
    """A state node's value as the text the ``states`` mapping is keyed by ("2", "true")."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(int(raw))  # IntEnum values too
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw)


def map_state(raw: object, states: Mapping[str, str] | None) -> OperatingState | None:
    """The operating state a state node's value stands for; None when it says nothing.

    With a ``states`` mapping, its entry for the value (exact text first, then ignoring case),
    or UNKNOWN for a value it does not list. Without one, a text value naming a state
    ("Charging", "standby") is that state; anything else is left to `derive_state`.
    """
    if raw is None:
        return None
    text = state_text(raw)
    if states is not None:
        name = states.get(text)
        if name is None:
            folded = {key.casefold(): value for key, value in states.items()}
            name = folded.get(text.casefold())
        return OperatingState(name) if name is not None else OperatingState.UNKNOWN
    if isinstance(raw, str):
        key = raw.strip().casefold().replace(" ", "_").replace("-", "_")
        try:
            return OperatingState(key)
        except ValueError:
            return None
    return None


def derive_state(
    kind: DeviceKind, w: float | None, a: float | None, v: float | None
) -> OperatingState | None:
    """A charger's or battery's state from its power (W positive = delivered to the grid).

    Chargers: as `charging_state` (``a`` is the total current here). Batteries: CHARGING or
    DISCHARGING beyond `BATTERY_IDLE_W`, else IDLE. Other kinds: None.
    """
    if kind == DeviceKind.EVSE:
        return charging_state(w, a, v)
    if kind == DeviceKind.BATTERY and w is not None:
        if w < -BATTERY_IDLE_W:
            return OperatingState.CHARGING
        if w > BATTERY_IDLE_W:
            return OperatingState.DISCHARGING
        return OperatingState.IDLE
    return None


@dataclass(frozen=True, slots=True)
class Conversion:
    """How one device's raw node values become a DeviceState."""

    kind: DeviceKind
    factors: Mapping[OpcUaPointName, float]
    """Per configured point, SI value = node value x factor."""
    phases: int = 3
    states: Mapping[str, str] | None = None
    """The ``state`` point's mapping of node values (as text) to state names."""

    def reading(self, raw: Mapping[OpcUaPointName, object]) -> DeviceState:
        """The DeviceState of the raw measurement values (None: missing or Bad status).

        A charger's ``a`` is configured per phase and reported as the total (phases x a).
        """

        def si(point: OpcUaPointName) -> float | None:
            factor = self.factors.get(point)
            return None if factor is None else to_si(raw.get(point), factor)

        w, v, a = si("w"), si("v"), si("a")
        if a is not None and self.kind == DeviceKind.EVSE:
            a *= self.phases
        state = map_state(raw.get("state"), self.states) if "state" in self.factors else None
        if state is None:
            state = derive_state(self.kind, w, a, v)
        return DeviceState(
            w=w,
            var=si("var"),
            va=si("va"),
            pf=si("pf"),
            v=v,
            hz=si("hz"),
            a=a,
            soc_pct=si("soc_pct"),
            wh_exported=si("wh_exported"),
            wh_imported=si("wh_imported"),
            state=state,
        )
