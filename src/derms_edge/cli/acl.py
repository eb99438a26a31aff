"""``derms-edge acl CONFIG``: print the broker's access rules for this gateway (Mosquitto)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from derms_edge.cli.common import EXIT_INVALID, EXIT_OK, load
from derms_edge.northbound.acl import mosquitto_acl


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    acl = commands.add_parser("acl", help="print a Mosquitto ACL file for this gateway")
    acl.add_argument("config", type=Path)
    acl.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """The ACL on standard output; what is missing on standard error."""
    config = load(args.config)
    if config is None:
        return EXIT_INVALID
    try:
        text = mosquitto_acl(config, str(args.config))
    except ValueError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(text)
    return EXIT_OK
