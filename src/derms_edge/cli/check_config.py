"""``derms-edge check-config CONFIG``: validate a configuration file and summarise it."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from pathlib import Path

from derms_edge.cli.common import EXIT_INVALID, EXIT_OK, load
from derms_edge.config import Config, ModbusDevice
from derms_edge.config.dso_models import PRESETS, party
from derms_edge.config.secrets import SERVICE_GROUP, inline_secrets, unreadable_secrets


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
    for warning in [*transport_warnings(config, args.config), *signing_warnings(config)]:
        print(f"warning: {warning}")
    return EXIT_OK


def summary(config: Config) -> str:
    """A one-screen summary of a valid configuration."""
    mqtt = config.mqtt
    lines = [
        f"gateway   {config.gateway.id} (state in {config.gateway.state_dir})",
        f"mqtt      {mqtt.host}:{mqtt.port} {'over TLS' if mqtt.tls else 'in clear'} "
        f"as {mqtt.username or 'anonymous'}, "
        f"topics under {mqtt.prefix}/v1/{config.gateway.id}"
        + (f", groups {', '.join(mqtt.groups)}" if mqtt.groups else ""),
        f"telemetry every {config.telemetry.interval_s:g} s, QoS {config.telemetry.qos}",
        f"devices   {len(config.devices)}",
    ]
    for device in config.devices:
        where = (
            f"{device.link} unit {device.unit_id}"
            if isinstance(device, ModbusDevice)
            else device.link
        )
        lines.append(
            f"  {device.id:<16} {device.kind:<9} {device.protocol:<8} "
            f"{where} every {device.poll_interval_s:g} s"
        )
    return "\n".join([*lines, *role_table(config)])


def transport_warnings(config: Config, path: Path) -> list[str]:
    """What exposes the link to the broker or its secrets."""
    warnings = [f"{problem} (here; run needs it)" for problem in unreadable_secrets(config)]
    if config.mqtt.tls is None and not _loopback(config.mqtt.host):
        warnings.append(
            f"the broker {config.mqtt.host} is not on this machine and mqtt.tls is not set: "
            "telemetry, controls and the password cross the network in clear (give mqtt.tls, "
            "port 8883)"
        )
    inline = inline_secrets(config)
    if inline and path.stat().st_mode & stat.S_IRWXO:
        warnings.append(
            f"{path} holds {', '.join(inline)} and is readable by others: chmod 640 {path}; "
            f"chown root:{SERVICE_GROUP} {path} (or keep the broker password in "
            "mqtt.password_file)"
        )
    return warnings


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
