"""The simulated OCPP station's state without the protocol: the charger and car (EvsePhysics,
as the Modbus and OPC UA chargers), the installed charging profiles, the transaction.

Profiles carry wall-clock datetimes; the station maps its SimClock onto UTC from the instant it
was built (at speed 1 the two run together). Between refreshes the physics is stepped edge to
edge, so a profile period starting or a validTo passing takes effect at its own instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hil.devices.base import Fault, make_grid
from hil.devices.evse import EvseState, evse_state
from hil.evse_physics import EvsePhysics, EvseRatings, Mode3State, Vehicle
from hil.ocpp.profiles import (
    CompositePeriod,
    Criteria,
    Electrical,
    Profile,
    ProfileStore,
    StationRules,
)
from hil.physics import SimClock
from hil.spec import OcppEvseSpec

PHASE_NAMES = ("L1", "L2", "L3")


@dataclass(slots=True)
class Transaction:
    """A charging session from plug-in to unplug; 1.6's id comes from the CSMS."""

    id: str
    started: datetime
    seq_no: int = 0
    stop_reason: str | None = None
    """Set when the station ends it for its own reason (a reboot) while the car stays."""

    def next_seq(self) -> int:
        """The next 2.0.1 seqNo (0 for Started)."""
        seq, self.seq_no = self.seq_no, self.seq_no + 1
        return seq


@dataclass(frozen=True, slots=True)
class Reading:
    """What the station's meter shows: W and Wh imported, A and V per phase, the car's SoC."""

    t: datetime
    w: float
    amps: tuple[float, ...]
    v: tuple[float, ...]
    wh: float
    soc_pct: float | None


class OcppStation:
    """One EVSE with one connector and a car; time from the rig's clock."""

    kind = "ocpp_evse"

    def __init__(self, spec: OcppEvseSpec, clock: SimClock) -> None:
        self.spec = spec
        self.id = spec.id
        self.clock = clock
        self.physics = EvsePhysics(
            EvseRatings(spec.phases, spec.max_a, validity_s=float("inf")),
            Vehicle(spec.ev_wh, spec.ev_max_a),
            make_grid(spec.grid),
            soc_pct=spec.ev_soc_pct,
            safe_a=0.0,  # never signalled: profiles, not a watchdog, set the limit
            plugged_at=spec.plugged_at_s,
            tau_s=spec.tau_s,
            t0=clock.now(),
        )
        self._epoch = datetime.now(UTC) - timedelta(seconds=clock.now())
        self._unplug_at = spec.unplugged_at_s
        self.rules = StationRules(
            version=spec.version,
            evse_id=spec.evse_id if spec.version == "2.0.1" else spec.connector_id,
            max_stack_level=spec.max_stack_level,
            max_periods=spec.max_periods,
            rate_units=tuple(spec.rate_units),
            reject_station_wide=spec.reject_station_wide_profiles,
        )
        self.store = ProfileStore(self.rules, Electrical(spec.phases, spec.grid.v_nom, spec.max_a))
        self.tx: Transaction | None = None
        self.rejections: list[str] = []
        """Why each rejected SetChargingProfile was rejected, oldest first."""

    def now(self) -> datetime:
        """The station's wall clock (UTC) at the simulated now."""
        return self.at(self.clock.now())

    def at(self, t_s: float) -> datetime:
        """The station's wall clock at simulated time t_s."""
        return self._epoch + timedelta(seconds=t_s)

    def _sim(self, t: datetime) -> float:
        return (t - self._epoch).total_seconds()

    def _anchor(self, t: datetime) -> datetime:
        return self.tx.started if self.tx is not None else t

    def _tx_id(self) -> str | None:
        return None if self.tx is None else self.tx.id

    def limit_a(self, t_s: float) -> float:
        """The composite limit for the EVSE at simulated t_s, A per phase."""
        t = self.at(t_s)
        return self.store.limit_a(t, self._anchor(t), self._tx_id(), self.rules.evse_id)

    def refresh(self) -> None:
        """Step the car to now, edge by edge of the profiles and the car's departure."""
        p, t = self.physics, self.clock.now()
        if t <= p.t:
            return
        start = self.at(p.t)
        stops = [self._sim(e) for e in self.store.edges(start, self.at(t), self._anchor(start))]
        if self._unplug_at is not None and self._unplug_at <= t:
            stops.append(max(self._unplug_at, p.t))
        for stop in [*sorted(stops), t]:
            p.write_limit(self.limit_a(p.t))
            p.step(stop)
            if self._unplug_at is not None and stop >= self._unplug_at:
                self._unplug_at = None
                p.plug(False)
        p.write_limit(self.limit_a(t))

    def install(self, profile: Profile) -> str | None:
        """Install a profile now; the reason it was rejected, or None."""
        self.refresh()
        reason = self.store.install(profile, self._tx_id(), self.now())
        if reason is not None:
            self.rejections.append(reason)
        self.refresh_limit()
        return reason

    def clear(self, criteria: Criteria) -> int:
        """Remove matching profiles now; how many."""
        self.refresh()
        removed = self.store.clear(criteria)
        self.refresh_limit()
        return removed

    def refresh_limit(self) -> None:
        """Put the composite in force at the physics' time (after a profile change)."""
        self.physics.write_limit(self.limit_a(self.physics.t))

    def composite(self, duration_s: int, evse_id: int) -> list[CompositePeriod]:
        """The composite schedule from now for duration_s, A per phase."""
        self.refresh()
        t = self.now()
        return self.store.composite(t, duration_s, self._anchor(t), self._tx_id(), evse_id)

    def plugged(self) -> bool:
        """Whether the car is plugged in now."""
        self.refresh()
        return self.physics.plugged()

    def plug(self, plugged: bool) -> None:
        """Plug the car in now, or unplug it."""
        self.refresh()
        self.physics.plug(plugged)
        self._unplug_at = None

    def start_transaction(self, tx_id: str) -> Transaction:
        """A session begins now."""
        self.refresh()
        self.tx = Transaction(tx_id, self.now())
        return self.tx

    def end_transaction(self) -> None:
        """The session is over: its TxProfiles go with it."""
        self.tx = None
        self.store.end_transaction()
        self.refresh_limit()

    def reboot(self) -> None:
        """A reboot: every profile is forgotten and a running session ends (reason Reboot);
        the car, its SoC and the energy register carry on."""
        self.refresh()
        self.store.clear(Criteria())
        if self.tx is not None:
            self.tx.stop_reason = "Reboot"
        self.refresh_limit()

    def reading(self) -> Reading:
        """The meter now (current on each of the station's phases)."""
        self.refresh()
        p = self.physics
        n = p.ratings.phases
        return Reading(
            t=self.now(),
            w=p.w,
            amps=(p.a,) * n,
            v=(p.v,) * n,
            wh=p.wh,
            soc_pct=p.soc_pct if self.spec.reports_soc else None,
        )

    def mode3(self) -> Mode3State:
        """IEC 61851 state now."""
        self.refresh()
        return self.physics.state

    def snapshot(self) -> EvseState:
        """The charger and its car now (w positive delivered to the grid, as EvCharger's)."""
        self.refresh()
        return evse_state(self.id, self.physics, Fault.NONE)

    def grid_power(self) -> tuple[float, float]:
        """Drawn at unity power factor."""
        return self.snapshot().w, 0.0
