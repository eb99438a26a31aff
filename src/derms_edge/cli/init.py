"""``derms-edge init``: scan the site's Modbus links and OPC UA servers, recognise each
device, ask only what cannot be read from them, and write a commented configuration that
``check-config`` accepts and ``run`` reads every device of."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlparse

from derms_edge.cli.answers import Answers, Defaults, MissingAnswer, NoTerminal, Terminal, ask_valid
from derms_edge.cli.common import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, quiet

if TYPE_CHECKING:
    from derms_edge.devices.site_file import Entry, Site
    from derms_edge.devices.survey import Survey, SurveyPlan

_BAUDS = ("1200", "2400", "4800", "9600", "19200", "38400", "57600", "115200")


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    init = commands.add_parser(
        "init",
        help="find the site's devices and write a configuration for them",
        description="Scans, recognises each device and writes a commented configuration. "
        "Asks on a terminal what no flag gives; --yes takes every default.",
    )
    where = init.add_argument_group("where to look")
    where.add_argument(
        "--modbus",
        metavar="HOST[:PORT]",
        action="append",
        default=[],
        help="a Modbus TCP device or gateway (port 502 by default); repeatable",
    )
    where.add_argument("--serial", metavar="PORT", help="an RS-485 bus, e.g. /dev/ttyUSB0")
    where.add_argument("--baud", choices=_BAUDS, help="of --serial (default 9600)")
    where.add_argument("--parity", choices=("N", "E", "O"), help="of --serial (default N)")
    where.add_argument(
        "--unit-ids", help="Modbus unit ids to try: 1, 1-10 or 1,3,10-20 (default 1)"
    )
    where.add_argument(
        "--base",
        metavar="ADDRESS",
        type=int,
        action="append",
        default=[],
        help="a further address of the SunS marker to try after 40000, 0 and "
        "50000, as a device's manual gives it (e.g. 4096); repeatable",
    )
    where.add_argument(
        "--opcua",
        metavar="URL",
        action="append",
        default=[],
        help="an OPC UA server, opc.tcp://host:port/path; repeatable",
    )
    where.add_argument(
        "--timeout",
        type=float,
        default=0.5,
        help="seconds to wait for a Modbus answer (default 0.5)",
    )
    site = init.add_argument_group("the site")
    site.add_argument(
        "--gateway-id", help="the site's id, in every MQTT topic (default: host name)"
    )
    site.add_argument(
        "--broker", metavar="HOST[:PORT]", help="the MQTT broker (default 127.0.0.1:1883)"
    )
    site.add_argument("--state-dir", default="./state", help="gateway.state_dir (default ./state)")
    init.add_argument("--out", type=Path, default=Path("site.yaml"), help="default site.yaml")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.add_argument("--yes", action="store_true", help="take every default, ask nothing")
    init.set_defaults(func=main)


class FlagError(ValueError):
    """A flag (or the answer standing for it) that is wrong: what and which."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"{flag}: {message}")


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; ValueError when it is not one."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"{text!r}: no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    return host, int(port)


def _opcua_url(text: str) -> str:
    url = urlparse(text)
    if url.scheme != "opc.tcp" or not url.hostname:
        raise ValueError(f"{text!r} is not opc.tcp://host[:port][/path]")
    return text


