"""IEEE 1547-2018 inverter and battery dynamics from EPRI's OpenDER 2.2 (`DER_PV`, `DER_BESS`).

Drop-in replacements for hil.physics' PvPhysics and BatteryPhysics (subclasses: the devices
read the same attributes and write the same controls), chosen by a spec's `dynamics: opender`.
P and Q come from OpenDER at the terminal voltage (`grid.sample()`, which a feeder may set to
its bus voltage); what the gateway writes is passed into OpenDER's settings (its
DERCommonFileFormat attributes) before each step.

OpenDER's time step `DER.t_s` is class-wide, so every instance steps in whole increments of
this module's OPENDER_STEP_S (set once by the rig with set_opender_step); `step(t)` runs as
many increments as fit before t and carries the remainder to the next call. The voltage is
sampled once per call; the available PV power is read from the profile at each increment.

Cost, measured on this 2-core machine (OpenDER 2.2.0, step 0.1 s): 0.086 ms per increment for
a PV inverter in volt-var, 0.094 ms for a battery, against 0.087 ms for a bare DER_PV run(): a
simulated hour of one device is 36,000 increments, about 3.3 s. A device read after a long
idle gap runs every increment of the gap (nothing is skipped: the SoC must integrate).

Units and signs as in hil.physics: W, var, V, Hz, s, Wh, %; positive W delivered to the grid,
positive var injected (over-excited), which is also OpenDER's convention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from hil.physics import (
    IDLE_W,
    BatteryPhysics,
    BatteryRatings,
    Grid,
    Profile,
    PvPhysics,
    PvRatings,
    PvState,
)

Dynamics = Literal["simple", "opender"]

OPENDER_STEP_S = 0.1
"""OpenDER's time step, s; shared by every OpenDER device (DER.t_s is a class variable)."""
OPENDER_HZ = 60.0
"""OpenDER's frequency settings (enter service, trip) are for 60 Hz: frequency is fed scaled."""
_EPS = 1e-9
_TRIP = "Trip"
_SOC_LOG = ("BESS SoC reached max", "BESS SoC reached min")


def set_opender_step(t_s: float) -> None:
    """Set the time step of every OpenDER device, s (OpenDER's DER.t_s is class-wide)."""
    global OPENDER_STEP_S  # noqa: PLW0603 - one step for all instances, as OpenDER's own
    if not 0 < t_s <= 10:
        raise ValueError(f"OpenDER time step {t_s} s: use 0 < t_s <= 10 s (0.1 s is typical)")
    OPENDER_STEP_S = t_s


@dataclass(frozen=True, slots=True)
class VoltVarPu:
    """A volt-var curve as OpenDER takes it: V in pu of nominal, Q in pu of the VA rating
    (OpenDER's base for QV_CURVE_Q*), VRef in pu (the curve's voltages shift by VRef - 1,
    IEEE 1547-2018 eq. 3.8.1-5) and the open-loop response time (90 % of a step), s."""

    points: tuple[tuple[float, float], ...]
    v_ref: float = 1.0
    olrt_s: float = 5.0

    def absolute(self, v_nom: float, va: float) -> tuple[tuple[float, float], ...]:
        """The same curve as (V, var) points, VRef applied (what PvControls.volt_var takes)."""
        shift = self.v_ref - 1.0
        return tuple(((v + shift) * v_nom, q * va) for v, q in self.points)

    def settings(self) -> dict[str, float]:
        """OpenDER's QV_* settings; 1 to 3 points are padded by repeating the last one."""
        n = len(self.points)
        if not 1 <= n <= 4:
            raise ValueError(f"volt-var curve with {n} points: OpenDER takes 1 to 4")
        padded = self.points + (self.points[-1],) * (4 - n)
        out = {"QV_VREF": self.v_ref, "QV_OLRT": self.olrt_s}
        for k, (v, q) in enumerate(padded, start=1):
            out[f"QV_CURVE_V{k}"] = v
            out[f"QV_CURVE_Q{k}"] = q
        return out


