"""Setpoints as SunSpec point writes, without I/O: which models carry each one, and how.

IEEE 1547 models are preferred; legacy models are the fallback:

=========  =====================================================  ================================
setpoint   IEEE 1547                                              legacy
=========  =====================================================  ================================
MAX_W_PCT  704 WMaxLimPct, WMaxLimPctEna                          123 WMaxLimPct, WMaxLim_Ena
VAR        704 VarSet (VarSetMod 4), else VarSetPct (mode 3)      123 VArMaxPct (VArPct_Mod 2)
VOLT_VAR   705 Crv[n >= 2], AdptCrvReq n, then Ena                126 a writable curve, ActCrv
FIXED_PF   704 PFWInj (and PFWAbs on storage)                     123 OutPFSet
STORAGE_W  704 WSet (WSetMod 1)                                   124 OutWRte/InWRte, StorCtl_Mod
=========  =====================================================  ================================

Every write of a setpoint is encoded before a plan is returned, so a value the codec refuses
(out of range, bad scale factor) refuses the whole setpoint before its first register is sent.

Revert timers: with ``revert_s`` > 0 each function's RvrtTms is written, and the plan's
``refresh`` lists them for keepalive. 704 also gets its reversion setpoint, the neutral value
(WMaxLimPctRvrt = the fallback or 100 %, unity PF, 0 var, 0 W) with its EnaRvrt = 1: the model
describes EnaRvrt both as "enable the reversion timer" and as "the enable to revert to", and
under either reading the device ends at the neutral value when the gateway falls silent.

Paths index repeating groups from 0, so SunSpec's curve n is ``Crv[n-1]``: 705 ``Crv[0]`` is
the read-only active curve and ``Crv[1]`` (curve 2) the first one a client may write.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from derms_edge.devices.sunspec.mapping import STORAGE, ModelValues, to_capability
from derms_edge.devices.sunspec.models import ModelLayout, PointValue
from derms_edge.devices.sunspec.writes import PointWrite, differing, encode_write
from derms_edge.errors import ControlRefused
from derms_edge.model import Capability, FixedPf, SetpointName, SetpointValue, VoltVarCurve

IMMEDIATE = 123
STATIC_VOLT_VAR = 126
DER_CTL_AC = 704
DER_VOLT_VAR = 705
DER_CTL = 715
CONTROL_MODELS = (DER_CTL_AC, DER_VOLT_VAR, DER_CTL, IMMEDIATE, STORAGE, STATIC_VOLT_VAR)
"""Models read at connect for control, whichever the device has."""

DISABLED, ENABLED = 0, 1
READ_ONLY = 1  # 705 and 126 curve ReadOnly
ADOPT_COMPLETED, ADOPT_FAILED = 1, 2  # 705 AdptCrvRslt
OVER_EXCITED, UNDER_EXCITED = 0, 1  # 704 PFWInj.Ext / PFWAbs.Ext
VARS = 4  # 704 VarSetMod
VA_MAX_PCT = 3  # 704 VarSetMod and 705 DeptRef
WATTS = 1  # 704 WSetMod
VAR_MAX_PCT = 2  # 123 VArPct_Mod and 126 DeptRef
W_MAX_PCT = 1  # 126 DeptRef
CHARGE, DISCHARGE = 1, 2  # 124 StorCtl_Mod bits
HEARTBEAT_WRAP = 0xFFFF_FFFF  # ControllerHb counts 0..0xFFFFFFFE: 0xFFFFFFFF is "not implemented"
PT1_95_PER_90 = math.log(20) / math.log(10)
"""126 RmpTms is a first-order lag's 95 % time; a response time is its 90 % time."""


@dataclass(frozen=True, slots=True)
class ControlTarget:
    """What planning knows of one device: its models, their current values, the options."""

    device: str
    models: tuple[int, ...]
    """The device's model chain."""
    layouts: Mapping[int, ModelLayout]
    values: ModelValues
    """Decoded points (scale factors included) of the nameplate and control models."""
    storage: bool = False
    """A battery: STORAGE_W applies, and FIXED_PF also sets the PF when absorbing W."""
    revert_s: float = 0.0
    """Revert timers to write, s; 0 leaves them alone."""
    max_w_pct_fallback: float | None = None
    """The limit a 704 device reverts to, % of WMax; None reverts to 100 %."""

    def has(self, model_id: int, *paths: str) -> bool:
        """Whether the device implements these points (present, not "not implemented")."""
        values = self.values.get(model_id)
        if model_id not in self.layouts or values is None:
            return False
        return all(values.get(path) is not None for path in paths)


