"""Benchmark: OPC UA telemetry from 20 EV chargers, and the memory OPC UA costs a gateway.

    python bench/opcua_bench.py [--chargers 20] [--seconds 30] [--runs 3] [--rss-only]
                                [--write docs/benchmarks.md]

The HIL rig (its own process) serves N OPC UA chargers, each its own asyncua server that
refreshes every variable every 0.1 s with a new source timestamp. Two workers, each in its
own process, subscribe to the same seven measurement nodes of every charger with the same
publishing interval (100 ms) and trigger (status, value and timestamp):

- gateway: the daemon's own code (``Gateway``: one coordinator and OpcUaDriver per charger,
  readings every 1 s, telemetry to a real Mosquitto every 1 s);
- floor: raw asyncua clients whose handler only counts the notifications.

CPU is the process's user + system time; the ratio compares CPU per notification. Then the
RSS of ``derms-edge run`` after 15 s, on a SunSpec PV inverter and battery alone (asyncua
never imported) and with one OPC UA charger added: ``--runs`` daemons of each, reported as
min - median - max. ``--rss-only`` measures only that (no telemetry workers). The daemons run
as installed, from bytecode (one unmeasured daemon of each configuration compiles it first);
``--source`` runs them from source with no bytecode, as figures before 2026-12-04 were taken.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.workers import (
    bytecode_env,
    cpu_s,
    parser,
    rig_serving,
    rss_mb,
    run_worker,
    serve_worker,
    spread,
    write_section,
)
from tests.support.opcua_nodes import CHARGER_MEASURED, EVSE_NS, charger_nodes
from tests.support.servers import Mosquitto, free_port

PUBLISHING_MS = 100.0


def charger(device_id: str, port: int) -> dict[str, Any]:
    """The gateway's configuration of one rig charger, without security."""
    return {
        "id": device_id,
        "kind": "evse",
        "protocol": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/derms-edge/hil/{device_id}",
        "poll_interval_s": 1.0,
        "publishing_interval_ms": PUBLISHING_MS,
        "nodes": charger_nodes(device_id),
    }


def gateway_config(devices: list[dict[str, Any]], mqtt_port: int, state: Path) -> dict[str, Any]:
    return {
        "gateway": {"id": "bench", "state_dir": str(state)},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "devices": devices,
        "telemetry": {"interval_s": 1},
        "log_level": "WARNING",
    }


async def gateway_worker(config_path: Path, seconds: float) -> dict[str, Any]:
    """Run the gateway; count the notifications its drivers handle once all are reading."""
    from derms_edge.config import load_config
    from derms_edge.devices.opcua.driver import OpcUaDriver
    from derms_edge.runtime.gateway import Gateway

    gateway = Gateway(load_config(config_path))
    stop = asyncio.Event()
    runner = asyncio.create_task(gateway.run(stop))
    coordinators = list(gateway.coordinators.values())
    drivers = [c.driver for c in coordinators if isinstance(c.driver, OpcUaDriver)]
    deadline = time.monotonic() + 120
    while not all(c.reading for c in coordinators):
        if time.monotonic() > deadline:
            raise RuntimeError("not every charger came up within 120 s")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # settle
    count0, cpu0, t0 = sum(d.notifications for d in drivers), cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    count = sum(d.notifications for d in drivers) - count0
    cpu, elapsed = cpu_s() - cpu0, time.monotonic() - t0
    stale = sum(c.quality() != "ok" for c in coordinators)
    stop.set()
    await runner
    return {
        "notifications": count,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "peak_rss_mb": rss_mb()[1],
        "not_ok": stale,
        "failures": sum(c.failures for c in coordinators),
    }


def measured(charger: dict[str, Any]) -> list[str]:
    """The string ids of the nodes the gateway subscribes to, without their namespace."""
    specs = (charger["nodes"][point] for point in CHARGER_MEASURED)
    return [(s["node"] if isinstance(s, dict) else s).split(";s=", 1)[1] for s in specs]


