"""``derms-edge check-config CONFIG``: validate a configuration file and summarise it."""

from __future__ import annotations

import argparse
from pathlib import Path

from derms_edge.cli.common import EXIT_INVALID, EXIT_OK, load
from derms_edge.config import Config, OpcUaDevice


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)
    check.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Every problem with its place, or "valid" and a summary."""
    config = load(args.config)
    if config is None:
        return EXIT_INVALID
    print(f"{args.config}: valid")
    print(summary(config))
    return EXIT_OK


def summary(config: Config) -> str:
    """A one-screen summary of a valid configuration."""
    mqtt = config.mqtt
    lines = [
        f"gateway   {config.gateway.id} (state in {config.gateway.state_dir})",
        f"mqtt      {mqtt.host}:{mqtt.port} as {mqtt.username or 'anonymous'}, "
        f"topics under {mqtt.prefix}/v1/{config.gateway.id}"
        + (f", groups {', '.join(mqtt.groups)}" if mqtt.groups else ""),
        f"telemetry every {config.telemetry.interval_s:g} s, QoS {config.telemetry.qos}",
        f"devices   {len(config.devices)}",
    ]
    for device in config.devices:
        where = (
            device.link
            if isinstance(device, OpcUaDevice)
            else f"{device.link} unit {device.unit_id}"
        )
        lines.append(
            f"  {device.id:<16} {device.kind:<9} {device.protocol:<8} "
            f"{where} every {device.poll_interval_s:g} s"
        )
    return "\n".join(lines)
