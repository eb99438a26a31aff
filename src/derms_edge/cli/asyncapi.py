"""``derms-edge asyncapi``: write (or check) the AsyncAPI document of the MQTT contract."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    asyncapi = commands.add_parser(
        "asyncapi", help="write the AsyncAPI document of the MQTT contract from the payload models"
    )
    asyncapi.add_argument(
        "--check", action="store_true", help="only compare: exit 1 if the file is out of date"
    )
    asyncapi.add_argument("--output", type=Path, help="default: docs/asyncapi.yaml")
    asyncapi.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Generate from the payload models; write, or compare with what is there."""
    from derms_edge.northbound.asyncapi import DEFAULT_OUTPUT
    from derms_edge.northbound.asyncapi import main as generate

    return generate(output=args.output or DEFAULT_OUTPUT, check=args.check)
