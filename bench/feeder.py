"""Benchmark: the rig feeder's power-flow solve per physics step.

    python bench/feeder.py [--steps 500] [--write docs/benchmarks.md]

The CIGRE LV residential feeder with 10 rig DERs (hil/feeders/cigre_lv_high_pv.yaml, 44
buses), solved as the runner does each step: every DER's P and Q, the load level, the
irradiance and the upstream voltage change every step (seeded random walks), so each solve is
a new operating point, warm-started from the previous one. Timed by `FeederResult.solve_s`
(the power flow alone) and around the whole `Feeder.solve` call (inputs written in, voltages
read out); the share of a 1 s and a 0.1 s physics step is the median of the whole call.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.feeder import Feeder, load_feeder_spec

FEEDER = ROOT / "hil" / "feeders" / "cigre_lv_high_pv.yaml"


def percentiles_ms(samples: list[float]) -> tuple[float, float, float]:
    """(median, p99, max) of samples in s, in ms."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3, ordered[-1] * 1e3


def run(steps: int, seed: int = 13) -> tuple[list[float], list[float], float]:
    """Solve ``steps`` changing steps; (power-flow s, whole-call s, highest bus pu)."""
    feeder = Feeder(load_feeder_spec(FEEDER))
    rng = random.Random(seed)
    devices = list(feeder.spec.devices)
    p = dict.fromkeys(devices, 5000.0)
    q = dict.fromkeys(devices, 0.0)
    solve_s: list[float] = []
    call_s: list[float] = []
    highest = 0.0
    for step in range(steps):
        for d in devices:
            p[d] = min(10_000.0, max(-5000.0, p[d] + rng.uniform(-500.0, 500.0)))
            q[d] = min(4400.0, max(-4400.0, q[d] + rng.uniform(-300.0, 300.0)))
        started = time.perf_counter()
        result = feeder.solve(
            upstream_v_pu=1.0 + 0.02 * rng.random(),
            load_scale=0.3 + 0.4 * rng.random(),
            irradiance_pu=(step % 100) / 100,
            injections={d: (p[d], q[d]) for d in devices},
        )
        call_s.append(time.perf_counter() - started)
        solve_s.append(result.solve_s)
        highest = max(highest, *result.bus_v_pu.values())
    return solve_s, call_s, highest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    args = parser.parse_args()
    solve_s, call_s, highest = run(args.steps)
    # the first solve is cold (it builds pandapower's internal tables): reported apart
    pf = percentiles_ms(solve_s[1:])
    call = percentiles_ms(call_s[1:])
    lines = [
        "## Feeder power flow per physics step",
        "",
        f"Command: `python bench/feeder.py --steps {args.steps} --write docs/benchmarks.md`.",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}; pandapower without numba.",
        "",
        f"cigre_lv_high_pv (44 buses, 10 DERs), {args.steps} steps, every DER's P and Q, the "
        f"load, irradiance and upstream voltage changing each step (highest bus {highest:.3f} "
        f"pu); first (cold) solve {solve_s[0] * 1e3:.1f} ms, then:",
        "",
        "| | median ms | p99 ms | max ms |",
        "|---|---|---|---|",
        f"| power flow (`solve_s`) | {pf[0]:.2f} | {pf[1]:.2f} | {pf[2]:.2f} |",
        f"| whole `Feeder.solve` call | {call[0]:.2f} | {call[1]:.2f} | {call[2]:.2f} |",
        "",
        f"Share of a physics step (median call): {call[0] / 1e3:.2%} of a 1 s step, "
        f"{call[0] / 1e2:.1%} of a 0.1 s step (p99: {call[1] / 1e3:.2%} and "
        f"{call[1] / 1e2:.1%}).",
    ]
    print("\n".join(lines))
    if args.write is not None:
        with args.write.open("a", encoding="utf-8") as doc:
            doc.write("\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
