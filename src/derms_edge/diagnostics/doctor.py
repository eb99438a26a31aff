"""Every check of ``derms-edge doctor`` in the order an installer fixes things: the
configuration, the broker, the clock, the state directory, serial ports, devices, secrets,
the service. The broker and the devices are asked at the same time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from derms_edge.config import load_config
from derms_edge.diagnostics import files, system
from derms_edge.diagnostics.broker import broker
from derms_edge.diagnostics.devices import devices
from derms_edge.diagnostics.result import Check
from derms_edge.diagnostics.system import UNIT, Run
from derms_edge.errors import ConfigError


def examine(
    path: Path,
    *,
    mqtt_port: int | None = None,
    run: Run | None = None,
    broker_timeout_s: float = 5.0,
) -> list[Check]:
    """Every check's result for the configuration file ``path`` (with another broker port
    than the file's when ``mqtt_port``); only the first when the file is not valid (nothing
    else can be checked without it). ``run`` runs the system tools (default
    `system.run_tool`)."""
    run = run or system.run_tool
    try:
        config = load_config(path)
    except ConfigError as error:
        return [
            Check.failed(
                f"configuration {path}: {len(error.problems)} problem(s)",
                "; ".join(error.problems) + f" (derms-edge check-config {path} lists them)",
            )
        ]
    if mqtt_port is not None:
        config = config.model_copy(
            update={"mqtt": config.mqtt.model_copy(update={"port": mqtt_port})}
        )
    serial_in_use = (run(["systemctl", "is-active", UNIT]) or "").strip() == "active"

    async def remote() -> tuple[list[Check], list[Check]]:
        return await asyncio.gather(
            asyncio.to_thread(broker, config.mqtt, broker_timeout_s),
            devices(config, serial_in_use=serial_in_use),
        )

    to_broker, to_devices = asyncio.run(remote())
    user = files.service_user()
    return [
        Check.passed(f"configuration {path} valid"),
        *to_broker,
        system.clock(run),
        *files.state_directory(config, user, system.working_directory(run)),
        *files.serial_ports(config, user),
        *to_devices,
        *files.secrets(config, path),
        system.unit(run),
    ]
