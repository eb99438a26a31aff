"""Property: several batteries, read as real devices report them, stay inside their SoC window,
infeasible storage is refused, and a feasible schedule is carried out.

The control core drives two or three batteries in simulated time (control step 5 s). Random
storage events from two roles (several per battery, some aimed at several batteries or at
all of them; 0 W or 20-100 % of the rating, some sized on arrival to 50-105 % of a battery's
headroom so that they end at or just past a limit) arrive in a first phase of two hours; then
every battery gets a feasible probe event. Storage the gateway leaves out (released) is 0 W at
the battery: writes reach it even while its readings are stale.

Physics (the test's own, not the gateway's model): the AC power follows the setpoint through a
first-order lag (tau 0.5-2 s), clipped to the rating; the cells see, besides a one-way
converter efficiency eta_true, a resistive loss k*w^2/P_rated (k up to 5 % at rated power)
and a constant tare P0 (up to 50 W) while the converter runs:

    discharging w > 0: the cells give  w/eta_true + k*w^2/P_rated + P0
    charging    w < 0: the cells take |w|*eta_true - k*w^2/P_rated - P0

The gateway projects with one constant efficiency eta (DeviceView.efficiency); eta_true is
eta - 0.06 .. eta + 0.02 (mostly worse than the datasheet figure the gateway has): its model is
wrong in form (no quadratic, no constant term) as well as in value.

Measurement, as a device reports it: each battery is polled every 2-10 s at a phase of its own,
so the view's SoC is the physics' SoC at the last poll (lagged), quantised to the register's
scale (0.1 % or 1 %, rounded half up; Capability.soc_step_pct says which), and its power is the
power at that poll. In the first phase, outages: polls fail (quality STALE or OFFLINE, the last
reading kept, as the runtime keeps it) or the SoC register answers "not implemented" (quality
OK, SoC None); the view is fresh again at the next good poll. A reading with quality OK is
therefore at most one poll period old.

Properties:

1. Safety, every 0.5 s of physics: each battery's true SoC stays in [reserve - eps, max + eps],
   eps = q/2 + r_max * (poll_s + step + tau), with q the SoC register's step and r_max the true
   SoC rate at rated power (%/s). Why: the guard holds a battery once a reading is within
   0.05 % of a limit; the last reading that let it run was at most q/2 above the true SoC;
   after that poll the battery runs at most until the first step after the next poll (poll_s
   + step) and its power then decays (tau). Anything beyond eps is a setpoint the guard let
   through that it should not have (without the continuous watch the overshoot is the whole
   projection error, several %).
2. Stale: no battery whose view is not fresh this step (quality not OK, or SoC None) gets a
   non-zero storage setpoint.
3. Acceptance: an event arriving while a battery it targets is fresh and has no other unfinished
   event, whose power over its window from the measured SoC (at the gateway's own eta) takes that
   battery more than 0.5 % past a limit, is rejected at once (soc_limit); one that stays 0.5 %
   inside on every targeted battery (all fresh, none with another event) is accepted. An event
   aimed at a battery that answers without a SoC is rejected (soc_unknown or soc_limit).
4. Activation: an event answered ``started`` has every targeted battery fresh at that step, and on
   each that has no other unfinished event, the rest of its window from the SoC measured then
   does not cross a limit by more than 0.5 %.
5. Liveness: after the first phase each battery gets a probe event (its own, no outages then):
   at most half the headroom towards one limit (at the gateway's eta, from the measured SoC,
   at least 10 % away), 25-100 % of the rating. It must be accepted, be given exactly its
   power every step of its window, complete, and move at least 90 % of the energy asked
   through the battery's terminals.

Pinned examples (below) make sure each part of the guard is exercised whatever hypothesis
draws: an event refused on arrival, one accepted while the battery was stale that must not
start, one that became infeasible because another event drained the battery before it
started, and one whose projection ends right at the reserve so that only the continuous
watch keeps the lossier physics out of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from derms_edge.control import Controller, DeviceView, Role
from derms_edge.control.export_limit import ExportLimiter
from derms_edge.model import (
    Capability,
    Control,
    ControlType,
    DeviceKind,
    DeviceState,
    Event,
    Quality,
    Reason,
    Response,
    SetpointName,
    Status,
)

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STEP_S = 5.0
"""Control interval, s."""
SUBSTEPS = 10
"""Physics substeps per control step (0.5 s each)."""
SUBSTEP_S = STEP_S / SUBSTEPS
PHASE1_END_S = 7200.0
"""Random events end and outages are over by then; the probes arrive then."""
PROBE_LEAD_S = 30.0
PROBE_MAX_S = 1800.0
HORIZON_S = PHASE1_END_S + PROBE_LEAD_S + PROBE_MAX_S + 2 * STEP_S
MARGIN_PCT = 0.5
"""How far past (or inside) a limit the oracles want a projection before they expect a
rejection (or an acceptance): well beyond the gateway's 0.05 % tolerance."""
PROBE_MIN_HEADROOM_PCT = 10.0
PROBE_DELIVERED_SHARE = 0.9
IDLE_W = 1.0
"""Below this the converter sleeps (no tare loss)."""
ROLES = {
    "dso": Role("dso", 1, frozenset(ControlType)),
    "aggregator": Role("aggregator", 2, frozenset({ControlType.STORAGE_W})),
}
OutageKind = Literal["stale", "offline", "no_soc"]


