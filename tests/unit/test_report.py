"""The scenario report: the files a run leaves, their exact columns and keys, the plots, and a
page that shows what passed without letting a scenario's text become markup."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hil import plots, records
from hil.records import BusSample, Event, Recording, Sample
from hil.report import ReportMeta, write_report
from hil.series import bus_series, device_series, envelope

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("voltage.png", "power.png", "soc.png", "setpoints.png")
DATA = ("timeseries.csv", "buses.csv", "events.csv", "results.json")
KINDS = {"pv1": "pv", "bat1": "battery", "ev1": "evse", "site": "meter"}


def recording(steps: int = 120, step_s: float = 1.0) -> Recording:
    """pv1 and bat1 on feeder buses, ev1 and a meter without; events of every kind."""
    samples, buses = [], []
    for i in range(steps):
        t = i * step_s
        v = 1.0 + 0.06 * math.sin(t / 30.0)
        samples += [
            Sample(t, "pv1", "b1", v, 4000.0 * math.sin(t / 60.0) ** 2, -300.0 + t,
                   w_max_lim_pct=66.0 if t > 30 else None, var_pct=-12.5, pf=0.95),
            Sample(t, "bat1", "b2", v - 0.01, -2500.0, 0.0, soc_pct=80.0 - t / 10,
                   storage_w=-2500.0),
            Sample(t, "ev1", None, None, -7360.0, 0.0, evse_max_a=16.0),
            Sample(t, "site", None, None, 1234.5, -50.0),
        ]  # fmt: skip
        buses += [BusSample(t, "b1", v), BusSample(t, "b2", v - 0.01)]
    events = [
        Event(10.0, "sent", "dso/gw/control", "m-1", payload='{"mrid": "m-1", "w": 66}'),
        Event(10.5, "response", "dso/gw/response", "m-1", "received"),
        Event(11.0, "response", "dso/gw/response", "m-1", "rejected", "reserve", 'a, "b"\nc'),
        Event(40.0, "fault", detail="broker outage", payload="stop mosquitto for 60 s"),
        Event(50.0, "mark", detail="voltage step"),
        Event(50.0, "fault", detail="meter loss"),  # a tie: kept in the order recorded
    ]
    return Recording(samples, buses, events, {"pv1": [0.0, 60.0]}, [0.004, 0.006, 0.011])


RESULTS = [
    records.TestResult("limit settles", True, 1.2, 2.0, "66 % within 2 s"),
    records.TestResult("reserve holds", False, 18.0, 20.0, "SoC below reserve at t=5400 s"),
]
META = ReportMeta("Limit active power", "IEEE 1547.1 style", 120.0, 8.0, {"bat1": 70.0}, KINDS)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    directory = tmp_path_factory.mktemp("run") / "a" / "report"
    return directory, write_report(directory, recording(), RESULTS, META)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_file_is_written_and_returned(report: tuple[Path, list[Path]]) -> None:
    directory, written = report
    assert [p.name for p in written] == [*DATA, *PLOTS, "index.html"]
    assert all(p.parent == directory and p.stat().st_size > 0 for p in written)


def test_timeseries_columns_are_exact_and_values_round_trip(
    report: tuple[Path, list[Path]],
) -> None:
    directory, _ = report
    with (directory / "timeseries.csv").open(encoding="utf-8") as f:
        assert f.readline().strip() == (
            "t_s,device,bus,v_pu,p_w,q_var,soc_pct,w_max_lim_pct,var_pct,pf,storage_w,evse_max_a"
        )
    table = rows(directory / "timeseries.csv")
    expected = sorted(recording().samples, key=lambda s: (s.t_s, s.device))
    assert len(table) == len(expected)
    assert [(float(r["t_s"]), r["device"]) for r in table] == [(s.t_s, s.device) for s in expected]
    tolerance = {"t_s": 5e-4, "v_pu": 5e-6, "p_w": 0.05, "q_var": 0.05, "soc_pct": 5e-4,
                 "w_max_lim_pct": 5e-3, "var_pct": 5e-3, "pf": 5e-5, "storage_w": 0.05,
                 "evse_max_a": 5e-3}  # fmt: skip
    for row, sample in zip(table, expected, strict=True):
        assert row["bus"] == (sample.bus or "")
        for column, within in tolerance.items():
            value = getattr(sample, column)
            if value is None:
                assert row[column] == "", (column, row)
            else:
                assert float(row[column]) == pytest.approx(value, abs=within), (column, row)


def test_buses_and_events_round_trip(report: tuple[Path, list[Path]]) -> None:
    directory, _ = report
    buses = rows(directory / "buses.csv")
    assert list(buses[0]) == ["t_s", "bus", "v_pu"]
    assert [(float(b["t_s"]), b["bus"], round(float(b["v_pu"]), 5)) for b in buses] == [
        (b.t_s, b.bus, round(b.v_pu, 5)) for b in recording().buses
    ]
    events = rows(directory / "events.csv")
    assert list(events[0]) == ["t_s", "kind", "topic", "mrid", "status", "reason", "detail",
                               "payload"]  # fmt: skip
    back = [
        Event(float(e["t_s"]), e["kind"], e["topic"], e["mrid"] or None, e["status"] or None,
              e["reason"] or None, e["detail"], e["payload"])
        for e in events
    ]  # fmt: skip
    assert back == recording().events  # the comma, quotes and newline survive


def test_results_json_has_exactly_the_keys(tmp_path: Path) -> None:
    results = [*RESULTS, records.TestResult("no measure", False, math.nan, None, "no sample")]
    write_report(tmp_path, Recording(), results, META)
    entries = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert all(list(e) == ["test", "passed", "measured", "limit", "detail"] for e in entries)
    assert entries[1] == {"test": "reserve holds", "passed": False, "measured": 18.0,
                          "limit": 20.0, "detail": "SoC below reserve at t=5400 s"}  # fmt: skip
    assert entries[2]["measured"] is None  # NaN is not JSON: null


def test_plots_are_pngs_with_content(report: tuple[Path, list[Path]]) -> None:
    directory, _ = report
    for name in PLOTS:
        data = (directory / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 10_000, name


def test_page_has_the_table_and_the_plots(report: tuple[Path, list[Path]]) -> None:
    directory, _ = report
    page = (directory / "index.html").read_text(encoding="utf-8")
    assert '<tr class="pass"><td>limit settles</td><td>PASS</td><td>1.2</td><td>2</td>' in page
    assert '<tr class="fail"><td>reserve holds</td><td>FAIL</td><td>18</td><td>20</td>' in page
    assert "1 of 2 tests passed" in page
    assert '<p class="note">feeder buses: 2</p>' in page
    assert '<p class="note">DERs: 3, meters: 1</p>' in page  # the meter plotted apart
    for name in PLOTS:
        assert f'<img src="{name}"' in page
    for name in DATA:
        assert f'<a href="{name}">' in page
    assert "15.0 &times; real time" in page
    assert "median 6.00 ms, max 11.00 ms over 3 solves" in page
    assert "http" not in page and "<script" not in page  # self-contained


def test_page_escapes_what_a_scenario_or_judge_wrote(tmp_path: Path) -> None:
    hostile = "<script>alert('x')</script>"
    meta = ReportMeta(hostile, f"desc {hostile}", 1.0, 1.0)
    write_report(
        tmp_path, Recording(), [records.TestResult(hostile, False, None, None, hostile)], meta
    )
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page
    assert page.count("&lt;script&gt;") == 5  # title, heading, description, test, detail


def test_names_that_look_like_matplotlib_math_are_drawn_literally(tmp_path: Path) -> None:
    odd = Recording(
        [Sample(0.0, "$\\frac{$", "_b", 1.0, 1.0, 1.0, soc_pct=50.0)],
        [BusSample(0.0, "$\\frac{$", 1.0)],
        [Event(0.0, "mark", detail="$\\frac{$"), Event(0.0, "response", status="$\\frac{$")],
    )
    written = write_report(tmp_path, odd, [], ReportMeta("$\\frac{$", "", 1.0, 1.0))
    assert {p.name for p in written} >= set(PLOTS)


def test_empty_recording_skips_the_plots_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "soc.png").write_bytes(PNG_MAGIC)  # from an earlier run
    written = write_report(tmp_path, Recording(), [], ReportMeta("empty", "", 0.0, 0.0))
    assert [p.name for p in written] == [*DATA, "index.html"]
    assert not any((tmp_path / name).exists() for name in PLOTS)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert page.count("not drawn:") == 4 and "<img" not in page
    assert "No test was judged" in page and "<th>Test</th>" not in page
    assert "none recorded" in page
    assert (tmp_path / "timeseries.csv").read_text(encoding="utf-8").count("\n") == 1


def test_two_identical_runs_give_identical_bytes(tmp_path: Path) -> None:
    shuffled = recording()
    shuffled.samples.reverse()  # the order the runner recorded in does not matter
    write_report(tmp_path / "one", recording(), RESULTS, META)
    write_report(tmp_path / "two", shuffled, RESULTS, META)
    for name in (*DATA, *PLOTS):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def legend(figure: Figure | None, row: int = 0) -> list[str]:
    assert figure is not None
    box = figure.axes[row].get_legend()
    return [] if box is None else [t.get_text() for t in box.get_texts()]


def test_the_reserve_is_drawn_and_named() -> None:
    devices = device_series(recording().samples)
    axis = plots.TimeAxis.for_span(120.0)
    figure, _ = plots.soc(devices, {"bat1": 70.0, "gone": 10.0}, axis)
    assert legend(figure) == ["bat1", "bat1 reserve"]  # a reserve of no battery is not drawn
    assert figure is not None
    reserve = figure.axes[0].get_lines()[-1]
    assert list(reserve.get_ydata()) == [70.0, 70.0]
    assert to_hex(reserve.get_color()) == to_hex(figure.axes[0].get_lines()[0].get_color())


def test_meters_are_drawn_apart_from_ders() -> None:
    devices = device_series(recording().samples)
    figure, note = plots.power(devices, KINDS, plots.TimeAxis.for_span(120.0))
    assert note == "DERs: 3, meters: 1"
    assert [legend(figure, row) for row in range(4)] == [["bat1", "ev1", "pv1"]] * 2 + [
        ["site"]
    ] * 2


def test_voltage_is_drawn_against_ansi_c84_1() -> None:
    buses = bus_series(recording().buses)
    figure, note = plots.voltage(buses, [], plots.TimeAxis.for_span(120.0))
    assert note == "feeder buses: 2"
    assert legend(figure) == ["ANSI C84.1 range A", "range B", "b1", "b2"]
    assert figure is not None
    band = figure.axes[0].patches[0]
    assert isinstance(band, Rectangle)
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx(plots.RANGE_A_PU)


def test_the_timeline_marks_events_and_colours_responses() -> None:
    run = recording()
    figure, note = plots.setpoints(
        device_series(run.samples), run.events, plots.TimeAxis.for_span(120.0)
    )
    assert note == "setpoints: 5, events: 6"
    assert figure is not None
    events_axes = figure.axes[-1]
    assert legend(figure, -1) == ["sent", "fault", "mark", "received", "rejected"]
    labels = [t.get_text() for t in events_axes.texts]
    assert labels == ["m-1", "broker outage", "voltage step", "meter loss"]
    dots = {
        to_hex(c.get_facecolor()[0]): np.asarray(c.get_offsets())[:, 0].tolist()
        for c in events_axes.collections
        if isinstance(c, PathCollection)
    }
    assert dots == {"#7f7f7f": [10.5], "#d62728": [11.0]}  # received grey, rejected red
    assert [ax.get_ylabel() for ax in figure.axes[:-1]] == list(plots.SETPOINT_LABELS.values())


def test_a_crowded_timeline_is_unlabelled_and_says_so() -> None:
    events = [Event(float(k), "mark", detail=f"step {k}") for k in range(plots.LABELS_MAX + 1)]
    figure, note = plots.setpoints([], events, plots.TimeAxis.for_span(60.0))
    assert figure is not None and len(figure.axes[-1].texts) == 0
    assert note == "setpoints: 0, events: 41 (41 marks, drawn unlabelled above 40)"


def test_a_name_with_a_leading_underscore_keeps_its_legend_entry() -> None:
    one = [Sample(0.0, "_pv", None, 1.0, 1.0, 1.0)]
    figure, _ = plots.power(device_series(one), {}, plots.TimeAxis.for_span(1.0))
    assert legend(figure) == ["\u200b_pv"]


def test_a_crowded_axes_has_no_legend() -> None:
    many = [Sample(0.0, f"d{i}", None, 1.0, 1.0, 1.0) for i in range(plots.LEGEND_MAX + 1)]
    figure, _ = plots.power(device_series(many), {}, plots.TimeAxis.for_span(1.0))
    assert legend(figure) == []


@pytest.mark.parametrize(
    ("span_s", "unit"), [(0.0, "s"), (120.0, "s"), (121.0, "min"), (7200.0, "min"),
                         (7201.0, "h")]
)  # fmt: skip
def test_time_axis_unit_follows_the_run_length(span_s: float, unit: str) -> None:
    assert plots.TimeAxis.for_span(span_s).unit == unit


def test_envelope_keeps_every_extreme() -> None:
    t = np.arange(100_000, dtype=np.float64)
    y = np.zeros_like(t)
    y[12_345], y[77_777], y[500:600], y[-1] = 5.0, -3.0, math.nan, 1.0
    x, e = envelope(t, y, 800)
    assert len(x) <= 2 * 800 + 1
    assert np.nanmax(e) == 5.0 and np.nanmin(e) == -3.0
    assert x[0] == 0.0 and x[-1] == 99_999.0 and np.all(np.diff(x) >= 0)
    assert e[-1] == 1.0  # the line reaches the last sample
    short_t, short_y = envelope(t[:10], y[:10], 800)
    assert np.array_equal(short_t, t[:10])
    assert np.array_equal(short_y, y[:10])


def test_meta_refuses_a_negative_duration() -> None:
    with pytest.raises(ValueError, match=r"ReportMeta.wall_s must be a finite number >= 0"):
        ReportMeta("s", "", 1.0, -1.0)


def test_a_large_recording_writes_in_seconds(tmp_path: Path) -> None:
    devices = 10
    big = Recording(
        [
            Sample(
                float(i),
                f"der{d}",
                f"b{d}",
                1.0 + 0.001 * d,
                1000.0 + i % 97,
                10.0,
                soc_pct=50.0 if d == 0 else None,
                w_max_lim_pct=66.0,
            )
            for i in range(20_000)
            for d in range(devices)
        ]
    )
    start = time.perf_counter()
    written = write_report(tmp_path, big, RESULTS, ReportMeta("big", "", 20_000.0, 100.0))
    print(f"write_report: {len(big.samples)} samples in {time.perf_counter() - start:.2f} s")
    assert {p.name for p in written} >= set(PLOTS)
    assert (tmp_path / "timeseries.csv").read_text(encoding="utf-8").count("\n") == 200_001
