"""The ``derms-edge`` command: one module per subcommand, each adding itself to the parser.

run, check-config, discover, init, send, monitor, status, doctor, asyncapi, hil (the rig's own
command line), keys, acl.
"""

from __future__ import annotations

import argparse
import sys

from derms_edge import __version__
from derms_edge.cli import (
    acl,
    asyncapi,
    check_config,
    discover,
    doctor,
    hil,
    init,
    keys,
    monitor,
    run,
    send,
    status,
)

COMMANDS = (
    run,
    monitor,
    status,
    doctor,
    check_config,
    discover,
    init,
    send,
    asyncapi,
    hil,
    keys,
    acl,
)


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(
        prog="derms-edge", description="DER device gateway and edge DERMS controller"
    )
    top.add_argument("--version", action="version", version=f"derms-edge {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``derms-edge`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hil"]:
        return hil.main(argv[1:])  # everything after `hil` is the rig's own command line
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code