@dataclass(frozen=True, slots=True)
class AwaitAdoption:
    """Wait until curve ``curve`` is adopted: AdptCrvRslt COMPLETED, ``active`` in place."""

    model_id: int
    curve: int
    """SunSpec curve number requested (1-based)."""
    active: tuple[PointWrite, ...]
    """The staged points as the active curve must hold them (never written)."""


Step = tuple[PointWrite, ...] | AwaitAdoption


@dataclass(frozen=True, slots=True)
class WritePlan:
    """One setpoint as steps: point writes to send and read back, and waits between them."""

    name: SetpointName
    steps: tuple[Step, ...]
    refresh: tuple[PointWrite, ...] = ()
    """Revert timers to rewrite while the setpoint is in force."""


def control_models(models: Iterable[int]) -> tuple[int, ...]:
    """The control models among a device's models."""
    present = set(models)
    return tuple(model_id for model_id in CONTROL_MODELS if model_id in present)


def supported(target: ControlTarget) -> frozenset[SetpointName]:
    """The setpoints the device's models can carry."""
    return frozenset(name for name, route in _ROUTES.items() if route(target) is not None)


def plan_setpoint(
    target: ControlTarget, name: SetpointName, value: SetpointValue | None
) -> WritePlan:
    """Every write (encoded) that puts ``value`` in force, or releases it for None.

    Raise ControlRefused naming the point when the device cannot take the value: not
    supported, a value the codec refuses, a curve longer than NPt, a W above the rating.
    """
    route = _ROUTES.get(name)
    control = None if route is None else route(target)
    if control is None:
        models = ", ".join(map(str, target.models))
        raise ControlRefused(
            target.device, name.value, f"not supported by this device (models {models})"
        )
    plan = _Plan(target, name)
    if value is None:
        for model_id, path in control.release:
            plan.set(model_id, path, 0)
    else:
        control.apply(plan, value)
    return plan.build()


def plan_heartbeat(target: ControlTarget) -> PointWrite | None:
    """The next 715 ControllerHb (last value + 1), or None if the device has none."""
    layout = target.layouts.get(DER_CTL)
    if layout is None or "ControllerHb" not in layout.points:
        return None
    values = target.values.get(DER_CTL, {})
    last = values.get("ControllerHb")
    beat = (last + 1) % HEARTBEAT_WRAP if isinstance(last, int) else 0
    return encode_write(target.device, layout, values, "ControllerHb", beat)


def adoption_done(
    device: str, step: AwaitAdoption, registers: Sequence[int], values: Mapping[str, PointValue]
) -> bool:
    """Whether the model's registers and values show the curve adopted; FAILED refuses it.

    COMPLETED counts only once the active curve holds the staged points: a device may still
    show the result of an earlier request.
    """
    result = values.get("AdptCrvRslt")
    if result == ADOPT_FAILED:
        raise ControlRefused(
            device,
            f"{step.model_id}.AdptCrvRslt",
            f"the device failed to adopt curve {step.curve} (AdptCrvRslt FAILED)",
        )
    return result == ADOPT_COMPLETED and not differing(step.active, registers)


