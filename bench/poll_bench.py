"""Benchmark: polling N simulated SunSpec devices at 1 s, the gateway against raw pymodbus.

    python bench/poll_bench.py [--sizes 1,20,200] [--seconds 30] [--runs 3] [--strace]
                               [--write FILE]

For each N, the HIL rig serves N legacy PV inverters (20 unit ids per Modbus TCP port, as
behind RS485 gateways) in its own process. Then, one after the other, each in a process of
its own so CPU and memory are its alone:
- the gateway: the real daemon code (coordinators, SunSpec driver, MQTT telemetry every 1 s
  to a real Mosquitto) polling every device each second;
- the floor: raw pymodbus, one client per port, reading the very same registers at the
  same cadence, each device's polls staggered over the interval as the gateway staggers
  them (the transport's own cost, nothing decoded).
Reported: polls per second, CPU per poll, polls per CPU-second (per core), peak RSS, the
ratio of the gateway's CPU per poll to the floor's, and the gateway's own CPU per second
beyond the floor's (at N = 1: its fixed work); each N ``--runs`` times, min - median - max
(the other columns are the median run's).

With ``--strace``, each N gets one more gateway run, not counted in the figures above, with
``strace -c -f`` attached to it for the measured seconds: the system calls it makes a second,
and the most frequent (every turn of the event loop is one ``epoll_wait``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.workers import (
    cpu_s,
    parser,
    rig_serving,
    rss_mb,
    run_worker,
    serve_worker,
    spread,
    write_section,
)
from tests.support.servers import Mosquitto, free_port

UNITS_PER_PORT = 20
POLL_INTERVAL_S = 1.0


def layout(n: int) -> list[tuple[str, int, int]]:
    """(device id, port, unit id) of N devices, 20 unit ids per port."""
    ports = [free_port() for _ in range((n + UNITS_PER_PORT - 1) // UNITS_PER_PORT)]
    return [(f"inv{i:03d}", ports[i // UNITS_PER_PORT], i % UNITS_PER_PORT + 1) for i in range(n)]


def write_rig(devices: list[tuple[str, int, int]], path: Path) -> None:
    spec = {
        "devices": [
            {
                "id": d,
                "type": "pv_legacy",
                "port": p,
                "unit_id": u,
                "w_rtg": 5000,
                "profile": {"kind": "constant", "w": 3000},
            }
            for d, p, u in devices
        ]
    }
    path.write_text(yaml.safe_dump(spec))


def write_gateway(devices: list[tuple[str, int, int]], mqtt_port: int, path: Path) -> None:
    config = {
        "gateway": {"id": "bench", "state_dir": str(path.parent / "state")},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "devices": [
            {
                "id": d,
                "kind": "inverter",
                "protocol": "sunspec",
                "host": "127.0.0.1",
                "port": p,
                "unit_id": u,
                "poll_interval_s": POLL_INTERVAL_S,
                "timeout_s": 2,
            }
            for d, p, u in devices
        ],
        "telemetry": {"interval_s": 1},
        "log_level": "WARNING",
    }
    path.write_text(yaml.safe_dump(config))


async def gateway_worker(config_path: Path, seconds: float, *, trace: bool) -> dict[str, Any]:
    """Run the gateway; measure after every device is reading (``trace``: only its system
    calls, by ``strace -c -f`` attached meanwhile)."""
    from derms_edge.config import load_config
    from derms_edge.devices.sunspec.driver import SunSpecDriver
    from derms_edge.runtime.gateway import Gateway, freeze_startup_heap

    gateway = Gateway(load_config(config_path))
    freeze_startup_heap()  # as serve() does
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    coordinators = list(gateway.coordinators.values())
    deadline = time.monotonic() + 120
    while not all(c.reading for c in coordinators):
        if time.monotonic() > deadline:
            raise RuntimeError("not every device came up within 120 s")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2 * POLL_INTERVAL_S)  # settle
    if trace:
        calls = await syscalls(seconds)
        stop.set()
        await runner
        return {"syscalls": calls}
    polls0, cpu0, t0 = sum(c.polls for c in coordinators), cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    polls, cpu, elapsed = (
        sum(c.polls for c in coordinators) - polls0,
        cpu_s() - cpu0,
        time.monotonic() - t0,
    )
    reads = {}
    for device_id, c in gateway.coordinators.items():
        driver = c.driver
        assert isinstance(driver, SunSpecDriver)
        reads[device_id] = driver.reads
    stop.set()
    await runner
    rss, peak = rss_mb()
    failures = sum(c.failures for c in coordinators)
    return {
        "polls": polls,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "failures": failures,
        "reads": reads,
    }


async def syscalls(seconds: float) -> dict[str, float]:
    """This process's system calls a second, by name, and their ``total``: ``strace -c -f``
    attached for ``seconds``."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        strace = await asyncio.create_subprocess_exec(
            "strace", "-c", "-f", "-q", "-o", out.name, "-p", str(os.getpid())
        )
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        strace.send_signal(signal.SIGINT)  # detach and write the summary
        await strace.wait()
        elapsed = time.monotonic() - t0
        return {name: calls / elapsed for name, calls in strace_counts(out.read())}


