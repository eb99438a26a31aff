"""The report's PNG plots: bus voltages against ANSI C84.1, P and Q per DER, battery SoC with
its reserve, and setpoints with the event timeline.

Each figure is a `matplotlib.figure.Figure` drawn by its own Agg canvas: no pyplot, so no
global state is touched and nothing opens a window. Lines are `series.envelope`s of at most
`COLUMNS` spans of time: the four plots of a day of 10 devices at 1 s (864,000 samples) take
about 0.6 s here (`bench/report_bench.py` times the whole report).
A plot without data is not drawn; its `Plot.note` says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hil.records import Event
from hil.series import SETPOINTS, Series, envelope

DPI = 100
WIDTH_IN = 11.0
COLUMNS = 800
"""Spans of time per line (about the axes' width in pixels at `DPI`)."""
RANGE_A_PU = (0.95, 1.05)
"""ANSI C84.1 range A, service voltage, per unit of nominal."""
RANGE_B_PU = (0.917, 1.058)
"""ANSI C84.1 range B, service voltage, per unit of nominal."""
LEGEND_MAX = 20
"""Above this many lines an axes has no legend (it would hide the plot)."""
LABELS_MAX = 40
"""Above this many marks the event timeline draws them unlabelled."""
MARKS = {"sent": "tab:blue", "fault": "tab:red", "mark": "tab:gray"}
"""Events drawn as vertical marks, and their colours."""
STATUS_COLOURS = {
    "received": "tab:gray",
    "scheduled": "tab:cyan",
    "started": "tab:blue",
    "completed": "tab:green",
    "cancelled": "tab:olive",
    "superseded": "tab:purple",
    "rejected": "tab:red",
    "aborted": "tab:brown",
}
"""Response statuses (the gateway's `Status`); any other is drawn black."""
SETPOINT_LABELS = {
    "w_max_lim_pct": "WMaxLimPct, %",
    "var_pct": "var setpoint, %",
    "pf": "fixed PF",
    "storage_w": "storage setpoint, W",
    "evse_max_a": "EVSE limit, A",
}


@dataclass(frozen=True, slots=True)
class Plot:
    """One plot of the report: its file (in the report's directory), whether it was drawn, and
    a note on what it shows or why it was not drawn."""

    file: str
    title: str
    drawn: bool
    note: str


class Drawing(NamedTuple):
    """A plot's figure (None when there was nothing to draw) and its note."""

    figure: Figure | None
    note: str


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """Seconds shown in the unit that suits the run's length."""

    divisor: float
    unit: str

    @classmethod
    def for_span(cls, span_s: float) -> TimeAxis:
        """Hours above 2 h, minutes above 2 min, else seconds."""
        if span_s > 7200:
            return cls(3600.0, "h")
        if span_s > 120:
            return cls(60.0, "min")
        return cls(1.0, "s")


def _text(label: str) -> str:
    """A name from a scenario or a device shown literally: matplotlib would read ``$..$`` as
    math and drop a legend entry that starts with ``_``."""
    label = label.replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def _figure(rows: int) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH_IN, 1.0 + 2.4 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)
    return figure, [row[0] for row in axes]


def _lines(ax: Axes, series: Sequence[Series], field: str, time: TimeAxis) -> dict[str, str]:
    """Draw `field` of each series that has it; returns each drawn series' colour."""
    colours = {}
    for one in series:
        if not one.has(field):
            continue
        x, y = envelope(one.t_s, one.columns[field], COLUMNS)
        (line,) = ax.plot(x / time.divisor, y, linewidth=0.9, label=_text(one.name))
        colours[one.name] = to_hex(line.get_color())
    ax.grid(True, alpha=0.3)
    return colours


def _finish(axes: Sequence[Axes], time: TimeAxis, title: str) -> None:
    """Title, time label, and a legend beside each axes that has none yet and not too many
    labelled lines."""
    for ax in axes:
        labelled = len(ax.get_legend_handles_labels()[0])
        if ax.get_legend() is None and 0 < labelled <= LEGEND_MAX:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[0].set_title(_text(title))
    axes[-1].set_xlabel(f"time, {time.unit}")


def voltage(buses: Sequence[Series], devices: Sequence[Series], time: TimeAxis) -> Drawing:
    """Voltage per feeder bus (per device when the run recorded no bus) against range A and
    range B."""
    source, what = (buses, "bus") if buses else (devices, "device terminal")
    note = f"feeder buses: {len(buses)}" if buses else f"device terminals: {len(devices)} (no bus)"
    if not any(s.has("v_pu") for s in source):
        return Drawing(None, "not drawn: the run recorded no voltage")
    figure, (ax,) = _figure(1)
    ax.axhspan(*RANGE_A_PU, color="tab:green", alpha=0.12, label="ANSI C84.1 range A")
    for limit, label in zip(RANGE_B_PU, ("range B", None), strict=True):
        ax.axhline(limit, color="tab:red", linestyle="--", linewidth=0.8, label=label)
    _lines(ax, source, "v_pu", time)
    ax.set_ylabel("voltage, pu")
    _finish([ax], time, f"Voltage per {what} (range A shaded, range B dashed)")
    return Drawing(figure, note)