@dataclass(frozen=True)
class BatterySpec:
    """One battery: what the gateway is told, the physics it does not know, and its probe."""

    capacity_wh: float
    rated_w: float
    reserve_pct: float
    max_pct: float
    soc0_pct: float
    efficiency: float
    """What the gateway projects with (DeviceView.efficiency)."""
    true_efficiency: float
    """The converter's; mostly a little worse than the datasheet figure the gateway has."""
    resistive_share: float
    """k: the resistive loss at rated power, as a share of the rating."""
    tare_w: float
    tau_s: float
    soc_step_pct: float
    """The SoC register's scale, %."""
    poll_s: int
    poll_phase_s: int
    probe_discharge: bool
    """The probe's preferred direction (the other one when this has too little headroom)."""
    probe_energy_share: float
    """The probe's share of the headroom, at the gateway's efficiency."""
    probe_power_share: float

    def cell_w(self, w: float) -> float:
        """Power out of the cells (negative: into them) while the terminals give ``w`` W."""
        converted = w / self.true_efficiency if w > 0 else w * self.true_efficiency
        running = abs(w) > IDLE_W
        return converted + self.resistive_share * w * w / self.rated_w + self.tare_w * running

    def polls_at(self, t_s: float) -> bool:
        """Whether the gateway polls this battery at ``t_s``."""
        return (
            t_s.is_integer()
            and t_s >= self.poll_phase_s
            and (t_s - self.poll_phase_s) % self.poll_s == 0
        )

    @property
    def tolerance_pct(self) -> float:
        """eps of the safety property (module docstring)."""
        rate_pct_per_s = self.cell_w(self.rated_w) / self.capacity_wh / 36.0
        lag_s = self.poll_s + STEP_S + self.tau_s
        return self.soc_step_pct / 2 + rate_pct_per_s * lag_s


@dataclass(frozen=True)
class Request:
    """A storage event to send: ``targets`` are battery indices (None: every battery)."""

    role: str
    targets: tuple[int, ...] | None
    arrive_s: float
    start_after_s: float
    duration_s: float
    power_share: float
    """Of the smallest rating among the targets; positive = discharge."""
    headroom_share: float | None = None
    """If set (and the first target is fresh on arrival): the event moves that share of the
    first target's headroom (at the gateway's efficiency, from its measured SoC) within its
    window, the power reshaped to fit (20-100 % of the rating): events that end near a limit
    (or just past it), where only the guard stands between the unmodelled losses and it."""

    def shape(self, batteries: list[Battery], start_s: float) -> tuple[float, float]:
        """The event's power, W, and window, s (ending by the end of the first phase)."""
        rated_w = min(b.spec.rated_w for b in batteries)
        w = self.power_share * rated_w
        seconds = max(60.0, min(self.duration_s, PHASE1_END_S - start_s))
        first = batteries[0]
        soc = first.reading.soc_pct
        if self.headroom_share is None or w == 0 or soc is None or not first.fresh:
            return w, seconds
        spec = first.spec
        room = soc - spec.reserve_pct if w > 0 else spec.max_pct - soc
        if room <= 0:
            return w, seconds
        cell_wh = self.headroom_share * room / 100.0 * spec.capacity_wh
        # power from the energy over the window, at most the rating, at least a fifth of it
        cell_w = cell_wh * 3600.0 / seconds
        w_abs = cell_w * spec.efficiency if w > 0 else cell_w / spec.efficiency
        w_abs = min(max(w_abs, 0.2 * rated_w), rated_w)
        cell_w = w_abs / spec.efficiency if w > 0 else w_abs * spec.efficiency
        seconds = max(60.0, min(cell_wh * 3600.0 / cell_w, PHASE1_END_S - start_s))
        return math.copysign(w_abs, w), seconds


