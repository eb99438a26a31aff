"""``derms-edge init`` without devices: the kind recognised from a SunSpec model chain, flags
that are wrong (each error names its flag), never a wait on input without a terminal, and
``base_address`` anywhere a SunSpec map fits."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from derms_edge.cli import main
from derms_edge.cli.init import host_port
from derms_edge.config import parse_config
from derms_edge.devices.site_file import default_ids
from derms_edge.devices.sunspec.mapping import kind_of
from derms_edge.errors import ConfigError
from derms_edge.model import DeviceKind
from tests.support.servers import free_port

BATTERY, INVERTER, METER = DeviceKind.BATTERY, DeviceKind.INVERTER, DeviceKind.METER


@pytest.mark.parametrize(
    ("models", "kind"),
    [
        ([1, 101], INVERTER),
        ([1, 103, 120, 121, 123, 126], INVERTER),
        ([1, 113, 120], INVERTER),
        ([1, 701, 702, 703, 704, 705], INVERTER),  # IEEE 1547 DER
        ([1, 103, 124, 713, 802], BATTERY),  # the storage models win over the inverter's
        ([1, 701, 713], BATTERY),
        ([1, 103, 124], BATTERY),
        ([1, 802], BATTERY),
        ([1, 201], METER),
        ([1, 203], METER),
        ([1, 204], METER),
        ([1, 213], METER),
        ([1], None),  # common model only: nothing to read
        ([1, 120, 121], None),  # nameplate and settings without measurements
        ([1, 64001], None),  # vendor models only
    ],
)
def test_the_kind_comes_from_the_model_chain(models: list[int], kind: DeviceKind | None) -> None:
    assert kind_of(models) == kind


def test_default_ids_are_the_kinds_numbered_when_there_are_several() -> None:
    kinds = [INVERTER, BATTERY, INVERTER, METER]
    assert default_ids(kinds) == ["inverter-1", "battery", "inverter-2", "meter"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.168.1.50", ("192.168.1.50", 502)),
        ("192.168.1.50:1502", ("192.168.1.50", 1502)),
        ("gw.local:502", ("gw.local", 502)),
        ("[fe80::1]:503", ("fe80::1", 503)),
        ("[fe80::1]", ("fe80::1", 502)),
    ],
)
def test_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert host_port(text, 502) == expected


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--modbus", "10.0.0.1:70000"], "--modbus: '10.0.0.1:70000': the port must be 1-65535"),
        (["--modbus", ":502"], "--modbus: ':502': no host"),
        (["--opcua", "http://10.0.0.2:4840"], "--opcua: 'http://10.0.0.2:4840' is not opc.tcp"),
        (["--modbus", "h", "--unit-ids", "1-300"], "--unit-ids: '1-300': unit ids go from 0"),
        (["--modbus", "h", "--base", "65531"], "--base: 65531 is not a holding register"),
        (["--modbus", "h", "--baud", "9600"], "--baud: applies to --serial only"),
        (["--modbus", "h", "--timeout", "0"], "--timeout: must be more than 0 s"),
        (["--modbus", "h", "--gateway-id", "my site"], "--gateway-id: 'my site': 1 to 64"),
        (["--modbus", "h", "--gateway-id", "s", "--broker", "b:0"], "--broker: 'b:0': the port"),
        ([], "nothing to scan: give --modbus HOST[:PORT], --serial PORT or --opcua URL"),
    ],
)
def test_a_wrong_flag_is_named(
    argv: list[str], error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site.yaml"
    assert main(["init", "--yes", *argv, "--out", str(out)]) == 2
    assert error in capsys.readouterr().err
    assert not out.exists()


def test_without_a_terminal_init_names_the_flag_it_would_have_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "site.yaml")
    # pytest's stdin is not a terminal: nothing may wait on it
    assert main(["init", "--out", out]) == 2
    assert "stdin is not a terminal, so init cannot ask: give --modbus, or --yes" in (
        capsys.readouterr().err
    )
    assert main(["init", "--modbus", "127.0.0.1:1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "give --unit-ids, or --yes (the default: '1')" in err
    argv = ["init", "--serial", "/dev/ttyUSB0", "--unit-ids", "1", "--out", out]
    assert main(argv) == 2
    assert "give --baud, or --yes (the default: '9600')" in capsys.readouterr().err


def test_an_existing_file_is_kept_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site.yaml"
    out.write_text("mine\n")
    assert main(["init", "--yes", "--modbus", "127.0.0.1:1", "--out", str(out)]) == 2
    assert "exists; give --force to overwrite it" in capsys.readouterr().err
    assert out.read_text() == "mine\n"


def _sunspec(base_address: int) -> dict[str, object]:
    device = {"id": "m", "kind": "meter", "protocol": "sunspec", "host": "10.0.0.9"}
    return {"gateway": {"id": "g"}, "devices": [{**device, "base_address": base_address}]}


@pytest.mark.parametrize("base", [0, 1000, 4096, 40000, 50000, 65530])
def test_base_address_is_any_address_a_manual_gives(base: int) -> None:
    device = parse_config(_sunspec(base)).devices[0]
    assert getattr(device, "base_address", None) == base


@pytest.mark.parametrize("base", [-1, 65531])
def test_base_address_leaves_room_for_the_map(base: int) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_sunspec(base))
    assert any(p.startswith("devices[0].base_address") for p in raised.value.problems)


def test_a_link_that_cannot_be_opened_is_said_once_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "site.yaml"
    port = free_port()
    argv = ["init", "--yes", "--modbus", f"127.0.0.1:{port}", "--unit-ids", "1-3"]
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count(f"left out: cannot connect to 127.0.0.1:{port}") == 1
    assert "found no device the gateway can read; nothing written" in err
    assert not out.exists()


def test_init_run_in_process_leaves_the_log_levels_as_it_found_them(tmp_path: Path) -> None:
    """init quietens the device libraries while it scans, and only then: a test or a shell
    that runs it in-process keeps its logging (one test's init once silenced the next's)."""
    names = ("derms_edge", "pymodbus", "asyncua")
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET)
    argv = ["init", "--yes", "--modbus", f"127.0.0.1:{free_port()}", "--unit-ids", "1"]
    assert main([*argv, "--out", str(tmp_path / "site.yaml")]) == 1
    assert {logging.getLogger(name).level for name in names} == {logging.NOTSET}
