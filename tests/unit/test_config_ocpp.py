"""The ocpp section and protocol: ocpp devices in the configuration."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from derms_edge.cli.check_config import summary
from derms_edge.config import OcppDevice, parse_config
from derms_edge.config.secrets import secret_files
from derms_edge.diagnostics.devices import devices
from derms_edge.diagnostics.result import Mark
from derms_edge.errors import ConfigError

EV = {"id": "ev1", "kind": "evse", "protocol": "ocpp", "station_id": "CP-0042"}


def config(*devices: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {"gateway": {"id": "site-001"}, "devices": list(devices), **sections}


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_an_ocpp_evse_with_the_section_and_its_defaults() -> None:
    parsed = parse_config(config(EV, ocpp={"listen": "127.0.0.1:9100"}))
    device = parsed.devices[0]
    assert isinstance(device, OcppDevice)
    assert (device.evse, device.ocpp_version, device.max_a) == (1, None, None)
    assert parsed.ocpp is not None
    assert (parsed.ocpp.host, parsed.ocpp.port) == ("127.0.0.1", 9100)
    assert parsed.ocpp.profile_valid_s == 900  # the fail-safe
    assert parsed.ocpp.heartbeat_interval_s == 60
    assert parse_config(config(EV, ocpp={})).ocpp.listen == "0.0.0.0:9000"  # type: ignore[union-attr]


def test_an_ocpp_device_needs_the_ocpp_section() -> None:
    (line,) = problems(config({"id": "inv1", "kind": "meter", "protocol": "sunspec",
                               "host": "127.0.0.1"}, EV))  # fmt: skip
    assert line.startswith("(top level): devices[1] ('ev1') is protocol: ocpp")
    assert "top-level ocpp section" in line


def test_ocpp_settings_are_checked_and_named() -> None:
    assert problems(config(EV, ocpp={"listen": "9000"})) == [
        "ocpp: listen '9000' is not host:port (port 1..65535)"
    ]
    assert problems(config(EV, ocpp={"profile_valid_s": 5}))[0].startswith("ocpp.profile_valid_s:")
    assert problems(config({**EV, "kind": "battery"}, ocpp={})) == [
        "devices[0]: an OCPP device is kind: evse (this one is kind: battery)"
    ]
    assert problems(config({**EV, "station_id": "CP 42/x"}, ocpp={}))[0].startswith(
        "devices[0].station_id:"
    )
    assert problems(config({**EV, "ocpp_version": "2.1"}, ocpp={}))[0].startswith(
        "devices[0].ocpp_version:"
    )


def test_the_evses_of_one_station_agree_and_none_is_two_devices() -> None:
    second = {**EV, "id": "ev2", "evse": 2}
    assert parse_config(config(EV, second, ocpp={}))  # two EVSEs of one station
    (twice,) = problems(config(EV, {**second, "evse": 1}, ocpp={}))
    assert "devices[1] ('ev2'): station CP-0042 evse 1 is already another device" in twice
    (version,) = problems(config(EV, {**second, "ocpp_version": "1.6"}, ocpp={}))
    assert "devices[1].ocpp_version: station CP-0042 has another ocpp_version" in version


def test_the_station_password_and_the_tls_key_are_secret_files(tmp_path: Path) -> None:
    parsed = parse_config(
        config(
            {**EV, "password_file": str(tmp_path / "cp.pw")},
            ocpp={"tls": {"cert_file": "c.pem", "key_file": str(tmp_path / "k.pem")}},
        )
    )
    assert dict(secret_files(parsed)) == {
        "devices[0].password_file": tmp_path / "cp.pw",
        "ocpp.tls.key_file": tmp_path / "k.pem",
    }


def test_doctor_does_not_dial_a_station_and_check_config_shows_it() -> None:
    parsed = parse_config(config(EV, ocpp={}))
    (check,) = asyncio.run(devices(parsed))
    assert check.mark is Mark.WARN  # not a failure: the station connects to the gateway
    assert check.title.startswith("device ev1 (OCPP station CP-0042 evse 1) not asked")
    assert "OCPP station CP-0042 evse 1" in summary(parsed)