async def raw_worker(plan_path: Path, seconds: float) -> dict[str, Any]:
    """Raw asyncua: the same subscriptions; the handler only counts."""
    from asyncua import Client, ua

    plan = json.loads(plan_path.read_text())  # noqa: ASYNC240 - once, before measuring
    counted = 0

    class Handler:
        def datachange_notification(self, *_: Any) -> None:
            nonlocal counted
            counted += 1

    clients = []
    for device in plan:
        client = Client(device["endpoint"], timeout=4)
        await client.connect()
        clients.append(client)
        index = await client.get_namespace_index(EVSE_NS)
        nodes = [client.get_node(ua.NodeId(name, index)) for name in device["measured"]]
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=PUBLISHING_MS,
            RequestedLifetimeCount=10000,
            RequestedMaxKeepAliveCount=20,
            PublishingEnabled=True,
        )
        subscription = await client.create_subscription(params, Handler())
        trigger = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        await subscription._subscribe(  # the public call takes no filter
            nodes, ua.AttributeIds.Value, mfilter=trigger, sampling_interval=PUBLISHING_MS
        )
    await asyncio.sleep(2.0)
    count0, cpu0, t0 = counted, cpu_s(), time.monotonic()
    await asyncio.sleep(seconds)
    count, cpu, elapsed = counted - count0, cpu_s() - cpu0, time.monotonic() - t0
    for client in clients:
        await client.disconnect()
    return {"notifications": count, "cpu_s": cpu, "elapsed_s": elapsed, "peak_rss_mb": rss_mb()[1]}


def daemon_rss(
    config: dict[str, Any], path: Path, env: dict[str, str] | None, settle_s: float = 15.0
) -> float:
    """Peak RSS (MB) of `derms-edge run` on this configuration after settle_s, in ``env``."""
    path.write_text(yaml.safe_dump(config))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "derms_edge.cli", "run", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        time.sleep(settle_s)
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        return int(fields["VmHWM"].split()[0]) / 1024
    finally:
        daemon.terminate()
        daemon.wait(30)


def rss_report(rss: dict[str, list[float]], source: bool) -> list[str]:
    runs = len(rss["modbus"])
    what = "peak RSS MB" if runs == 1 else f"peak RSS MB, min - median - max of {runs} runs"
    how = "from source, no bytecode" if source else "as installed, from bytecode"
    return [
        f"Peak RSS of `derms-edge run` after 15 s ({how}):",
        "",
        f"| configuration | {what} |",
        "|---|---|",
        "| SunSpec PV inverter and battery (asyncua not imported) "
        f"| {spread(rss['modbus'], '.1f')} |",
        f"| the same and one OPC UA charger | {spread(rss['opcua'], '.1f')} |",
        "",
    ]


def machine_line() -> str:
    return (
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}."
    )


def report(
    n: int,
    seconds: float,
    gateway: dict[str, Any],
    raw: dict[str, Any],
    rss_lines: list[str],
) -> str:
    g_rate = gateway["notifications"] / gateway["elapsed_s"]
    r_rate = raw["notifications"] / raw["elapsed_s"]
    g_us = gateway["cpu_s"] / gateway["notifications"] * 1e6
    r_us = raw["cpu_s"] / raw["notifications"] * 1e6
    g_load = gateway["cpu_s"] / gateway["elapsed_s"] * 100
    r_load = raw["cpu_s"] / raw["elapsed_s"] * 100
    command = "python " + " ".join(["bench/opcua_bench.py", *sys.argv[1:]])
    return "\n".join(
        [
            "## OPC UA telemetry: gateway against raw asyncua",
            "",
            f"Command: `{command}` ({seconds:g} s measured per run, after every charger is "
            "reading).",
            machine_line(),
            "",
            f"{n} OPC UA EV chargers on the HIL rig (one asyncua server each, every variable "
            "refreshed every 0.1 s with a new source timestamp); 7 measurement nodes per charger "
            f"subscribed at a {PUBLISHING_MS:g} ms publishing interval, trigger "
            "StatusValueTimestamp. The gateway is the daemon's own code (coordinators, "
            "OpcUaDriver, readings every 1 s, telemetry to a real Mosquitto every 1 s); the "
            "floor is raw asyncua clients with a handler that only counts.",
            "",
            "| | notifications/s | CPU % of one core | CPU µs per notification | peak RSS MB |",
            "|---|---|---|---|---|",
            f"| gateway | {g_rate:,.0f} | {g_load:.1f} | {g_us:.1f} | "
            f"{gateway['peak_rss_mb']:.1f} |",
            f"| raw asyncua | {r_rate:,.0f} | {r_load:.1f} | {r_us:.1f} | "
            f"{raw['peak_rss_mb']:.1f} |",
            f"| ratio | | | **{g_us / r_us:.2f}x** | |",
            "",
            f"Gateway: {gateway['failures']} device failures, {gateway['not_ok']} chargers not "
            "`ok` at the end.",
            "",
            *rss_lines,
        ]
    )