def strace_counts(summary: str) -> Iterator[tuple[str, int]]:
    """(syscall, calls) of each row of an ``strace -c`` summary, ``total`` last. A row:
    % time, seconds, usecs/call, calls, [errors], syscall."""
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit():
            yield fields[-1], int(fields[3])


async def raw_worker(plan_path: Path, seconds: float) -> dict[str, Any]:
    """Raw pymodbus: one client per port, the same reads per device at the same cadence."""
    from pymodbus.client import AsyncModbusTcpClient

    plan = json.loads(plan_path.read_text())  # noqa: ASYNC240 - once, before measuring
    clients: dict[int, AsyncModbusTcpClient] = {}
    locks: dict[int, asyncio.Lock] = {}
    for port in {d["port"] for d in plan}:
        clients[port] = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await clients[port].connect()
        locks[port] = asyncio.Lock()
    polls = 0
    counting = False

    async def poll_device(device: dict[str, Any]) -> None:
        nonlocal polls
        client, lock = clients[device["port"]], locks[device["port"]]
        await asyncio.sleep(random.uniform(0, POLL_INTERVAL_S))  # staggered, as the gateway does
        next_poll = time.monotonic()
        while True:
            for address, count in device["reads"]:
                async with lock:
                    response = await client.read_holding_registers(
                        address, count=count, device_id=device["unit"]
                    )
                if response.isError():
                    raise RuntimeError(f"raw read failed: {response}")
            if counting:
                polls += 1
            next_poll += POLL_INTERVAL_S
            await asyncio.sleep(max(0.0, next_poll - time.monotonic()))

    tasks = [asyncio.create_task(poll_device(d)) for d in plan]
    await asyncio.sleep(2 * POLL_INTERVAL_S)
    counting = True
    cpu0, t0 = cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    counted, cpu, elapsed = polls, cpu_s() - cpu0, time.monotonic() - t0
    for task in tasks:
        task.cancel()
    for client in clients.values():
        client.close()
    rss, peak = rss_mb()
    return {
        "polls": counted,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "rss_mb": rss,
        "peak_rss_mb": peak,
    }


@contextmanager
def serving(n: int, mqtt_port: int, tmp: Path) -> Iterator[tuple[list[tuple[str, int, int]], Path]]:
    """N devices on the rig, answering, and the gateway's configuration for them."""
    devices = layout(n)
    rig_file, gateway_file = tmp / f"rig{n}.yaml", tmp / f"gw{n}.yaml"
    write_rig(devices, rig_file)
    write_gateway(devices, mqtt_port, gateway_file)
    with rig_serving(rig_file, (p for _d, p, _u in devices)):
        yield devices, gateway_file


def measure(n: int, seconds: float, mqtt_port: int, tmp: Path) -> dict[str, Any]:
    with serving(n, mqtt_port, tmp) as (devices, gateway_file):
        gateway = run_worker(SCRIPT, "_gateway", gateway_file, seconds)
        plan = [{"port": p, "unit": u, "reads": gateway["reads"][d]} for d, p, u in devices]
        plan_file = tmp / f"plan{n}.json"
        plan_file.write_text(json.dumps(plan))
        raw = run_worker(SCRIPT, "_raw", plan_file, seconds)
    requests = sum(len(v) for v in gateway.pop("reads").values())
    return {"n": n, "requests_per_poll": requests / n, "gateway": gateway, "raw": raw}


def traced_row(n: int, seconds: float, mqtt_port: int, tmp: Path) -> str:
    """One N's row of system calls a second: the total and the five most frequent."""
    with serving(n, mqtt_port, tmp) as (_devices, gateway_file):
        calls = run_worker(SCRIPT, "_gateway_strace", gateway_file, seconds)["syscalls"]
    total = calls.pop("total")
    top = sorted(calls.items(), key=lambda kv: kv[1], reverse=True)[:5]
    return f"| {n} | {total:,.0f} | " + ", ".join(f"{k} {v:,.1f}" for k, v in top) + " |"


def ratio(result: dict[str, Any]) -> float:
    """The gateway's CPU per poll over the floor's."""
    g, r = result["gateway"], result["raw"]
    return float((g["cpu_s"] / g["polls"]) / (r["cpu_s"] / r["polls"]))


def extra_ms_per_s(result: dict[str, Any]) -> float:
    """CPU ms per second the gateway spends beyond the floor's (its own work)."""
    g, r = result["gateway"], result["raw"]
    return float(1e3 * (g["cpu_s"] / g["elapsed_s"] - r["cpu_s"] / r["elapsed_s"]))


def row(runs: list[dict[str, Any]]) -> str:
    """One N: the run with the median ratio in full, the spread of the ratio and of the
    gateway's own CPU over all runs."""
    result = sorted(runs, key=ratio)[len(runs) // 2]
    g, r = result["gateway"], result["raw"]
    g_cpu_per_poll = g["cpu_s"] / g["polls"] * 1e3
    r_cpu_per_poll = r["cpu_s"] / r["polls"] * 1e3
    return (
        f"| {result['n']} | {result['requests_per_poll']:.1f} "
        f"| {g['polls'] / g['elapsed_s']:.1f} | {g_cpu_per_poll:.3f} | {1e3 / g_cpu_per_poll:,.0f} "
        f"| {r['polls'] / r['elapsed_s']:.1f} | {r_cpu_per_poll:.3f} | {1e3 / r_cpu_per_poll:,.0f} "
        f"| **{spread([ratio(x) for x in runs], '.2f')}x** "
        f"| {spread([extra_ms_per_s(x) for x in runs], '.2f')} "
        f"| {g['peak_rss_mb']:.1f} | {r['peak_rss_mb']:.1f} | {g['failures']} |"
    )


def report(
    results: list[list[dict[str, Any]]], traced: list[str], seconds: float, command: str
) -> str:
    lines = [
        "## Polling: gateway against raw pymodbus",
        "",
        f"Command: `{command}` ({seconds:g} s measured per run, after every device is reading).",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "",
        "N legacy PV inverters (models 1, 103, 120, 121, 123, 126) on the HIL rig, 20 unit ids "
        "per Modbus TCP port, polled every 1 s. The gateway run is the daemon's own code "
        "(coordinators, SunSpec discovery, planning, decoding and mapping, telemetry to a real "
        "Mosquitto every 1 s); the floor reads the very same registers with raw pymodbus. "
        "CPU is the process's user + system time.",
        "",
        "| N | requests/poll | gateway polls/s | gateway CPU ms/poll | gateway polls per CPU-s "
        "| raw polls/s | raw CPU ms/poll | raw polls per CPU-s | CPU ratio | gateway's own CPU "
        "ms/s | gateway peak RSS MB | raw peak RSS MB | gateway poll failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(row(r) for r in results),
        "",
    ]
    if traced:
        lines += [
            f"System calls of the gateway under `strace -c -f` ({seconds:g} s, one more run "
            "per N, not counted above: strace slows every call):",
            "",
            "| N | syscalls/s | the five most frequent, a second |",
            "|---|---|---|",
            *traced,
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    workers = {
        "_gateway": functools.partial(gateway_worker, trace=False),
        "_gateway_strace": functools.partial(gateway_worker, trace=True),
        "_raw": raw_worker,
    }
    top = parser(__doc__, workers)
    top.add_argument("--sizes", default="1,20,200")
    top.add_argument("--runs", type=int, default=3, help="runs per N (min - median - max)")
    top.add_argument("--strace", action="store_true", help="one more run per N under strace")
    args = top.parse_args()
    if serve_worker(args, workers):
        return 0
    command = "python " + " ".join(["bench/poll_bench.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            results, traced = [], []
            for n in (int(s) for s in args.sizes.split(",")):
                runs = []
                for run in range(args.runs):
                    print(f"N = {n}, run {run + 1} of {args.runs} ...", file=sys.stderr, flush=True)
                    runs.append(measure(n, args.seconds, broker.port, tmp))
                results.append(runs)
                print(row(runs), file=sys.stderr, flush=True)
                if args.strace:
                    traced.append(traced_row(n, args.seconds, broker.port, tmp))
                    print(traced[-1], file=sys.stderr, flush=True)
        finally:
            broker.stop()
    write_section(args.write, report(results, traced, args.seconds, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
