"""The broker link's security from the configuration: the TLS context, the password's sources,
secret files, the ACL, what check-config warns of, and failures said for installers."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from derms_edge.cli.check_config import transport_warnings
from derms_edge.config import Config, MqttSection, parse_config
from derms_edge.config.secrets import exposed_secrets, unreadable_secrets
from derms_edge.northbound.acl import mosquitto_acl
from derms_edge.northbound.tls import client_context, connect_failure
from tests.unit.test_config import problems

DEVICES = [{"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}]


def config(**mqtt: Any) -> Config:
    return parse_config({"gateway": {"id": "site-1"}, "mqtt": mqtt, "devices": DEVICES})


def mqtt_problems(**mqtt: Any) -> list[str]:
    return problems({"gateway": {"id": "site-1"}, "mqtt": mqtt, "devices": DEVICES})


def test_the_broker_is_always_verified_over_tls_1_2_or_newer(tmp_path: Path) -> None:
    mqtt = config(tls={}).mqtt
    assert mqtt.tls is not None
    context = client_context(mqtt.tls)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_tls_and_password_settings_are_checked() -> None:
    assert mqtt_problems(tls={"cert_file": "c.pem"}) == [
        "mqtt.tls: cert_file and key_file go together (the client certificate and its key)"
    ]
    assert mqtt_problems(tls={"verify": False})[0].startswith("mqtt.tls.verify")  # no such switch
    assert mqtt_problems(username="u", password="p", password_file="/p") == [
        "mqtt: give password or password_file, not both"
    ]
    assert mqtt_problems(password_file="/p") == ["mqtt: password is set but username is not"]


def test_the_password_comes_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\nignored\n")
    assert config(username="u", password_file=str(secret)).mqtt.secret() == "s3cret"
    monkeypatch.setenv("DERMS_EDGE_MQTT_PASSWORD", "from-env")
    assert config(username="u").mqtt.secret() == "from-env"
    assert config(username="u", password="inline").mqtt.secret() == "inline"


def test_secret_files_others_can_read_are_refused_with_the_fix(tmp_path: Path) -> None:
    key, secret = tmp_path / "gw.key", tmp_path / "mqtt.password"
    for path in (key, secret):
        path.write_text("x")
        path.chmod(0o640)
    site = config(
        username="u",
        password_file=str(secret),
        tls={"cert_file": str(tmp_path / "gw.pem"), "key_file": str(key)},
    )
    assert exposed_secrets(site) == []
    key.chmod(0o644)
    secret.chmod(0o604)
    assert exposed_secrets(site) == [
        f"mqtt.password_file: {secret} is readable by others (mode 0604); a secret is for its "
        f"owner and group only: chmod 640 {secret}; chown root:derms-edge {secret}",
        f"mqtt.tls.key_file: {key} is readable by others (mode 0644); a secret is for its "
        f"owner and group only: chmod 640 {key}; chown root:derms-edge {key}",
    ]
    secret.unlink()
    assert unreadable_secrets(site) == [
        f"mqtt.password_file: {secret} cannot be read: No such file or directory"
    ]


def test_check_config_warns_of_a_remote_broker_without_tls_and_exposed_inline_secrets(
    tmp_path: Path,
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("")
    path.chmod(0o600)
    assert transport_warnings(config(host="127.0.0.1"), path) == []
    assert transport_warnings(config(host="broker.dso.example", tls={}), path) == []
    (warning,) = transport_warnings(config(host="broker.dso.example"), path)
    assert "broker.dso.example is not on this machine and mqtt.tls is not set" in warning
    path.chmod(0o644)
    (warning,) = transport_warnings(config(username="u", password="p"), path)
    assert warning.startswith(f"{path} holds mqtt.password and is readable by others: chmod 640")


def test_the_acl_grants_each_identity_its_own_topics_only() -> None:
    site = parse_config(
        {
            "gateway": {"id": "site-1"},
            "mqtt": {"username": "gw-1", "groups": ["feeder-3"]},
            "control": {"roles": {"dgo": {"primacy": 0}, "aggregator": {"primacy": 2}}},
            "devices": DEVICES,
        }
    )
    root = "derms/v1/site-1"
    published = [
        f"{root}/status",
        f"{root}/telemetry/+",
        f"{root}/capability/+",
        f"{root}/responses",
        f"{root}/active",
    ]

    def role(name: str) -> list[str]:
        return [
            f"user {name}",
            f"topic write {root}/controls/{name}",
            f"topic write {root}/controls/{name}/cancel",
            f"topic write {root}/default_control/{name}",
            f"topic write {root}/heartbeat/{name}",
            f"topic write derms/v1/groups/feeder-3/controls/{name}",
            f"topic write derms/v1/groups/feeder-3/controls/{name}/cancel",
            *(f"topic read {t}" for t in published),
        ]

    lines = mosquitto_acl(site, "site.yaml").splitlines()
    assert lines[0] == "# derms-edge ACL for gateway site-1, from site.yaml"
    assert lines[3:] == [
        "user gw-1",
        *(f"topic write {t}" for t in published),
        f"topic read {root}/controls/+",
        f"topic read {root}/controls/+/cancel",
        f"topic read {root}/default_control/+",
        f"topic read {root}/heartbeat/+",
        "topic read derms/v1/groups/feeder-3/controls/+",
        "topic read derms/v1/groups/feeder-3/controls/+/cancel",
        "",
        *role("dgo"),
        "",
        *role("aggregator"),
    ]
    with pytest.raises(ValueError, match=r"mqtt\.username is not set"):
        mosquitto_acl(config(), "site.yaml")


def failure(message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            failure("unable to get local issuer certificate"),
            "its certificate is not signed by the CA in /etc/derms-edge/ca.pem (unable to get "
            "local issuer certificate); check mqtt.tls.ca_file",
        ),
        (
            failure("Hostname mismatch, certificate is not valid for 'broker.dso.example'."),
            "its certificate is not valid for the name 'broker.dso.example'",
        ),
        (failure("certificate has expired"), "renew it, or check the gateway's clock"),
        (ConnectionRefusedError(111, "refused"), "nothing accepts connections there"),
        (None, "MQTT broker broker.dso.example:8883 is unreachable"),
    ],
)
def test_connect_failures_say_what_to_check(error: BaseException | None, said: str) -> None:
    mqtt = MqttSection.model_validate(
        {"host": "broker.dso.example", "port": 8883, "tls": {"ca_file": "/etc/derms-edge/ca.pem"}}
    )
    message = connect_failure(error, mqtt)
    assert message.startswith("MQTT broker broker.dso.example:8883")
    assert said in message
