"""What ``discover --opcua`` prints: the variables found, and a configuration guessed from
their names. Pure: the browsing itself is in `derms_edge.devices.opcua.browse`.

The guesses are only a start: names say nothing of signs (a charger that counts consumption
positive needs ``scale: -1``) or units (kWh needs ``unit: kWh``), so the output says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from derms_edge.config import OpcUaPointName, OpcUaSecurity
from derms_edge.model import DeviceKind
from derms_edge.schema import as_identifier


@dataclass(frozen=True, slots=True)
class Variable:
    """One Variable found under Objects."""

    node_id: str
    """In the configuration's text form, by namespace URI: ``nsu=<uri>;s=<name>``."""
    path: tuple[str, ...]
    """Browse names from under Objects down to the variable (``("ev2", "ActualPower")``)."""
    data_type: str
    """The DataType's name (``Double``, ``UInt16``)."""
    readable: bool = True
    writable: bool = False

    @property
    def browse_path(self) -> str:
        return "/".join(self.path)

    @property
    def access(self) -> str:
        """``r``, ``rw``, ``w`` or ``-``."""
        return ("r" if self.readable else "") + ("w" if self.writable else "") or "-"


@dataclass(frozen=True, slots=True)
class _Rule:
    point: OpcUaPointName
    pattern: re.Pattern[str]
    score: int = 2
    """How sure the guess is; the best-scoring variable gets the point."""
    writable: bool = False
    """Only writable variables (setpoints)."""


def _rule(point: OpcUaPointName, pattern: str, score: int = 2, *, writable: bool = False) -> _Rule:
    return _Rule(point, re.compile(pattern), score, writable)


_SETPOINT_WORDS = r"(setpoint|setvalue|target|command|cmd|limit|lim|^set)"
_RULES = (
    # setpoints: writable variables only, and the only rules a "...Setpoint" name may match
    _rule("max_w_pct_setpoint", r"(pct|percent)", writable=True),
    _rule(
        "var_setpoint", rf"(reactive|var).*{_SETPOINT_WORDS}|{_SETPOINT_WORDS}.*var", writable=True
    ),
    _rule("max_a_setpoint", r"(current|amp)", writable=True),
    _rule("storage_w_setpoint", r"(power|watt)", writable=True),
    # nameplate and limits, read at connect
    _rule("soc_min_pct", r"soc.*min|min.*soc"),
    _rule("soc_max_pct", r"soc.*max|max.*soc"),
    _rule("discharge_w_max", r"max.*discharg|discharg.*max"),
    _rule("charge_w_max", r"max.*charg|charg.*max"),
    _rule("max_a", r"max.*(current|amp)|(current|amp).*max|^amax$"),
    _rule("va_max", r"max.*apparent|apparent.*max|^vamax$"),
    _rule("w_max", r"max.*power|power.*max|(rated|nominal).*power|^wmax$", 1),
    _rule("wh_rtg", r"capacity|whrtg|ratedenergy"),
    # measurements
    _rule("var", r"reactivepower|^var$|^q$"),
    _rule("va", r"apparentpower|^va$"),
    _rule("pf", r"powerfactor|^pf$|cosphi"),
    _rule("w", r"(active|actual|real|total|charging)power|^power$|^p$|^w$"),
    _rule("w", r"power", 1),
    _rule("v", r"voltage|^v$|^u$|^vrms$"),
    _rule("a", r"current|^i$|^a$|^amps?$"),
    _rule("hz", r"freq|^hz$|^f$"),
    _rule("soc_pct", r"soc|stateofcharge"),
    _rule(
        "wh_exported", r"energy.*(export|togrid|discharg|feedin|produced|generated)|export.*energy"
    ),
    _rule("wh_imported", r"energy|^wh"),
    _rule("state", r"operat|mode3|charg.*state|^state$|^status$"),
    _rule("state", r"state|status|mode", 1),
)


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.casefold())


def guess(variable: Variable) -> tuple[OpcUaPointName, int] | None:
    """The point a variable's browse name suggests, and how sure the guess is (1 or 2)."""
    name = _normal(variable.path[-1]) if variable.path else ""
    setpoint_name = re.search(_SETPOINT_WORDS, name) is not None
    for rule in _RULES:
        if rule.writable and not (variable.writable and setpoint_name):
            continue
        if not rule.writable and "setpoint" in name:
            continue
        if rule.pattern.search(name):
            return rule.point, rule.score
    return None


@dataclass(frozen=True, slots=True)
class Skeleton:
    """The points guessed for one device object, and what was left over."""

    device_id: str
    kind: DeviceKind
    points: dict[OpcUaPointName, Variable]
    unmatched: list[Variable]
    """Variables that look like nothing, or like a point already taken."""