@dataclass(frozen=True, slots=True)
class VoltWattPu:
    """A volt-watt curve as OpenDER takes it: two (V pu of nominal, P pu of the W rating)
    points, and the open-loop response time (90 % of a step), s."""

    points: tuple[tuple[float, float], tuple[float, float]]
    olrt_s: float = 10.0

    def settings(self) -> dict[str, float]:
        """OpenDER's PV_* settings."""
        (v1, p1), (v2, p2) = self.points
        return {
            "PV_CURVE_V1": v1,
            "PV_CURVE_P1": p1,
            "PV_CURVE_V2": v2,
            "PV_CURVE_P2": p2,
            "PV_OLRT": self.olrt_s,
        }


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """How fast the immediate controls act, s, as OpenDER models them: the active-power limit
    ramps at 1 pu of the W rating per `ap_limit_s` (AP_RT); constant PF and constant Q follow
    first-order lags reaching 90 % at `const_pf_s` / `const_q_s` (CONST_PF_RT, CONST_Q_RT).
    The defaults are OpenDER's."""

    ap_limit_s: float = 15.0
    const_pf_s: float = 5.0
    const_q_s: float = 5.0

    @classmethod
    def written(cls, ap_limit_s: float, const_pf_s: float, const_q_s: float) -> ResponseTimes:
        """From written SunSpec RmpTms points, where 0 (no time given) keeps the default."""
        d = cls()
        return cls(ap_limit_s or d.ap_limit_s, const_pf_s or d.const_pf_s, const_q_s or d.const_q_s)

    def settings(self) -> dict[str, float]:
        """OpenDER's AP_RT, CONST_PF_RT and CONST_Q_RT."""
        return {
            "AP_RT": self.ap_limit_s,
            "CONST_PF_RT": self.const_pf_s,
            "CONST_Q_RT": self.const_q_s,
        }


@dataclass(frozen=True, slots=True)
class EnterService:
    """Enter-service settings (SunSpec 703, IEEE 1547-2018 clause 4.10): V in pu of nominal,
    Hz in the grid's own Hz, times in s. The defaults are IEEE 1547-2018's."""

    enabled: bool = True
    v_low: float = 0.917
    v_high: float = 1.05
    hz_low: float | None = None  # default: nominal - 0.5 Hz
    hz_high: float | None = None  # default: nominal + 0.1 Hz
    delay_s: float = 300.0
    random_s: float = 0.0
    ramp_s: float = 300.0


class _Stepper:
    """The OpenDER object of one device, its settings pushed only when they change, and the
    whole-increment stepping against a class-wide step."""

    def __init__(self, der: Any, grid: Grid, t0: float) -> None:
        self.der = der
        self.grid = grid
        self.t_done = t0  # the time OpenDER has reached: a whole number of steps past t0
        self._pushed: dict[str, object] = {}
        self.v, self.hz = grid.sample()

    def push(self, settings: dict[str, object]) -> None:
        """Write changed settings into OpenDER's der_file (its setters validate them)."""
        for name, value in settings.items():
            if self._pushed.get(name) != value:
                setattr(self.der.der_file, name, value)
                self._pushed[name] = value

    def advance(
        self, t: float, settings: dict[str, object], demand: Callable[[float], dict[str, float]]
    ) -> Iterator[tuple[float, float, float]]:
        """Push the settings, sample (V, Hz), then run OpenDER once per whole step before t,
        fed the power `demand` gives for the step's end time (p_dc_w or p_dem_w): yields
        (step s, P W, Q var) after each run."""
        from opender import DER  # type: ignore[import-untyped]

        self.push(settings)
        self.v, self.hz = self.grid.sample()
        v_pu, f = self.v / self.grid.v_nom, self.hz * OPENDER_HZ / self.grid.hz_nom
        h = OPENDER_STEP_S
        DER.t_s = h
        for _ in range(max(int((t - self.t_done) / h + _EPS), 0)):
            self.t_done += h
            self.der.update_der_input(v_pu=v_pu, f=f, **demand(self.t_done))
            p, q = self.der.run()
            yield h, float(p), float(q)

    @property
    def status(self) -> str:
        """OpenDER's operating status: 'Continuous Operation', 'Trip', 'Entering Service'…"""
        return str(self.der.der_status)


def _nameplate(w: float, va: float, var: float, v_nom: float) -> dict[str, object]:
    """OpenDER nameplate (NP_*) for a three-phase inverter whose phase voltage is v_nom."""
    v_ll = v_nom * math.sqrt(3.0)
    return {
        "NP_NORMAL_OP_CAT": "CAT_B",  # first: it resets the volt-var curve to Cat B
        "NP_P_MAX": w,
        "NP_P_MAX_OVER_PF": w,
        "NP_P_MAX_UNDER_PF": w,
        "NP_VA_MAX": va,
        "NP_Q_MAX_INJ": var,
        "NP_Q_MAX_ABS": var,
        "NP_V_DC": 2.0 * v_ll,  # before NP_AC_V_NOM, whose setter checks it
        "NP_AC_V_NOM": v_ll,
        "NP_PRIO_OUTSIDE_MIN_Q_REQ": "REACTIVE",  # var priority: P is cut when S > VA
    }


