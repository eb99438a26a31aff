"""Benchmark: from `derms-edge run` to the first telemetry, on the residential configuration.

    python bench/startup_bench.py [--runs 3] [--write docs/benchmarks.md]

The HIL rig (its own process) serves what configs/residential.yaml names: a PV inverter and
a battery behind one Modbus TCP port (unit ids 1 and 2), and the OPC UA wallbox (Basic256Sha256
SignAndEncrypt, user and password). Mosquitto listens with TLS and client certificates, as the
utility's broker does. configs/residential.yaml is loaded and only its addresses, certificate
paths and state directory are rewritten to point at them; everything else (telemetry every
10 s, polls every 2 s, the log level) is the file's.

A subscriber on the telemetry topic is connected before the daemon starts. Each run starts
`derms-edge run` with a fresh state directory; the clock starts just before Popen. Measured:

- the first telemetry message of any device, and each device's first with ``quality: ok``;
- from the daemon's log (INFO, the file's level): when the gateway started (its first line,
  written once the configuration is loaded and every module imported) and when each device
  gave its first reading (connect, discovery and a first poll done);
- the floor, in the same run: ``python -c pass`` and the daemon's imports in a fresh
  interpreter (the console script's ``derms_edge.cli``, then what ``run`` imports).

Both with the wallbox and without it (its SunSpec devices alone; asyncua is then never
imported). Bytecode is cached, as in an installed package (in a temporary directory, even
where PYTHONDONTWRITEBYTECODE is set); one start of each, not counted, writes it and warms
up the rig. Figures are min-median-max over the runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import trustme
import yaml

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
sys.path.insert(0, str(ROOT))

from bench.workers import bytecode_env, spread, write_section
from tests.support.mqtt_probe import Message, MqttProbe
from tests.support.servers import Mosquitto, MosquittoTls, Process, free_port, wait_port

RESIDENTIAL = ROOT / "configs" / "residential.yaml"
SECTION = "## Startup: start to first telemetry"
PROBE = "bench-probe"
TIMEOUT_S = 40.0
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+(\S+): (.*)$")
IMPORTS = {
    "cli": "import derms_edge.cli",
    "run": "import derms_edge.cli, derms_edge.runtime.gateway",
    "opcua": "import derms_edge.cli, derms_edge.runtime.gateway, derms_edge.devices.opcua.driver",
}
"""The floor: the console script's import, then what `run` imports before the event loop
(and, with an OPC UA device, what its driver imports when the gateway builds it)."""


@dataclass
class Site:
    """The rig, the broker and the certificates, shared by every run."""

    tmp: Path
    modbus_port: int
    opcua_port: int
    wallbox_id: str
    rig_pki: Path
    broker_port: int
    mqtt_tls: dict[str, str]
    probe_tls: ssl.SSLContext


@dataclass
class Run:
    """What one start of the daemon measured, seconds from just before Popen."""

    first_any: float | None = None
    first_quality: str | None = None
    ok: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    reading: dict[str, float] = field(default_factory=dict)


def residential() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(RESIDENTIAL.read_text())
    return config


def wallbox(config: dict[str, Any]) -> dict[str, Any]:
    (device,) = (d for d in config["devices"] if d["protocol"] == "opcua")
    return device


def _secret(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o640)
    return path


def broker_pki(tmp: Path, gateway_id: str) -> tuple[MosquittoTls, dict[str, str], ssl.SSLContext]:
    """A CA, the broker's certificate, the gateway's and the probe's; the ACL."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    paths = {}
    for name, hosts in (("broker", ("127.0.0.1", "localhost")), (gateway_id, ()), (PROBE, ())):
        leaf = ca.issue_cert(*(hosts or (f"{name}.test",)), common_name=name)
        (tmp / f"{name}.pem").write_bytes(leaf.cert_chain_pems[0].bytes())
        paths[name] = (
            tmp / f"{name}.pem",
            _secret(tmp / f"{name}.key", leaf.private_key_pem.bytes()),
        )
    acl = tmp / "acl"
    acl.write_text(
        f"user {gateway_id}\ntopic readwrite derms/#\n\nuser {PROBE}\ntopic read derms/#\n"
    )
    tls = MosquittoTls(tmp / "ca.pem", *paths["broker"], acl)
    gateway_cert, gateway_key = paths[gateway_id]
    mqtt_tls = {"ca_file": str(tmp / "ca.pem"), "cert_file": str(gateway_cert),
                "key_file": str(gateway_key)}  # fmt: skip
    probe = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    probe.load_cert_chain(*(str(p) for p in paths[PROBE]))
    return tls, mqtt_tls, probe