def _device_id(name: str) -> str:
    return as_identifier(name, "device")


def _kind(points: Iterable[str], device_id: str) -> DeviceKind:
    names = set(points)
    if names & {"max_a_setpoint", "max_a"} or re.search(r"ev|charg|wallbox", device_id.casefold()):
        return DeviceKind.EVSE
    if names & {"soc_pct", "storage_w_setpoint", "wh_rtg", "charge_w_max"}:
        return DeviceKind.BATTERY
    if names & {"max_w_pct_setpoint", "var_setpoint", "w_max"}:
        return DeviceKind.INVERTER
    return DeviceKind.METER if names else DeviceKind.INVERTER


def skeletons(variables: Sequence[Variable], fallback_id: str = "device") -> list[Skeleton]:
    """Group the variables by the object they are under (one device each) and guess points.

    Each point goes to the variable that matches it best; ties to the first one found.
    """
    groups: dict[str, list[Variable]] = {}
    for variable in variables:
        top = variable.path[0] if len(variable.path) > 1 else fallback_id
        groups.setdefault(top, []).append(variable)
    result = []
    for top, members in groups.items():
        best: dict[OpcUaPointName, tuple[int, Variable]] = {}
        for variable in members:
            guessed = guess(variable)
            if guessed is None:
                continue
            point, score = guessed
            if point not in best or score > best[point][0]:
                best[point] = (score, variable)
        points = {point: variable for point, (_, variable) in best.items()}
        chosen = {id(v) for v in points.values()}
        unmatched = [v for v in members if id(v) not in chosen]
        device_id = _device_id(top)
        ordered = {p: points[p] for p in _POINT_ORDER if p in points}
        result.append(Skeleton(device_id, _kind(points, device_id), ordered, unmatched))
    return result


_POINT_ORDER: tuple[OpcUaPointName, ...] = (
    "w", "var", "va", "pf", "v", "hz", "a", "soc_pct", "wh_exported", "wh_imported", "state",
    "w_max", "va_max", "wh_rtg", "charge_w_max", "discharge_w_max", "soc_min_pct",
    "soc_max_pct", "max_a", "max_a_setpoint", "storage_w_setpoint", "max_w_pct_setpoint",
    "var_setpoint",
)  # fmt: skip


def listing(variables: Sequence[Variable]) -> list[str]:
    """One line per variable: node id, browse path, data type, access (r, rw)."""
    if not variables:
        return []
    width_id = max(len(v.node_id) for v in variables)
    width_path = max(len(v.browse_path) for v in variables)
    width_type = max(len(v.data_type) for v in variables)
    return [
        f"{v.node_id:<{width_id}}  {v.browse_path:<{width_path}}  "
        f"{v.data_type:<{width_type}}  {v.access}".rstrip()
        for v in variables
    ]


def _quote(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def render(
    endpoint: str,
    devices: Sequence[Skeleton],
    *,
    security: OpcUaSecurity | None = None,
    username: str | None = None,
) -> str:
    """A ``devices:`` section to paste into the configuration, guesses marked as such."""
    lines = [
        f"# guessed from the browse names at {endpoint}:",
        "# check every point, its sign (w is positive when power goes to the grid: scale: -1",
        "# for a node that counts consumption positive) and its unit (unit: kW, kWh, ... when",
        "# it is not W, Wh, V, A)",
        "devices:",
    ]
    for device in devices:
        lines += [
            f"  - id: {_quote(device.device_id)}",
            f"    kind: {device.kind}",
            "    protocol: opcua",
            f"    endpoint: {_quote(endpoint)}",
        ]
        if security is not None and security.policy != "None":
            lines += [
                "    security:",
                f"      policy: {security.policy}",
                f"      mode: {security.mode}",
            ]
            for key in ("certificate", "private_key", "server_certificate"):
                path = getattr(security, key)
                if path is not None:
                    lines.append(f"      {key}: {_quote(str(path))}")
        if username is not None:
            lines += [f"    username: {_quote(username)}", '    password: "..."  # fill in']
        lines.append("    nodes:")
        if not device.points:
            lines.append("      # no variable looked like a point: map them by hand")
        for point, variable in device.points.items():
            comment = f"{variable.browse_path}, {variable.data_type}, {variable.access}"
            if point == "state" and variable.data_type not in ("String", "LocalizedText"):
                comment += '; map its values: states: {"<value>": charging, ...}'
            lines.append(f"      {point}: {_quote(variable.node_id)}  # {comment}")
        if device.unmatched:
            lines.append("      # not recognised (or a point already taken):")
        for variable in device.unmatched:
            lines.append(
                f"      # {variable.browse_path}: {_quote(variable.node_id)}"
                f"  # {variable.data_type}, {variable.access}"
            )
    return "\n".join(lines) + "\n"