def _es_settings(es: EnterService, permit: bool, hz_nom: float) -> dict[str, object]:
    to_60 = OPENDER_HZ / hz_nom
    hz_low = hz_nom - 0.5 if es.hz_low is None else es.hz_low
    hz_high = hz_nom + 0.1 if es.hz_high is None else es.hz_high
    return {
        "ES_PERMIT_SERVICE": permit and es.enabled,
        "ES_V_LOW": es.v_low,
        "ES_V_HIGH": es.v_high,
        "ES_F_LOW": hz_low * to_60,
        "ES_F_HIGH": hz_high * to_60,
        "ES_DELAY": es.delay_s,
        "ES_RANDOMIZED_DELAY": es.random_s,
        "ES_RAMP_RATE": es.ramp_s,
    }


class OpenDerPvPhysics(PvPhysics):
    """A PV inverter whose P and Q are OpenDER DER_PV's (Cat B, var priority).

    Controls map to OpenDER modes: the active-power ceiling (WMax, WMaxLimPct, WSet) to
    AP_LIMIT (pu of the W rating); a fixed power factor to CONST_PF (INJ when positive); a
    var setpoint to CONST_Q (pu of VA); `volt_var_pu` to QV; `volt_watt_pu` to PV (OpenDER
    takes the lowest of the limit and volt-watt). OpenDER ranks constant PF over
    volt-var over constant Q. Disconnected means ES_PERMIT_SERVICE off (OpenDER trips); on
    reconnection it enters service after `enter_service`'s delay and ramp.
    """

    def __init__(self, ratings: PvRatings, profile: Profile, grid: Grid, t0: float = 0.0) -> None:
        from opender import DER_PV

        super().__init__(ratings, profile, grid, tau_s=0.0, t0=t0)
        self.volt_var_pu: VoltVarPu | None = None
        self.volt_watt_pu: VoltWattPu | None = None
        self.response_times = ResponseTimes()
        self.enter_service = EnterService()
        self.der_status = "Continuous Operation"
        der = DER_PV(**_nameplate(ratings.w_rtg, ratings.va_rtg, ratings.var_rtg, grid.v_nom))
        self._stepper = _Stepper(der, grid, t0)

    def power_on(self) -> None:
        """The OpenDER-only settings back to their power-on values (device restart); the
        controls are the device's to reset."""
        self.volt_var_pu = self.volt_watt_pu = None
        self.response_times = ResponseTimes()
        self.enter_service = EnterService()

    def settings(self) -> dict[str, object]:
        """OpenDER settings for the controls in force now."""
        c, r = self.controls, self.ratings
        cap = self.w_cap()
        pf = None if c.pf is None or c.pf == 0 else min(abs(c.pf), 1.0)
        qv, pv = self.volt_var_pu, self.volt_watt_pu
        out: dict[str, object] = {
            "AP_LIMIT_ENABLE": cap < r.w_rtg,
            "AP_LIMIT": cap / r.w_rtg,
            "CONST_PF_MODE_ENABLE": pf is not None,
            "CONST_Q_MODE_ENABLE": c.var_set is not None,
            "CONST_Q": 0.0 if c.var_set is None else c.var_set / r.va_rtg,
            "QV_MODE_ENABLE": qv is not None,
            "PV_MODE_ENABLE": pv is not None,
            **_es_settings(self.enter_service, c.connected, self.grid.hz_nom),
            **self.response_times.settings(),
        }
        if pf is not None and c.pf is not None:
            out |= {"CONST_PF": pf, "CONST_PF_EXCITATION": "INJ" if c.pf > 0 else "ABS"}
        if qv is not None:
            out |= qv.settings()
        if pv is not None:
            out |= pv.settings()
        return out

    def step(self, t: float) -> None:
        """Advance to simulated time t in whole OpenDER steps (the remainder carries over)."""
        if t <= self.t:
            return
        s = self._stepper
        for h, w, var in s.advance(t, self.settings(), self._dc):
            self.w, self.var = w, var
            self.wh_injected += max(self.w, 0.0) * h / 3600.0
        self.v, self.hz, self.der_status = s.v, s.hz, s.status
        self.t = t

    def _dc(self, t: float) -> dict[str, float]:
        self.available_w = max(self.profile.available_w(t), 0.0)
        return {"p_dc_w": self.available_w}

    @property
    def state(self) -> PvState:
        """OFF when disconnected or tripped, SLEEPING without sun, THROTTLED when a limit,
        the VA rating (var priority) or the enter-service ramp holds P below the available."""
        if not self.controls.connected or self.der_status == _TRIP:
            return PvState.OFF
        if self.available_w < IDLE_W:
            return PvState.SLEEPING
        short = self.available_w - self.w > max(IDLE_W, 1e-3 * self.ratings.w_rtg)
        if self.w_cap() < self.available_w or short:
            return PvState.THROTTLED
        return PvState.MPPT