class _Plan:
    """Collects a setpoint's writes, encoding each at once.

    Write values before the modes and enables that put them in force: `group_writes` sends
    requests in the order of their earliest write.
    """

    def __init__(self, target: ControlTarget, name: SetpointName) -> None:
        self.target = target
        self._name = name
        self._steps: list[Step] = []
        self._writes: list[PointWrite] = []
        self._refresh: list[PointWrite] = []

    def set(self, model_id: int, path: str, value: float, *, verify: bool = True) -> PointWrite:
        """Write a point."""
        t = self.target
        layout, values = t.layouts[model_id], t.values.get(model_id, {})
        write = encode_write(t.device, layout, values, path, value, verify=verify)
        self._writes.append(write)
        return write

    def set_if_present(self, model_id: int, path: str, value: float) -> PointWrite | None:
        """Write a point the device may leave unimplemented."""
        return self.set(model_id, path, value) if self.target.has(model_id, path) else None

    def enable(
        self,
        model_id: int,
        path: str,
        timer: str,
        reversion: Iterable[tuple[str, float]] = (),
        value: int = ENABLED,
    ) -> None:
        """Put a function in force: with revert_s set and the timer implemented, first the
        reversion points and the timer; then its enable point."""
        t = self.target
        if t.revert_s > 0 and t.has(model_id, timer):
            for reversion_path, reversion_value in reversion:
                self.set_if_present(model_id, reversion_path, reversion_value)
            self._refresh.append(self.set(model_id, timer, t.revert_s))
        self.set(model_id, path, value)

    def wait(self, step: AwaitAdoption) -> None:
        """End the current step and wait before the next."""
        self._steps += [tuple(self._writes), step]
        self._writes = []

    def build(self) -> WritePlan:
        steps = [*self._steps, tuple(self._writes)] if self._writes else self._steps
        return WritePlan(self._name, tuple(steps), tuple(self._refresh))


@dataclass(frozen=True, slots=True)
class _Control:
    """One setpoint on one device: how to put a value in force, and the points that release
    it (set to 0)."""

    apply: Callable[[_Plan, SetpointValue], None]
    release: tuple[tuple[int, str], ...]


T = TypeVar("T")


def _number(name: SetpointName, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} takes a number, got {value!r}")
    return float(value)


def _expect(name: SetpointName, value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"{name} takes a {kind.__name__}, got {value!r}")
    return value


def _ratings(target: ControlTarget) -> Capability:
    return to_capability(target.values, target.models)


# --- MAX_W_PCT ---------------------------------------------------------------------------------


def _max_w_pct(t: ControlTarget) -> _Control | None:
    if t.has(DER_CTL_AC, "WMaxLimPctEna", "WMaxLimPct"):
        return _Control(_max_w_pct_704, ((DER_CTL_AC, "WMaxLimPctEna"),))
    if t.has(IMMEDIATE, "WMaxLimPct", "WMaxLim_Ena"):
        return _Control(_max_w_pct_123, ((IMMEDIATE, "WMaxLim_Ena"),))
    return None


def _max_w_pct_704(p: _Plan, value: SetpointValue) -> None:
    fallback = p.target.max_w_pct_fallback
    p.set(DER_CTL_AC, "WMaxLimPct", _number(SetpointName.MAX_W_PCT, value))
    reversion = (
        ("WMaxLimPctRvrt", 100.0 if fallback is None else fallback),
        ("WMaxLimPctEnaRvrt", ENABLED),
    )
    p.enable(DER_CTL_AC, "WMaxLimPctEna", "WMaxLimPctRvrtTms", reversion)


def _max_w_pct_123(p: _Plan, value: SetpointValue) -> None:
    p.set(IMMEDIATE, "WMaxLimPct", _number(SetpointName.MAX_W_PCT, value))
    p.enable(IMMEDIATE, "WMaxLim_Ena", "WMaxLimPct_RvrtTms")


# --- VAR ---------------------------------------------------------------------------------------


def _var(t: ControlTarget) -> _Control | None:
    release = ((DER_CTL_AC, "VarSetEna"),)
    if t.has(DER_CTL_AC, "VarSetEna", "VarSetMod", "VarSet"):
        return _Control(_var_704, release)
    ratings = _ratings(t)
    if t.has(DER_CTL_AC, "VarSetEna", "VarSetMod", "VarSetPct") and ratings.va_max:
        return _Control(functools.partial(_var_pct_704, va_max=ratings.va_max), release)
    if t.has(IMMEDIATE, "VArPct_Mod", "VArMaxPct", "VArPct_Ena") and ratings.var_max_inj:
        apply = functools.partial(_var_123, var_max=ratings.var_max_inj)
        return _Control(apply, ((IMMEDIATE, "VArPct_Ena"),))
    return None


def _var_704(p: _Plan, value: SetpointValue) -> None:
    p.set(DER_CTL_AC, "VarSet", _number(SetpointName.VAR, value))
    p.set(DER_CTL_AC, "VarSetMod", VARS)
    reversion = (("VarSetRvrt", 0.0), ("VarSetEnaRvrt", ENABLED))
    p.enable(DER_CTL_AC, "VarSetEna", "VarSetRvrtTms", reversion)


