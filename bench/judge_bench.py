"""How long the judge takes on a day of 1 s samples for 10 devices (864,000 samples).

    PYTHONPATH=src:. python bench/judge_bench.py

Prints the seconds to build the recording's columns and to judge each test kind.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import TypeAdapter

from hil.judge import TestSpec, judge
from hil.records import Event, Recording, Sample

DEVICES = 10
DAY_S = 86400


def recording() -> Recording:
    """Ten devices, one sample a second for a day; voltage wandering around 1.0 pu."""
    rng = np.random.default_rng(0)
    t = np.arange(float(DAY_S))
    samples = []
    for d in range(DEVICES):
        v = 1.0 + 0.03 * np.sin(2 * np.pi * t / DAY_S) + rng.normal(0, 2e-4, len(t))
        v = np.round(v, 3)  # steps, so there is steady state
        q = np.interp(v, [0.92, 0.98, 1.02, 1.08], [0.44, 0.0, 0.0, -0.44]) * 10000
        device, bus = f"inv{d}", f"R{d}"
        samples += [
            Sample(
                t_s=float(t[i]),
                device=device,
                bus=bus,
                v_pu=float(v[i]),
                p_w=3000.0,
                q_var=float(q[i]),
                soc_pct=50.0,
            )
            for i in range(len(t))
        ]
    events = [Event(t_s=3600.0 * h, kind="mark") for h in range(24)]
    telemetry = {f"inv{d}": [float(x) for x in np.arange(0.0, DAY_S, 5.0)] for d in range(DEVICES)}
    return Recording(samples=samples, events=events, telemetry=telemetry)


TESTS = [
    {"kind": "voltage_within", "name": "range A"},
    {"kind": "voltage_exceeds", "name": "baseline", "device": "inv9"},
    {
        "kind": "volt_var_steady_state",
        "name": "vv",
        "device": "inv9",
        "va_rtg": 10000,
        "curve": {"v_pu": [0.92, 0.98, 1.02, 1.08], "q_pu": [0.44, 0, 0, -0.44]},
        "settled_s": 20,
    },
    {
        "kind": "response_time",
        "name": "tr",
        "device": "inv9",
        "signal": "q_var",
        "step_at_s": 40000,
        "tr_s": 5,
        "rating": 10000,
    },
    {
        "kind": "settles_to",
        "name": "limit",
        "device": "inv9",
        "signal": "p_w",
        "after_s": 100,
        "within_s": 30,
        "hold_until_s": 86000,
        "target": 3000,
        "tolerance": 10,
    },
    {"kind": "export_at_most", "name": "export", "meter": "inv9", "limit_w": 5000, "settle_s": 30},
    {"kind": "soc_at_least", "name": "reserve", "device": "inv9", "reserve_pct": 10},
    {"kind": "telemetry_complete", "name": "telemetry", "period_s": 5},
]


def main() -> None:
    start = time.perf_counter()
    rec = recording()
    print(f"{len(rec.samples)} samples made in {time.perf_counter() - start:.1f} s")
    adapter: TypeAdapter[TestSpec] = TypeAdapter(TestSpec)
    tests = [adapter.validate_python(t) for t in TESTS]
    start = time.perf_counter()
    results = judge(rec, tests)
    print(f"all {len(tests)} tests judged in {time.perf_counter() - start:.2f} s")
    for test in tests:
        start = time.perf_counter()
        [result] = judge(rec, [test])
        print(
            f"{test.kind:24} {time.perf_counter() - start:6.2f} s (columns included)  "
            f"{result.passed} {result.detail[:80]}"
        )
    print(
        f"{sum(r.passed for r in results)} of {len(results)} passed "
        "(baseline and tr fail: this day has no overvoltage and no step)"
    )


if __name__ == "__main__":
    main()