@dataclass(frozen=True)
class Outage:
    """Polls of one battery go wrong in [start_s, start_s + duration_s)."""

    battery: int
    start_s: float
    duration_s: float
    kind: OutageKind

    def covers(self, battery: int, t_s: float) -> bool:
        return battery == self.battery and self.start_s <= t_s < self.start_s + self.duration_s


@dataclass(frozen=True)
class Scenario:
    batteries: tuple[BatterySpec, ...]
    requests: tuple[Request, ...]
    outages: tuple[Outage, ...] = ()


@dataclass
class Battery:
    """The physics of one battery, and its last reading as the gateway has it."""

    id: str
    spec: BatterySpec
    soc_pct: float
    w: float = 0.0
    w_set: float = 0.0
    terminal_wh: float = 0.0
    """Energy out of the AC terminals so far, Wh (negative: absorbed)."""
    reading: DeviceState = field(default_factory=DeviceState)
    quality: Quality = Quality.OK

    def run(self, h: float) -> None:
        """``h`` seconds of physics: first-order lag to the clipped setpoint, cells with losses."""
        spec = self.spec
        target = min(max(self.w_set, -spec.rated_w), spec.rated_w)
        if (target > 0 and self.soc_pct <= 0) or (target < 0 and self.soc_pct >= 100):
            target = 0.0
        decay = math.exp(-h / spec.tau_s)
        energy_ws = target * h + (self.w - target) * spec.tau_s * (1 - decay)
        self.w = target + (self.w - target) * decay
        if target == 0 and abs(self.w) < IDLE_W:
            self.w = 0.0
        self.terminal_wh += energy_ws / 3600.0
        cells_wh = spec.cell_w(energy_ws / h) * h / 3600.0
        self.soc_pct = min(max(self.soc_pct - cells_wh / spec.capacity_wh * 100.0, 0.0), 100.0)

    def poll(self, outage: OutageKind | None) -> None:
        """One poll: a failed one keeps the old reading, a good one reads SoC quantised."""
        if outage == "stale":
            self.quality = Quality.STALE
            return
        if outage == "offline":
            self.quality = Quality.OFFLINE
            return
        self.quality = Quality.OK
        step = self.spec.soc_step_pct
        soc = None if outage == "no_soc" else round(math.floor(self.soc_pct / step + 0.5) * step, 6)
        self.reading = DeviceState(w=float(round(self.w)), soc_pct=soc)

    @property
    def fresh(self) -> bool:
        return self.quality is Quality.OK and self.reading.soc_pct is not None

    @property
    def answers_without_soc(self) -> bool:
        return self.quality is Quality.OK and self.reading.soc_pct is None

    def view(self) -> DeviceView:
        spec = self.spec
        return DeviceView(
            self.id,
            DeviceKind.BATTERY,
            self.quality,
            self.reading,
            Capability(
                wh_rtg=spec.capacity_wh,
                charge_w_max=spec.rated_w,
                discharge_w_max=spec.rated_w,
                w_max=spec.rated_w,
                soc_min_pct=5.0,
                soc_max_pct=spec.max_pct,
                soc_step_pct=spec.soc_step_pct,
            ),
            frozenset({SetpointName.STORAGE_W}),
            reserve_soc_pct=spec.reserve_pct,
            efficiency=spec.efficiency,
        )


def crossing_pct(spec: BatterySpec, soc_pct: float, w: float, seconds: float) -> float:
    """How far past its limit the gateway's own energy model (constant eta) says ``w`` W for
    ``seconds`` from ``soc_pct`` takes a battery, % (negative: inside by that much)."""
    if w == 0:
        return -math.inf
    cell_w = w / spec.efficiency if w > 0 else w * spec.efficiency
    end = soc_pct - cell_w * seconds / 3600.0 / spec.capacity_wh * 100.0
    return spec.reserve_pct - end if w > 0 else end - spec.max_pct


