"""``derms-edge send CONFIG --control JSON``: publish one control event as a role would, and
print the answers.

For installers and test engineers: the event is validated with the same model the gateway
uses before anything is published, so a typo is named here and never reaches a device.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from derms_edge.cli.common import (
    EXIT_FAILURE,
    EXIT_INVALID,
    EXIT_OK,
    add_mqtt_identity,
    add_mqtt_port,
    load_with_mqtt_port,
)
from derms_edge.cli.follow import Follower
from derms_edge.cli.keys import read_private_key
from derms_edge.config import Config
from derms_edge.model import Status
from derms_edge.northbound.commands import EventPayload, Invalid, parse_events
from derms_edge.northbound.signed import sign
from derms_edge.northbound.topics import Topics

if TYPE_CHECKING:  # joserfc loads cryptography: only when a message is signed
    from joserfc.jwk import OKPKey

_FINAL = set(Status) - {Status.RECEIVED, Status.SCHEDULED}
"""The statuses after which there is nothing more to wait for: started, or an end."""
_REFUSED = {Status.REJECTED, Status.ABORTED}


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
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
    sender.add_argument(
        "--sign", type=Path, metavar="KEY", help="sign it (JWS, Ed25519) with this NAME.key.pem"
    )
    add_mqtt_port(sender)
    add_mqtt_identity(sender)
    sender.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Validate the event, publish it, follow its answers."""
    config = load_with_mqtt_port(args)
    if config is None:
        return EXIT_INVALID
    devices = args.devices.split(",") if args.devices else None
    event = build_event(args.control, duration_s=args.duration_s, devices=devices, mrid=args.mrid)
    if isinstance(event, Invalid):
        print(f"send: not sent: {event.detail}", file=sys.stderr)
        return EXIT_INVALID
    try:
        key = None if args.sign is None else read_private_key(args.sign)
    except ValueError as error:
        print(f"send: not sent: --sign {error}", file=sys.stderr)
        return EXIT_INVALID
    return send(config, args.role, event, wait_s=args.wait_s, key=key)


def build_event(
    control: str, *, duration_s: float, devices: list[str] | None, mrid: str | None
) -> EventPayload | Invalid:
    """The event as JSON text would give it, validated; Invalid names the field."""
    try:
        control_data = json.loads(control)
    except json.JSONDecodeError as error:
        return Invalid(mrid, f"--control is not JSON: {error.msg} at column {error.colno}")
    data: dict[str, Any] = {
        "mrid": mrid or f"cli-{uuid.uuid4().hex[:12]}",
        "creation_time": datetime.now(UTC).isoformat(),
        "duration_s": duration_s,
        "control": control_data,
    }
    if devices:
        data["devices"] = devices
    (parsed,) = parse_events(json.dumps(data).encode())
    return parsed


def send(
    config: Config,
    role: str,
    event: EventPayload,
    *,
    wait_s: float,
    out: TextIO = sys.stdout,
    key: OKPKey | None = None,
) -> int:
    """Publish ``event`` on the role's controls topic (signed with ``key`` when given) and
    print its responses until it starts (or is refused) or ``wait_s`` passes. Exit code 0
    unless it was rejected or aborted."""
    topics = Topics(config.mqtt.prefix, config.gateway.id)
    with Follower(config, [topics.responses]) as follower:
        failure = follower.connect(wait_s)
        if failure is not None:
            print(f"{failure}: nothing sent", file=out)
            return EXIT_FAILURE
        body = event.model_dump_json(exclude_none=True)
        wire = body.encode() if key is None else sign(body.encode(), key)
        follower.publish(topics.controls(role), wire, wait_s)
        signed = "" if key is None else f" signed by kid {key.thumbprint()}"
        print(f"sent {event.mrid} to {topics.controls(role)}{signed}: {body}", file=out, flush=True)
        return _follow(follower, event.mrid, wait_s, out)


def _answers(follower: Follower, mrid: str, until: float) -> Iterator[dict[str, Any]]:
    """The responses about ``mrid`` as they come, until the monotonic time ``until``."""
    while (message := follower.get(until - time.monotonic())) is not None:
        try:
            answer = json.loads(message[1])
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("mrid") == mrid:
            yield answer


def _follow(follower: Follower, mrid: str, wait_s: float, out: TextIO) -> int:
    status = None
    for answer in _answers(follower, mrid, time.monotonic() + wait_s):
        status = answer.get("status")
        why = " ".join(str(answer[k]) for k in ("reason", "detail") if answer.get(k))
        print(f"  {answer.get('ts', '')}  {status}  {why}".rstrip(), file=out, flush=True)
        if status in _FINAL:
            break
    else:
        print(f"no further answer within {wait_s:g} s (last: {status})", file=out)
        return EXIT_OK if status is not None else EXIT_FAILURE
    return EXIT_FAILURE if status in _REFUSED else EXIT_OK
