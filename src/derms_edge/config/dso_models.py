"""The six DSO organisational models (Black & Veatch, "DSO Models for Utility Stakeholders")
as data: who holds each role at this gateway, with what primacy and which control types.

In every model the utility stays the distribution grid operator (role ``dgo``: limits, export
limits, reactive power; the strongest primacy) and the customer keeps a role of its own
(``customer``: its backup reserve and what its home energy manager does within the grid's
limits). The market roles (``iso``, ``derm``, ``aggregator``, ``trader``) dispatch storage
and chargers and may curtail for the market; they never get export limits or reactive power,
which are the grid operator's. The market operator (DMO) clears and settles and may not
trade in the market it runs: it dispatches nothing, so no model gives it a role here.
docs/dso-models.md explains each model and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from derms_edge.model import ControlType as C


class DsoModel(StrEnum):
    """The six models, by the name ``control.dso_model`` takes."""

    TSO_ONLY = "tso_only"
    TSO_HYBRID = "tso_hybrid"
    NODE_UTILITY = "node_utility"
    NODE_INDEPENDENT = "node_independent"
    P2P_UTILITY = "p2p_utility"
    P2P_INDEPENDENT = "p2p_independent"


@dataclass(frozen=True, slots=True)
class PresetRole:
    """One role a model creates: the party that holds it, its primacy and control types."""

    party: str
    primacy: int
    allow: tuple[C, ...]


@dataclass(frozen=True, slots=True)
class Preset:
    """One model: who is market operator and DER manager, and the roles at the gateway."""

    title: str
    dmo: str
    derm: str
    roles: Mapping[str, PresetRole]


GRID_OPERATOR = "dgo"
CUSTOMER = "customer"
GRID_TYPES = (C.MAX_W_PCT, C.EXPORT_LIMIT_W, C.VOLT_VAR, C.FIXED_PF, C.EVSE_MAX_A, C.EVSE_MAX_W)
"""The grid operator's: limits (active power, site export, chargers) and reactive power."""
MARKET_TYPES = (C.STORAGE_W, C.MAX_W_PCT, C.EVSE_MAX_A, C.EVSE_MAX_W)
"""A market role's: storage dispatch, charger setpoints, curtailment (at negative prices)."""
CUSTOMER_TYPES = (C.RESERVE_SOC_PCT, C.STORAGE_W, C.MAX_W_PCT, C.EVSE_MAX_A, C.EVSE_MAX_W)
"""The customer's: its backup reserve, and its home energy manager's dispatch."""

UTILITY = "Utility"
INDEPENDENT = "independent entity"


def _roles(**roles: PresetRole) -> Mapping[str, PresetRole]:
    """The grid operator's and the customer's roles with the model's market roles."""
    return MappingProxyType(
        {
            GRID_OPERATOR: PresetRole(f"{UTILITY} (grid operator)", 0, GRID_TYPES),
            **roles,
            CUSTOMER: PresetRole("customer (home energy manager)", 3, CUSTOMER_TYPES),
        }
    )


_AGGREGATOR = PresetRole("third-party aggregator", 2, MARKET_TYPES)
_TRADER = PresetRole("third-party trader", 2, MARKET_TYPES)

PRESETS: Mapping[DsoModel, Preset] = MappingProxyType(
    {
        DsoModel.TSO_ONLY: Preset(
            "TSO only",
            "ISO/TSO",
            "ISO/TSO",
            _roles(
                iso=PresetRole("ISO/TSO (DMO and DERM)", 1, MARKET_TYPES), aggregator=_AGGREGATOR
            ),
        ),
        DsoModel.TSO_HYBRID: Preset(
            "TSO with a hybrid utility",
            "ISO/TSO",
            UTILITY,
            _roles(derm=PresetRole(f"{UTILITY} (DERM)", 1, MARKET_TYPES), aggregator=_AGGREGATOR),
        ),
        DsoModel.NODE_UTILITY: Preset(
            "distribution node run by the utility",
            UTILITY,
            UTILITY,
            _roles(
                derm=PresetRole(f"{UTILITY} (DMO and DERM)", 1, MARKET_TYPES),
                aggregator=_AGGREGATOR,
            ),
        ),
        DsoModel.NODE_INDEPENDENT: Preset(
            "distribution node run by an independent entity",
            INDEPENDENT,
            INDEPENDENT,
            _roles(
                derm=PresetRole(f"{INDEPENDENT} (DMO and DERM)", 1, MARKET_TYPES),
                aggregator=_AGGREGATOR,
            ),
        ),
        DsoModel.P2P_UTILITY: Preset(
            "peer-to-peer with a utility market operator",
            UTILITY,
            "none: customers and traders dispatch on market activity",
            _roles(trader=_TRADER),
        ),
        DsoModel.P2P_INDEPENDENT: Preset(
            "peer-to-peer with an independent market operator",
            INDEPENDENT,
            "none: customers and traders dispatch on market activity",
            _roles(trader=_TRADER),
        ),
    }
)


def refined_roles(model: DsoModel, roles: object) -> object:
    """The raw ``control.roles`` of a configuration with ``model``: the preset's roles, each
    refined by the configured entry of the same name (its keys replace the preset's), and
    the configured roles the preset has not. Anything but a mapping is returned as it is,
    for validation to report."""
    if roles is None:
        roles = {}
    if not isinstance(roles, Mapping):
        return roles
    merged: dict[object, object] = {
        name: {"primacy": role.primacy, "allow": [str(t) for t in role.allow]}
        for name, role in PRESETS[model].roles.items()
    }
    for name, entry in roles.items():
        base = merged.get(name)
        if isinstance(base, dict) and isinstance(entry, Mapping):
            merged[name] = {**base, **entry}
        else:
            merged[name] = entry
    return merged


def grid_operator_refusal(primacies: Mapping[str, int]) -> str | None:
    """Why resolved roles break a model's rule that the grid operator's primacy is the
    strongest (lowest, alone), or None."""
    dgo = primacies[GRID_OPERATOR]
    rivals = sorted(name for name, p in primacies.items() if name != GRID_OPERATOR and p <= dgo)
    if not rivals:
        return None
    return (
        f"role {', '.join(rivals)}: primacy must be weaker (higher) than {GRID_OPERATOR}'s "
        f"{dgo}: the grid operator has the strongest primacy in every DSO model"
    )


def party(model: DsoModel | None, role: str) -> str:
    """Who holds ``role``: the model's party, or "configured" for a role it does not have."""
    preset = PRESETS[model].roles.get(role) if model is not None else None
    return preset.party if preset is not None else "configured"
