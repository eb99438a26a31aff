"""``derms-edge check-config CONFIG``: validate a configuration file and summarise it."""

from __future__ import annotations

import argparse
from pathlib import Path

from derms_edge.cli.common import EXIT_INVALID, EXIT_OK, load
from derms_edge.config import Config, OpcUaDevice
from derms_edge.config.dso_models import PRESETS, party


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
    return "\n".join([*lines, *role_table(config)])


def role_table(config: Config) -> list[str]:
    """The roles resolved from ``control.dso_model`` and ``control.roles``: who holds each,
    its primacy and the control types it may send."""
    model = config.control.dso_model
    if model is None:
        lines = ["roles     (no control.dso_model)"]
    else:
        preset = PRESETS[model]
        lines = [
            f"roles     dso_model {model}: {preset.title}; DMO {preset.dmo}, DERM {preset.derm}"
        ]
    lines.append(f"  {'role':<12} {'primacy':>7}  {'held by':<34} allowed control types")
    for name, role in sorted(config.control.roles.items(), key=lambda r: (r[1].primacy, r[0])):
        allowed = ", ".join(sorted(role.allow))
        lines.append(f"  {name:<12} {role.primacy:>7}  {party(model, name):<34} {allowed}")
    return lines
