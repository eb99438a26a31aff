"""Heavy libraries load only in a gateway that uses them (each costs 20-40 MB on a Pi):
asyncua for OPC UA devices, influxdb_client for the InfluxDB sink; joserfc (and cryptography
under it, about 9 MB) only for signed controls; APScheduler (about 4 MB with multiprocessing
and tzlocal) only when an event has a boundary to wait for (tests/unit/test_control_loop.py);
the AsyncAPI generator, and difflib (0.2 MB) for its `--check`, only for `derms-edge asyncapi`;
the InfluxDB sink's and Home Assistant discovery's modules only when configured. The command
line loads the module of the command it runs, not every command's (0.4 MB for `run`), and
the configuration's models build no validator of their own that only `Config`'s uses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

import pytest
from joserfc.jwk import OKPKey

BUILD = textwrap.dedent(
    """
    import asyncio
    import json
    import sys

    from derms_edge.config import parse_config
    from derms_edge.runtime.gateway import Gateway

    state_dir, extra, key = sys.argv[1], sys.argv[2], sys.argv[3]
    devices = [
        {"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"},
        {"id": "ev", "kind": "evse", "protocol": "modbus", "host": "127.0.0.1", "unit_id": 2,
         "profile": {"name": "x", "current_limit": {"address": 1}}},
    ]
    telemetry = {}
    if extra == "opcua":
        devices.append({"id": "wallbox", "kind": "evse", "protocol": "opcua",
                        "endpoint": "opc.tcp://127.0.0.1:4840",
                        "nodes": {"w": "nsu=urn:x;s=ev.Power"}})
    if extra == "homeassistant":
        homeassistant = {}
    else:
        homeassistant = None
    if extra == "influxdb":
        telemetry["influxdb"] = {"url": "http://127.0.0.1:8086", "token": "t", "org": "o",
                                 "bucket": "b"}
    control = {}
    if extra == "signed":
        control = {"require_signed": True, "roles": {"dso": {"primacy": 1, "keys": [key]}}}


    async def build() -> None:  # the Modbus links want a running loop
        config = {"gateway": {"id": "gw", "state_dir": state_dir}, "devices": devices,
                  "telemetry": telemetry, "control": control, "homeassistant": homeassistant}
        Gateway(parse_config(config)).outbox.close()

    asyncio.run(build())
    print(json.dumps(sorted(set(HEAVY) & set(sys.modules))))
    """
)
HEAVY = (
    "asyncua",
    "influxdb_client",
    "joserfc",
    "cryptography",
    "apscheduler",
    "derms_edge.northbound.asyncapi",
    "difflib",
    "derms_edge.outbox.influx",
    "derms_edge.northbound.ha_announcer",
    "statistics",
)
"""What a SunSpec and Modbus gateway without signing or InfluxDB does not load."""


def loaded(extra: str, state_dir: Path) -> list[str]:
    key = state_dir / "dso.pub.pem"
    key.write_bytes(OKPKey.generate_key("Ed25519").as_pem(private=False))
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{BUILD}", str(state_dir), extra, str(key)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("none", []),
        ("opcua", ["asyncua", "cryptography"]),  # asyncua's client imports cryptography
        ("influxdb", ["derms_edge.outbox.influx", "influxdb_client"]),
        ("homeassistant", ["derms_edge.northbound.ha_announcer"]),
        ("signed", ["cryptography", "joserfc"]),
    ],
)
def test_a_library_is_imported_only_when_the_configuration_uses_it(
    extra: str, expected: list[str], tmp_path: Path
) -> None:
    assert loaded(extra, tmp_path) == expected


def printed(code: str) -> Any:
    """What ``code``, run in a fresh interpreter, printed last, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_command_line_loads_no_heavy_library_before_a_command_runs() -> None:
    """The parser of every command (`--help`) loads no command's libraries."""
    code = (
        f"import json, sys\nimport derms_edge.cli\nderms_edge.cli.parser()\n"
        f"print(json.dumps(sorted(set({HEAVY!r}) & set(sys.modules))))"
    )
    assert printed(code) == []


