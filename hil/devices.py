"""Simulated SunSpec devices: a register image kept in step with physics, plus fault hooks."""

from __future__ import annotations

import abc
import enum
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from sunspec2.device import Model, get_model_def

from hil.image import PointChange, RegisterImage, SunSpecImage, Value, WriteRefused
from hil.physics import (
    BatteryControls,
    BatteryPhysics,
    BatteryRatings,
    ChargeState,
    ClearSkyProfile,
    ConstantProfile,
    Grid,
    Profile,
    PvControls,
    PvPhysics,
    PvRatings,
    PvState,
    SimClock,
    TableProfile,
)
from hil.spec import (
    BatterySpec,
    DeviceSpec,
    GridSpec,
    Pv1547Spec,
    PvLegacySpec,
    ReplaySpec,
    resolve_file,
)

PV_DC_V = 400.0  # MPP voltage of the simulated PV string, V
PV_DC_EFFICIENCY = 0.97
ENABLED = 1
SQRT3 = math.sqrt(3.0)

# 103 St for each PV operating state
_ST_103 = {PvState.OFF: 1, PvState.SLEEPING: 2, PvState.MPPT: 4, PvState.THROTTLED: 5}
# 701 InvSt for each PV operating state
_INVST_701 = {PvState.OFF: 0, PvState.SLEEPING: 1, PvState.MPPT: 3, PvState.THROTTLED: 4}
# Cat B volt-var curve (IEEE 1547-2018): V in % of VRef, var in % of VArMax
_CAT_B_VOLT_VAR = ((92.0, 44.0), (98.0, 0.0), (102.0, 0.0), (108.0, -44.0))
# Cat B watt-var curve, generation side: W in % of WMax, var in % of VArMax
_CAT_B_WATT_VAR = ((20.0, 0.0), (50.0, 0.0), (100.0, -44.0))


class Fault(enum.Enum):
    """How a device currently misbehaves on the bus."""

    NONE = "none"
    SILENT = "silent"  # never answers: clients time out
    EXCEPTION = "exception"  # answers every request with DEVICE_FAILURE (4)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A snapshot of a physics-backed device, SI units, positive W delivered to the grid."""

    id: str
    kind: str
    t_s: float
    w: float
    var: float
    v: float
    hz: float
    state: str
    connected: bool
    fault: Fault
    wh_injected: float
    wh_absorbed: float
    soc_pct: float | None = None
    available_w: float | None = None
    w_lim_pct: float | None = None
    pf: float | None = None
    var_set: float | None = None
    w_set: float | None = None
    soc_limits_pct: tuple[float, float] | None = None


def scale_factor(max_abs: float, precision: int, signed: bool = True) -> int:
    """The finest scale factor, no finer than 10**precision, that fits max_abs in 16 bits."""
    limit = 32767 if signed else 65534
    sf = precision
    while max_abs / 10.0**sf > limit:
        sf += 1
    return sf


def _model(model_id: int, **counts: int) -> Model:
    """A pysunspec2 model; counts set repeating-group sizes (NCrv, NPt, or a legacy length)."""
    model_len = counts.pop("model_len", 0)
    model = Model(model_id, model_len=model_len, data=counts or None)
    if model.error_info:
        raise ValueError(f"model {model_id}: {model.error_info}")
    return model


def _profile(spec: PvLegacySpec | Pv1547Spec) -> Profile:
    p = spec.profile
    if p is None:
        return ConstantProfile(spec.w_rtg)
    if p.kind == "constant":
        return ConstantProfile(p.w)
    if p.kind == "table":
        return TableProfile(tuple(p.points), p.loop)
    peak = spec.w_rtg if p.peak_w is None else p.peak_w
    return ClearSkyProfile(peak, p.day_s, p.start_h, p.sunrise_h, p.sunset_h)


def _grid(spec: GridSpec) -> Grid:
    return Grid(spec.v_nom, spec.hz_nom, spec.noise_v, spec.noise_hz, spec.seed)


def _common(spec: PvLegacySpec | Pv1547Spec | BatterySpec) -> dict[str, Value]:
    return {
        "Mn": spec.manufacturer,
        "Md": spec.model_name,
        "Opt": spec.type,
        "Vr": spec.version,
        "SN": spec.serial or spec.id,
        "DA": spec.unit_id,
    }


def _as_float(value: Value, default: float = 0.0) -> float:
    return default if value is None or isinstance(value, str) else float(value)