@contextmanager
def site(tmp: Path) -> Iterator[Site]:
    """Start the rig and the broker for the residential configuration; stop them after."""
    config = residential()
    box = wallbox(config)
    wallbox_id = urlparse(box["endpoint"]).path.rstrip("/").rsplit("/", 1)[-1]
    modbus_port, opcua_port = free_port(), free_port()
    units = {d["kind"]: d["unit_id"] for d in config["devices"] if d["protocol"] == "sunspec"}
    rig_spec = {
        "pki_dir": str(tmp / "rig-pki"),
        "devices": [
            {"id": "pv", "type": "pv_legacy", "port": modbus_port, "unit_id": units["inverter"]},
            {"id": "battery", "type": "battery", "port": modbus_port,
             "unit_id": units["battery"]},
            {"id": wallbox_id, "type": "opcua_evse", "port": opcua_port,
             "users": {box["username"]: box["password"]}, "plugged_at_s": 0},
        ],
    }  # fmt: skip
    (tmp / "rig.yaml").write_text(yaml.safe_dump(rig_spec))
    tls, mqtt_tls, probe_tls = broker_pki(tmp, config["gateway"]["id"])
    broker = Mosquitto(tmp / "mosquitto", tls=tls).start()
    rig = Process([sys.executable, "-m", "hil", "--rig", str(tmp / "rig.yaml")], tmp / "rig.log")
    try:
        for port in (modbus_port, opcua_port):
            wait_port(port, 120)
        yield Site(tmp, modbus_port, opcua_port, wallbox_id, tmp / "rig-pki", broker.port,
                   mqtt_tls, probe_tls)  # fmt: skip
    finally:
        rig.stop(30)
        broker.stop()


def gateway_config(where: Site, state_dir: Path, *, opcua: bool) -> dict[str, Any]:
    """configs/residential.yaml pointed at the rig and the broker; nothing else changed."""
    config = residential()
    config["gateway"]["state_dir"] = str(state_dir)
    password = _secret(where.tmp / "mqtt.password", b"bench-password\n")
    config["mqtt"].update(
        host="127.0.0.1", port=where.broker_port, tls=where.mqtt_tls, password_file=str(password)
    )
    devices = []
    for device in config["devices"]:
        if device["protocol"] == "sunspec":
            device.update(host="127.0.0.1", port=where.modbus_port)
        elif not opcua:
            continue
        else:
            device["endpoint"] = (
                f"opc.tcp://127.0.0.1:{where.opcua_port}/derms-edge/hil/{where.wallbox_id}"
            )
            device["security"].update(
                certificate=str(where.rig_pki / "client-cert.der"),
                private_key=str(where.rig_pki / "client-key.pem"),
                server_certificate=str(where.rig_pki / f"server-{where.wallbox_id}-cert.der"),
            )
        devices.append(device)
    config["devices"] = devices
    return config


def daemon_command() -> list[str]:
    """The console script of this interpreter's environment (else the module)."""
    script = Path(sys.executable).with_name("derms-edge")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "derms_edge.cli"]


def log_times(log: Path, wall0: float) -> tuple[float | None, dict[str, float]]:
    """From the daemon's log: (gateway started, {device: first reading}), s after wall0."""
    started, reading = None, {}
    for line in log.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall0
        message = match[3]
        if match[2].endswith("runtime.gateway") and message.startswith("gateway ") and not started:
            started = at
        elif message.endswith(": reading"):
            reading.setdefault(message.removesuffix(": reading"), at)
    return started, reading


