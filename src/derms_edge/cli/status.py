"""``derms-edge status CONFIG``: one screen of a running gateway, read from its retained MQTT
state (status, controls in force, capabilities) and one round of its telemetry.

Exit status 0 when the gateway is online; 1 when it is offline, has never published its status
on this broker, or the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from derms_edge.cli.common import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    add_mqtt_identity,
    add_mqtt_port,
    load_with_mqtt_port,
)
from derms_edge.cli.follow import Follower
from derms_edge.cli.view import GatewayView
from derms_edge.config import Config
from derms_edge.northbound.topics import Topics

if TYPE_CHECKING:  # rich loads with the screen only: the daemon's command line needs none
    from rich.console import Console, RenderableType

RETAINED_WAIT_S = 2.0
"""After subscribing, how long the retained messages may take to arrive at most (on loopback
they take milliseconds)..."""
QUIET_S = 0.3
"""... they have all come when none has for this long."""
REFRESH_S = 1.0
"""How often ``--watch`` redraws."""
PIPE_WIDTH = 160
"""Columns of the screen written to a file or a pipe (a terminal gives its own width)."""


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    status = commands.add_parser(
        "status", help="one screen of a running gateway, from its retained MQTT state"
    )
    status.add_argument("config", type=Path)
    add_mqtt_port(status)
    add_mqtt_identity(status)
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the broker (default 5)"
    )
    status.add_argument(
        "--svg", type=Path, metavar="FILE", help="also save the screen as an SVG image (a report)"
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    shown.add_argument("--json", action="store_true", help="print what is known as JSON")
    status.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Read the gateway's state, show it, and say whether it is online."""
    config = load_with_mqtt_port(args)
    if config is None:
        return EXIT_INVALID
    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
    shown: list[RenderableType] = []
    if args.watch:
        code = watch(config, console, shown)
    else:
        code = status(config, args.timeout, as_json=args.json, console=console, shown=shown)
    if args.svg is not None and shown:
        save_svg(shown[-1], args.svg, console.width, f"derms-edge status {args.config}")
    return code


def save_svg(screen: RenderableType, path: Path, width: int, title: str) -> None:
    """One screen as an SVG image of a terminal as wide as it needs, ``width`` at most."""
    from rich.console import Console

    recorder = Console(record=True, width=width, file=io.StringIO(), highlight=False)
    recorder.width = min(width, recorder.measure(screen).maximum)
    recorder.print(screen)
    recorder.save_svg(str(path), title=title)


def collect(config: Config, follower: Follower, timeout_s: float) -> GatewayView | str:
    """The gateway's view: its retained state and then, while it is online, one telemetry
    message per device (at most one telemetry interval); or why there is none."""
    view = GatewayView(Topics(config.mqtt.prefix, config.gateway.id))
    failure = follower.connect(timeout_s)
    if failure is not None:
        return failure
    retained_by = time.monotonic() + RETAINED_WAIT_S
    while (message := follower.get(min(QUIET_S, retained_by - time.monotonic()))) is not None:
        view.take(*message)
    if view.status is None or not view.status.get("online"):
        return view
    deadline = time.monotonic() + config.telemetry.interval_s + 1.0
    while not set(view.devices) <= set(view.telemetry) and time.monotonic() < deadline:
        message = follower.get(deadline - time.monotonic())
        if message is not None:
            view.take(*message)
    return view


def verdict(config: Config, view: GatewayView) -> tuple[int, str | None]:
    """The exit status, and what is wrong for people (None when online)."""
    root = view.topics.root
    if view.status is None:
        return EXIT_FAILURE, (
            f"gateway {config.gateway.id} not found: nothing retained on {root}/status at "
            f"{config.mqtt.host}:{config.mqtt.port} (is it running with this configuration? "
            "systemctl status derms-edge)"
        )
    if not view.status.get("online"):
        return EXIT_FAILURE, (
            f"gateway {config.gateway.id} is offline since {view.status.get('ts')} "
            "(systemctl status derms-edge; journalctl -u derms-edge)"
        )
    return EXIT_OK, None


def status(
    config: Config,
    timeout_s: float,
    *,
    as_json: bool,
    console: Console,
    shown: list[RenderableType],
) -> int:
    """Show the gateway once (the screen is also added to ``shown``); the exit status."""
    from derms_edge.cli.screen import screen

    with Follower(
        config, GatewayView(Topics(config.mqtt.prefix, config.gateway.id)).filters()
    ) as follower:
        view = collect(config, follower, timeout_s)
    if isinstance(view, str):
        print(f"status: {view}", file=sys.stderr)
        return EXIT_FAILURE
    code, problem = verdict(config, view)
    shown.append(screen(view, follower.broker))
    if as_json:
        print(json.dumps(view.snapshot(), indent=2))
    elif view.status is not None:
        console.print(shown[-1])
    if problem is not None:
        print(f"status: {problem}", file=sys.stderr)
    return code


def watch(config: Config, console: Console, shown: list[RenderableType]) -> int:
    """Redraw the screen in place as messages come, until Ctrl-C; the exit status of the
    last state shown (the last screen is in ``shown``)."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from derms_edge.cli.screen import screen

    view = GatewayView(Topics(config.mqtt.prefix, config.gateway.id))
    with (
        Follower(config, view.filters()) as follower,
        Live(console=console, auto_refresh=False, screen=False) as live,
    ):
        try:
            while True:
                for message in follower.drain(time.monotonic() + REFRESH_S):
                    view.take(*message)
                drawn = screen(view, follower.broker)
                if follower.failure is not None:
                    drawn = Group(drawn, Text(follower.failure, style="bold red"))
                live.update(drawn, refresh=True)
                shown[:] = [drawn]
        except KeyboardInterrupt:
            pass
    return verdict(config, view)[0]
