"""The ``derms-edge`` command: run, monitor, check-config, discover, asyncapi, hil."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from derms_edge import __version__
from derms_edge.config import Config, load_config
from derms_edge.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"{path}: {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


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
        lines.append(
            f"  {device.id:<16} {device.kind:<9} {device.protocol:<8} "
            f"{device.link} unit {device.unit_id:<3} every {device.poll_interval_s:g} s"
        )
    return "\n".join(lines)


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    print(f"{args.config}: valid")
    print(summary(config))
    return EXIT_OK


def _with_mqtt_port(config: Config, port: int | None) -> Config:
    if port is None:
        return config
    mqtt = config.mqtt.model_copy(update={"port": port})
    return config.model_copy(update={"mqtt": mqtt})


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    config = _with_mqtt_port(config, args.mqtt_port)
    logging.basicConfig(
        level=args.log_level or config.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # the gateway reports every device failure itself, once, in its own words
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        # one line per control step and event wake-up is noise; its warnings still show
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    from derms_edge.daemon import serve

    asyncio.run(serve(config))
    return EXIT_OK


def _monitor(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    from derms_edge.monitor import monitor

    return monitor(_with_mqtt_port(config, args.mqtt_port), args.seconds)


def _discover(args: argparse.Namespace) -> int:
    from derms_edge.scan import parse_unit_ids, run_scan

    try:
        unit_ids = parse_unit_ids(args.unit_ids)
    except ValueError as error:
        print(f"--unit-ids: {error}", file=sys.stderr)
        return EXIT_INVALID
    found = asyncio.run(run_scan(args.host, args.port, unit_ids, args.timeout, sys.stdout))
    return EXIT_OK if found else EXIT_FAILURE


def _asyncapi(args: argparse.Namespace) -> int:
    from derms_edge.northbound.asyncapi import DEFAULT_OUTPUT, main

    return main(output=args.output or DEFAULT_OUTPUT, check=args.check)


def _hil(rig_argv: list[str]) -> int:
    from hil.__main__ import main as hil_main

    return hil_main(rig_argv)


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(
        prog="derms-edge", description="DER device gateway and edge DERMS controller"
    )
    top.add_argument("--version", action="version", version=f"derms-edge {__version__}")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway on a configuration file")
    run.add_argument("config", type=Path)
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--mqtt-port", type=int, help="override mqtt.port of the file")
    run.set_defaults(func=_run)

    watch = commands.add_parser("monitor", help="show a gateway's live status and telemetry")
    watch.add_argument("config", type=Path)
    watch.add_argument("--mqtt-port", type=int, help="override mqtt.port of the file")
    watch.add_argument("--seconds", type=float, help="stop after this many seconds")
    watch.set_defaults(func=_monitor)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", type=Path)
    check.set_defaults(func=_check_config)

    discover = commands.add_parser("discover", help="scan a Modbus TCP address for SunSpec devices")
    discover.add_argument("--host", required=True)
    discover.add_argument("--port", type=int, default=502)
    discover.add_argument("--unit-ids", default="1", help="e.g. 1, 1-247 or 1,3,10-20")
    discover.add_argument(
        "--timeout", type=float, default=0.5, help="seconds to wait for each unit id"
    )
    discover.set_defaults(func=_discover)

    asyncapi = commands.add_parser(
        "asyncapi", help="write the AsyncAPI document of the MQTT contract from the payload models"
    )
    asyncapi.add_argument(
        "--check", action="store_true", help="only compare: exit 1 if the file is out of date"
    )
    asyncapi.add_argument("--output", type=Path, help="default: docs/asyncapi.yaml")
    asyncapi.set_defaults(func=_asyncapi)

    commands.add_parser(
        "hil", help="start the hardware-in-the-loop rig: derms-edge hil --help (= python -m hil)"
    )
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``derms-edge`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hil"]:
        return _hil(argv[1:])  # everything after `hil` is the rig's own command line
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