def _var_pct_704(p: _Plan, value: SetpointValue, *, va_max: float) -> None:
    p.set(DER_CTL_AC, "VarSetPct", _number(SetpointName.VAR, value) / va_max * 100.0)
    p.set(DER_CTL_AC, "VarSetMod", VA_MAX_PCT)
    reversion = (("VarSetPctRvrt", 0.0), ("VarSetEnaRvrt", ENABLED))
    p.enable(DER_CTL_AC, "VarSetEna", "VarSetRvrtTms", reversion)


def _var_123(p: _Plan, value: SetpointValue, *, var_max: float) -> None:
    p.set(IMMEDIATE, "VArMaxPct", _number(SetpointName.VAR, value) / var_max * 100.0)
    p.set(IMMEDIATE, "VArPct_Mod", VAR_MAX_PCT)
    p.enable(IMMEDIATE, "VArPct_Ena", "VArPct_RvrtTms")


# --- VOLT_VAR ----------------------------------------------------------------------------------


def _volt_var(t: ControlTarget) -> _Control | None:
    index = _staging_curve(t)
    if index is not None:
        return _Control(functools.partial(_volt_var_705, index=index), ((DER_VOLT_VAR, "Ena"),))
    index = _legacy_curve(t)
    base = _var_base_126(_ratings(t))
    if index is not None and base is not None:
        apply = functools.partial(_volt_var_126, index=index, base=base)
        return _Control(apply, ((STATIC_VOLT_VAR, "ModEna"),))
    return None


def _staging_curve(t: ControlTarget) -> int | None:
    """Index of the first 705 curve after the active one that a client may write."""
    if not t.has(DER_VOLT_VAR, "Ena", "AdptCrvReq", "NPt", "NCrv"):
        return None
    values = t.values[DER_VOLT_VAR]
    count = values["NCrv"]
    for index in range(1, count if isinstance(count, int) else 0):
        c = f"Crv[{index}]."
        wanted = (f"{c}ActPt", f"{c}DeptRef", f"{c}Pt[0].V", f"{c}Pt[0].Var")
        if values.get(f"{c}ReadOnly") != READ_ONLY and t.has(DER_VOLT_VAR, *wanted):
            return index
    return None


def _legacy_curve(t: ControlTarget) -> int | None:
    """Index of the last 126 curve that is not read-only (the first ones are often presets)."""
    if not t.has(STATIC_VOLT_VAR, "ActCrv", "ModEna", "NPt"):
        return None
    values = t.values[STATIC_VOLT_VAR]
    count = sum(1 for path in t.layouts[STATIC_VOLT_VAR].points if path.endswith("].ActPt"))
    for index in reversed(range(count)):
        c = f"curve[{index}]."
        wanted = (f"{c}ActPt", f"{c}DeptRef", f"{c}V1", f"{c}VAr1")
        if values.get(f"{c}ReadOnly") != READ_ONLY and t.has(STATIC_VOLT_VAR, *wanted):
            return index
    return None


def _var_base_126(ratings: Capability) -> tuple[int, float, float] | None:
    """(DeptRef, its base in var or W, VA) for 126 VAr points: %VArMax, else %WMax."""
    if not ratings.va_max:
        return None
    if ratings.var_max_inj:
        return VAR_MAX_PCT, ratings.var_max_inj, ratings.va_max
    if ratings.w_max:
        return W_MAX_PCT, ratings.w_max, ratings.va_max
    return None


def _curve(p: _Plan, model_id: int, value: SetpointValue) -> VoltVarCurve:
    """The curve, refused if it has more points than the device's NPt."""
    curve = _expect(SetpointName.VOLT_VAR, value, VoltVarCurve)
    limit = p.target.values[model_id]["NPt"]
    if isinstance(limit, int) and len(curve.points) > limit:
        raise ControlRefused(
            p.target.device,
            f"{model_id}.NPt",
            f"the curve has {len(curve.points)} points; the device takes at most {limit}",
        )
    return curve


