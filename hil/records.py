"""What a scenario run records, and what its judge concludes: the rows of the report's files.

The runner fills these, the judge (`hil.judge`) reads them, the report (`hil.report`) writes
them. Times are simulated seconds since the scenario started; units are SI; positive W is
delivered to the grid (generation, battery discharge, site export) and positive var injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    """One device at one instant, read from the rig's physics (the truth, not the telemetry):
    a row of ``timeseries.csv``. A setpoint is None where the device has no such function or
    does not hold one."""

    t_s: float
    device: str
    bus: str | None
    """The feeder bus it is connected to; None without a feeder."""
    v_pu: float | None
    """Its terminal voltage, per unit of nominal."""
    p_w: float
    q_var: float
    soc_pct: float | None = None
    w_max_lim_pct: float | None = None
    """Limit active power in force, % of the W rating."""
    var_pct: float | None = None
    """Reactive power setpoint in force, % of the var rating, positive injecting."""
    pf: float | None = None
    """Fixed power factor in force, signed: positive injects var."""
    storage_w: float | None = None
    """Battery active power setpoint in force, W, positive discharging."""
    evse_max_a: float | None = None
    """EV charger current limit in force, A per phase."""


@dataclass(frozen=True, slots=True)
class BusSample:
    """One feeder bus at one instant: a row of ``buses.csv``."""

    t_s: float
    bus: str
    v_pu: float


@dataclass(frozen=True, slots=True)
class Event:
    """Something on the scenario's timeline or the gateway's answer to it: a row of
    ``events.csv``.

    kind: ``sent`` (a DSO message published), ``response`` (the gateway's answer on
    ``.../response``), ``fault`` (a fault injected or cleared), ``mark`` (a named instant of
    the scenario, e.g. a voltage step).
    """

    t_s: float
    kind: str
    topic: str = ""
    mrid: str | None = None
    status: str | None = None
    reason: str | None = None
    detail: str = ""
    payload: str = ""
    """The message as sent or received (JSON text), or the fault's description."""


@dataclass(frozen=True, slots=True)
class TestResult:
    """One judged test: an entry of ``results.json``."""

    __test__ = False  # not a pytest test class

    test: str
    passed: bool
    measured: float | None
    limit: float | None
    detail: str


@dataclass(slots=True)
class Recording:
    """Everything one run recorded."""

    samples: list[Sample] = field(default_factory=list)
    buses: list[BusSample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    telemetry: dict[str, list[float]] = field(default_factory=dict)
    """Per device, the ``ts`` of every telemetry message the gateway published, as simulated
    time (a message buffered through a broker outage keeps its own time): judging loss."""
    solve_s: list[float] = field(default_factory=list)
    """Wall-clock seconds each power-flow solve took."""
    seqs: list[int] = field(default_factory=list)
    """The ``seq`` of every telemetry message received, in arrival order (a gap is loss)."""