def test_a_command_loads_its_own_module_not_the_other_commands() -> None:
    """`derms-edge run` (here on a file that is not there) imports run's module and what it
    shares (common), not the other commands' (acl, doctor, monitor, ...); the full parser
    still lists every command."""
    code = (
        "import contextlib, io, json, sys\nfrom derms_edge.cli import COMMANDS, main, parser\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    code = main(['run', '/nonexistent/derms-edge.yaml'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('derms_edge.cli.'))\n"
        "other = sorted(m for m in sys.modules if m.startswith(('derms_edge.diagnostics',"
        " 'derms_edge.northbound.acl', 'derms_edge.northbound.homeassistant')))\n"
        "listed = parser()._subparsers._group_actions[0].choices\n"
        "print(json.dumps([code, loaded, other, len(COMMANDS), sorted(listed)]))"
    )
    code_, loaded, other, commands, listed = printed(code)
    assert code_ == 2  # the file is missing: invalid
    assert loaded == ["derms_edge.cli.common", "derms_edge.cli.run"]
    assert other == []
    assert len(listed) == commands and {"run", "check-config", "acl", "hil"} <= set(listed)


def test_the_configuration_models_inside_config_build_no_validator_of_their_own() -> None:
    """A file whose devices all speak Modbus is validated without the OPC UA and OCPP models
    (`Config`'s full validator is built only for a file that names another protocol); the
    section and device models build their own validator (pydantic's defer_build) only when
    used alone. What a Modbus-only file gives is a `Config` all the same, and each model
    used alone validates as before."""
    from derms_edge.config import (
        OcppSection,
        OpcUaDevice,
        SunSpecDevice,
        TelemetrySection,
        parse_config,
    )
    from derms_edge.errors import ConfigError

    code = (
        "import json\nfrom derms_edge import config\n"
        "config.parse_config({'gateway': {'id': 'g'}, 'devices': [{'id': 'pv', "
        "'kind': 'inverter', 'protocol': 'sunspec', 'host': '127.0.0.1'}]})\n"
        "names = ('Config', 'SunSpecDevice', 'OpcUaDevice', 'OcppDevice', 'OcppSection',"
        " 'NodePoint', 'GatewaySection', 'InfluxSection', 'HomeAssistantSection')\n"
        "built = {n: getattr(config, n).__pydantic_complete__ for n in names}\n"
        "first = config.parse_config({'gateway': {'id': 'g'}, 'devices': [{'id': 'pv', "
        "'kind': 'inverter', 'protocol': 'sunspec', 'host': '127.0.0.1'}]})\n"
        "ok = type(first) is config.Config and first.devices[0].backoff_max_s == 1.0\n"
        "config.parse_config({'gateway': {'id': 'g'}, 'devices': [{'id': 'ev', "
        "'kind': 'evse', 'protocol': 'opcua', 'endpoint': 'opc.tcp://h:4840', "
        "'nodes': {'w': 'ns=2;s=W'}}]})\n"
        "print(json.dumps([built, ok, config.Config.__pydantic_complete__]))"
    )
    built, same_config, full_built = printed(code)
    assert built == dict.fromkeys(built, False)
    assert same_config
    assert full_built  # an OPC UA device: Config's own validator

    # alone, each still validates (its validator built on first use)
    assert SunSpecDevice(id="pv", kind="inverter", protocol="sunspec", host="h").port == 502
    with pytest.raises(ValueError, match="endpoint"):
        OpcUaDevice.model_validate({"id": "x", "kind": "evse", "protocol": "opcua"})
    assert OcppSection.model_validate({"listen": "0.0.0.0:9000"}) is not None
    assert TelemetrySection().interval_s > 0
    with pytest.raises(ConfigError, match=r"devices\[0\]\.portt: unknown key"):
        parse_config(
            {
                "gateway": {"id": "g"},
                "devices": [
                    {"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "h", "portt": 1}
                ],
            }
        )


BAD_MODBUS_FILES: list[dict[str, Any]] = [
    {"gateway": {"id": "g"}, "devices": []},
    {"gateway": {"id": "g"}, "devices": [{"id": "pv", "kind": "inverter", "protocol": "sunspec"}]},
    {"gateway": {"id": "g"}, "devicess": [], "devices": [{"protocol": "sunspec"}]},
    {
        "gateway": {"id": "g"},
        "devices": [
            {"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "h", "portt": 1},
            {"id": "pv", "kind": "battery", "protocol": "sunspec", "host": "h", "unit_id": 2},
        ],
    },
    {
        "gateway": {"id": "g"},
        "devices": [
            {"id": "a", "kind": "inverter", "protocol": "sunspec", "host": "h"},
            {"id": "b", "kind": "inverter", "protocol": "sunspec", "host": "h"},
        ],
    },
    {
        "gateway": {"id": "g!"},
        "control": {"export_limit": {"meter": "m"}},
        "devices": [
            {"id": "pv", "kind": "kettle", "protocol": "sunspec", "host": "h"},
            {"id": "b", "kind": "inverter", "protocol": "sunspec", "host": "h", "unit_id": 2,
             "poll_interval_s": -1, "reserve_soc_pct": 20},
            {"id": "ev", "kind": "evse", "protocol": "modbus", "host": "h", "unit_id": 3},
        ],
    },
    {
        "gateway": {"id": "g"},
        "control": {"export_limit": {"meter": "m"}},
        "devices": [{"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "h"}],
    },
]  # fmt: skip
"""Files whose devices all speak Modbus, each with problems (of fields, of checks)."""


@pytest.mark.parametrize("data", BAD_MODBUS_FILES)
def test_a_modbus_only_file_gets_the_messages_of_the_full_configuration(
    data: dict[str, Any],
) -> None:
    """The lean validator of a Modbus-only file says what `Config`'s says, word for word."""
    from pydantic import ValidationError

    from derms_edge.config import Config, parse_config
    from derms_edge.config.file import _TAGS, _WORDING, _modbus_only
    from derms_edge.errors import ConfigError
    from derms_edge.schema import problems

    assert _modbus_only(data)
    with pytest.raises(ConfigError) as lean:
        parse_config(data)
    with pytest.raises(ValidationError) as full:
        Config.model_validate(data)
    expected = problems(full.value, nowhere="(top level)", wording=_WORDING, tags=_TAGS)
    assert lean.value.problems == expected


def test_the_version_is_read_without_the_installed_distributions_metadata() -> None:
    """`derms_edge.__version__` comes from `derms_edge._version`, which pyproject.toml builds
    the metadata from: the same string, without importlib.metadata reading every installed
    distribution at each start (0.1 MB)."""
    import importlib.metadata

    import derms_edge

    assert derms_edge.__version__ == importlib.metadata.version("derms-edge")
    loaded = printed("import json, sys\nimport derms_edge\nprint(json.dumps(sorted(sys.modules)))")
    assert "importlib.metadata" not in loaded


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connecting_to_the_broker_loads_no_idna_codec(host: str) -> None:
    """paho's connect resolves the broker's name with ``getaddrinfo``; given a str, CPython
    encodes it with the ``idna`` codec (``encodings.idna``, ``stringprep``, ``unicodedata``:
    0.4 MB for the life of the daemon). The session's client gives an ASCII name as bytes, and
    still reaches the broker (here a listening socket, which sees paho's CONNECT)."""
    code = textwrap.dedent(
        f"""
        import json, socket, sys
        from derms_edge.config import MqttSection
        from derms_edge.northbound.mqtt import new_client

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = new_client(MqttSection(host={host!r}, port=port))
        client.connect({host!r}, port)
        accepted, _ = listener.accept()
        accepted.settimeout(5)
        first = accepted.recv(1)[0]
        idna = sorted({{"encodings.idna", "stringprep", "unicodedata"}} & set(sys.modules))
        print(json.dumps([first >> 4, idna]))
        """
    )
    packet_type, idna = printed(code)
    assert packet_type == 1  # CONNECT
    assert idna == []


def test_a_broker_name_beyond_ascii_is_resolved_the_usual_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An internationalised name goes through paho's own connect, a str for the resolver
    (and its ``idna`` codec). Nothing is resolved here: the connect paho calls is recorded."""
    from derms_edge.config import MqttSection
    from derms_edge.northbound.mqtt import new_client

    asked: list[tuple[object, int]] = []

    def create_connection(address: tuple[object, int], *_: object, **__: object) -> NoReturn:
        asked.append(address)
        raise ConnectionRefusedError

    monkeypatch.setattr(socket, "create_connection", create_connection)  # paho's and ours
    for host in ("brøker.example", "broker.example"):
        with pytest.raises(ConnectionRefusedError):
            new_client(MqttSection(host=host, port=1883)).connect(host, 1883)
    assert asked == [("brøker.example", 1883), (b"broker.example", 1883)]
