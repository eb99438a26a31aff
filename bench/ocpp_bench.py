"""Benchmark: the gateway as the CSMS of N OCPP charging stations sending MeterValues.

    python bench/ocpp_bench.py [--stations 50] [--meter-s 10] [--seconds 60]
                               [--write docs/benchmarks.md]

``derms-edge run`` (its own process) is the CSMS of N OCPP 2.0.1 stations of the HIL rig
(its own process), each with a car charging and MeterValues every ``--meter-s`` seconds,
one device per station, telemetry to a real Mosquitto every 5 s. Once every station's
capability is published and 5 s have passed, the daemon's CPU (user + system, from /proc) is
measured over ``--seconds``; then its RSS and peak RSS, and how many stations' last telemetry
is ``ok``.
"""

from __future__ import annotations

import argparse
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
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

from bench.workers import rig_serving, write_section
from tests.support.mqtt_probe import MqttProbe
from tests.support.servers import Mosquitto, free_port

TOPICS = "derms/v1/bench"


def daemon_cpu_s(pid: int) -> float:
    """User + system CPU time of a process, s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) RSS of a process, MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def configs(n: int, meter_s: float, csms_port: int, mqtt_port: int, tmp: Path) -> None:
    ids = [f"CP-{i:03d}" for i in range(n)]
    rig = {
        "tick_s": 1.0,
        "devices": [
            {
                "id": f"ev{i:03d}",
                "type": "ocpp_evse",
                "station_id": station,
                "csms_url": f"ws://127.0.0.1:{csms_port}/ocpp",
                "meter_interval_s": meter_s,
                "max_a": 16,
                "ev_soc_pct": 10,
                "ev_wh": 1e6,
            }
            for i, station in enumerate(ids)
        ],
    }
    gateway = {
        "gateway": {"id": "bench", "state_dir": str(tmp / "state")},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "ocpp": {"listen": f"127.0.0.1:{csms_port}"},
        "devices": [
            {"id": f"ev{i:03d}", "kind": "evse", "protocol": "ocpp", "station_id": station}
            for i, station in enumerate(ids)
        ],
        "telemetry": {"interval_s": 5},
        "log_level": "WARNING",
    }
    (tmp / "rig.yaml").write_text(yaml.safe_dump(rig))
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(gateway))


def measure(n: int, meter_s: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        broker = Mosquitto(tmp / "mosquitto").start()
        csms_port = free_port()
        configs(n, meter_s, csms_port, broker.port, tmp)
        probe = MqttProbe(broker.port, f"{TOPICS}/capability/+", f"{TOPICS}/telemetry/+")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "derms_edge.cli", "run", str(tmp / "gateway.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with rig_serving(tmp / "rig.yaml", [csms_port], timeout_s=60):
                t_start = time.monotonic()
                for i in range(n):
                    topic = f"{TOPICS}/capability/ev{i:03d}"
                    probe.wait_for(lambda m, topic=topic: m.topic == topic, timeout_s=120)
                connected_s = time.monotonic() - t_start
                time.sleep(5.0)
                cpu0, t0 = daemon_cpu_s(daemon.pid), time.monotonic()
                time.sleep(seconds)
                cpu, elapsed = daemon_cpu_s(daemon.pid) - cpu0, time.monotonic() - t0
                rss, peak = daemon_rss_mb(daemon.pid)
                last: dict[str, str] = {}
                for message in probe.messages:
                    if "/telemetry/" in message.topic:
                        last[message.topic] = message.json()["quality"]
        finally:
            daemon.terminate()
            daemon.wait(30)
            probe.close()
            broker.stop()
    return {
        "connected_s": connected_s,
        "cpu_s": cpu,
        "elapsed_s": elapsed,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "ok": sum(q == "ok" for q in last.values()),
    }


def report(n: int, meter_s: float, seconds: float, r: dict[str, Any]) -> str:
    command = "python " + " ".join(["bench/ocpp_bench.py", *sys.argv[1:]])
    load = r["cpu_s"] / r["elapsed_s"] * 100
    per_message_ms = r["cpu_s"] / (n * r["elapsed_s"] / meter_s) * 1e3
    return "\n".join(
        [
            f"## OCPP: {n} charging stations sending MeterValues",
            "",
            f"Command: `{command}` ({seconds:g} s measured after every station connected).",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
            "",
            f"`derms-edge run` as the CSMS of {n} OCPP 2.0.1 stations of the HIL rig (one "
            f"websocket each, a car charging, MeterValues every {meter_s:g} s, heartbeats every "
            "60 s), one device per station, telemetry to a real Mosquitto every 5 s.",
            "",
            "| stations | all connected after | CPU % of one core | CPU ms per MeterValues "
            "| RSS MB | peak RSS MB | telemetry `ok` at the end |",
            "|---|---|---|---|---|---|---|",
            f"| {n} | {r['connected_s']:.1f} s | {load:.1f} | {per_message_ms:.2f} | "
            f"{r['rss_mb']:.1f} | {r['peak_rss_mb']:.1f} | {r['ok']} of {n} |",
            "",
            "CPU ms per MeterValues counts all the daemon's work (heartbeats, coordinators, "
            "telemetry) against the MeterValues the stations send.",
            "",
        ]
    )


def main() -> int:
    top = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    top.add_argument("--stations", type=int, default=50)
    top.add_argument("--meter-s", type=float, default=10.0)
    top.add_argument("--seconds", type=float, default=60.0)
    top.add_argument("--write", type=Path, default=None)
    args = top.parse_args()
    result = measure(args.stations, args.meter_s, args.seconds)
    write_section(args.write, report(args.stations, args.meter_s, args.seconds, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
