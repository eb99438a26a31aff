"""``derms-edge check-config CONFIG``: validate a configuration file and summarise it."""

from __future__ import annotations

import argparse
import ipaddress
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
    for warning in signing_warnings(config):
        print(f"warning: {warning}")
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


def signing_warnings(config: Config) -> list[str]:
    """What makes signed controls (control.require_signed) weaker than they look."""
    control = config.control
    if not control.require_signed:
        if _loopback(config.mqtt.host):
            return []
        return [
            f"control.require_signed is false and the broker {config.mqtt.host} is not on this "
            "machine: whoever may publish on its controls topics commands the devices "
            "(set require_signed: true and give each role its keys)"
        ]
    return [
        f"control.roles.{name} has no keys: with control.require_signed, nothing it sends "
        "is applied"
        for name, role in control.roles.items()
        if not role.keys
    ]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