@dataclass(frozen=True)
class Probe:
    """A feasible event sent after the first phase, and what it must do."""

    battery: Battery
    w: float
    start_s: float
    end_s: float


class Rig:
    """The batteries and the control core, with the oracles of the module docstring."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.batteries = [
            Battery(f"bat{i}", spec, spec.soc0_pct) for i, spec in enumerate(scenario.batteries)
        ]
        for battery in self.batteries:
            battery.poll(None)  # read once at connect
        self.core = Controller(ROLES, 1e9, ExportLimiter(0.5, 10, 50), interval_s=STEP_S)
        self.core.restore([], T0)
        self.events: dict[str, Event] = {}
        """Accepted events."""
        self.status: dict[str, Status] = {}
        self.probes: dict[str, Probe] = {}
        self.energy_at_start: dict[str, float] = {}
        self.probes_checked: set[str] = set()

    def targets(self, event: Event) -> list[Battery]:
        if event.devices is None:
            return list(self.batteries)
        return [b for b in self.batteries if b.id in event.devices]

    def alone(self, battery: Battery, event: Event, now: datetime) -> bool:
        """No other unfinished event (as far as the answers so far say) could hold on
        ``battery`` from ``now``."""
        return not any(
            mrid != event.mrid
            and self.status[mrid] in (Status.SCHEDULED, Status.STARTED)
            and other.end > now
            and battery in self.targets(other)
            for mrid, other in self.events.items()
        )

    def send(self, event: Event, now: datetime) -> list[Response]:
        """Offer ``event``; check the answer against the acceptance oracle."""
        w = event.control.storage_w
        assert w is not None
        responses, _ = self.core.accept(event, {b.id: b.view() for b in self.batteries}, now)
        statuses = [r.status for r in responses]
        targets = self.targets(event)
        crossings = {
            b.id: crossing_pct(b.spec, b.reading.soc_pct, w, event.duration_s)
            for b in targets
            if b.reading.soc_pct is not None and b.fresh and self.alone(b, event, now)
        }
        said = f"{event.mrid} ({w:.0f} W for {event.duration_s:.0f} s on {[b.id for b in targets]}"
        said += f", crossing by battery {crossings}): answered {responses}"
        if any(c > MARGIN_PCT for c in crossings.values()) or any(
            b.answers_without_soc for b in targets
        ):
            assert statuses == [Status.REJECTED], f"must be refused on arrival: {said}"
            assert responses[0].reason in (Reason.SOC_LIMIT, Reason.SOC_UNKNOWN), said
            if not any(b.answers_without_soc for b in targets):
                assert responses[0].reason == Reason.SOC_LIMIT, said
        elif len(crossings) == len(targets) and all(c < -MARGIN_PCT for c in crossings.values()):
            assert statuses == [Status.RECEIVED, Status.SCHEDULED], f"must be accepted: {said}"
        if Status.SCHEDULED in statuses:
            self.events[event.mrid] = event
            self.status[event.mrid] = Status.SCHEDULED
        return responses

    def step(self, now: datetime) -> None:
        """One control step: the activation, stale and liveness oracles, setpoints applied."""
        views = {b.id: b.view() for b in self.batteries}
        decision = self.core.step(views, now)
        for response in decision.responses:
            if response.status is Status.STARTED:
                self.check_start(self.events[response.mrid], now)
        for response in decision.responses:
            self.status[response.mrid] = response.status
        t_s = (now - T0).total_seconds()
        for battery in self.batteries:
            value = decision.setpoints[battery.id].get(SetpointName.STORAGE_W)
            assert value is None or isinstance(value, float)
            if not battery.fresh:
                assert not value, (
                    f"{battery.id} given storage_w {value} W at t={t_s:.0f} s while its view is "
                    f"not fresh (quality {battery.quality}, SoC {battery.reading.soc_pct})"
                )
            battery.w_set = value or 0.0
        for mrid, probe in self.probes.items():
            if probe.start_s <= t_s < probe.end_s:
                given_w = probe.battery.w_set
                assert abs(given_w - probe.w) <= 1e-6 * probe.battery.spec.rated_w, (
                    f"feasible probe {mrid} ({probe.w:.0f} W on {probe.battery.id}) not carried "
                    f"out at t={t_s:.0f} s: setpoint {given_w} W, status {self.status[mrid]}"
                )

    def check_start(self, event: Event, now: datetime) -> None:
        """The activation oracle, for an event answered ``started`` at ``now``."""
        w = event.control.storage_w
        assert w is not None
        rest_s = (event.end - now).total_seconds()
        for battery in self.targets(event):
            soc = battery.reading.soc_pct
            assert battery.fresh and soc is not None, (
                f"{event.mrid} started at {now:%H:%M:%S} while {battery.id}'s SoC is not fresh "
                f"(quality {battery.quality}, SoC {soc})"
            )
            if not self.alone(battery, event, now):
                continue
            crossing = crossing_pct(battery.spec, soc, w, rest_s)
            assert crossing <= MARGIN_PCT, (
                f"{event.mrid} started at {now:%H:%M:%S} although {w:.0f} W for the "
                f"{rest_s:.0f} s left of it takes {battery.id} from its measured SoC "
                f"{soc:g} % {crossing:.2f} % past a limit "
                f"[{battery.spec.reserve_pct:.2f}, {battery.spec.max_pct:.2f}]"
            )

    def send_probes(self, now: datetime) -> None:
        """A feasible event for every battery, sized from its measured SoC."""
        for battery in self.batteries:
            spec = battery.spec
            soc = battery.reading.soc_pct
            assert battery.fresh and soc is not None, "construction: probes need a fresh SoC"
            room = {True: soc - spec.reserve_pct, False: spec.max_pct - soc}
            discharge = spec.probe_discharge
            if room[discharge] < PROBE_MIN_HEADROOM_PCT:
                discharge = not discharge
            assert room[discharge] >= PROBE_MIN_HEADROOM_PCT, "construction: window too small"
            shift_wh = spec.probe_energy_share * room[discharge] / 100.0 * spec.capacity_wh
            w_abs = spec.probe_power_share * spec.rated_w
            cell_w = w_abs / spec.efficiency if discharge else w_abs * spec.efficiency
            seconds = math.floor(shift_wh * 3600.0 / cell_w / STEP_S) * STEP_S
            if seconds < 60:
                seconds = 60.0
                cell_w = shift_wh * 3600.0 / seconds
                w_abs = cell_w * spec.efficiency if discharge else cell_w / spec.efficiency
            seconds = min(seconds, PROBE_MAX_S)
            w = w_abs if discharge else -w_abs
            mrid = f"probe-{battery.id}"
            start = now + timedelta(seconds=PROBE_LEAD_S)
            event = Event(
                mrid=mrid,
                role="aggregator",
                primacy=ROLES["aggregator"].primacy,
                creation_time=now,
                start=start,
                duration_s=seconds,
                control=Control(storage_w=w),
                devices=(battery.id,),
                body=mrid,
            )
            responses = self.send(event, now)
            assert [r.status for r in responses] == [Status.RECEIVED, Status.SCHEDULED], (
                f"feasible probe {mrid} refused: {responses}"
            )
            start_s = (start - T0).total_seconds()
            self.probes[mrid] = Probe(battery, w, start_s, start_s + seconds)

    def physics(self, t_s: float) -> None:
        """One control step of physics from ``t_s``: polls when due, safety every substep."""
        for sub in range(1, SUBSTEPS + 1):
            at_s = t_s + sub * SUBSTEP_S
            for i, battery in enumerate(self.batteries):
                spec = battery.spec
                battery.run(SUBSTEP_S)
                if spec.polls_at(at_s):
                    outage = next(
                        (o.kind for o in self.scenario.outages if o.covers(i, at_s)), None
                    )
                    battery.poll(outage)
                eps = spec.tolerance_pct
                assert spec.reserve_pct - eps <= battery.soc_pct <= spec.max_pct + eps, (
                    f"{battery.id}'s SoC {battery.soc_pct:.3f} % left "
                    f"[{spec.reserve_pct:.3f}, {spec.max_pct:.3f}] by more than "
                    f"eps {eps:.3f} % at t={at_s:.1f} s"
                )

    def check_probes_done(self, t_s: float) -> None:
        for mrid, probe in self.probes.items():
            if t_s == probe.start_s:
                self.energy_at_start[mrid] = probe.battery.terminal_wh
            if t_s == probe.end_s + STEP_S:
                assert self.status[mrid] is Status.COMPLETED, (
                    f"feasible probe {mrid} ended {self.status[mrid]}"
                )
                moved_wh = probe.battery.terminal_wh - self.energy_at_start[mrid]
                asked_wh = probe.w * (probe.end_s - probe.start_s) / 3600.0
                assert moved_wh / asked_wh >= PROBE_DELIVERED_SHARE, (
                    f"feasible probe {mrid} asked {asked_wh:.0f} Wh, {moved_wh:.0f} Wh moved"
                )
                self.probes_checked.add(mrid)


def simulate(scenario: Scenario) -> Rig:
    rig = Rig(scenario)
    arrivals = sorted(enumerate(scenario.requests), key=lambda item: item[1].arrive_s)
    for k in range(int(HORIZON_S / STEP_S) + 1):
        t_s = k * STEP_S
        now = T0 + timedelta(seconds=t_s)
        while arrivals and arrivals[0][1].arrive_s <= t_s:
            i, request = arrivals.pop(0)
            start_s = t_s + request.start_after_s
            targets = request.targets
            chosen = rig.batteries if targets is None else [rig.batteries[j] for j in targets]
            mrid = f"e{i}"
            w, seconds = request.shape(chosen, start_s)
            rig.send(
                Event(
                    mrid=mrid,
                    role=request.role,
                    primacy=ROLES[request.role].primacy,
                    creation_time=now,
                    start=T0 + timedelta(seconds=start_s),
                    duration_s=seconds,
                    control=Control(storage_w=w),
                    devices=None if targets is None else tuple(f"bat{j}" for j in targets),
                    body=mrid,
                ),
                now,
            )
        if t_s == PHASE1_END_S:
            rig.send_probes(now)
        rig.check_probes_done(t_s)
        rig.step(now)
        rig.physics(t_s)
    assert len(rig.probes) == len(scenario.batteries) == len(rig.probes_checked)
    return rig


@st.composite
def battery_specs(draw: st.DrawFn) -> BatterySpec:
    reserve = draw(st.floats(5, 35))
    max_pct = draw(st.floats(65, 98))
    poll_s = draw(st.integers(2, 10))
    efficiency = draw(st.floats(0.90, 0.98))
    return BatterySpec(
        capacity_wh=draw(st.floats(4000, 15000)),
        rated_w=draw(st.floats(2500, 6000)),
        reserve_pct=reserve,
        max_pct=max_pct,
        soc0_pct=reserve + draw(st.floats(0, 1)) * (max_pct - reserve),
        efficiency=efficiency,
        true_efficiency=efficiency - draw(st.floats(-0.02, 0.06)),
        resistive_share=draw(st.floats(0, 0.05)),
        tare_w=draw(st.floats(0, 50)),
        tau_s=draw(st.floats(0.5, 2)),
        soc_step_pct=draw(st.sampled_from([0.1, 1.0])),
        poll_s=poll_s,
        poll_phase_s=draw(st.integers(0, poll_s - 1)),
        probe_discharge=draw(st.booleans()),
        probe_energy_share=draw(st.floats(0.2, 0.5)),
        probe_power_share=draw(st.floats(0.25, 1)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    specs = tuple(draw(st.lists(battery_specs(), min_size=2, max_size=3)))
    n = len(specs)
    targets = st.none() | st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True).map(
        lambda chosen: tuple(sorted(chosen))
    )
    # power 0 (hold idle) or 20-100 % of the rating either way
    power = st.just(0.0) | st.floats(0.2, 1.0) | st.floats(-1.0, -0.2)
    request = st.builds(
        Request,
        role=st.sampled_from(sorted(ROLES)),
        targets=targets,
        arrive_s=st.floats(0, 5400),
        start_after_s=st.floats(0, 1200),
        duration_s=st.floats(60, 3600),
        power_share=power,
        headroom_share=st.none() | st.floats(0.97, 1.0) | st.floats(0.5, 1.05),
    )
    outage = st.builds(
        Outage,
        battery=st.integers(0, n - 1),
        start_s=st.floats(5, 6600),
        duration_s=st.floats(5, 300),
        kind=st.sampled_from(["stale", "offline", "no_soc"]),
    )
    return Scenario(
        specs,
        tuple(draw(st.lists(request, min_size=1, max_size=10))),
        tuple(draw(st.lists(outage, max_size=4))),
    )


PINNED = BatterySpec(
    capacity_wh=5000.0,
    rated_w=5000.0,
    reserve_pct=20.0,
    max_pct=90.0,
    soc0_pct=60.0,
    efficiency=0.95,
    true_efficiency=0.93,
    resistive_share=0.03,
    tare_w=30.0,
    tau_s=1.0,
    soc_step_pct=0.1,
    poll_s=5,
    poll_phase_s=2,
    probe_discharge=True,
    probe_energy_share=0.4,
    probe_power_share=0.6,
)


REFUSED_ON_ARRIVAL = Scenario(
    (PINNED, replace(PINNED, soc_step_pct=1.0, poll_s=7)),
    # 5 kW for 50 min from 60 % of 5 kWh: some 88 % of the capacity, far past the reserve
    (Request("aggregator", (0,), 0.0, 600.0, 3000.0, 1.0),),
)
STALE_ON_ARRIVAL = Scenario(
    (PINNED, replace(PINNED, capacity_wh=10000.0)),
    # arrives while bat0 is stale (so it waits), due when bat0 is fresh again: must not start
    (Request("aggregator", (0,), 20.0, 300.0, 3000.0, 1.0),),
    (Outage(0, 10.0, 90.0, "stale"),),
)
DRAINED_BEFORE_START = Scenario(
    (replace(PINNED, capacity_wh=10000.0), replace(PINNED, soc0_pct=30.0)),
    (
        # feasible when it arrives: 5 kW for 15 min from 60 % of 10 kWh is about 13 %
        Request("aggregator", (0,), 0.0, 2700.0, 900.0, 1.0),
        # arrives while bat0 is offline, starts when it answers, and drains 35 % before the
        # first one is due: that one is then infeasible and must not start
        Request("dso", (0,), 150.0, 60.0, 2400.0, 1.0),
    ),
    (Outage(0, 100.0, 100.0, "offline"),),
)
PROJECTED_TO_THE_RESERVE = Scenario(
    (PINNED, replace(PINNED, soc0_pct=80.0, probe_discharge=False)),
    # 4 kW for 1705 s: the gateway projects 60 -> 20.1 %; the physics loses some 2 % more
    (Request("aggregator", (0,), 0.0, 0.0, 1705.0, 0.8),),
)

SMALL = BatterySpec(4000.0, 5596.235319261043, 5.0, 65.0, 5.0, 0.9538749739131509,
                    0.9538749739131509, 0.0, 0.0, 1.846699743216576, 0.1, 2, 0, False, 0.5,
                    0.25)  # fmt: skip
CHARGED_AFTER_A_DISCHARGE = Scenario(
    # found by hypothesis 6.170.27 in CI: bat1 (whole-percent SoC) moves energy out and back
    # in, its SoC reading 6 % all along; the probe's charge then pushed the energy *through*
    # it past the 293 Wh threshold and the healthy SoC was judged frozen (probe aborted). Net
    # energy into the cells is what a frozen SoC fails to follow.
    (
        SMALL,
        BatterySpec(
            14671.922535632446,
            5783.306278903308,
            5.0,
            65.0,
            5.0,
            0.9005166154022995,
            0.9005166154022995,
            0.013147905734950109,
            46.68382660681759,
            2.0,
            1.0,
            2,
            0,
            False,
            0.45659019777379006,
            0.6491995567035079,
        ),
        replace(
            SMALL,
            rated_w=4527.225595666464,
            efficiency=0.9,
            true_efficiency=0.9,
            tau_s=1.1475600200914353,
            probe_power_share=0.550216516436649,
        ),
    ),
    (
        Request("aggregator", None, 5399.0, 0.0, 60.0, 0.7400106173257348),
        Request("aggregator", None, 0.0, 0.0, 357.5128166496697, -0.5231492111218277),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
@example(scenario=REFUSED_ON_ARRIVAL)
@example(scenario=STALE_ON_ARRIVAL)
@example(scenario=DRAINED_BEFORE_START)
@example(scenario=PROJECTED_TO_THE_RESERVE)
@example(scenario=CHARGED_AFTER_A_DISCHARGE)
def test_soc_guard_keeps_batteries_in_their_window_and_carries_out_feasible_storage(
    scenario: Scenario,
) -> None:
    simulate(scenario)
