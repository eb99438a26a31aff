"""``derms-edge run CONFIG``: run the gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from derms_edge.cli.common import EXIT_INVALID, EXIT_OK, add_mqtt_port, load_with_mqtt_port
from derms_edge.config.secrets import unreadable_secrets
from derms_edge.errors import ConfigError


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    run = commands.add_parser("run", help="run the gateway on a configuration file")
    run.add_argument("config", type=Path)
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_mqtt_port(run)
    run.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Load, set up logging, serve."""
    config = load_with_mqtt_port(args)
    if config is None:
        return EXIT_INVALID
    unreadable = unreadable_secrets(config)
    if unreadable:
        print(f"{args.config}: {len(unreadable)} problem(s):", file=sys.stderr)
        for problem in unreadable:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    logging.basicConfig(
        level=args.log_level or config.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if logging.getLogger().level > logging.DEBUG:
        # the gateway reports every device failure itself, once, in its own words
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        # asyncua logs a traceback a second for a dead session until the driver closes it
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        # one line per control wake-up is noise; its warnings still show
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    from derms_edge.runtime.gateway import serve

    try:
        asyncio.run(serve(config))
    except ConfigError as error:  # found at start: a listen address taken
        print(f"{args.config}: {len(error.problems)} problem(s):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK
