"""``derms-edge hil ...``: the hardware-in-the-loop rig (the same as ``python -m hil``)."""

from __future__ import annotations

import argparse


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line; its arguments are the rig's own (see `main`)."""
    commands.add_parser(
        "hil",
        help="the hardware-in-the-loop rig: serve it (derms-edge hil --rig FILE), or run a "
        "scenario against the gateway (derms-edge hil run SCENARIO --report DIR [--speed N])",
    )


def main(rig_argv: list[str]) -> int:
    """Run the rig with everything after ``hil`` on the command line."""
    from hil.__main__ import main as hil_main

    return hil_main(rig_argv)
