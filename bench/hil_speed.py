"""How much faster than real time a scenario runs here: the one-hour volt-var scenario on the
CIGRE LV feeder (44 buses, 10 DERs, the real daemon) at each speed asked, with whether the
machine kept up.

    python bench/hil_speed.py [--speeds 12,20] [--scenario FILE] [--write docs/benchmarks.md]

Each run is `derms-edge hil run SCENARIO --speed N`; its run.json gives the wall time, the
physics steps that ran more than a step late, CPU (runner, rig, broker and gateway together)
and the power-flow solve times; results.json whether every test still passed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "hil" / "scenarios" / "volt-var-feeder.yaml"


def run(scenario: Path, speed: float) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="derms-edge-hil-bench-") as tmp:
        report = Path(tmp)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hil",
                "run",
                str(scenario),
                "--report",
                str(report),
                "--speed",
                f"{speed:g}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if not (report / "run.json").exists():
            raise RuntimeError(f"the run at x{speed:g} ended early:\n{done.stderr[-2000:]}")
        figures: dict[str, float | str] = json.loads((report / "run.json").read_text())
        results = json.loads((report / "results.json").read_text())
        passed = sum(r["passed"] for r in results)
        figures["tests"] = f"{passed}/{len(results)}"
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speeds", default="12", help="comma-separated speeds (default 12)")
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    args = parser.parse_args()
    speeds = [float(s) for s in args.speeds.split(",")]
    rows = []
    for speed in speeds:
        f = run(args.scenario, speed)
        rows.append(
            f"| {speed:g} | {f['simulated_s']:.0f} | {f['wall_s']:.1f} | **{f['speed']:.1f}x** | "
            f"{f['physics_steps']} | {f['late_steps']} | {f['max_late_s']:.2f} | "
            f"{f['cpu_cores_used']:.2f} | {f['solve_median_ms']:.1f} / {f['solve_max_ms']:.1f} | "
            f"{f['gateway_offline_warnings']} | {f['tests']} |"
        )
        print(rows[-1], flush=True)
    scenario = args.scenario.resolve().relative_to(ROOT)
    lines = [
        "## HIL scenarios faster than real time",
        "",
        f"Command: `python bench/hil_speed.py --speeds {args.speeds} --write docs/benchmarks.md`"
        f" ({scenario}).",
        f"Machine: 2 cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{date.today().isoformat()}.",
        "",
        "The one-hour volt-var scenario: the CIGRE LV feeder (44 buses, a pandapower power flow "
        "every simulated second), ten DERs with OpenDER dynamics behind SunSpec servers, the "
        "real daemon polling each every second, Mosquitto, all under libfaketime at the speed "
        "asked. Late steps: physics steps that ran more than a step behind their time (the "
        "machine did not keep up); CPU cores: the CPU time of the runner, rig, broker and "
        "gateway together per wall second; solve: one power flow, real ms; devices timed out: the "
        "gateway's 'offline' warnings (a Modbus timeout is N times shorter in real time).",
        "",
        "| speed asked | simulated s | wall s | speed reached | physics steps | late steps | "
        "max late, simulated s | CPU cores | solve median / max ms | devices timed out | "
        "tests passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if args.write is not None:
        with args.write.open("a", encoding="utf-8") as doc:
            doc.write("\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