def _volt_var_705(p: _Plan, value: SetpointValue, *, index: int) -> None:
    curve = _curve(p, DER_VOLT_VAR, value)
    c = f"Crv[{index}]."
    staged = [
        p.set(DER_VOLT_VAR, f"{c}ActPt", len(curve.points)),
        p.set(DER_VOLT_VAR, f"{c}DeptRef", VA_MAX_PCT),
    ]
    shift = curve.v_ref_pu - 1.0  # folded into the points if the curve has no VRef
    if p.target.has(DER_VOLT_VAR, f"{c}VRef"):
        staged.append(p.set(DER_VOLT_VAR, f"{c}VRef", curve.v_ref_pu * 100.0))
        shift = 0.0
    for path, setting in ((f"{c}VRefAutoEna", DISABLED), (f"{c}RspTms", curve.response_time_s)):
        if (write := p.set_if_present(DER_VOLT_VAR, path, setting)) is not None:
            staged.append(write)
    for k, (v_pu, q_pct) in enumerate(curve.points):
        staged.append(p.set(DER_VOLT_VAR, f"{c}Pt[{k}].V", (v_pu + shift) * 100.0))
        staged.append(p.set(DER_VOLT_VAR, f"{c}Pt[{k}].Var", q_pct))
    p.set(DER_VOLT_VAR, "AdptCrvReq", index + 1, verify=False)
    active = _as_active(p.target.layouts[DER_VOLT_VAR], staged, c)
    p.wait(AwaitAdoption(DER_VOLT_VAR, index + 1, active))
    p.enable(DER_VOLT_VAR, "Ena", "RvrtTms")


def _as_active(
    layout: ModelLayout, staged: list[PointWrite], prefix: str
) -> tuple[PointWrite, ...]:
    """The staged writes moved to the active curve ``Crv[0]``."""
    active = []
    for write in staged:
        path = "Crv[0]." + write.path.removeprefix(prefix)
        active.append(dataclasses.replace(write, path=path, offset=layout.point(path).offset))
    return tuple(active)


def _volt_var_126(
    p: _Plan, value: SetpointValue, *, index: int, base: tuple[int, float, float]
) -> None:
    """V in % of 121 VRef (the nominal voltage), shifted by VRef - 1 as IEEE 1547 does."""
    curve = _curve(p, STATIC_VOLT_VAR, value)
    dept_ref, var_base, va_max = base
    c = f"curve[{index}]."
    p.set(STATIC_VOLT_VAR, f"{c}ActPt", len(curve.points))
    p.set(STATIC_VOLT_VAR, f"{c}DeptRef", dept_ref)
    shift = curve.v_ref_pu - 1.0
    for k, (v_pu, q_pct) in enumerate(curve.points, start=1):
        p.set(STATIC_VOLT_VAR, f"{c}V{k}", (v_pu + shift) * 100.0)
        p.set(STATIC_VOLT_VAR, f"{c}VAr{k}", q_pct * va_max / var_base)
    p.set_if_present(STATIC_VOLT_VAR, f"{c}RmpTms", curve.response_time_s * PT1_95_PER_90)
    p.set(STATIC_VOLT_VAR, "ActCrv", index + 1)
    p.enable(STATIC_VOLT_VAR, "ModEna", "RvrtTms")


# --- FIXED_PF ----------------------------------------------------------------------------------


def _fixed_pf(t: ControlTarget) -> _Control | None:
    if t.has(DER_CTL_AC, "PFWInjEna", "PFWInj.PF", "PFWInj.Ext"):
        groups: tuple[str, ...] = ("PFWInj",)
        if t.storage and t.has(DER_CTL_AC, "PFWAbsEna", "PFWAbs.PF", "PFWAbs.Ext"):
            groups += ("PFWAbs",)
        release = tuple((DER_CTL_AC, f"{group}Ena") for group in groups)
        return _Control(functools.partial(_fixed_pf_704, groups=groups), release)
    if t.has(IMMEDIATE, "OutPFSet", "OutPFSet_Ena"):
        return _Control(_fixed_pf_123, ((IMMEDIATE, "OutPFSet_Ena"),))
    return None


def _fixed_pf_704(p: _Plan, value: SetpointValue, *, groups: tuple[str, ...]) -> None:
    """The same PF and excitation whether the device injects or absorbs W."""
    pf = _expect(SetpointName.FIXED_PF, value, FixedPf)
    ext = OVER_EXCITED if pf.excitation == "inject" else UNDER_EXCITED
    for group in groups:
        p.set(DER_CTL_AC, f"{group}.PF", pf.pf)
        p.set(DER_CTL_AC, f"{group}.Ext", ext)
        reversion = (
            (f"{group}Rvrt.PF", 1.0),
            (f"{group}Rvrt.Ext", OVER_EXCITED),
            (f"{group}EnaRvrt", ENABLED),
        )
        p.enable(DER_CTL_AC, f"{group}Ena", f"{group}RvrtTms", reversion)


