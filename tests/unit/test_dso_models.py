"""The six DSO models: the roles each preset resolves, how ``roles:`` refines them, the
grid operator's primacy rule, and the role table ``check-config`` prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from derms_edge.cli import main
from derms_edge.config import parse_config
from derms_edge.config.dso_models import CUSTOMER, GRID_OPERATOR, PRESETS, DsoModel
from derms_edge.errors import ConfigError
from derms_edge.model import ControlType as C

DEVICE = {"id": "bat1", "kind": "battery", "protocol": "sunspec", "host": "127.0.0.1"}
MARKET_ROLES = {"iso", "derm", "aggregator", "trader"}


def config(control: dict[str, object]) -> dict[str, object]:
    return {"gateway": {"id": "site-001"}, "devices": [DEVICE], "control": control}


@pytest.mark.parametrize("model", list(DsoModel))
def test_every_preset_has_the_grid_operator_strongest_and_the_customer(model: DsoModel) -> None:
    roles = parse_config(config({"dso_model": str(model)})).control.roles
    assert set(roles) == set(PRESETS[model].roles)
    dgo = roles[GRID_OPERATOR]
    assert all(r.primacy > dgo.primacy for n, r in roles.items() if n != GRID_OPERATOR)
    assert set(dgo.allow) >= {C.MAX_W_PCT, C.EXPORT_LIMIT_W, C.VOLT_VAR, C.FIXED_PF}
    assert C.STORAGE_W not in dgo.allow  # dispatch is a market function, not the grid's
    assert C.RESERVE_SOC_PCT in roles[CUSTOMER].allow
    for name in set(roles) & MARKET_ROLES:
        # export limits and reactive power stay with the grid operator; the reserve with
        # the customer
        assert not {C.EXPORT_LIMIT_W, C.VOLT_VAR, C.FIXED_PF, C.RESERVE_SOC_PCT} & set(
            roles[name].allow
        ), name
        assert C.STORAGE_W in roles[name].allow


def test_roles_refine_a_preset_and_add_roles() -> None:
    control = parse_config(
        config(
            {
                "dso_model": "node_independent",
                "roles": {
                    "aggregator": {"allow": ["storage_w"]},
                    "customer": {"primacy": 5},
                    "fleet": {"primacy": 4, "allow": ["evse_max_a"]},
                },
            }
        )
    ).control
    assert control.roles["aggregator"].allow == [C.STORAGE_W]
    assert control.roles["aggregator"].primacy == 2  # the preset's, not refined
    assert control.roles["customer"].primacy == 5
    assert set(control.roles["customer"].allow) == set(
        PRESETS[DsoModel.NODE_INDEPENDENT].roles[CUSTOMER].allow
    )
    assert control.roles["fleet"].allow == [C.EVSE_MAX_A]
    assert set(control.roles) == {"dgo", "derm", "aggregator", "customer", "fleet"}


def test_without_a_model_the_roles_are_as_before() -> None:
    roles = parse_config(config({})).control.roles
    assert list(roles) == ["dso"] and roles["dso"].primacy == 1


@pytest.mark.parametrize("rival", ["customer", "newcomer"])
def test_no_role_may_match_the_grid_operators_primacy(rival: str) -> None:
    data = config({"dso_model": "p2p_utility", "roles": {rival: {"primacy": 0}}})
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.problems == [
        f"control: roles: role {rival}: primacy must be weaker (higher) than dgo's 0: the "
        "grid operator has the strongest primacy in every DSO model"
    ]


def test_an_unknown_model_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config({"dso_model": "tso"}))
    assert any("control.dso_model" in p and "node_independent" in p for p in caught.value.problems)


def test_check_config_prints_the_resolved_role_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        yaml.safe_dump(
            config({"dso_model": "tso_only", "roles": {"aggregator": {"allow": ["storage_w"]}}})
        )
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dso_model tso_only: TSO only; DMO ISO/TSO, DERM ISO/TSO" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")][-4:]
    assert [(r[0], r[1]) for r in rows] == [
        ("dgo", "0"),
        ("iso", "1"),
        ("aggregator", "2"),
        ("customer", "3"),
    ]
    assert out.splitlines()[-2].endswith("third-party aggregator             storage_w")


def test_the_documented_role_tables_are_the_presets() -> None:
    text = (Path(__file__).parents[2] / "docs" / "dso-models.md").read_text(encoding="utf-8")
    for model, preset in PRESETS.items():
        section = text.split(f"### `{model}`: {preset.title}\n", 1)[1].split("\n### ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        documented = {
            cells[0].strip("` "): (
                cells[1].strip(),
                int(cells[2]),
                cells[3].replace("`", "").strip(),
            )
            for cells in (row.strip("|").split("|") for row in rows)
        }
        assert documented == {
            name: (role.party, role.primacy, ", ".join(role.allow))
            for name, role in preset.roles.items()
        }, model
