"""``derms-edge discover``: scan a Modbus TCP address for SunSpec devices, or browse an
OPC UA server, and print a configuration to start from."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from urllib.parse import urlparse

from derms_edge.cli.common import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, quiet


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    discover = commands.add_parser(
        "discover",
        help="scan a Modbus TCP address for SunSpec devices, or browse an OPC UA server",
    )
    discover.add_argument("--host", help="Modbus TCP: the address to scan")
    discover.add_argument("--port", type=int, default=502)
    discover.add_argument("--unit-ids", default="1", help="e.g. 1, 1-247 or 1,3,10-20")
    discover.add_argument(
        "--base",
        type=int,
        action="append",
        default=[],
        help="a further address of the SunS marker to try after 40000, 0 and 50000, as a "
        "device's manual gives it (e.g. 4096); repeatable",
    )
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
    discover.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Scan a Modbus TCP address, or browse an OPC UA server."""
    opcua_only = ("username", "password", "security", "certificate", "private_key",
                  "server_certificate", "mode")  # fmt: skip
    if args.opcua is not None:
        if args.base:
            print("discover: --base applies to Modbus (--host) only", file=sys.stderr)
            return EXIT_INVALID
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
    from derms_edge.devices.sunspec.scan import bases_to_try, parse_unit_ids, run_scan

    try:
        unit_ids = parse_unit_ids(args.unit_ids)
    except ValueError as error:
        print(f"--unit-ids: {error}", file=sys.stderr)
        return EXIT_INVALID
    try:
        bases = bases_to_try(args.base)
    except ValueError as error:
        print(f"--base: {error}", file=sys.stderr)
        return EXIT_INVALID
    timeout = 0.5 if args.timeout is None else args.timeout
    found = asyncio.run(run_scan(args.host, args.port, unit_ids, timeout, sys.stdout, bases=bases))
    return EXIT_OK if found else EXIT_FAILURE


def _discover_opcua(args: argparse.Namespace) -> int:
    """Browse an OPC UA server: its variables and a configuration skeleton."""
    from pydantic import ValidationError

    from derms_edge.config import OpcUaSecurity
    from derms_edge.schema import problems

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
        for problem in problems(error):
            message = problem.partition(": ")[2].replace("_", "-")
            print(f"discover: --security: {message}", file=sys.stderr)
        return EXIT_INVALID
    from derms_edge.devices.opcua.browse import discover
    from derms_edge.devices.opcua.connection import Target

    # asyncua logs what it meets on the way (revised timeouts, closed sockets); discover
    # reports the outcome itself
    timeout = 5.0 if args.timeout is None else args.timeout
    target = Target("discover", args.opcua, security, args.username, args.password, timeout)
    with quiet({"asyncua": logging.CRITICAL}):
        return asyncio.run(discover(target))