def _fixed_pf_123(p: _Plan, value: SetpointValue) -> None:
    """OutPFSet in the EEI sign convention of 121 PFMin: positive when injecting var."""
    pf = _expect(SetpointName.FIXED_PF, value, FixedPf)
    p.set(IMMEDIATE, "OutPFSet", pf.pf if pf.excitation == "inject" else -pf.pf)
    p.enable(IMMEDIATE, "OutPFSet_Ena", "OutPFSet_RvrtTms")


# --- STORAGE_W ---------------------------------------------------------------------------------


def _storage(t: ControlTarget) -> _Control | None:
    if not t.storage:
        return None
    ratings = _ratings(t)
    if t.has(DER_CTL_AC, "WSetEna", "WSetMod", "WSet"):
        apply = functools.partial(
            _storage_704, charge_max=ratings.charge_w_max, discharge_max=ratings.discharge_w_max
        )
        return _Control(apply, ((DER_CTL_AC, "WSetEna"),))
    charge_max = t.values.get(STORAGE, {}).get("WChaMax")
    if (
        t.has(STORAGE, "StorCtl_Mod", "OutWRte", "InWRte")
        and isinstance(charge_max, int | float)
        and charge_max > 0
        and ratings.discharge_w_max
    ):
        apply = functools.partial(
            _storage_124, charge_max=float(charge_max), discharge_max=ratings.discharge_w_max
        )
        return _Control(apply, tuple((STORAGE, p) for p in ("StorCtl_Mod", "OutWRte", "InWRte")))
    return None


def _check_rating(
    t: ControlTarget, point: str, w: float, charge_max: float | None, discharge_max: float | None
) -> None:
    """Refuse a W beyond the device's ratings: the driver never clamps."""
    if discharge_max is not None and w > discharge_max:
        reason = f"discharging {w:g} W is above the device's rating of {discharge_max:g} W"
        raise ControlRefused(t.device, point, reason)
    if charge_max is not None and -w > charge_max:
        reason = f"charging {-w:g} W is above the device's rating of {charge_max:g} W"
        raise ControlRefused(t.device, point, reason)


def _storage_704(
    p: _Plan, value: SetpointValue, *, charge_max: float | None, discharge_max: float | None
) -> None:
    w = _number(SetpointName.STORAGE_W, value)
    _check_rating(p.target, f"{DER_CTL_AC}.WSet", w, charge_max, discharge_max)
    p.set(DER_CTL_AC, "WSet", w)
    p.set(DER_CTL_AC, "WSetMod", WATTS)
    reversion = (("WSetRvrt", 0.0), ("WSetEnaRvrt", ENABLED))
    p.enable(DER_CTL_AC, "WSetEna", "WSetRvrtTms", reversion)


def _storage_124(
    p: _Plan, value: SetpointValue, *, charge_max: float, discharge_max: float
) -> None:
    """OutWRte in % of the discharge rating, InWRte in % of WChaMax; 0 W holds (both bits)."""
    w = _number(SetpointName.STORAGE_W, value)
    point = f"{STORAGE}.{'OutWRte' if w > 0 else 'InWRte'}"
    _check_rating(p.target, point, w, charge_max, discharge_max)
    p.set(STORAGE, "OutWRte", max(w, 0.0) / discharge_max * 100.0)
    p.set(STORAGE, "InWRte", max(-w, 0.0) / charge_max * 100.0)
    mode = DISCHARGE if w > 0 else CHARGE if w < 0 else CHARGE | DISCHARGE
    p.enable(STORAGE, "StorCtl_Mod", "InOutWRte_RvrtTms", value=mode)


_ROUTES: dict[SetpointName, Callable[[ControlTarget], _Control | None]] = {
    SetpointName.MAX_W_PCT: _max_w_pct,
    SetpointName.VAR: _var,
    SetpointName.VOLT_VAR: _volt_var,
    SetpointName.FIXED_PF: _fixed_pf,
    SetpointName.STORAGE_W: _storage,
}
