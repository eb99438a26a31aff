"""Where a dispatch's time goes: the path from an MQTT publish to the register write, cut
into stages by timestamps taken inside the real daemon.

    python bench/dispatch_trace.py [--count 300] [--nodelay]

The set-up of bench/dispatch_bench.py (a real Mosquitto, the rig's IEEE 1547 inverter in
this process, the daemon in its own), but the daemon runs under a wrapper that stamps, on
the system's monotonic clock (the same in both processes), the moment its event loop starts
reading the MQTT socket, the control handed to the gateway, the control loop's decision
(start and end), the coordinator's driver write and the Modbus request; the rig stamps the
request's arrival. Printed: the median and p90 of each stage over the dispatches, and of
the whole. The wrapper only wraps methods (no change to what they do); each stamp costs
about a microsecond.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(SCRIPT.parents[1]))

STAGES = (
    ("publish", "read", "broker to the gateway's socket being read"),
    ("read", "inbound", "paho reads the packet, to the gateway's handler"),
    ("inbound", "decide", "validation and the inbox, to the control loop taking it"),
    ("decide", "decided", "the controller's decision, the coordinators commanded"),
    ("decided", "driver", "to the coordinator's driver write"),
    ("driver", "request", "planning and encoding, to the Modbus request"),
    ("request", "arrived", "pymodbus, the socket and the rig, to the device"),
)


def wrap(
    owner: type, name: str, before: Callable[..., None], after: Callable[[], None] | None = None
) -> None:
    """Call ``before(*args)`` at every call of ``owner.name`` (sync or async), then it, then
    ``after()`` once it returned."""
    original = getattr(owner, name)
    if inspect.iscoroutinefunction(original):

        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            before(*args)
            return await original(*args, **kwargs)

        setattr(owner, name, traced_async)
    else:

        def traced(*args: Any, **kwargs: Any) -> Any:
            before(*args)
            result = original(*args, **kwargs)
            if after is not None:
                after()
            return result

        setattr(owner, name, traced)


def daemon(config: str, trace: str) -> int:
    """Run ``derms-edge run CONFIG`` with stamps; write them to TRACE at exit."""
    from derms_edge.cli import main as cli_main
    from derms_edge.devices.modbus import ModbusLink
    from derms_edge.devices.sunspec.driver import SunSpecDriver
    from derms_edge.northbound.mqtt import MqttSession
    from derms_edge.runtime.control_loop import ControlLoop
    from derms_edge.runtime.gateway import Gateway

    stamps: list[tuple[str, float]] = []
    last_read = [0.0]

    def on_read(*_: Any) -> None:
        last_read[0] = time.monotonic()

    def on_inbound(_gateway: Any, topic: str, *_: Any) -> None:
        if topic.endswith("/controls/dso"):
            stamps.append(("read", last_read[0]))
            stamps.append(("inbound", time.monotonic()))

    def stamp(name: str) -> Callable[..., None]:
        return lambda *_: stamps.append((name, time.monotonic()))

    wrap(MqttSession, "_readable", on_read)
    wrap(Gateway, "_inbound", on_inbound)
    wrap(ControlLoop, "_decide", stamp("decide"), stamp("decided"))
    wrap(SunSpecDriver, "write", stamp("driver"))
    wrap(ModbusLink, "write", stamp("request"))
    try:
        return cli_main(["run", config])
    finally:
        Path(trace).write_text(json.dumps(stamps))


def dispatches(
    stamps: list[tuple[str, float]], arrivals: list[float], publishes: list[float]
) -> list[dict[str, float]]:
    """Each dispatch's stamps: the first of each name after its publish, before its arrival."""
    result = []
    for t0, t_end in zip(publishes, arrivals, strict=True):
        found = {"publish": t0, "arrived": t_end}
        for name, at in stamps:
            if t0 <= at <= t_end and name not in found:
                found[name] = at
        if missing := [n for _, n, _ in STAGES if n not in found]:
            print(f"a dispatch lacks {missing}: skipped", file=sys.stderr)
            continue
        result.append(found)
    return result


def run(count: int, nodelay: bool) -> None:
    from bench.dispatch_bench import measure
    from tests.support.servers import Process

    trace = Path(tempfile.mkdtemp(prefix="dispatch-trace-")) / "trace.json"

    def traced_daemon(config: Path, log: Path) -> Process:
        return Process(
            [sys.executable, str(SCRIPT), "--daemon", str(config), str(trace)],
            log,
            env={"PYTHONUNBUFFERED": "1"},
        )

    measured = measure(count, nodelay=nodelay, daemon=traced_daemon)
    arrivals = [t0 + latency for t0, latency in zip(measured.sent, measured.latencies, strict=True)]
    rows = dispatches([(n, t) for n, t in json.loads(trace.read_text())], arrivals, measured.sent)
    print(f"{len(rows)} dispatches traced, set_tcp_nodelay {'true' if nodelay else 'false'}")
    print("| stage | median ms | p90 ms |")
    print("|---|---|---|")
    for start, end, label in STAGES:
        print(row(label, [(r[end] - r[start]) * 1e3 for r in rows]))
    print(row("**publish to arrival**", [(r["arrived"] - r["publish"]) * 1e3 for r in rows]))
    print(row("floor: MQTT publish-to-receive", [s * 1e3 for s in measured.mqtt]))
    print(row("floor: one raw pymodbus write", [s * 1e3 for s in measured.modbus]))


def row(label: str, spans_ms: list[float]) -> str:
    ordered = sorted(spans_ms)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"| {label} | {statistics.median(ordered):.3f} | {p90:.3f} |"


def main() -> int:
    if sys.argv[1:2] == ["--daemon"]:
        return daemon(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--nodelay", action="store_true", help="Mosquitto set_tcp_nodelay true")
    args = parser.parse_args()
    run(args.count, args.nodelay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
