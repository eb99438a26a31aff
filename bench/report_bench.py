"""Benchmark: writing a scenario's report (CSV, JSON, plots, page) from a recording.

    python bench/report_bench.py [--hours 1,24] [--devices 10] [--buses 0,40] [--write FILE]

A synthetic recording at 1 s: `--devices` DERs (one in four a battery with a SoC and a
storage setpoint, the others PV with a limit and a var setpoint), and `--buses` feeder buses,
with a few events. `hil.report.write_report` is timed once per (hours, buses), into a
temporary directory, after one small warm-up report (matplotlib's first figure loads fonts).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workers import rss_mb, write_section
from hil.records import BusSample, Event, Recording, Sample, TestResult
from hil.report import ReportMeta, write_report


def recording(seconds: int, devices: int, buses: int) -> Recording:
    samples, bus_rows = [], []
    for i in range(seconds):
        t = float(i)
        sun = max(0.0, math.sin(math.pi * (t % 86400) / 86400))
        for d in range(devices):
            v = 1.0 + 0.03 * sun + 0.002 * d
            if d % 4 == 0:
                samples.append(
                    Sample(t, f"bat{d}", f"bus{d}", v, -3000.0 * sun, 0.0,
                           soc_pct=50 + 30 * math.sin(t / 20000), storage_w=-3000.0)
                )  # fmt: skip
            else:
                samples.append(
                    Sample(t, f"pv{d}", f"bus{d}", v, 5000.0 * sun, -500.0 * sun,
                           w_max_lim_pct=66.0, var_pct=-10.0)
                )  # fmt: skip
        bus_rows += [BusSample(t, f"bus{b}", 1.0 + 0.03 * sun + 0.001 * b) for b in range(buses)]
    events = [Event(60.0 * k, "sent", "dso/x/control", f"m{k}") for k in range(10)]
    events += [Event(60.0 * k + 0.5, "response", "dso/x/response", f"m{k}", "completed")
               for k in range(10)]  # fmt: skip
    return Recording(samples, bus_rows, events, {}, [0.005] * seconds)


def main() -> int:
    top = argparse.ArgumentParser(description=__doc__)
    top.add_argument("--hours", default="1,24", help="run lengths, h, comma-separated")
    top.add_argument("--devices", type=int, default=10)
    top.add_argument("--buses", default="0,40", help="feeder bus counts, comma-separated")
    top.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    args = top.parse_args()
    meta = ReportMeta("bench", "synthetic", 0.0, 1.0, {"bat0": 20.0}, {})
    rows = []
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        write_report(Path(tmp) / "warm", recording(60, 2, 1), [], meta)
        for hours in (float(h) for h in args.hours.split(",")):
            for buses in (int(b) for b in args.buses.split(",")):
                run = recording(round(hours * 3600), args.devices, buses)
                results = [TestResult("t", True, 1.0, 2.0, "")]
                start = time.perf_counter()
                files = write_report(Path(tmp) / f"{hours}-{buses}", run, results, meta)
                took = time.perf_counter() - start
                size_mb = sum(f.stat().st_size for f in files) / 1e6
                rows.append(
                    f"| {hours:g} h | {args.devices} | {buses} | {len(run.samples):,} | "
                    f"{len(run.buses):,} | **{took:.2f} s** | {size_mb:.1f} MB |"
                )
    text = "\n".join(
        [
            "## HIL report writing",
            "",
            "Command: `python bench/report_bench.py`.",
            f"Machine: {platform.machine()}, Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d}; peak RSS of the benchmark {rss_mb()[1]:.0f} MB.",
            "",
            "| run | devices | buses | samples | bus samples | write_report | files |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    write_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
