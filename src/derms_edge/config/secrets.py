"""Secret files the configuration names, checked before they are used: a password or private
key that anyone but its owner and group can read is refused, with the fix.

The hardened unit (packaging/derms-edge.service) runs as user and group derms-edge and reads
/etc/derms-edge as that group, so a secret there is ``root:derms-edge`` with mode 640.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

from derms_edge.config.file import Config
from derms_edge.config.ocpp import OcppDevice
from derms_edge.config.opcua import OpcUaDevice

SERVICE_GROUP = "derms-edge"
"""The group the service reads its configuration and secrets as."""


def secret_files(config: Config) -> Iterator[tuple[str, Path]]:
    """Every secret file the configuration names: (where in the configuration, path)."""
    mqtt = config.mqtt
    if mqtt.password_file is not None:
        yield "mqtt.password_file", mqtt.password_file
    if mqtt.tls is not None and mqtt.tls.key_file is not None:
        yield "mqtt.tls.key_file", mqtt.tls.key_file
    for index, device in enumerate(config.devices):
        if isinstance(device, OpcUaDevice) and device.security.private_key is not None:
            yield f"devices[{index}].security.private_key", device.security.private_key
        if isinstance(device, OcppDevice) and device.password_file is not None:
            yield f"devices[{index}].password_file", device.password_file
    if config.ocpp is not None and config.ocpp.tls is not None:
        yield "ocpp.tls.key_file", config.ocpp.tls.key_file


def exposed_secrets(config: Config) -> list[str]:
    """One line per secret file that others than its owner and group may read."""
    problems = []
    for where, path in secret_files(config):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # unreadable_secrets says so
        if mode & stat.S_IRWXO:
            problems.append(
                f"{where}: {path} is readable by others (mode {stat.S_IMODE(mode):04o}); a "
                f"secret is for its owner and group only: chmod 640 {path}; "
                f"chown root:{SERVICE_GROUP} {path}"
            )
    return problems


def unreadable_secrets(config: Config) -> list[str]:
    """One line per secret file this process cannot read."""
    problems = []
    for where, path in secret_files(config):
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            problems.append(f"{where}: {path} cannot be read: {error.strerror or error}")
    return problems


def inline_secrets(config: Config) -> list[str]:
    """Where the configuration file itself holds a secret (better kept in a file of its own)."""
    found = []
    if config.mqtt.password is not None:
        found.append("mqtt.password")
    if config.telemetry.influxdb is not None:
        found.append("telemetry.influxdb.token")
    found += [
        f"devices[{i}].password"
        for i, device in enumerate(config.devices)
        if isinstance(device, OpcUaDevice) and device.password is not None
    ]
    return found
