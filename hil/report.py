"""A scenario run's report directory: the recording as CSV, the judged tests as JSON, the plots,
and an ``index.html`` that ties them together with the pass/fail table.

Rows are sorted (by time, then device or bus) and numbers written at fixed precision, so two
identical runs give byte-identical CSV and JSON. The page needs nothing beyond the directory (no
external asset, no script), and every text that came from a scenario, a device or a judge is
HTML-escaped.
"""

from __future__ import annotations

import csv
import html
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from hil import plots
from hil.records import BusSample, Event, Recording, Sample, TestResult
from hil.series import bus_series, device_series

TIMESERIES_HEADER = (
    "t_s", "device", "bus", "v_pu", "p_w", "q_var", "soc_pct",
    "w_max_lim_pct", "var_pct", "pf", "storage_w", "evse_max_a",
)  # fmt: skip
BUSES_HEADER = ("t_s", "bus", "v_pu")
EVENTS_HEADER = ("t_s", "kind", "topic", "mrid", "status", "reason", "detail", "payload")
FILES = {
    "timeseries.csv": "every device at every sample: P, Q, voltage, SoC, setpoints held",
    "buses.csv": "every feeder bus's voltage at every sample",
    "events.csv": "DSO messages sent, the gateway's responses, faults and marks",
    "results.json": "the judged tests",
}


@dataclass(frozen=True, slots=True)
class ReportMeta:
    """What the report says about the run besides its recording."""

    scenario: str
    description: str
    simulated_s: float
    """Simulated time the run covered, s."""
    wall_s: float
    """Wall-clock time the run took, s."""
    reserves: Mapping[str, float] = field(default_factory=dict)
    """Battery id -> the reserve SoC it must keep, %: drawn as a line on the SoC plot."""
    devices: Mapping[str, str] = field(default_factory=dict)
    """Device id -> kind (``pv``, ``battery``, ``evse``, ``meter``): meters are plotted apart
    from the DERs."""

    def __post_init__(self) -> None:
        for name in ("simulated_s", "wall_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ReportMeta.{name} must be a finite number >= 0, got {value!r}")


def _opt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _timeseries_rows(samples: Iterable[Sample]) -> Iterator[tuple[str, ...]]:
    # t_s to the ms, v_pu to 10 ppm, W and var to 0.1, percentages to 0.001 or 0.01 points
    for s in samples:
        yield (
            f"{s.t_s:.3f}", s.device, "" if s.bus is None else s.bus, _opt(s.v_pu, ".5f"),
            f"{s.p_w:.1f}", f"{s.q_var:.1f}", _opt(s.soc_pct, ".3f"),
            _opt(s.w_max_lim_pct, ".2f"), _opt(s.var_pct, ".2f"), _opt(s.pf, ".4f"),
            _opt(s.storage_w, ".1f"), _opt(s.evse_max_a, ".2f"),
        )  # fmt: skip


def _bus_rows(buses: Iterable[BusSample]) -> Iterator[tuple[str, ...]]:
    for b in buses:
        yield f"{b.t_s:.3f}", b.bus, f"{b.v_pu:.5f}"


