"""The ``derms-edge`` command: one module per subcommand, each adding itself to the parser.

run, check-config, discover, init, send, monitor, status, doctor, asyncapi, hil (the rig's own
command line), keys, acl.

A command named on the command line loads its own module only: `derms-edge run` does not
carry the other commands' modules (their parsers, the ACL and Home Assistant tables, the
doctor's checks) for the life of the daemon. `--help`, `--version` and a name that is not a
command load them all, so the parser lists every command as before.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from derms_edge import __version__

COMMANDS = (
    "run",
    "monitor",
    "status",
    "doctor",
    "check_config",
    "discover",
    "init",
    "send",
    "asyncapi",
    "hil",
    "keys",
    "acl",
)
"""The commands' modules in derms_edge.cli, in the order the help lists them; each module's
command is its name with '-' for '_' (check_config: check-config)."""


def command_module(name: str) -> ModuleType:
    """The module of command module ``name`` (one of COMMANDS), imported now."""
    return importlib.import_module(f"{__name__}.{name}")


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line interface: every command, or the one in module ``only``."""
    top = argparse.ArgumentParser(
        prog="derms-edge", description="DER device gateway and edge DERMS controller"
    )
    top.add_argument("--version", action="version", version=f"derms-edge {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    for name in COMMANDS if only is None else (only,):
        command_module(name).add(commands)
    return top


def chosen(argv: list[str]) -> str | None:
    """The module of the command ``argv`` starts with, exactly as spelled on the command
    line; None for an option (``--help``) or a name that is no command."""
    if not argv:
        return None
    name = argv[0].replace("-", "_")
    return name if name in COMMANDS and argv[0] == name.replace("_", "-") else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``derms-edge`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["hil"]:
        # everything after `hil` is the rig's own command line
        hil_main: int = command_module("hil").main(argv[1:])
        return hil_main
    args = parser(only=chosen(argv)).parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code