def one_run(where: Site, probe: MqttProbe, n: int, *, opcua: bool, env: dict[str, str]) -> Run:
    name = f"{'opcua' if opcua else 'sunspec'}-{n}"
    config = gateway_config(where, where.tmp / f"state-{name}", opcua=opcua)
    devices = [d["id"] for d in config["devices"]]
    path = where.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = where.tmp / f"{name}.log"
    run = Run()
    with log.open("wb") as out:
        wall0, t0 = time.time(), time.monotonic()
        daemon = subprocess.Popen(
            [*daemon_command(), "run", str(path)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            for device in devices:
                message = probe.wait_for(
                    telemetry_of(device, "ok"), timeout_s=TIMEOUT_S - (time.monotonic() - t0),
                    after=t0,
                )  # fmt: skip
                run.ok[device] = message.at - t0
            first = probe.wait_for(lambda m: m.topic.split("/")[-2] == "telemetry", 0.1, t0)
            run.first_any, run.first_quality = first.at - t0, first.json()["quality"]
        finally:
            daemon.terminate()
            daemon.wait(30)
    run.started, run.reading = log_times(log, wall0)
    return run


def telemetry_of(device: str, quality: str) -> Callable[[Message], bool]:
    def matches(message: Message) -> bool:
        kind, name = message.topic.split("/")[-2:]
        return kind == "telemetry" and name == device and message.json()["quality"] == quality

    return matches


def wall(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall time of a process from Popen to its exit, s."""
    t0 = time.monotonic()
    subprocess.run(argv, check=True, env=env)
    return time.monotonic() - t0


def floor(env: dict[str, str]) -> dict[str, float]:
    times = {"python": wall([sys.executable, "-c", "pass"], env)}
    for name, statement in IMPORTS.items():
        times[name] = wall([sys.executable, "-c", statement], env)
    return times


def seconds(values: Sequence[float | None]) -> str:
    """min-median-max, s; "-" when a run did not measure it."""
    known = [v for v in values if v is not None]
    if len(known) < len(values) or not known:
        return "-"
    return spread(known, ".2f")


def table(runs: dict[bool, list[Run]], floors: list[dict[str, float]]) -> list[str]:
    lines = [
        "| s after Popen, min-median-max | residential (PV, battery, OPC UA wallbox) "
        "| without the wallbox |",
        "|---|---|---|",
        f"| `python -c pass` | {seconds([f['python'] for f in floors])} | |",
        f"| `import derms_edge.cli` (the console script) | {seconds([f['cli'] for f in floors])} "
        "| |",
        f"| + `derms_edge.runtime.gateway` (what `run` imports) "
        f"| {seconds([f['opcua'] for f in floors])} (+ the OPC UA driver) "
        f"| {seconds([f['run'] for f in floors])} |",
    ]

    def row(label: str, pick: Callable[[Run], float | None]) -> str:
        cells = [seconds([pick(r) for r in runs[opcua]]) if runs.get(opcua) else "" for opcua in
                 (True, False)]  # fmt: skip
        return f"| {label} | {' | '.join(cells)} |"

    lines.append(row("gateway started (its first log line)", lambda r: r.started))
    for device in ("pv", "battery", "wallbox"):
        lines.append(row(f"`{device}`: first reading (log)", lambda r, d=device: r.reading.get(d)))
    lines.append(row("**first telemetry message**", lambda r: r.first_any))
    for device in ("pv", "battery", "wallbox"):
        lines.append(row(f"`{device}`: first `quality: ok`", lambda r, d=device: r.ok.get(d)))
    lines.append(row("**every device `ok`**", lambda r: max(r.ok.values()) if r.ok else None))
    return lines


def report(runs: dict[bool, list[Run]], floors: list[dict[str, float]], command: str) -> str:
    firsts = sorted({r.first_quality for rs in runs.values() for r in rs if r.first_quality})
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}`.",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
            "",
            "`derms-edge run` on `configs/residential.yaml` (telemetry every 10 s, polls every "
            "2 s) with its addresses pointed at the HIL rig: a PV inverter and a battery behind "
            "one Modbus TCP port, the OPC UA wallbox (Basic256Sha256 SignAndEncrypt, user and "
            "password); Mosquitto with TLS and client certificates. A fresh state directory "
            "per run; a subscriber on the telemetry topic connected before the daemon starts. "
            "Times are from just before Popen; the floor (a fresh interpreter, the daemon's "
            "imports) is measured in the same run. Bytecode cached, as installed; one start of "
            "each, not counted, before.",
            "",
            *table(runs, floors),
            "",
            f"Quality of the first telemetry message: {', '.join(firsts) or '-'}.",
            "",
        ]
    )


def main() -> int:
    top = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--runs", type=int, default=3)
    top.add_argument("--write", type=Path, help="replace (or add) its section in this file")
    args = top.parse_args()
    command = "python " + " ".join(["bench/startup_bench.py", *sys.argv[1:]])
    runs: dict[bool, list[Run]] = {True: [], False: []}
    floors = []
    with tempfile.TemporaryDirectory() as tmp_dir, site(Path(tmp_dir)) as where:
        probe = MqttProbe(where.broker_port, "derms/+/+/telemetry/+", tls=where.probe_tls)
        env = bytecode_env(Path(tmp_dir) / "pycache")
        try:
            floor(env)  # writes the bytecode
            for opcua in (True, False):  # the same, and warms up the rig: not counted
                one_run(where, probe, -1, opcua=opcua, env=env)
            for n in range(args.runs):
                floors.append(floor(env))
                for opcua in (True, False):
                    run = one_run(where, probe, n, opcua=opcua, env=env)
                    runs[opcua].append(run)
                    print(f"run {n + 1} {'with' if opcua else 'without'} OPC UA: {run}, "
                          f"floor {floors[-1]}", file=sys.stderr, flush=True)  # fmt: skip
        finally:
            probe.close()
    write_section(args.write, report(runs, floors, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