def main() -> int:
    workers = {"_gateway": gateway_worker, "_raw": raw_worker}
    top = parser(__doc__, workers)
    top.add_argument("--chargers", type=int, default=20)
    top.add_argument("--runs", type=int, default=1, help="daemons per RSS figure")
    top.add_argument("--rss-only", action="store_true", help="only the daemon's peak RSS")
    top.add_argument("--source", action="store_true", help="daemons from source, no bytecode")
    args = top.parse_args()
    if serve_worker(args, workers):
        return 0
    n = args.chargers
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ports = [free_port() for _ in range(n)]
        modbus_port = free_port()
        ids = [f"ev{i:02d}" for i in range(n)]
        rig_spec = {
            "tick_s": 0.1,
            "pki_dir": str(tmp / "pki"),
            "devices": [
                *(
                    {"id": d, "type": "opcua_evse", "port": p, "ev_soc_pct": 10, "ev_wh": 1e6}
                    for d, p in zip(ids, ports, strict=True)
                ),
                {"id": "pv", "type": "pv_legacy", "port": modbus_port, "unit_id": 1},
                {"id": "battery", "type": "battery", "port": modbus_port, "unit_id": 2},
            ],
        }
        (tmp / "rig.yaml").write_text(yaml.safe_dump(rig_spec))
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            with rig_serving(tmp / "rig.yaml", [*ports, modbus_port], timeout_s=120):
                chargers = [charger(d, p) for d, p in zip(ids, ports, strict=True)]
                if not args.rss_only:
                    config = gateway_config(chargers, broker.port, tmp / "state")
                    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
                    print(f"gateway, {n} chargers ...", file=sys.stderr, flush=True)
                    gateway = run_worker(SCRIPT, "_gateway", tmp / "gateway.yaml", args.seconds)
                    plan = [{"endpoint": c["endpoint"], "measured": measured(c)} for c in chargers]
                    (tmp / "plan.json").write_text(json.dumps(plan))
                    print(f"raw asyncua, {n} chargers ...", file=sys.stderr, flush=True)
                    raw = run_worker(SCRIPT, "_raw", tmp / "plan.json", args.seconds)
                sunspec = [
                    {"id": d, "kind": k, "protocol": "sunspec", "host": "127.0.0.1",
                     "port": modbus_port, "unit_id": u}
                    for d, k, u in (("pv", "inverter", 1), ("battery", "battery", 2))
                ]  # fmt: skip
                configs = {
                    "modbus": sunspec,
                    "opcua": [*sunspec, chargers[0]],
                }
                env = None if args.source else bytecode_env(tmp / "bytecode")
                if env is not None:  # compile what each configuration loads, unmeasured
                    for name, devices in configs.items():
                        config = gateway_config(devices, broker.port, tmp / f"warm-{name}")
                        daemon_rss(config, tmp / "warm.yaml", env, settle_s=5.0)
                rss: dict[str, list[float]] = {"modbus": [], "opcua": []}
                for run in range(args.runs):
                    print(
                        f"daemon RSS, run {run + 1} of {args.runs} ...", file=sys.stderr, flush=True
                    )
                    for name, devices in configs.items():
                        config = gateway_config(devices, broker.port, tmp / f"{name}-{run}")
                        rss[name].append(daemon_rss(config, tmp / f"{name}.yaml", env))
        finally:
            broker.stop()
    rss_lines = rss_report(rss, args.source)
    if args.rss_only:
        command = "python " + " ".join(["bench/opcua_bench.py", *sys.argv[1:]])
        text = "\n".join([f"Command: `{command}`.", machine_line(), "", *rss_lines])
    else:
        text = report(n, args.seconds, gateway, raw, rss_lines)
    write_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