def _event_rows(events: Iterable[Event]) -> Iterator[tuple[str, ...]]:
    for e in events:
        yield (
            f"{e.t_s:.3f}", e.kind, e.topic, e.mrid or "", e.status or "", e.reason or "",
            e.detail, e.payload,
        )  # fmt: skip


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a measurement that is not a finite number is null."""
    return None if value is None or not math.isfinite(value) else float(value)


def _write_results(path: Path, results: Sequence[TestResult]) -> Path:
    entries = [
        {
            "test": r.test,
            "passed": bool(r.passed),
            "measured": _number(r.measured),
            "limit": _number(r.limit),
            "detail": r.detail,
        }
        for r in results
    ]
    path.write_text(json.dumps(entries, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_report(
    directory: Path, recording: Recording, results: Sequence[TestResult], meta: ReportMeta
) -> list[Path]:
    """Write the report of one run into `directory` (created with its parents); returns the
    files written: the CSVs, ``results.json``, the plots that had data, ``index.html``."""
    directory.mkdir(parents=True, exist_ok=True)
    samples = sorted(recording.samples, key=attrgetter("t_s", "device"))
    buses = sorted(recording.buses, key=attrgetter("t_s", "bus"))
    events = sorted(recording.events, key=attrgetter("t_s"))  # stable: ties keep their order
    written = [
        _write_csv(directory / "timeseries.csv", TIMESERIES_HEADER, _timeseries_rows(samples)),
        _write_csv(directory / "buses.csv", BUSES_HEADER, _bus_rows(buses)),
        _write_csv(directory / "events.csv", EVENTS_HEADER, _event_rows(events)),
        _write_results(directory / "results.json", results),
    ]
    last_s = max((rows[-1].t_s for rows in (samples, buses, events) if rows), default=0.0)
    drawn = plots.draw(
        directory,
        device_series(samples),
        bus_series(buses),
        events,
        reserves=meta.reserves,
        kinds=meta.devices,
        span_s=max(meta.simulated_s, last_s),
    )
    written += [directory / p.file for p in drawn if p.drawn]
    page = directory / "index.html"
    page.write_text(_page(meta, recording.solve_s, results, drawn), encoding="utf-8")
    return [*written, page]


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{seconds:.1f} s ({whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d})"


def _value(value: float | None) -> str:
    return "&mdash;" if value is None else html.escape(f"{value:.6g}")


def _run_rows(meta: ReportMeta, solve_s: Sequence[float]) -> list[tuple[str, str]]:
    speed = f"{meta.simulated_s / meta.wall_s:.1f} &times; real time" if meta.wall_s else "&mdash;"
    if solve_s:
        solve = (
            f"median {statistics.median(solve_s) * 1e3:.2f} ms, "
            f"max {max(solve_s) * 1e3:.2f} ms over {len(solve_s)} solves"
        )
    else:
        solve = "none recorded"
    return [
        ("Simulated", _duration(meta.simulated_s)),
        ("Wall time", _duration(meta.wall_s)),
        ("Speed", speed),
        ("Power-flow solve", solve),
    ]


def _result_rows(results: Sequence[TestResult]) -> str:
    rows = []
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        rows.append(
            f'<tr class="{verdict.lower()}"><td>{html.escape(r.test)}</td><td>{verdict}</td>'
            f"<td>{_value(_number(r.measured))}</td><td>{_value(_number(r.limit))}</td>"
            f"<td>{html.escape(r.detail)}</td></tr>"
        )
    return "\n".join(rows)


def _plot_sections(drawn: Sequence[plots.Plot]) -> str:
    parts = []
    for p in drawn:
        parts.append(f"<h3>{html.escape(p.title)}</h3>")
        if p.drawn:
            parts.append(f'<img src="{html.escape(p.file)}" alt="{html.escape(p.title)}">')
        parts.append(f'<p class="note">{html.escape(p.note)}</p>')
    return "\n".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
tr.pass td:nth-child(2) { background: #c8efc8; font-weight: bold; }
tr.fail td:nth-child(2) { background: #f4c2c2; font-weight: bold; }
.verdict-pass { color: #176b17; } .verdict-fail { color: #a11; }
.note { color: #666; font-style: italic; }
img { max-width: 100%; }
"""


def _page(
    meta: ReportMeta,
    solve_s: Sequence[float],
    results: Sequence[TestResult],
    drawn: Sequence[plots.Plot],
) -> str:
    failed = sum(not r.passed for r in results)
    if not results:
        verdict = '<p class="note">No test was judged.</p>'
    else:
        cls = "verdict-fail" if failed else "verdict-pass"
        verdict = (
            f'<p class="{cls}"><strong>{len(results) - failed} of {len(results)} tests '
            f"passed</strong></p>\n<table>\n<tr><th>Test</th><th>Result</th><th>Measured</th>"
            f"<th>Limit</th><th>Detail</th></tr>\n{_result_rows(results)}\n</table>"
        )
    run = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _run_rows(meta, solve_s))
    files = "\n".join(
        f'<li><a href="{name}">{name}</a>: {what}</li>' for name, what in FILES.items()
    )
    title = html.escape(meta.scenario)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>HIL report: {title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p>{html.escape(meta.description)}</p>
<table>
{run}
</table>
<h2>Tests</h2>
{verdict}
<h2>Plots</h2>
{_plot_sections(drawn)}
<h2>Files</h2>
<ul>
{files}
</ul>
</body>
</html>
"""