class _SocLogFilter(logging.Filter):
    """Drops OpenDER's per-step 'BESS SoC reached min/max' warnings: at a SoC limit (the
    customer's reserve, say) a battery sits there by design, and OpenDER would log it every
    step."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in _SOC_LOG


_SOC_LOG_FILTER = _SocLogFilter()


class OpenDerBatteryPhysics(BatteryPhysics):
    """A battery inverter whose P and Q are OpenDER DER_BESS's, SoC from OpenDER's own model.

    The dispatch (controls.w_set clipped to the ratings, 0 when a SoC limit blocks its
    direction) is OpenDER's power demand (p_dem_w). OpenDER's SoC range (NP_BESS_SOC_MIN/MAX)
    is the manufacturer's narrowed by the reserves, so OpenDER stops discharge at the reserve
    within the step that reaches it. The efficiency applies on charge only (OpenDER's model).
    """

    def __init__(self, ratings: BatteryRatings, grid: Grid, soc_pct: float, t0: float = 0.0):
        from opender import DER_BESS

        logging.getLogger().addFilter(_SOC_LOG_FILTER)  # idempotent
        var = 0.44 * ratings.va_rtg  # IEEE 1547 Cat B minimum both ways
        nameplate = _nameplate(ratings.w_discha_max, ratings.va_rtg, var, grid.v_nom)
        der = DER_BESS(
            **nameplate,
            NP_P_MAX_CHARGE=ratings.w_cha_max,
            NP_APPARENT_POWER_CHARGE_MAX=ratings.va_rtg,
            NP_EFFICIENCY=ratings.efficiency,
            NP_BESS_CAPACITY=ratings.wh_rtg,
            SOC_INIT=soc_pct / 100.0,
        )
        self._stepper = _Stepper(der, grid, t0)
        self.enter_service = EnterService()
        self.ramp_s = 0.0
        """Dispatch ramp time, 0 to full power, s (NP_BESS_P_RAMP_TIME; 0: a step)."""
        self.der_status = "Continuous Operation"
        super().__init__(ratings, grid, soc_pct, tau_s=0.0, t0=t0)
        self.var = 0.0

    @property
    def soc_pct(self) -> float:
        """OpenDER's SoC, %."""
        return float(self._stepper.der.bess_soc) * 100.0

    @soc_pct.setter
    def soc_pct(self, value: float) -> None:
        self._stepper.der.bessspecific.soc_calc.reset_soc(value / 100.0)

    def power_on(self) -> None:
        """The OpenDER-only settings back to their power-on values (device restart)."""
        self.ramp_s = 0.0
        self.enter_service = EnterService()

    def settings(self) -> dict[str, object]:
        """OpenDER settings for the controls and SoC now (the SoC range never excludes the
        SoC itself: OpenDER would then push it back by force)."""
        low, high = self.soc_limits()
        soc = self._stepper.der.bess_soc
        return {
            "NP_BESS_SOC_MIN": min(low / 100.0, soc),
            "NP_BESS_SOC_MAX": max(high / 100.0, soc),
            "NP_BESS_P_RAMP_TIME": self.ramp_s,
            **_es_settings(self.enter_service, self.controls.connected, self.grid.hz_nom),
        }

    def step(self, t: float) -> None:
        """Advance to simulated time t in whole OpenDER steps (the remainder carries over)."""
        if t <= self.t:
            return
        s = self._stepper
        for h, w, var in s.advance(t, self.settings(), self._dem):
            self.w, self.var = w, var
            self.wh_injected += max(self.w, 0.0) * h / 3600.0
            self.wh_absorbed += max(-self.w, 0.0) * h / 3600.0
        self.v, self.hz, self.der_status = s.v, s.hz, s.status
        self.t = t

    def _dem(self, t: float) -> dict[str, float]:
        return {"p_dem_w": self.w_target()}


def pv_physics(
    dynamics: Dynamics, ratings: PvRatings, profile: Profile, grid: Grid, *, tau_s: float, t0: float
) -> PvPhysics:
    """The PV physics a spec's `dynamics` names (tau_s applies to the simple one only)."""
    if dynamics == "opender":
        return OpenDerPvPhysics(ratings, profile, grid, t0)
    return PvPhysics(ratings, profile, grid, tau_s, t0)


def battery_physics(
    dynamics: Dynamics,
    ratings: BatteryRatings,
    grid: Grid,
    soc_pct: float,
    *,
    tau_s: float,
    t0: float,
) -> BatteryPhysics:
    """The battery physics a spec's `dynamics` names (tau_s applies to the simple one only)."""
    if dynamics == "opender":
        return OpenDerBatteryPhysics(ratings, grid, soc_pct, t0)
    return BatteryPhysics(ratings, grid, soc_pct, tau_s, t0)
