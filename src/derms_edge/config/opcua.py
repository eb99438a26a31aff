"""OPC UA devices in the configuration: the endpoint, security, and the nodes behind the
gateway's points with their units."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator

from derms_edge.config.device import DeviceSection, StorageSettings
from derms_edge.config.nodeid import NodeRef, parse_node_id
from derms_edge.model import MAX_EVSE_A, MIN_EVSE_A, DeviceKind, OperatingState
from derms_edge.schema import Strict

OpcUaPointName = Literal[
    # measurements, in every reading
    "w", "var", "va", "pf", "v", "hz", "a", "soc_pct", "wh_exported", "wh_imported", "state",
    # nameplate and limits, read at connect
    "w_max", "va_max", "wh_rtg", "charge_w_max", "discharge_w_max",
    "soc_min_pct", "soc_max_pct", "max_a",
    # setpoints the gateway writes
    "max_a_setpoint", "storage_w_setpoint", "max_w_pct_setpoint", "var_setpoint",
]  # fmt: skip
SI_UNITS: dict[str, dict[str, float]] = {
    "W": {"W": 1.0, "kW": 1e3, "MW": 1e6},
    "var": {"var": 1.0, "kvar": 1e3, "Mvar": 1e6},
    "VA": {"VA": 1.0, "kVA": 1e3, "MVA": 1e6},
    "V": {"V": 1.0, "kV": 1e3},
    "A": {"A": 1.0, "mA": 1e-3, "kA": 1e3},
    "Hz": {"Hz": 1.0, "mHz": 1e-3},
    "Wh": {"Wh": 1.0, "kWh": 1e3, "MWh": 1e6},
    "%": {"%": 1.0},
    "": {"": 1.0},
}
"""Per SI unit of the gateway, the units a node may be given in and their factors to it."""
POINT_UNITS: dict[str, str] = {
    "w": "W", "var": "var", "va": "VA", "pf": "", "v": "V", "hz": "Hz", "a": "A",
    "soc_pct": "%", "wh_exported": "Wh", "wh_imported": "Wh", "state": "",
    "w_max": "W", "va_max": "VA", "wh_rtg": "Wh", "charge_w_max": "W",
    "discharge_w_max": "W", "soc_min_pct": "%", "soc_max_pct": "%", "max_a": "A",
    "max_a_setpoint": "A", "storage_w_setpoint": "W", "max_w_pct_setpoint": "%",
    "var_setpoint": "var",
}  # fmt: skip
"""The gateway's SI unit of each point."""


class NodePoint(Strict):
    """One point of an OPC UA device: its node, and how its value becomes SI units.

    Value in SI units = node value x scale x the unit's factor (kW -> 1000). Written the
    other way round for setpoints. A plain string is the node id alone.
    """

    node: str
    scale: float = 1.0
    """A negative scale flips the sign (e.g. a charger that reports consumption positive)."""
    unit: str | None = None
    """The unit the node's value is in, if not the gateway's SI unit (kW, kWh, kV, mA, ...)."""
    states: dict[str, OperatingState] | None = None
    """For ``state`` only: the node's values (as text: "0", "2", "Charging") to states."""

    @model_validator(mode="before")
    @classmethod
    def _plain_node_id(cls, data: Any) -> Any:
        return {"node": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _valid(self) -> Self:
        parse_node_id(self.node)  # a ValueError names what is wrong
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def node_ref(self) -> NodeRef:
        """The parsed node id."""
        return parse_node_id(self.node)

    def factor(self, point: str) -> float:
        """SI value = node value x factor."""
        return self.scale * SI_UNITS[POINT_UNITS[point]][self.unit or POINT_UNITS[point]]


class OpcUaSecurity(Strict):
    """How the session is secured: OPC UA security policy, message mode and certificates."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    """Basic256Sha256 only: sign the messages, or sign and encrypt them."""
    certificate: Path | None = None
    """The gateway's application instance certificate (DER or PEM); the server must trust it."""
    private_key: Path | None = None
    """The private key of that certificate (PEM)."""
    server_certificate: Path | None = None
    """The server certificate the gateway trusts (DER or PEM): a server presenting another one
    is refused. Without it the session is encrypted but the server's identity is not checked."""

    @model_validator(mode="after")
    def _certificates(self) -> Self:
        given = [
            k for k in ("certificate", "private_key", "server_certificate") if getattr(self, k)
        ]
        if self.policy == "None" and given:
            raise ValueError(f"{', '.join(given)} given, but policy is None (no security)")
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy} needs certificate and private_key")
        return self


_ENDPOINT = re.compile(
    r"^opc\.tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s]+)(?::(?P<port>\d+))?(?:/\S*)?$"
)


class OpcUaDevice(DeviceSection, StorageSettings):
    """A device that speaks OPC UA: an EV charger, a battery or a plant controller."""

    protocol: Literal["opcua"]
    endpoint: str
    """opc.tcp://host:port/path"""
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: str | None = None
    nodes: dict[OpcUaPointName, NodePoint] = Field(min_length=1)
    """The gateway's point names to the server's nodes."""
    subscribe: bool = True
    """Read through a subscription (data-change notifications); false: poll every interval."""
    publishing_interval_ms: float = Field(500.0, ge=10, le=60000)
    """The subscription's publishing (and sampling) interval."""
    max_value_age_s: float | None = Field(None, gt=0)
    """Subscriptions: judge freshness by the values themselves, for servers known to refresh
    their source timestamps: a reading is as old as its newest notification (a new value,
    status or source timestamp) and ``stale`` past this age. Default: a value on a live
    subscription is current, however long it holds still."""
    phases: Literal[1, 3] = 3
    """EV chargers: phases in use."""
    max_a: float | None = Field(None, ge=MIN_EVSE_A, le=MAX_EVSE_A)
    """EV chargers: the highest current limit, A per phase (default: the max_a node, else 32)."""

    @model_validator(mode="after")
    def _opcua(self) -> Self:
        if _ENDPOINT.fullmatch(self.endpoint) is None:
            raise ValueError(f"endpoint {self.endpoint!r} is not opc.tcp://host[:port][/path]")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        for point, spec in self.nodes.items():
            unit = spec.unit
            units = SI_UNITS[POINT_UNITS[point]]
            if unit is not None and unit not in units:
                allowed = ", ".join(u for u in units if u) or "none (it has no unit)"
                raise ValueError(f"nodes.{point}: unit {unit!r} is not one of {allowed}")
            if spec.states is not None and point != "state":
                raise ValueError(f"nodes.{point}: states applies to the state point only")
        if self.max_value_age_s is not None and not self.subscribe:
            raise ValueError("max_value_age_s applies to subscriptions (subscribe: true)")
        if self.max_value_age_s is not None and self.stale_after_s is not None:
            raise ValueError(
                "give max_value_age_s or stale_after_s, not both: with max_value_age_s, a "
                "reading is stale past that age"
            )
        if self.kind != DeviceKind.EVSE and self.max_a is not None:
            raise ValueError(
                f"max_a applies to EV chargers only (this device is kind: {self.kind})"
            )
        return self

    @property
    def stale_after(self) -> float:
        """Seconds after which a reading is stale: ``max_value_age_s`` where given."""
        return self.max_value_age_s if self.max_value_age_s is not None else super().stale_after

    @property
    def link(self) -> str:
        """Where the device is, for people: its endpoint."""
        return self.endpoint
