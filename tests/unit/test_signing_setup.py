"""Setting up signed controls: key files checked when the configuration loads, `keys new`,
and check-config's warnings."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from derms_edge.cli import keys
from derms_edge.cli.check_config import signing_warnings
from derms_edge.config import Config, parse_config
from derms_edge.errors import ConfigError

DEVICE = {"id": "inv1", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"}


def config(**control: Any) -> Config:
    return parse_config(
        {"gateway": {"id": "site"}, "devices": [DEVICE], "control": control, "mqtt": {}}
    )


def problem(tmp_path: Path, pem: bytes | None) -> str:
    path = tmp_path / "dso.pub.pem"
    if pem is not None:
        path.write_bytes(pem)
    with pytest.raises(ConfigError) as caught:
        config(roles={"dso": {"primacy": 1, "keys": [str(path)]}})
    (line,) = caught.value.problems
    assert line.startswith(f"control.roles.dso.keys[0]: {path}: ")
    return line


def test_a_missing_key_file_names_the_role_and_the_path(tmp_path: Path) -> None:
    assert "cannot read the public key" in problem(tmp_path, None)


@pytest.mark.parametrize(
    ("pem", "said"),
    [
        (b"not a key", "not an Ed25519 public key in PEM"),
        (OKPKey.generate_key("X25519").as_pem(private=False), "an X25519 key"),
        (OKPKey.generate_key("Ed25519").as_pem(private=True), "a private key"),
    ],
    ids=["garbage", "x25519", "private"],
)
def test_a_key_that_is_not_an_ed25519_public_key_is_refused(
    tmp_path: Path, pem: bytes, said: str
) -> None:
    assert said in problem(tmp_path, pem)


def test_keys_new_writes_a_pair_and_prints_its_thumbprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tmp_path / "keys" / "dso"
    assert keys.main(argparse.Namespace(name=str(name))) == 0
    private = Path(f"{name}.key.pem")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = keys.read_private_key(private)
    public = OKPKey.import_key(Path(f"{name}.pub.pem").read_bytes())
    assert public.thumbprint() == key.thumbprint()
    assert f"kid         {key.thumbprint()}" in capsys.readouterr().out
    assert keys.main(argparse.Namespace(name=str(name))) == 1  # never overwritten
    assert keys.read_private_key(private).thumbprint() == key.thumbprint()


def test_check_config_warns_about_unsigned_controls_from_afar(tmp_path: Path) -> None:
    assert signing_warnings(config()) == []  # the default broker is 127.0.0.1
    remote = parse_config(
        {"gateway": {"id": "site"}, "devices": [DEVICE], "mqtt": {"host": "broker.dso.example"}}
    )
    (warning,) = signing_warnings(remote)
    assert "require_signed is false and the broker broker.dso.example" in warning
    pem = tmp_path / "dso.pub.pem"
    pem.write_bytes(OKPKey.generate_key("Ed25519").as_pem(private=False))
    signed = config(
        require_signed=True,
        roles={"dso": {"primacy": 1, "keys": [str(pem)]}, "customer": {"primacy": 3}},
    )
    assert signing_warnings(signed) == [
        "control.roles.customer has no keys: with control.require_signed, nothing it sends "
        "is applied"
    ]
