"""``derms-edge monitor CONFIG``: a live view of a gateway's status, telemetry, responses and
controls in force on MQTT."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as paho

from derms_edge.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    add_mqtt_identity,
    add_mqtt_port,
    load_with_mqtt_port,
)
from derms_edge.config import Config
from derms_edge.northbound.mqtt import new_client
from derms_edge.northbound.topics import Topics

COLUMNS = ("w", "var", "v", "hz", "a", "soc_pct", "state")


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    watch = commands.add_parser("monitor", help="show a gateway's live status and telemetry")
    watch.add_argument("config", type=Path)
    add_mqtt_port(watch)
    add_mqtt_identity(watch)
    watch.add_argument("--seconds", type=float, help="stop after this many seconds")
    watch.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Follow the gateway's messages until interrupted or --seconds."""
    config = load_with_mqtt_port(args)
    if config is None:
        return EXIT_INVALID
    return monitor(config, args.seconds)


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


def monitor(config: Config, seconds: float | None, out: TextIO = sys.stdout) -> int:
    """Print status and telemetry until interrupted or ``seconds`` have passed."""
    topics = Topics(config.mqtt.prefix, config.gateway.id)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = new_client(config.mqtt)

    def on_connect(c: paho.Client, *_: Any) -> None:
        filters = [topics.status, topics.telemetry("+"), topics.responses, topics.active]
        c.subscribe([(f, 1) for f in filters])

    client.on_connect = on_connect
    client.on_message = lambda _c, _u, m: inbox.put((m.topic, bytes(m.payload)))
    client.connect_async(config.mqtt.host, config.mqtt.port)
    client.loop_start()
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                topic, payload = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                print(line(topic, json.loads(payload)), file=out, flush=True)
            except ValueError:
                print(f"{topic}: not JSON: {payload[:80]!r}", file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return EXIT_OK
