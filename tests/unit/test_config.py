"""Configuration: the shipped files pass, bad files fail with one readable line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from derms_edge.cli import main
from derms_edge.config import OpcUaDevice, load_config, parse_config, parse_node_id
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
    a = {"id": "a", "kind": "inverter", "protocol": "sunspec", "serial": {"port": "/dev/ttyS0"}}
    b = {**a, "id": "b", "serial": {"port": "/dev/ttyS0", "baudrate": 19200}}
    assert problems({"gateway": {"id": "g"}, "devices": [a, b]}) == [  # one bus, one unit 1
        "(top level): devices 'a' and 'b' both use /dev/ttyS0@19200/N unit 1"
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


OPCUA = {
    "id": "ev2",
    "kind": "evse",
    "protocol": "opcua",
    "endpoint": "opc.tcp://127.0.0.1:4841/derms-edge/hil/ev2",
    "nodes": {
        "w": {"node": "nsu=urn:derms-edge:hil:evse;s=ev2.ActualPower", "scale": -1},
        "wh_imported": {"node": "nsu=urn:derms-edge:hil:evse;s=ev2.EnergyDelivered", "unit": "kWh"},
        "max_a_setpoint": "ns=2;s=ev2.MaxCurrentSetpoint",
    },
}


def opcua_problems(**changes: object) -> list[str]:
    return problems({"gateway": {"id": "site-001"}, "devices": [{**OPCUA, **changes}]})


def test_an_opcua_device_takes_node_ids_by_index_or_namespace_uri() -> None:
    config = parse_config({"gateway": {"id": "site-001"}, "devices": [OPCUA]})
    (device,) = config.devices
    assert device.protocol == "opcua"
    power = device.nodes["w"]
    assert power.node_ref.namespace_uri == "urn:derms-edge:hil:evse"
    assert power.node_ref.identifier == "ev2.ActualPower"
    assert power.factor("w") == -1.0
    assert device.nodes["wh_imported"].factor("wh_imported") == 1000.0
    assert device.nodes["max_a_setpoint"].node_ref.namespace_index == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i=2253", ("i", 2253, None, None)),
        ("ns=3;i=1001", ("i", 1001, 3, None)),
        ("ns=2;s=EVSE1.ActualPower", ("s", "EVSE1.ActualPower", 2, None)),
        ("nsu=urn:vendor:evse;s=a;b", ("s", "a;b", None, "urn:vendor:evse")),
        (
            "ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
            ("g", "72962b91-fa75-4ae6-8d28-b404dc7daf63", 1, None),
        ),
        ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", ("b", "M/RbKBsRVkePCePcx24oRA==", 1, None)),
    ],
)
def test_node_ids_parse_in_every_text_form(text: str, expected: tuple[object, ...]) -> None:
    ref = parse_node_id(text)
    assert (ref.id_type, ref.identifier, ref.namespace_index, ref.namespace_uri) == expected


@pytest.mark.parametrize(
    ("node", "says"),
    [
        ("ns=2;x=foo", "is not a node id"),
        ("ActualPower", "is not a node id"),
        ("ns=2;i=abc", "a numeric identifier (i=) is 0..4294967295"),
        ("ns=70000;s=a", "a namespace index is 0..65535"),
        ("ns=1;g=not-a-guid", "g= takes a GUID"),
        ("ns=1;b=***", "b= takes base64"),
    ],
)
def test_a_bad_node_id_is_named_with_its_point(node: str, says: str) -> None:
    (found,) = opcua_problems(nodes={"w": node})
    assert found.startswith("devices[0].nodes.w")
    assert says in found


def test_opcua_settings_are_checked() -> None:
    assert opcua_problems(endpoint="http://127.0.0.1:4841") == [
        "devices[0]: endpoint 'http://127.0.0.1:4841' is not opc.tcp://host[:port][/path]"
    ]
    assert opcua_problems(nodes={"w": {"node": "i=1", "unit": "kWh"}}) == [
        "devices[0]: nodes.w: unit 'kWh' is not one of W, kW, MW"
    ]
    assert opcua_problems(nodes={"v": {"node": "i=1", "states": {"1": "idle"}}}) == [
        "devices[0]: nodes.v: states applies to the state point only"
    ]
    assert opcua_problems(nodes={"watts": "i=1"})[0].startswith("devices[0].nodes.watts")
    assert opcua_problems(security={"policy": "Basic256Sha256"}) == [
        "devices[0].security: policy Basic256Sha256 needs certificate and private_key"
    ]
    assert opcua_problems(security={"certificate": "c.der"}) == [
        "devices[0].security: certificate given, but policy is None (no security)"
    ]
    assert opcua_problems(password="secret") == ["devices[0]: password is set but username is not"]
    assert opcua_problems(reserve_soc_pct=20) == [
        "devices[0]: reserve_soc_pct applies to batteries only (this device is kind: evse)"
    ]
    assert opcua_problems(kind="battery", max_a=16) == [
        "devices[0]: max_a applies to EV chargers only (this device is kind: battery)"
    ]


def test_max_value_age_is_the_staleness_window_of_a_subscription_only() -> None:
    def device(**changes: object) -> OpcUaDevice:
        config = parse_config({"gateway": {"id": "site-001"}, "devices": [{**OPCUA, **changes}]})
        (found,) = config.devices
        assert isinstance(found, OpcUaDevice)
        return found

    assert device(poll_interval_s=2).stale_after == 6  # by default: the subscription's word
    assert device(poll_interval_s=2, max_value_age_s=30).stale_after == 30
    assert opcua_problems(max_value_age_s=30, subscribe=False) == [
        "devices[0]: max_value_age_s applies to subscriptions (subscribe: true)"
    ]
    assert opcua_problems(max_value_age_s=30, stale_after_s=5) == [
        "devices[0]: give max_value_age_s or stale_after_s, not both: with max_value_age_s, "
        "a reading is stale past that age"
    ]
    assert opcua_problems(max_value_age_s=0)[0].startswith("devices[0].max_value_age_s")


def test_two_devices_may_share_one_opcua_server() -> None:
    second = {**OPCUA, "id": "ev3"}
    config = parse_config({"gateway": {"id": "site-001"}, "devices": [OPCUA, second]})
    assert [d.link for d in config.devices] == [OPCUA["endpoint"]] * 2


def test_the_backoff_cap_defaults_to_the_poll_interval_alone_and_30_timeouts_shared() -> None:
    serial = {"port": "/dev/ttyUSB0", "baudrate": 9600}
    config = parse_config(
        {
            "gateway": {"id": "site-001"},
            "devices": [
                {**DEVICE, "poll_interval_s": 0.5},  # alone on 127.0.0.1:502
                {**DEVICE, "id": "inv2", "host": "10.0.0.9", "backoff_max_s": 7},  # set: kept
                {**DEVICE, "id": "inv3", "host": "10.0.0.8", "unit_id": 1, "timeout_s": 0.4},
                {**DEVICE, "id": "meter", "kind": "meter", "host": "10.0.0.8", "unit_id": 2},
                {"id": "rtu1", "kind": "inverter", "protocol": "sunspec", "serial": serial},
                {
                    "id": "rtu2",
                    "kind": "inverter",
                    "protocol": "sunspec",
                    "unit_id": 2,
                    "serial": {**serial, "baudrate": 19200},
                },  # same port: the same bus
                {**DEVICE, "id": "slow", "host": "10.0.0.7", "poll_interval_s": 60},
            ],
        }
    )
    caps = {d.id: d.backoff_max_s for d in config.devices}
    assert caps == {
        "inv1": 0.5,  # controls back within two poll intervals of recovery
        "inv2": 7,
        "inv3": 12.0,  # 30 x its timeout: a silent unit takes ~1/10 of the shared link
        "meter": 30.0,
        "rtu1": 30.0,
        "rtu2": 30.0,
        "slow": 60,  # never more often than it is polled
    }
    assert all(d.backoff_max == caps[d.id] for d in config.devices)
