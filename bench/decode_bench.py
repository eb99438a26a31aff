"""What a poll's decoding costs: every point of a model against the points a reading is
made of (`mapping.state_points`), on the register images of real devices (tests/data).

    python bench/decode_bench.py [--number 20000]

For each image, each model its kind polls: microseconds per `decode` of every point and of
the state points only (best of five rounds of ``--number`` calls), and per `to_state` of
the polled models. A poll of a legacy inverter is one model 103.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from derms_edge.devices.sunspec import build_layout, decode
from derms_edge.devices.sunspec.mapping import kind_of, poll_models, state_points, to_state
from tests.unit.test_sunspec_real_devices import IMAGES, scan


def best_us(call: Callable[[], object], number: int) -> float:
    """Microseconds per call, best of five rounds."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    print(
        "| image | kind | model | points: every / state | decode every, µs | "
        "decode state, µs | to_state of the polled models, µs |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in IMAGES:
        image, result, values = scan(name)
        chain = [header.model_id for header in result.models]
        kind = kind_of(chain)
        assert kind is not None
        headers = {header.model_id: header for header in result.models}
        polled = {m: values[m] for m in poll_models(kind, chain)}
        for model_id in polled:
            registers = image.model(headers[model_id])
            layout = build_layout(model_id, headers[model_id].length, registers)
            assert layout is not None
            wanted = state_points(model_id)
            every_us = best_us(partial(decode, layout, registers), args.number)
            state_us = best_us(partial(decode, layout, registers, wanted), args.number)
            mapping_us = best_us(partial(to_state, kind, polled), args.number)
            print(
                f"| {name} | {kind} | {model_id} | {len(decode(layout, registers))} / "
                f"{len(decode(layout, registers, wanted))} | {every_us:.1f} | {state_us:.1f} "
                f"| {mapping_us:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
