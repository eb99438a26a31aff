"""The ``derms-edge`` command: run, monitor, send, check-config, discover, asyncapi, hil."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from urllib.parse import urlparse

from derms_edge import __version__
from derms_edge.config import Config, OpcUaDevice, load_config
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
        # asyncua logs a traceback a second for a dead session until the driver closes it
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
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
    opcua_only = ("username", "password", "security", "certificate", "private_key",
                  "server_certificate", "mode")  # fmt: skip
    if args.opcua is not None:
        if args.host is not None:
            print("discover: give --host (Modbus TCP) or --opcua, not both", file=sys.stderr)
            return EXIT_INVALID
        return _discover_opcua(args)
    if args.host is None:
        print("discover: give --host (Modbus TCP) or --opcua (OPC UA endpoint)", file=sys.stderr)
        return EXIT_INVALID
    given = [f"--{k.replace('_', '-')}" for k in opcua_only if getattr(args, k) is not None]
    if given:
        print(f"discover: {', '.join(given)} apply to --opcua only", file=sys.stderr)
        return EXIT_INVALID
    from derms_edge.scan import parse_unit_ids, run_scan

    try:
        unit_ids = parse_unit_ids(args.unit_ids)
    except ValueError as error:
        print(f"--unit-ids: {error}", file=sys.stderr)
        return EXIT_INVALID
    timeout = 0.5 if args.timeout is None else args.timeout
    found = asyncio.run(run_scan(args.host, args.port, unit_ids, timeout, sys.stdout))
    return EXIT_OK if found else EXIT_FAILURE


def _discover_opcua(args: argparse.Namespace) -> int:
    """Browse an OPC UA server: its variables and a configuration skeleton."""
    from pydantic import ValidationError

    from derms_edge.config import OpcUaSecurity

    endpoint = urlparse(args.opcua)
    if endpoint.scheme != "opc.tcp" or not endpoint.hostname:
        print(f"--opcua: {args.opcua!r} is not opc.tcp://host[:port][/path]", file=sys.stderr)
        return EXIT_INVALID
    if args.password is not None and args.username is None:
        print("discover: --password needs --username", file=sys.stderr)
        return EXIT_INVALID
    given = {
        key: value
        for key, value in (
            ("policy", args.security),
            ("mode", args.mode),
            ("certificate", args.certificate),
            ("private_key", args.private_key),
            ("server_certificate", args.server_certificate),
        )
        if value is not None
    }
    try:
        security = OpcUaSecurity.model_validate(given)
    except ValidationError as error:
        for item in error.errors(include_url=False):
            message = item["msg"].removeprefix("Value error, ").replace("_", "-")
            print(f"discover: --security: {message}", file=sys.stderr)
        return EXIT_INVALID
    from derms_edge.devices.opcua.browse import discover
    from derms_edge.devices.opcua.connection import Target

    # asyncua logs what it meets on the way (revised timeouts, closed sockets); discover
    # reports the outcome itself
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    timeout = 5.0 if args.timeout is None else args.timeout
    target = Target("discover", args.opcua, security, args.username, args.password, timeout)
    return asyncio.run(discover(target))


def _send(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    from derms_edge.northbound.commands import Invalid
    from derms_edge.send import build_event, send

    devices = args.devices.split(",") if args.devices else None
    event = build_event(args.control, duration_s=args.duration_s, devices=devices, mrid=args.mrid)
    if isinstance(event, Invalid):
        print(f"send: not sent: {event.detail}", file=sys.stderr)
        return EXIT_INVALID
    config = _with_mqtt_port(config, args.mqtt_port)
    return send(config, args.role, event, wait_s=args.wait_s)


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

    discover = commands.add_parser(
        "discover",
        help="scan a Modbus TCP address for SunSpec devices, or browse an OPC UA server",
    )
    discover.add_argument("--host", help="Modbus TCP: the address to scan")
    discover.add_argument("--port", type=int, default=502)
    discover.add_argument("--unit-ids", default="1", help="e.g. 1, 1-247 or 1,3,10-20")
    discover.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for an answer (default 0.5 per Modbus unit id, 5 for OPC UA)",
    )
    opcua = discover.add_argument_group("OPC UA")
    opcua.add_argument("--opcua", metavar="ENDPOINT", help="opc.tcp://host:port/path to browse")
    opcua.add_argument("--username")
    opcua.add_argument("--password")
    opcua.add_argument("--security", choices=["None", "Basic256Sha256"], help="default None")
    opcua.add_argument("--mode", choices=["Sign", "SignAndEncrypt"], help="default SignAndEncrypt")
    opcua.add_argument("--certificate", type=Path, help="the gateway's certificate (DER/PEM)")
    opcua.add_argument("--private-key", type=Path, help="its private key (PEM/DER)")
    opcua.add_argument(
        "--server-certificate", type=Path, help="refuse a server presenting another certificate"
    )
    discover.set_defaults(func=_discover)

    sender = commands.add_parser(
        "send", help="publish a control event as a role, and print the gateway's responses"
    )
    sender.add_argument("config", type=Path, help="the gateway's configuration (broker, topics)")
    sender.add_argument("--role", default="dso", help="the role to send as (default: dso)")
    sender.add_argument(
        "--control", required=True, help="the control object, JSON: '{\"evse_max_w\": 4200}'"
    )
    sender.add_argument("--devices", help="comma-separated device ids (default: every device)")
    sender.add_argument("--duration-s", type=float, default=3600.0, help="default: 3600")
    sender.add_argument("--mrid", help="the event's id (default: a new one)")
    sender.add_argument("--wait-s", type=float, default=10.0, help="wait this long for answers")
    sender.add_argument("--mqtt-port", type=int, help="override mqtt.port of the file")
    sender.set_defaults(func=_send)

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