def _identifier(text: str) -> str:
    from pydantic import TypeAdapter, ValidationError

    from derms_edge.schema import Identifier

    try:
        return str(TypeAdapter(Identifier).validate_python(text))
    except ValidationError:
        raise ValueError(
            f"{text!r}: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ) from None


def _words(text: str) -> list[str]:
    return text.replace(",", " ").split()


def _plan(args: argparse.Namespace, answers: Answers, out: TextIO) -> SurveyPlan:
    """Where to look, from the flags and the answers; FlagError naming what is wrong."""
    from derms_edge.config import SerialSection
    from derms_edge.devices.sunspec.scan import bases_to_try, parse_unit_ids
    from derms_edge.devices.survey import ModbusPlace, SurveyPlan

    def parsed(flag: str, parse: Any, text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise FlagError(flag, str(error)) from None

    def each(flag: str, parse: Any) -> Any:
        return lambda text: [parsed(flag, parse, word) for word in _words(text)]

    modbus = [parsed("--modbus", lambda t: host_port(t, 502), m) for m in args.modbus]
    opcua = [parsed("--opcua", _opcua_url, url) for url in args.opcua]
    serial, baud = args.serial, args.baud
    if serial is None and (args.baud or args.parity):
        raise FlagError("--baud" if args.baud else "--parity", "applies to --serial only")
    if not (modbus or opcua or serial):
        modbus = ask_valid(
            answers,
            "Modbus TCP devices or gateways to scan, host[:port] (empty: none)",
            "",
            "--modbus",
            each("--modbus", lambda t: host_port(t, 502)),
            out=out,
        )
        serial = answers.ask("Serial port of an RS-485 bus (empty: none)", "", "--serial") or None
        opcua = ask_valid(
            answers,
            "OPC UA servers to browse, opc.tcp://host:port/path (empty: none)",
            "",
            "--opcua",
            each("--opcua", _opcua_url),
            out=out,
        )
    if not (modbus or opcua or serial):
        raise FlagError(
            "init", "nothing to scan: give --modbus HOST[:PORT], --serial PORT or --opcua URL"
        )
    places = [ModbusPlace(host=host, port=port) for host, port in modbus]
    if serial is not None:
        if baud is None:
            baud = ask_valid(
                answers,
                f"Baud rate of {serial}",
                "9600",
                "--baud",
                lambda t: parsed("--baud", _baud, t),
                out=out,
            )
        settings = SerialSection(port=serial, baudrate=int(baud), parity=args.parity or "N")
        places.append(ModbusPlace(serial=settings))
    unit_ids: list[int] = [1]
    if places and args.unit_ids is not None:
        unit_ids = parsed("--unit-ids", parse_unit_ids, args.unit_ids)
    elif places:
        unit_ids = ask_valid(
            answers,
            "Modbus unit ids to try, e.g. 1-10",
            "1",
            "--unit-ids",
            lambda t: parsed("--unit-ids", parse_unit_ids, t),
            out=out,
        )
    bases = parsed("--base", bases_to_try, args.base)
    if args.timeout <= 0:
        raise FlagError("--timeout", "must be more than 0 s")
    return SurveyPlan(tuple(places), tuple(unit_ids), bases, tuple(opcua), args.timeout)


def _baud(text: str) -> str:
    if text not in _BAUDS:
        raise ValueError(f"{text!r} is not one of {', '.join(_BAUDS)}")
    return text


def _site(args: argparse.Namespace, answers: Answers, out: TextIO) -> Site:
    """The site's id and broker."""
    from derms_edge.devices.site_file import Site
    from derms_edge.schema import as_identifier

    def flagged(flag: str, parse: Any) -> Any:
        def check(text: str) -> Any:
            try:
                return parse(text)
            except ValueError as error:
                raise FlagError(flag, str(error)) from None

        return check

    gateway_id = args.gateway_id
    check_id = flagged("--gateway-id", _identifier)
    if gateway_id is None:
        default = as_identifier(socket.gethostname(), "site-1")
        gateway_id = ask_valid(
            answers,
            "Site id (gateway.id, in every MQTT topic)",
            default,
            "--gateway-id",
            check_id,
            out=out,
        )
    check_broker = flagged("--broker", lambda t: host_port(t, 1883))
    broker = args.broker
    if broker is None:
        host, port = ask_valid(
            answers, "MQTT broker, host[:port]", "127.0.0.1:1883", "--broker", check_broker, out=out
        )
    else:
        host, port = check_broker(broker)
    return Site(check_id(gateway_id), host, port, args.state_dir)


def _progress(plan: SurveyPlan) -> Survey:
    """Scan with a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from derms_edge.devices.survey import survey

    console = Console(stderr=True)
    with Progress(
        TextColumn("scanning {task.description:<40}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=plan.steps)

        def step(what: str) -> None:
            bar.update(task, advance=1, description=what)

        return asyncio.run(survey(plan, step))


def _entries(found: Survey, answers: Answers, out: TextIO) -> list[Entry]:
    """One entry per device found, with its id and what only the installer knows."""
    from derms_edge.devices.site_file import default_ids, opcua_entry, sunspec_entry
    from derms_edge.model import DeviceKind

    kinds = [u.kind for u in found.sunspec] + [o.skeleton.kind for o in found.opcua]
    entries = [
        *(sunspec_entry(unit, "-") for unit in found.sunspec),
        *(opcua_entry(device, "-") for device in found.opcua),
    ]
    taken: set[str] = set()
    for entry, default in zip(entries, default_ids(kinds), strict=True):
        print(f"found: {entry.about}", file=out)

        def unique(text: str) -> str:
            device_id = _identifier(text)
            if device_id in taken:
                raise ValueError(f"{device_id!r} is taken by another device")
            return device_id

        settings = entry.settings
        settings["id"] = ask_valid(answers, "  its id", default, "--yes", unique, out=out)
        taken.add(settings["id"])
        if entry.kind == DeviceKind.BATTERY:
            reserve = ask_valid(
                answers,
                "  backup reserve the customer keeps, % (empty: none)",
                "",
                "--yes",
                _percent,
                out=out,
            )
            if reserve is not None:
                settings["reserve_soc_pct"] = reserve
        evse = settings["protocol"] == "opcua" and entry.kind == DeviceKind.EVSE
        if evse and "max_a" not in settings["nodes"]:
            settings["max_a"] = ask_valid(
                answers, "  highest current limit, A per phase", "32", "--yes", _amps, out=out
            )
    return entries


def _percent(text: str) -> float | None:
    if not text:
        return None
    value = float(text)
    if not 0 <= value <= 100:
        raise ValueError(f"{text}: a reserve is 0-100 %")
    return value


def _amps(text: str) -> float:
    from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A

    value = float(text)
    if not MIN_EVSE_A <= value <= MAX_EVSE_A:
        raise ValueError(f"{text}: a charger's limit is {MIN_EVSE_A:g}-{MAX_EVSE_A:g} A")
    return value


def main(args: argparse.Namespace) -> int:
    """Ask, scan, ask, write."""
    out = sys.stderr
    if args.out.exists() and not args.force:
        print(f"init: --out: {args.out} exists; give --force to overwrite it", file=out)
        return EXIT_INVALID
    answers: Answers
    if args.yes:
        answers = Defaults()
    elif sys.stdin.isatty():
        answers = Terminal(sys.stdin, out)
    else:
        answers = NoTerminal()
    # the driver's notes on what it reads (a model cut short, say) are for the daemon's log;
    # what the device libraries meet on the way, init reports itself
    with quiet(
        {"derms_edge": logging.ERROR, "pymodbus": logging.CRITICAL, "asyncua": logging.CRITICAL}
    ):
        return _init(args, answers, out)


def _init(args: argparse.Namespace, answers: Answers, out: TextIO) -> int:
    try:
        plan = _plan(args, answers, out)
        site = _site(args, answers, out)
        found = _progress(plan)
        for line in found.unread:
            print(f"left out: {line}", file=out)
        if not found.devices:
            print("init: found no device the gateway can read; nothing written", file=out)
            return EXIT_FAILURE
        entries = _entries(found, answers, out)
    except (FlagError, MissingAnswer) as error:
        print(f"init: {error}", file=out)
        return EXIT_INVALID
    return _write(args, site, entries, found.unread)


def _write(args: argparse.Namespace, site: Site, entries: list[Entry], unread: list[str]) -> int:
    from derms_edge.devices.site_file import check, render

    command = (
        "derms-edge init " + " ".join(sys.argv[2:])
        if sys.argv[1:2] == ["init"]
        else ("derms-edge init")
    )
    text = render(site, entries, unread, command)
    check(text, str(args.out))  # a file run would refuse is a bug here, not the installer's
    with args.out.open("w" if args.force else "x", encoding="utf-8") as file:
        file.write(text)
    print(
        f"wrote {args.out}: {len(entries)} device(s). Next: derms-edge check-config "
        f"{args.out}, then derms-edge run {args.out}",
        file=sys.stderr,
    )
    return EXIT_OK
