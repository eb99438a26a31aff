"""Benchmark: the fuzz targets of tests/fuzz, longer, counting crashes instead of stopping.

    python bench/fuzz.py [--inputs 100000] [--target NAME ...] [--seed N]

Each target (tests/fuzz/targets.py) gets ``--inputs`` inputs from its hypothesis strategy
(generation only, no shrinking); an input that ends in anything but a value or the target's
typed error is a crash. Prints, per target, inputs/s and crashes, and the first few crashing
exception types with where they were raised.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fuzz.targets import TARGETS, Target


def run(target: Target, inputs: int, chosen_seed: int) -> tuple[int, float, Counter[str]]:
    """(inputs run, seconds, crash kinds) for one target."""
    crashes: Counter[str] = Counter()
    count = 0

    @seed(chosen_seed)
    @settings(
        max_examples=inputs,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(target.inputs)
    def fuzz(value: object) -> None:
        nonlocal count
        count += 1
        try:
            target.run(value)
        except Exception as error:  # a crash: counted, and the run goes on
            where = traceback.extract_tb(error.__traceback__)[-1]
            crashes[f"{type(error).__name__} at {Path(where.filename).name}:{where.lineno}"] += 1

    started = time.perf_counter()
    fuzz()
    return count, time.perf_counter() - started, crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="per target")
    parser.add_argument("--target", action="append", help="a target's name (default: all)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # drivers report every odd device they meet
    chosen = [t for t in TARGETS if not args.target or t.name in args.target]
    print(f"{'target':40} {'inputs':>8} {'inputs/s':>9} {'crashes':>8}")
    for target in chosen:
        count, seconds, crashes = run(target, args.inputs, args.seed)
        total = sum(crashes.values())
        print(f"{target.name:40} {count:>8} {count / seconds:>9.0f} {total:>8}", flush=True)
        for kind, n in crashes.most_common(3):
            print(f"    {n} x {kind}")


if __name__ == "__main__":
    main()
