"""Configuration: the shipped files pass, bad files fail with one readable line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from derms_edge.cli import main
from derms_edge.config import load_config, parse_config
from derms_edge.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
DEVICE = {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out
    config = load_config(path)
    for device in config.devices:
        assert device.id in out


def test_the_three_configs_ship() -> None:
    assert {p.name for p in CONFIGS} >= {"hil-demo.yaml", "residential.yaml", "commercial.yaml"}


def test_commercial_has_twenty_inverters_and_a_meter_on_one_gateway() -> None:
    config = load_config(Path(__file__).parents[2] / "configs" / "commercial.yaml")
    kinds = [d.kind for d in config.devices]
    assert kinds.count("inverter") == 20
    assert kinds.count("meter") == 1
    assert len({d.link for d in config.devices}) == 1
    assert len({d.unit_id for d in config.devices}) == 21


def test_errors_name_the_path_in_the_file() -> None:
    found = problems(
        {
            "gateway": {"id": "site-001"},
            "devices": [DEVICE, {**DEVICE, "id": "inv2", "port": 70000}],
        }
    )
    assert found == ["devices[1].port: Input should be less than or equal to 65535"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        {
            "gateway": {"id": "site/001"},
            "mqtt": {"port": 0},
            "devices": [{**DEVICE, "kind": "solar"}],
        }
    )
    assert len(found) == 3
    assert found[0].startswith("gateway.id: String should match pattern")
    assert found[1] == "mqtt.port: Input should be greater than or equal to 1"
    assert found[2].startswith("devices[0].kind: Input should be 'inverter'")


def test_unknown_keys_are_errors() -> None:
    found = problems({"gateway": {"id": "g", "stat_dir": "x"}, "devices": [DEVICE]})
    assert found == [
        "gateway.stat_dir: unknown key (check the spelling; see docs/configuration.md)"
    ]


def test_a_device_needs_exactly_one_link() -> None:
    neither = {k: v for k, v in DEVICE.items() if k != "host"}
    both = {**DEVICE, "serial": {"port": "/dev/ttyUSB0"}}
    assert problems({"gateway": {"id": "g"}, "devices": [neither]}) == [
        "devices[0]: give either host (Modbus TCP) or serial (Modbus RTU), not both"
    ]
    assert len(problems({"gateway": {"id": "g"}, "devices": [both]})) == 1


def test_serial_rtu_device() -> None:
    rtu = {k: v for k, v in DEVICE.items() if k != "host"}
    config = parse_config(
        {
            "gateway": {"id": "g"},
            "devices": [{**rtu, "unit_id": 3, "serial": {"port": "/dev/ttyUSB0", "parity": "E"}}],
        }
    )
    assert config.devices[0].link == "/dev/ttyUSB0@9600/E"
    assert problems(
        {"gateway": {"id": "g"}, "devices": [{**rtu, "serial": {"port": "x", "baudrate": 1234}}]}
    )[0].startswith("devices[0].serial.baudrate:")


def test_duplicate_ids_and_addresses_are_errors() -> None:
    assert problems({"gateway": {"id": "g"}, "devices": [DEVICE, DEVICE]}) == [
        "(top level): device id 'inv1' is used twice: devices[0] and devices[1]"
    ]
    assert problems({"gateway": {"id": "g"}, "devices": [DEVICE, {**DEVICE, "id": "x"}]}) == [
        "(top level): devices 'inv1' and 'x' both use 127.0.0.1:502 unit 1"
    ]


def test_stale_window_defaults_to_three_poll_intervals() -> None:
    config = parse_config({"gateway": {"id": "g"}, "devices": [{**DEVICE, "poll_interval_s": 2}]})
    assert config.devices[0].stale_after == 6


def test_check_config_exits_2_with_every_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "gateway: {id: g}\n"
        "devices:\n"
        "  - {id: a, kind: inverter, protocol: sunspec, host: 127.0.0.1}\n"
        "  - {id: b, kind: inverter, protocol: sunspec, host: 127.0.0.1, port: 99999}\n"
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "devices[1].port: Input should be less than or equal to 65535" in err


def test_yaml_syntax_errors_say_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: g\ndevices: [\n")
    assert main(["check-config", str(bad)]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_run_refuses_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: g}\ndevices: []\n")
    assert main(["run", str(bad)]) == 2
    assert "devices: List should have at least 1 item" in capsys.readouterr().err
