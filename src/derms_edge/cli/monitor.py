"""``derms-edge monitor CONFIG``: a live view of a gateway's status, telemetry, responses and
controls in force on MQTT: a table redrawn in place on a terminal, a line per message in logs
and pipes (``--plain``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from derms_edge.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    add_mqtt_identity,
    add_mqtt_port,
    load_with_mqtt_port,
)
from derms_edge.cli.follow import Follower
from derms_edge.cli.view import GatewayView
from derms_edge.config import Config
from derms_edge.northbound.topics import Topics

COLUMNS = ("w", "var", "v", "hz", "a", "soc_pct", "state")
REFRESH_S = 1.0
"""How often the live table is redrawn."""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    watch = commands.add_parser("monitor", help="show a gateway's live status and telemetry")
    watch.add_argument("config", type=Path)
    add_mqtt_port(watch)
    add_mqtt_identity(watch)
    watch.add_argument("--seconds", type=float, help="stop after this many seconds")
    watch.add_argument(
        "--plain",
        action="store_true",
        help="a line per message, as for logs and pipes (the default when not on a terminal)",
    )
    watch.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Follow the gateway's messages until interrupted or --seconds."""
    config = load_with_mqtt_port(args)
    if config is None:
        return EXIT_INVALID
    return monitor(config, args.seconds, plain=True if args.plain else None)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def line(topic: str, payload: dict[str, Any]) -> str:
    """One readable line for a status, telemetry, response or active-controls message."""
    ts = payload.get("ts", "")
    if topic.endswith("/status"):
        state = "online" if payload.get("online") else "OFFLINE"
        quality = payload.get("device_quality") or {}
        devices = ", ".join(f"{d} {quality.get(d, '?')}" for d in payload.get("devices", []))
        return (
            f"{ts}  gateway {state}, devices: {devices}; buffered {payload.get('buffered', 0)}, "
            f"dropped {payload.get('dropped', 0)}"
        )
    if topic.endswith("/responses"):
        why = " ".join(str(payload[k]) for k in ("reason", "detail") if payload.get(k))
        return f"{ts}  event {payload.get('mrid')} {payload.get('status')} {why}".rstrip()
    if topic.endswith("/active"):
        controls = [
            f"{device}.{name}={_fmt(held.get('value'))} ({held.get('mrid') or held.get('source')})"
            for device, values in sorted(payload.get("devices", {}).items())
            for name, held in sorted(values.items())
        ]
        return f"{ts}  active: {', '.join(controls) or 'none'}"
    cells = "  ".join(f"{name}={_fmt(payload.get(name))}" for name in COLUMNS)
    return (
        f"{payload.get('ts', '')}  #{payload.get('seq')}  {payload.get('device', '?'):<8} "
        f"{payload.get('quality', '?'):<7}  {cells}"
    )


def monitor(
    config: Config, seconds: float | None, out: TextIO = sys.stdout, *, plain: bool | None = None
) -> int:
    """Show status and telemetry until interrupted or ``seconds`` have passed: a live table
    on a terminal, a line per message otherwise (or with ``plain``)."""
    plain = not out.isatty() if plain is None else plain
    view = GatewayView(Topics(config.mqtt.prefix, config.gateway.id))
    deadline = None if seconds is None else time.monotonic() + seconds
    with Follower(config, view.filters()) as follower:
        try:
            if plain:
                _lines(follower, view, deadline, out)
            else:
                _table(follower, view, deadline, out)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _lines(follower: Follower, view: GatewayView, deadline: float | None, out: TextIO) -> None:
    """A line per message, as it comes (for logs and pipes)."""
    while deadline is None or time.monotonic() < deadline:
        message = follower.get(0.5)
        if message is None:
            continue
        topic, payload = message
        if topic.startswith(view.topics.capability("")):
            continue
        try:
            print(line(topic, json.loads(payload)), file=out, flush=True)
        except ValueError:
            print(f"{topic}: not JSON: {payload[:80]!r}", file=out, flush=True)


def _table(follower: Follower, view: GatewayView, deadline: float | None, out: TextIO) -> None:
    """The gateway's screen with the latest responses, redrawn in place every second."""
    from rich.console import Console  # rich loads for the table only
    from rich.live import Live

    from derms_edge.cli.screen import screen

    console = Console(file=out, highlight=False)
    with Live(console=console, auto_refresh=False) as live:
        while deadline is None or time.monotonic() < deadline:
            until = time.monotonic() + REFRESH_S
            for message in follower.drain(until if deadline is None else min(until, deadline)):
                view.take(*message)
            live.update(screen(view, follower.broker, responses=True), refresh=True)