class SimulatedDevice(abc.ABC):
    """One Modbus unit: answers reads from its image and turns accepted writes into controls."""

    kind: str

    def __init__(self, spec: DeviceSpec, clock: SimClock) -> None:
        self.spec = spec
        self.id = spec.id
        self.unit_id = spec.unit_id
        self.clock = clock
        self.fault = Fault.NONE
        self.image = self._power_on_image()

    @abc.abstractmethod
    def _power_on_image(self) -> RegisterImage:
        """The register image as the device shows it after power-on."""

    @abc.abstractmethod
    def refresh(self) -> None:
        """Step the physics to now and write the measurements into the image."""

    @abc.abstractmethod
    def _apply(self, changes: list[PointChange]) -> None:
        """React to accepted client writes."""

    @abc.abstractmethod
    def _reset_controls(self) -> None:
        """Forget every control a client set (power cycle)."""

    @property
    def base(self) -> int:
        """Address of the 'SunS' marker."""
        return self.image.base

    def model_ids(self) -> list[int]:
        """The model chain as a client discovers it."""
        return self.image.model_ids()

    async def on_access(  # noqa: PLR0917 (pymodbus calls it positionally)
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus SimDevice action: serve a read from the image or vet and apply a write."""
        if self.fault is Fault.SILENT:
            raise NoSuchIdException(f"{self.id} is silent")
        if self.fault is Fault.EXCEPTION:
            return ExcCodes.DEVICE_FAILURE
        if set_values is None:
            self.refresh()
            offset = address - start_address
            registers[offset : offset + count] = self.image.read(address, count)
            return None
        try:
            changes = self.image.apply_write(address, [int(v) for v in set_values])
        except WriteRefused as exc:
            return exc.code
        self.refresh()
        self._apply(changes)
        return None

    def go_silent(self) -> None:
        """Stop answering (requests time out) until clear_faults()."""
        self.fault = Fault.SILENT

    def answer_exceptions(self) -> None:
        """Answer every request with exception 4 (DEVICE_FAILURE) until clear_faults()."""
        self.fault = Fault.EXCEPTION

    def clear_faults(self) -> None:
        """Answer normally again."""
        self.fault = Fault.NONE

    def restart(self) -> None:
        """Power-cycle: registers and controls back to power-on defaults, faults cleared.

        Physical state (energy counters, SoC) survives, as it would on a real device.
        """
        self._reset_controls()
        self.image = self._power_on_image()
        self.fault = Fault.NONE
        self.refresh()


class ReplayDevice(SimulatedDevice):
    """Serves a captured image: a raw register list (read-only, byte-exact) or a pysunspec2
    device JSON (decoded into models, writes vetted but without physics)."""

    kind = "replay"
    spec: ReplaySpec

    def _power_on_image(self) -> RegisterImage:
        data = json.loads(resolve_file(self.spec.file, Path.cwd()).read_text())
        if "registers" in data:
            return RegisterImage(int(data["base"]), [int(r) for r in data["registers"]])
        models = []
        for values in data["models"]:
            if values["ID"] == 0xFFFF:
                break
            get_model_def(values["ID"])  # raises for a model pysunspec2 does not define
            models.append(Model(values["ID"], data=values))
        return SunSpecImage(models, self.spec.base)

    def refresh(self) -> None:
        """Nothing to step: the image is static."""

    def _apply(self, changes: list[PointChange]) -> None:
        """Accepted writes only change the image."""

    def _reset_controls(self) -> None:
        """No controls besides the image."""


class PhysicsDevice(SimulatedDevice):
    """A device whose measured points come from a physics model."""

    image: SunSpecImage
    physics: PvPhysics | BatteryPhysics

    def __init__(self, spec: PvLegacySpec | Pv1547Spec | BatterySpec, clock: SimClock) -> None:
        super().__init__(spec, clock)
        self.refresh()

    def set_voltage(self, v: float | None) -> None:
        """Force the grid voltage (V), or None to return to nominal."""
        self.refresh()
        self._grid().v_set = v

    @abc.abstractmethod
    def _grid(self) -> Grid: ...

    @abc.abstractmethod
    def snapshot(self) -> DeviceState:
        """The physics state now."""


class _PvDevice(PhysicsDevice):
    spec: PvLegacySpec | Pv1547Spec
    physics: PvPhysics

    def __init__(self, spec: PvLegacySpec | Pv1547Spec, clock: SimClock) -> None:
        va = spec.va_rtg or spec.w_rtg
        self.ratings = PvRatings(spec.w_rtg, va, spec.var_rtg or 0.44 * va)
        self.physics = PvPhysics(
            self.ratings, _profile(spec), _grid(spec.grid), spec.tau_s, clock.now()
        )
        self.w_sf = scale_factor(max(va, self.ratings.var_rtg) * 1.2, 0)
        self.a_sf = scale_factor(va / spec.grid.v_nom * 1.2, -2, signed=False)
        super().__init__(spec, clock)

    def _grid(self) -> Grid:
        return self.physics.grid

    def _reset_controls(self) -> None:
        self.physics.controls = PvControls(w_max=self.ratings.w_rtg)

    def _ac(self) -> dict[str, float]:
        """AC quantities now: W, var, VA, PF (signed by var), current per phase."""
        p = self.physics
        va = math.hypot(p.w, p.var)
        pf = math.copysign(p.w / va, p.var) if va > 0 else 1.0
        phases = 2 if self.spec.grid.split_phase else 3
        return {"va": va, "pf": pf, "a_phase": va / (phases * p.v), "phases": phases}

    def snapshot(self) -> DeviceState:
        self.refresh()
        p, c = self.physics, self.physics.controls
        return DeviceState(
            id=self.id,
            kind=self.kind,
            t_s=p.t,
            w=p.w,
            var=p.var,
            v=p.v,
            hz=p.hz,
            state=p.state.name,
            connected=c.connected,
            fault=self.fault,
            wh_injected=p.wh_injected,
            wh_absorbed=0.0,
            available_w=p.available_w,
            w_lim_pct=c.w_lim_pct,
            pf=c.pf,
            var_set=c.var_set,
            w_set=c.w_set,
        )


class PvLegacyInverter(_PvDevice):
    """PV inverter speaking the legacy SunSpec models 1, 103, 120, 121, 123, 126."""

    kind = "pv_legacy"
    spec: PvLegacySpec

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        n_curves = s.vv_curves
        image = SunSpecImage(
            [
                _model(1),
                _model(103),
                _model(120),
                _model(121),
                _model(123),
                _model(126, model_len=10 + 54 * n_curves),
            ],
            s.base,
        )
        v_nom, w_sf = s.grid.v_nom, self.w_sf
        image.update(1, _common(s))
        image.update(
            103,
            {
                "A_SF": self.a_sf,
                "V_SF": -1,
                "W_SF": w_sf,
                "Hz_SF": -2,
                "VA_SF": w_sf,
                "VAr_SF": w_sf,
                "PF_SF": -2,
                "WH_SF": 0,
                "DCA_SF": -2,
                "DCV_SF": -1,
                "DCW_SF": w_sf,
                "Tmp_SF": -1,
                "Evt1": 0,
                "Evt2": 0,
            },
        )
        image.update(
            120,
            {
                "WRtg_SF": w_sf,
                "VARtg_SF": w_sf,
                "VArRtg_SF": w_sf,
                "ARtg_SF": self.a_sf,
                "PFRtg_SF": -2,
                "DERTyp": 4,
                "WRtg": r.w_rtg,
                "VARtg": r.va_rtg,
                "VArRtgQ1": r.var_rtg,
                "VArRtgQ2": r.var_rtg,
                "VArRtgQ3": -r.var_rtg,
                "VArRtgQ4": -r.var_rtg,
                "ARtg": r.va_rtg / v_nom / 3,
                "PFRtgQ1": 0.9,
                "PFRtgQ2": 0.9,
                "PFRtgQ3": -0.9,
                "PFRtgQ4": -0.9,
            },
        )
        image.update(
            121,
            {
                "WMax_SF": w_sf,
                "VRef_SF": -1,
                "VRefOfs_SF": -1,
                "VMinMax_SF": -1,
                "VAMax_SF": w_sf,
                "VArMax_SF": w_sf,
                "PFMin_SF": -2,
                "ECPNomHz_SF": -2,
                "WMax": r.w_rtg,
                "VRef": v_nom,
                "VRefOfs": 0,
                "VMax": 1.1 * v_nom,
                "VMin": 0.88 * v_nom,
                "VAMax": r.va_rtg,
                "VArMaxQ1": r.var_rtg,
                "VArMaxQ2": r.var_rtg,
                "VArMaxQ3": -r.var_rtg,
                "VArMaxQ4": -r.var_rtg,
                "PFMinQ1": 0.9,
                "PFMinQ2": 0.9,
                "PFMinQ3": -0.9,
                "PFMinQ4": -0.9,
                "ECPNomHz": s.grid.hz_nom,
            },
        )
        controls: dict[str, Value] = {"WMaxLimPct_SF": -1, "OutPFSet_SF": -3, "VArPct_SF": -1}
        controls.update(dict.fromkeys(image.point_names(123)[2:-3], 0))
        controls.update({"Conn": 1, "WMaxLimPct": 100, "OutPFSet": 1, "VArPct_Mod": 2})
        image.update(123, controls)
        image.update(
            126,
            {
                "V_SF": -1,
                "DeptRef_SF": 0,
                "ActCrv": 1,
                "ModEna": 0,
                "WinTms": 0,
                "RvrtTms": 0,
                "RmpTms": 0,
                "NCrv": n_curves,
                "NPt": len(_CAT_B_VOLT_VAR),
            },
        )
        for c in range(1, n_curves + 1):
            curve: dict[str, Value] = {"ActPt": len(_CAT_B_VOLT_VAR), "DeptRef": 2, "ReadOnly": 0}
            for k, (v_pct, var_pct) in enumerate(_CAT_B_VOLT_VAR, start=1):
                curve[f"V{k}"] = v_pct
                curve[f"VAr{k}"] = var_pct
            image.update(126, {f"curve[{c}].{name}": value for name, value in curve.items()})
        return image

    def refresh(self) -> None:
        p = self.physics
        p.step(self.clock.now())
        ac = self._ac()
        a = ac["a_phase"]
        v_ll = p.v * (2 if self.spec.grid.split_phase else SQRT3)
        dc_w = max(p.w, 0.0) / PV_DC_EFFICIENCY
        self.image.update(
            103,
            {
                "A": a * ac["phases"],
                "AphA": a,
                "AphB": a,
                "AphC": a if ac["phases"] == 3 else None,
                "PPVphAB": v_ll,
                "PPVphBC": v_ll,
                "PPVphCA": v_ll,
                "PhVphA": p.v,
                "PhVphB": p.v,
                "PhVphC": p.v,
                "W": p.w,
                "Hz": p.hz,
                "VA": ac["va"],
                "VAr": p.var,
                "PF": ac["pf"] * 100.0,
                "WH": p.wh_injected,
                "DCA": dc_w / PV_DC_V,
                "DCV": PV_DC_V,
                "DCW": dc_w,
                "TmpCab": 30.0 + 15.0 * p.w / self.ratings.w_rtg,
                "St": _ST_103[p.state],
            },
        )

    def _apply(self, changes: list[PointChange]) -> None:
        if not any(ch.model_id in (121, 123, 126) for ch in changes):
            return
        img, c, r = self.image, self.physics.controls, self.ratings

        def get(model_id: int, name: str) -> float:
            return _as_float(img.get(model_id, name))

        c.w_max = get(121, "WMax")
        c.connected = get(123, "Conn") == 1
        c.w_lim_pct = get(123, "WMaxLimPct") if get(123, "WMaxLim_Ena") == ENABLED else None
        c.pf = get(123, "OutPFSet") if get(123, "OutPFSet_Ena") == ENABLED else None
        c.var_set = None
        if get(123, "VArPct_Ena") == ENABLED:
            mode = int(get(123, "VArPct_Mod"))
            pct_and_base = {
                1: ("VArWMaxPct", c.w_max),
                2: ("VArMaxPct", get(121, "VArMaxQ1")),
                3: ("VArAvalPct", r.var_rtg),
            }
            if mode in pct_and_base:
                name, ref = pct_and_base[mode]
                c.var_set = get(123, name) / 100.0 * ref
        c.volt_var = None
        if int(get(126, "ModEna")) & 1:
            crv = f"curve[{int(get(126, 'ActCrv'))}]"
            dept = {1: c.w_max, 2: get(121, "VArMaxQ1"), 3: r.var_rtg}.get(
                int(get(126, f"{crv}.DeptRef")), r.var_rtg
            )
            v_ref = get(121, "VRef")
            n = int(get(126, f"{crv}.ActPt"))
            c.volt_var = tuple(
                (get(126, f"{crv}.V{k}") / 100.0 * v_ref, get(126, f"{crv}.VAr{k}") / 100.0 * dept)
                for k in range(1, n + 1)
            )


class Pv1547Inverter(_PvDevice):
    """IEEE 1547 PV inverter speaking SunSpec models 1, 701-705, 712, 715."""

    kind = "pv_1547"
    spec: Pv1547Spec

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        n_crv = s.vv_curves
        image = SunSpecImage(
            [
                _model(1),
                _model(701),
                _model(702),
                _model(703),
                _model(704),
                _model(705, NCrv=n_crv, NPt=len(_CAT_B_VOLT_VAR)),
                _model(712, NCrv=n_crv, NPt=len(_CAT_B_WATT_VAR)),
                _model(715),
            ],
            s.base,
        )
        v_nom, hz_nom, w_sf = s.grid.v_nom, s.grid.hz_nom, self.w_sf
        a_max = r.va_rtg / v_nom / (2 if s.grid.split_phase else 3)
        image.update(1, _common(s))
        image.update(
            701,
            {
                "A_SF": self.a_sf,
                "V_SF": -1,
                "Hz_SF": -3,
                "W_SF": w_sf,
                "PF_SF": -3,
                "VA_SF": w_sf,
                "Var_SF": w_sf,
                "TotWh_SF": 0,
                "Tmp_SF": -1,
                "ACType": 1 if s.grid.split_phase else 2,
                "Alrm": 0,
                "DERMode": 1,
                "TotWhAbs": 0,
                "ThrotSrc": 0,
            },
        )
        image.update(
            702,
            {
                "W_SF": scale_factor(r.w_rtg * 1.1, 0, signed=False),
                "PF_SF": -3,
                "VA_SF": scale_factor(r.va_rtg * 1.1, 0, signed=False),
                "Var_SF": scale_factor(r.var_rtg * 1.1, 0, signed=False),
                "V_SF": -1,
                "A_SF": self.a_sf,
                "WMaxRtg": r.w_rtg,
                "WOvrExtRtg": r.w_rtg,
                "WOvrExtRtgPF": 0.9,
                "WUndExtRtg": r.w_rtg,
                "WUndExtRtgPF": 0.9,
                "VAMaxRtg": r.va_rtg,
                "VarMaxInjRtg": r.var_rtg,
                "VarMaxAbsRtg": r.var_rtg,
                "VNomRtg": v_nom,
                "VMaxRtg": 1.1 * v_nom,
                "VMinRtg": 0.88 * v_nom,
                "AMaxRtg": a_max,
                "PFOvrExtRtg": 0.9,
                "PFUndExtRtg": 0.9,
                "NorOpCatRtg": 1,
                "AbnOpCatRtg": 1,
                "CtrlModes": 0b10_0001_1111,
                "IntIslandCatRtg": 1,
                "WMax": r.w_rtg,
                "VAMax": r.va_rtg,
                "VarMaxInj": r.var_rtg,
                "VarMaxAbs": r.var_rtg,
                "VNom": v_nom,
                "VMax": 1.1 * v_nom,
                "VMin": 0.88 * v_nom,
                "AMax": a_max,
            },
        )
        image.update(
            703,
            {
                "V_SF": -1,
                "Hz_SF": -2,
                "ES": 1,
                "ESVHi": 105.0,
                "ESVLo": 91.7,
                "ESHzHi": hz_nom + 0.1,
                "ESHzLo": hz_nom - 0.5,
                "ESDlyTms": 300,
                "ESRndTms": 0,
                "ESRmpTms": 300,
                "ESDlyRemTms": 0,
            },
        )
        controls: dict[str, Value] = {
            "PF_SF": -3,
            "WMaxLimPct_SF": -1,
            "WSet_SF": w_sf,
            "WSetPct_SF": -1,
            "VarSet_SF": w_sf,
            "VarSetPct_SF": -1,
        }
        controls.update(
            (name, 0)
            for name in image.point_names(704)[2:]
            if not name.endswith("_SF") and not name.startswith(("WRmp", "VarRmp"))
        )
        controls.update(
            {
                "WMaxLimPct": 100,
                "WMaxLimPctRvrt": 100,
                "VarSetMod": 1,
                "VarSetPri": 1,
                "AntiIslEna": 1,
                "PFWInj.PF": 1,
                "PFWInjRvrt.PF": 1,
                "PFWAbs.PF": 1,
                "PFWAbs.Ext": 1,
                "PFWAbsRvrt.PF": 1,
                "PFWAbsRvrt.Ext": 1,
            }
        )
        image.update(704, controls)
        self._curves(image, 705, "V", _CAT_B_VOLT_VAR, {"V_SF": -2, "RspTms_SF": 0})
        self._curves(image, 712, "W", _CAT_B_WATT_VAR, {"W_SF": 0})
        image.update(
            715, {"LocRemCtl": 0, "DERHb": 0, "ControllerHb": 0, "AlarmReset": 0, "OpCtl": 1}
        )
        return image

    @staticmethod
    def _curves(
        image: SunSpecImage,
        model_id: int,
        x: str,
        points: tuple[tuple[float, float], ...],
        sfs: Mapping[str, Value],
    ) -> None:
        """Fill a 705/712 curve model: curve 1 active and read-only, the others writable."""
        n_crv = int(_as_float(image.get(model_id, "NCrv")))
        values: dict[str, Value] = {**sfs, "DeptRef_SF": -2}
        values.update({"Ena": 0, "AdptCrvReq": 0, "AdptCrvRslt": 1, "RvrtTms": 0, "RvrtRem": 0})
        values["RvrtCrv"] = 0
        for c in range(1, n_crv + 1):
            crv = f"Crv[{c}]"
            values.update({f"{crv}.ActPt": len(points), f"{crv}.DeptRef": 1, f"{crv}.Pri": 1})
            if model_id == 705:
                values.update(
                    {
                        f"{crv}.VRef": 100,
                        f"{crv}.VRefAuto": 100,
                        f"{crv}.VRefAutoEna": 0,
                        f"{crv}.VRefAutoTms": 0,
                        f"{crv}.RspTms": 5,
                    }
                )
            for k, (x_pct, var_pct) in enumerate(points, start=1):
                values[f"{crv}.Pt[{k}].{x}"] = x_pct
                values[f"{crv}.Pt[{k}].Var"] = var_pct
            values[f"{crv}.ReadOnly"] = 1 if c == 1 else 0
        image.update(model_id, values)

    def refresh(self) -> None:
        p = self.physics
        p.step(self.clock.now())
        ac = self._ac()
        n = int(ac["phases"])
        v_ll = p.v * (2 if n == 2 else SQRT3)
        phase_share = 1.0 / n
        values: dict[str, Value] = {
            "St": int(p.controls.connected),
            "InvSt": _INVST_701[p.state],
            "ConnSt": int(p.controls.connected),
            "W": p.w,
            "VA": ac["va"],
            "Var": p.var,
            "PF": ac["pf"],
            "A": ac["a_phase"],
            "LLV": v_ll,
            "LNV": p.v,
            "Hz": p.hz,
            "TotWhInj": p.wh_injected,
            "TmpCab": 30.0 + 15.0 * p.w / self.ratings.w_rtg,
            "ThrotPct": 100.0 * p.w_cap() / self.ratings.w_rtg
            if p.state is PvState.THROTTLED
            else 100,
            "ThrotSrc": 1 if p.state is PvState.THROTTLED else 0,
        }
        for k in range(1, n + 1):
            values.update(
                {
                    f"WL{k}": p.w * phase_share,
                    f"VAL{k}": ac["va"] * phase_share,
                    f"VarL{k}": p.var * phase_share,
                    f"PFL{k}": ac["pf"],
                    f"AL{k}": ac["a_phase"],
                    f"VL{k}": p.v,
                }
            )
        values.update({"VL1L2": v_ll, "VL2L3": v_ll if n == 3 else None})
        values["VL3L1"] = v_ll if n == 3 else None
        self.image.update(701, values)
        self.image.set(715, "DERHb", int(p.t))

    def _apply(self, changes: list[PointChange]) -> None:
        for ch in changes:
            if ch.name == "AdptCrvReq" and ch.model_id in (705, 712):
                self._adopt(ch.model_id, int(_as_float(ch.value)))
        img, c = self.image, self.physics.controls

        def get(model_id: int, name: str) -> float:
            return _as_float(img.get(model_id, name))

        c.w_max = get(702, "WMax")
        var_max = get(702, "VarMaxInj")
        op = int(get(715, "OpCtl"))
        c.connected = op in (1, 3)  # START, EXIT_STANDBY
        c.w_lim_pct = get(704, "WMaxLimPct") if get(704, "WMaxLimPctEna") == ENABLED else None
        c.w_set = None
        if get(704, "WSetEna") == ENABLED:
            by_mode = get(704, "WSet") if get(704, "WSetMod") == 1 else None
            c.w_set = by_mode if by_mode is not None else get(704, "WSetPct") / 100.0 * c.w_max
        c.pf = None
        if get(704, "PFWInjEna") == ENABLED:
            sign = 1.0 if get(704, "PFWInj.Ext") == 0 else -1.0  # OVER_EXCITED injects var
            c.pf = sign * get(704, "PFWInj.PF")
        c.var_set = None
        if get(704, "VarSetEna") == ENABLED:
            mode = int(get(704, "VarSetMod"))
            if mode == 4:  # VARS
                c.var_set = get(704, "VarSet")
            else:
                ref = {0: c.w_max, 1: var_max, 2: var_max, 3: get(702, "VAMax")}[mode]
                c.var_set = get(704, "VarSetPct") / 100.0 * ref
        c.volt_var = None
        if get(705, "Ena") == ENABLED:
            v_nom = get(702, "VNom")
            dept = {0: c.w_max, 1: var_max, 2: var_max, 3: get(702, "VAMax")}
            ref = dept.get(int(get(705, "Crv[1].DeptRef")), var_max)
            v_shift = get(705, "Crv[1].VRef") - 100.0
            c.volt_var = tuple(
                (
                    (get(705, f"Crv[1].Pt[{k}].V") + v_shift) / 100.0 * v_nom,
                    get(705, f"Crv[1].Pt[{k}].Var") / 100.0 * ref,
                )
                for k in range(1, int(get(705, "Crv[1].ActPt")) + 1)
            )

    def _adopt(self, model_id: int, n: int) -> None:
        """AdptCrvReq=n: copy curve n into the active curve 1 if it is valid, then report."""
        img = self.image
        if n == 0:
            return
        x = "V" if model_id == 705 else "W"
        n_crv = int(_as_float(img.get(model_id, "NCrv")))
        n_pt = int(_as_float(img.get(model_id, "NPt")))
        ok = 2 <= n <= n_crv
        if ok:
            act_pt = int(_as_float(img.get(model_id, f"Crv[{n}].ActPt")))
            xs = [
                _as_float(img.get(model_id, f"Crv[{n}].Pt[{k}].{x}")) for k in range(1, act_pt + 1)
            ]
            ok = 1 <= act_pt <= n_pt and all(a < b for a, b in itertools.pairwise(xs))
        if ok:
            prefix = f"Crv[{n}]."
            for name in img.point_names(model_id):
                if name.startswith(prefix) and not name.endswith("ReadOnly"):
                    rest = name.removeprefix(prefix)
                    img.set(model_id, f"Crv[1].{rest}", img.get(model_id, name))
        img.set(model_id, "AdptCrvRslt", 1 if ok else 2)  # COMPLETED / FAILED


class BatteryInverter(PhysicsDevice):
    """Battery inverter speaking SunSpec models 1, 103, 124, 713, 802."""

    kind = "battery"
    spec: BatterySpec
    physics: BatteryPhysics

    def __init__(self, spec: BatterySpec, clock: SimClock) -> None:
        self.ratings = BatteryRatings(
            wh_rtg=spec.wh_rtg,
            w_cha_max=spec.w_cha_max,
            w_discha_max=spec.w_discha_max,
            va_rtg=spec.va_rtg or max(spec.w_cha_max, spec.w_discha_max),
            efficiency=spec.efficiency,
            soc_min_pct=spec.soc_min_pct,
            soc_max_pct=spec.soc_max_pct,
        )
        self.physics = BatteryPhysics(
            self.ratings, _grid(spec.grid), spec.soc_pct, spec.tau_s, clock.now()
        )
        w_max = max(spec.w_cha_max, spec.w_discha_max, self.ratings.va_rtg)
        self.w_sf = scale_factor(w_max * 1.2, 0)
        self.wh_sf = scale_factor(spec.wh_rtg, 0, signed=False)
        super().__init__(spec, clock)

    def _grid(self) -> Grid:
        return self.physics.grid

    def _reset_controls(self) -> None:
        self.physics.controls = BatteryControls()

    def _power_on_image(self) -> SunSpecImage:
        s, r = self.spec, self.ratings
        image = SunSpecImage(
            [_model(1), _model(103), _model(124), _model(713), _model(802)], s.base
        )
        w_sf = self.w_sf
        a_dc_max = max(s.w_cha_max, s.w_discha_max) / s.v_bat
        image.update(1, _common(s))
        image.update(
            103,
            {
                "A_SF": scale_factor(r.va_rtg / s.grid.v_nom * 1.2, -2, signed=False),
                "V_SF": -1,
                "W_SF": w_sf,
                "Hz_SF": -2,
                "VA_SF": w_sf,
                "VAr_SF": w_sf,
                "PF_SF": -2,
                "WH_SF": 0,
                "DCA_SF": -1,
                "DCV_SF": -1,
                "DCW_SF": w_sf,
                "Tmp_SF": -1,
                "Evt1": 0,
                "Evt2": 0,
            },
        )
        image.update(
            124,
            {
                "WChaMax_SF": w_sf,
                "WChaDisChaGra_SF": 0,
                "MinRsvPct_SF": -1,
                "ChaState_SF": -1,
                "StorAval_SF": -1,
                "InBatV_SF": -1,
                "InOutWRte_SF": -1,
                "WChaMax": s.w_cha_max,
                "WChaGra": 100,
                "WDisChaGra": 100,
                "StorCtl_Mod": 0,
                "MinRsvPct": s.soc_min_pct,
                "InBatV": s.v_bat,
                "OutWRte": 0,
                "InWRte": 0,
                "InOutWRte_WinTms": 0,
                "InOutWRte_RvrtTms": 0,
                "InOutWRte_RmpTms": 0,
                "ChaGriSet": 1,
            },
        )
        image.update(
            713, {"WH_SF": self.wh_sf, "Pct_SF": -1, "WHRtg": s.wh_rtg, "SoH": 100, "Sta": 0}
        )
        image.update(
            802,
            {
                "AHRtg_SF": scale_factor(s.wh_rtg / s.v_bat, -1, signed=False),
                "WHRtg_SF": self.wh_sf,
                "WChaDisChaMax_SF": scale_factor(a_dc_max * s.v_bat, 0, signed=False),
                "SoC_SF": -1,
                "DoD_SF": -1,
                "SoH_SF": -1,
                "V_SF": -1,
                "CellV_SF": -3,
                "A_SF": -1,
                "AMax_SF": -1,
                "W_SF": w_sf,
                "AHRtg": s.wh_rtg / s.v_bat,
                "WHRtg": s.wh_rtg,
                "WChaRteMax": s.w_cha_max,
                "WDisChaRteMax": s.w_discha_max,
                "SoCMax": s.soc_max_pct,
                "SoCMin": s.soc_min_pct,
                "SocRsvMax": s.soc_max_pct,
                "SoCRsvMin": s.soc_min_pct,
                "SoH": 100,
                "NCyc": 0,
                "LocRemCtl": 0,
                "Hb": 0,
                "CtrlHb": 0,
                "AlmRst": 0,
                "Typ": 4,
                "Evt1": 0,
                "Evt2": 0,
                "EvtVnd1": 0,
                "EvtVnd2": 0,
                "V": s.v_bat,
                "AChaMax": a_dc_max,
                "ADisChaMax": a_dc_max,
                "SetOp": 1,
                "SetInvState": 3,
            },
        )
        return image

    def refresh(self) -> None:
        p, s = self.physics, self.spec
        p.step(self.clock.now())
        phases = 2 if s.grid.split_phase else 3
        a = abs(p.w) / (phases * p.v)
        v_ll = p.v * (2 if phases == 2 else SQRT3)
        soc = min(max(p.soc_pct, 0.0), 100.0)
        low, _ = p.soc_limits()
        blocked = p.blocked()
        st = 1 if not p.controls.connected else 5 if blocked else 4 if abs(p.w) > 0.5 else 8
        self.image.update(
            103,
            {
                "A": a * phases,
                "AphA": a,
                "AphB": a,
                "AphC": a if phases == 3 else None,
                "PPVphAB": v_ll,
                "PPVphBC": v_ll,
                "PPVphCA": v_ll,
                "PhVphA": p.v,
                "PhVphB": p.v,
                "PhVphC": p.v,
                "W": p.w,
                "Hz": p.hz,
                "VA": abs(p.w),
                "VAr": 0,
                "PF": 100,
                "WH": p.wh_injected,
                "DCA": abs(p.w) / s.v_bat,
                "DCV": s.v_bat,
                "DCW": p.w,
                "TmpCab": 25.0 + 10.0 * abs(p.w) / self.ratings.va_rtg,
                "St": st,
            },
        )
        avail_ah = p.wh_available / s.v_bat
        self.image.update(
            124, {"ChaState": soc, "StorAval": avail_ah, "ChaSt": int(p.charge_state)}
        )
        self.image.update(713, {"WHAvail": p.wh_available, "SoC": soc})
        state = 1 if not p.controls.connected else 5 if blocked or soc <= low else 3
        self.image.update(
            802,
            {
                "SoC": soc,
                "DoD": 100.0 - soc,
                "ChaSt": int(p.charge_state),
                "Hb": int(p.t) % 0xFFFF,
                "State": state,
                "A": p.w / s.v_bat,
                "W": p.w,
                "CellVMax": 3.30 + 0.0015 * soc,
                "CellVMin": 3.28 + 0.0015 * soc,
                "CellVAvg": 3.29 + 0.0015 * soc,
            },
        )

    def _apply(self, changes: list[PointChange]) -> None:
        if not any(ch.model_id in (124, 802) for ch in changes):
            return
        img, c, r = self.image, self.physics.controls, self.ratings

        def get(model_id: int, name: str) -> float:
            return _as_float(img.get(model_id, name))

        c.w_cha_max = get(124, "WChaMax")
        mode = int(get(124, "StorCtl_Mod"))
        charge = get(124, "InWRte") / 100.0 * c.w_cha_max if mode & 1 else 0.0
        discharge = get(124, "OutWRte") / 100.0 * r.w_discha_max if mode & 2 else 0.0
        c.w_set = discharge - charge
        c.soc_rsv_min_pct = max(get(802, "SoCRsvMin"), get(124, "MinRsvPct"))
        c.soc_rsv_max_pct = get(802, "SocRsvMax")
        c.connected = get(802, "SetOp") == 1  # CONNECT

    def snapshot(self) -> DeviceState:
        self.refresh()
        p, c = self.physics, self.physics.controls
        return DeviceState(
            id=self.id,
            kind=self.kind,
            t_s=p.t,
            w=p.w,
            var=0.0,
            v=p.v,
            hz=p.hz,
            state=ChargeState(p.charge_state).name,
            connected=c.connected,
            fault=self.fault,
            wh_injected=p.wh_injected,
            wh_absorbed=p.wh_absorbed,
            soc_pct=p.soc_pct,
            w_set=c.w_set,
            soc_limits_pct=p.soc_limits(),
        )


def build_device(spec: DeviceSpec, clock: SimClock) -> SimulatedDevice:
    """The simulated device a spec describes."""
    if isinstance(spec, PvLegacySpec):
        return PvLegacyInverter(spec, clock)
    if isinstance(spec, Pv1547Spec):
        return Pv1547Inverter(spec, clock)
    if isinstance(spec, BatterySpec):
        return BatteryInverter(spec, clock)
    return ReplayDevice(spec, clock)
