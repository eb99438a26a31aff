"""One screen of a gateway (rich): whether it is online, its broker and backlog, each device's
quality and latest reading with the controls in force and who set them, the last dispatch and
its answer; with the latest responses under it for ``monitor``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from derms_edge.cli.view import GatewayView

QUALITY_STYLE = {"ok": "green", "stale": "yellow", "offline": "red", "unknown": "dim"}
SOURCES = {
    "export_limit": "export limit loop",
    "export_limit_fallback": "export limit (meter not fresh)",
}


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        text = f"{value:,.{digits}f}"
        return text.removeprefix("-") if float(text.replace(",", "")) == 0 else text  # not -0
    return str(value)


def _age(ts: Any, now: datetime) -> str:
    """How long ago an RFC 3339 time was, for people."""
    if not isinstance(ts, str):
        return "-"
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    seconds = (now - then).total_seconds()
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def control_value(value: Any) -> str:
    """A value in force, short: a number, a volt-var curve, a power factor."""
    if isinstance(value, dict) and "points" in value:
        return f"volt-var {len(value['points'])} points"
    if isinstance(value, dict) and "pf" in value:
        return f"pf {value['pf']:g} {value.get('excitation', '')}".rstrip()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def who(held: dict[str, Any]) -> str:
    """Who set a value in force: an event (its role and mrid), a default, the export loop."""
    source = held.get("source")
    role = held.get("role")
    if source == "event":
        return f"{role or '?'} event {held.get('mrid')}"
    if source == "default":
        return f"default of {role}" if role else "configured default"
    return SOURCES.get(str(source), str(source))


def controls_text(controls: dict[str, dict[str, Any]]) -> Text:
    """The controls in force on one device, one per line."""
    if not controls:
        return Text("none", style="dim")
    lines = [
        f"{name} {control_value(held.get('value'))} ({who(held)})"
        for name, held in sorted(controls.items())
    ]
    return Text("\n".join(lines))


def header(view: GatewayView, broker: str, now: datetime) -> Table:
    """The gateway's line: online, broker, version, backlog, rejected inbound, last dispatch."""
    status = view.status or {}
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if view.status is None:
        state = Text("NOT FOUND (no retained status)", style="bold red")
    elif status.get("online"):
        state = Text("online", style="bold green")
    else:
        state = Text(f"OFFLINE since {_age(status.get('ts'), now)}", style="bold red")
    grid.add_row("gateway", Text.assemble(f"{view.topics.gateway_id}  ", state))
    grid.add_row("broker", f"{broker}, topics under {view.topics.root}")
    if view.status is not None:
        grid.add_row("version", str(status.get("version", "?")))
        backlog = Text(f"{status.get('buffered', 0)} messages not yet delivered")
        if status.get("dropped"):
            backlog.append(f", {status['dropped']} dropped (buffer full)", style="red")
        grid.add_row("backlog", backlog)
        if status.get("rejected_inbound"):
            grid.add_row(
                "inbound", Text(f"{status['rejected_inbound']} over rate limit", style="yellow")
            )
        grid.add_row("last dispatch", last_dispatch(status.get("last_dispatch"), now))
    return grid


def last_dispatch(dispatch: Any, now: datetime) -> Text:
    """The last dispatch and its answer, in one line."""
    if not isinstance(dispatch, dict):
        return Text("none since the gateway started", style="dim")
    answer = dispatch.get("status") or "not answered yet"
    style = "red" if answer in ("rejected", "aborted") else "green"
    why = " ".join(str(dispatch[k]) for k in ("reason", "detail") if dispatch.get(k))
    return Text.assemble(
        f"{dispatch.get('mrid') or '(no mrid)'} from {dispatch.get('role')}, "
        f"{_age(dispatch.get('received'), now)}: ",
        (str(answer), style),
        f" {why}" if why else "",
    )


def devices_table(view: GatewayView, now: datetime) -> Table:
    """A row per device: quality, reading, SoC, age, controls in force."""
    table = Table(expand=False, header_style="bold")
    for name, justify in (
        ("device", "left"), ("kind", "left"), ("quality", "left"), ("W", "right"),
        ("var", "right"), ("V", "right"), ("Hz", "right"), ("SoC %", "right"),
        ("state", "left"), ("reading", "right"), ("controls in force (who set them)", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for device in view.devices:
        reading = view.telemetry.get(device, {})
        kind = reading.get("kind") or view.capability.get(device, {}).get("kind", "")
        quality = view.quality(device)
        table.add_row(
            device,
            str(kind),
            Text(quality, style=QUALITY_STYLE.get(quality, "")),
            _number(reading.get("w")),
            _number(reading.get("var")),
            _number(reading.get("v"), 1),
            _number(reading.get("hz"), 2),
            _number(reading.get("soc_pct"), 1),
            str(reading.get("state") or "-"),
            _age(reading.get("ts"), now) if reading else "none yet",
            controls_text(view.controls(device)),
        )
    site = view.controls("site")
    if site:
        table.add_row("site", "", "", "", "", "", "", "", "", "", controls_text(site))
    return table


def responses_table(view: GatewayView) -> Table:
    """The latest responses, newest last."""
    table = Table(title="latest responses", title_justify="left", header_style="bold")
    for name in ("time", "mrid", "status", "reason, detail"):
        table.add_column(name)
    for answer in view.responses:
        status = str(answer.get("status"))
        table.add_row(
            str(answer.get("ts", "")),
            str(answer.get("mrid")),
            Text(status, style="red" if status in ("rejected", "aborted") else ""),
            " ".join(str(answer[k]) for k in ("reason", "detail") if answer.get(k)),
        )
    return table


def screen(
    view: GatewayView, broker: str, *, responses: bool = False, now: datetime | None = None
) -> RenderableType:
    """The whole screen; with the latest responses under it when ``responses``."""
    now = now or datetime.now(UTC)
    parts: list[RenderableType] = [header(view, broker, now), devices_table(view, now)]
    if responses:
        parts.append(responses_table(view))
    return Group(*parts)