def power(devices: Sequence[Series], kinds: Mapping[str, str], time: TimeAxis) -> Drawing:
    """P and Q per DER on two axes; meters (site export) on a third."""
    if not devices:
        return Drawing(None, "not drawn: the run recorded no device")
    ders = [d for d in devices if kinds.get(d.name) != "meter"]
    meters = [d for d in devices if kinds.get(d.name) == "meter"]
    rows: list[tuple[Sequence[Series], str, str]] = []
    if ders:
        rows += [(ders, "p_w", "DER P, W"), (ders, "q_var", "DER Q, var")]
    if meters:
        rows += [(meters, "p_w", "meter P, W"), (meters, "q_var", "meter Q, var")]
    figure, axes = _figure(len(rows))
    for ax, (series, field, label) in zip(axes, rows, strict=True):
        _lines(ax, series, field, time)
        ax.set_ylabel(label)
    _finish(axes, time, "Active and reactive power (positive delivered to the grid, injected)")
    return Drawing(figure, f"DERs: {len(ders)}, meters: {len(meters)}")


def soc(devices: Sequence[Series], reserves: Mapping[str, float], time: TimeAxis) -> Drawing:
    """SoC per battery, each with its reserve as a dashed line of the same colour."""
    batteries = [d for d in devices if d.has("soc_pct")]
    if not batteries:
        return Drawing(None, "not drawn: no device recorded a state of charge")
    figure, (ax,) = _figure(1)
    colours = _lines(ax, batteries, "soc_pct", time)
    for device, reserve_pct in sorted(reserves.items()):
        if device in colours:
            ax.axhline(
                reserve_pct,
                color=colours[device],
                linestyle="--",
                linewidth=1.0,
                label=_text(f"{device} reserve"),
            )
    ax.set_ylabel("SoC, %")
    _finish([ax], time, "State of charge (reserve dashed)")
    return Drawing(figure, f"batteries: {len(batteries)}")


def _mark_label(event: Event) -> str:
    if event.kind == "sent":
        return event.mrid or event.topic.rsplit("/", 1)[-1]
    return (event.detail or event.payload)[:40]


def _timeline(ax: Axes, axes: Sequence[Axes], events: Sequence[Event], time: TimeAxis) -> None:
    """Vertical marks for sent, fault and mark events on every axes, labelled on `ax`;
    responses as dots on `ax`, coloured by status."""
    marks = [e for e in events if e.kind in MARKS]
    for kind, colour in MARKS.items():
        xs = [e.t_s / time.divisor for e in marks if e.kind == kind]
        for one in axes:
            one.vlines(
                xs,
                0,
                1,
                transform=one.get_xaxis_transform(),
                colors=colour,
                linewidth=0.8,
                alpha=0.7,
            )
    if len(marks) <= LABELS_MAX:
        for event in marks:
            ax.text(
                event.t_s / time.divisor,
                0.35,
                _mark_label(event),
                rotation=90,
                fontsize="x-small",
                va="bottom",
                transform=ax.get_xaxis_transform(),
                parse_math=False,
                clip_on=True,
            )
    responses = [e for e in events if e.kind == "response"]
    statuses = sorted({e.status or "" for e in responses})
    for status in statuses:
        xs = [e.t_s / time.divisor for e in responses if (e.status or "") == status]
        ax.scatter(xs, [0.15] * len(xs), s=14, color=STATUS_COLOURS.get(status, "black"), zorder=3)
    handles = [Line2D([], [], color=c, label=k) for k, c in MARKS.items()]
    handles += [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color=STATUS_COLOURS.get(s, "black"),
            label=_text(s or "(no status)"),
        )
        for s in statuses
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("events")


def setpoints(devices: Sequence[Series], events: Sequence[Event], time: TimeAxis) -> Drawing:
    """Each setpoint some device held, on its own axes, over the event timeline."""
    fields = [f for f in SETPOINTS if any(d.has(f) for d in devices)]
    if not fields and not events:
        return Drawing(
            None, "not drawn: no device held a setpoint and nothing happened on the timeline"
        )
    figure, axes = _figure(len(fields) + 1)
    for ax, field in zip(axes, fields, strict=False):
        _lines(ax, devices, field, time)
        ax.set_ylabel(SETPOINT_LABELS[field])
    _timeline(axes[-1], axes, events, time)
    _finish(axes, time, "Setpoints held and the event timeline")
    note = f"setpoints: {len(fields)}, events: {len(events)}"
    marks = sum(e.kind in MARKS for e in events)
    if marks > LABELS_MAX:
        note += f" ({marks} marks, drawn unlabelled above {LABELS_MAX})"
    return Drawing(figure, note)


def draw(
    directory: Path,
    devices: Sequence[Series],
    buses: Sequence[Series],
    events: Sequence[Event],
    *,
    reserves: Mapping[str, float],
    kinds: Mapping[str, str],
    span_s: float,
) -> list[Plot]:
    """Draw every plot into `directory`, its time axis suited to `span_s`; a plot not drawn
    leaves no file of its name behind (a stale one from an earlier run is removed)."""
    time = TimeAxis.for_span(span_s)
    drawings = [
        ("voltage.png", "Voltage", voltage(buses, devices, time)),
        ("power.png", "P and Q", power(devices, kinds, time)),
        ("soc.png", "SoC", soc(devices, reserves, time)),
        ("setpoints.png", "Setpoints and events", setpoints(devices, events, time)),
    ]
    plots = []
    for file, title, (figure, note) in drawings:
        if figure is None:
            (directory / file).unlink(missing_ok=True)
        else:
            # no Software entry, and Agg writes no date: the same data gives the same bytes
            figure.savefig(directory / file, format="png", dpi=DPI, metadata={"Software": None})
        plots.append(Plot(file, title, figure is not None, note))
    return plots
