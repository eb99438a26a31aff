"""``derms-edge doctor CONFIG``: a checklist of what the gateway needs on this machine, each
item ✓ (fine), ! (a warning) or ✗ (wrong) with what to do. Exit status 1 when an item is ✗."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from derms_edge.cli.common import EXIT_FAILURE, EXIT_OK, add_mqtt_port, quiet
from derms_edge.diagnostics.result import Check, Mark

if TYPE_CHECKING:  # rich and the checks load when doctor runs, not with every command
    from rich.text import Text

STYLES = {Mark.PASS: "green", Mark.WARN: "yellow", Mark.FAIL: "bold red"}


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    doctor = commands.add_parser(
        "doctor", help="check what the gateway needs here: broker, clock, disk, ports, devices"
    )
    doctor.add_argument("config", type=Path)
    add_mqtt_port(doctor)
    doctor.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the checks, print the checklist."""
    from rich.console import Console

    from derms_edge.diagnostics.doctor import examine

    # the device libraries log what doctor reports itself
    with quiet({"asyncua": logging.CRITICAL, "pymodbus": logging.CRITICAL}):
        checks = examine(args.config, mqtt_port=args.mqtt_port)
    console = Console(highlight=False, soft_wrap=True)
    for check in checks:
        console.print(line(check))
    failed = sum(check.mark is Mark.FAIL for check in checks)
    warned = sum(check.mark is Mark.WARN for check in checks)
    console.print(f"\n{failed} wrong, {warned} warning(s), {len(checks) - failed - warned} fine")
    return EXIT_FAILURE if failed else EXIT_OK


def line(check: Check) -> Text:
    """One item: its mark and title, and on the next line what to do."""
    from rich.text import Text

    text = Text.assemble((check.mark.value, STYLES[check.mark]), " ", check.title)
    if check.advice is not None:
        text.append(f"\n    → {check.advice}", style="dim" if check.mark is Mark.WARN else "")
    return text
