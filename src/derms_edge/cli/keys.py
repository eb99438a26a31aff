"""``derms-edge keys new NAME``: write an Ed25519 key pair for signing controls.

NAME.key.pem (PKCS #8, mode 600: the signer's secret, never copied to the gateway) and
NAME.pub.pem (the gateway's ``control.roles.{role}.keys``); the key id printed is the public
key's RFC 7638 JWK thumbprint, the ``kid`` that `derms-edge send --sign` writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from derms_edge.cli.common import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:  # joserfc loads cryptography: only when the command runs
    from joserfc.jwk import OKPKey


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    keys = commands.add_parser("keys", help="Ed25519 key pairs for signed controls")
    actions = keys.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="write NAME.key.pem (mode 600) and NAME.pub.pem")
    new.add_argument("name", help="path and name of the pair, without extension: keys/dso")
    new.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Write the pair (never over existing files) and print where, and the thumbprint."""
    from joserfc.jwk import OKPKey

    private, public = Path(f"{args.name}.key.pem"), Path(f"{args.name}.pub.pem")
    key = OKPKey.generate_key("Ed25519")
    try:
        _write_new(private, key.as_pem(private=True), 0o600)
        _write_new(public, key.as_pem(private=False), 0o644)
    except OSError as error:
        print(f"keys: {error.filename}: {error.strerror}; nothing overwritten", file=sys.stderr)
        return EXIT_FAILURE
    print(f"private key {private} (mode 600: keep it with the signer)")
    print(f"public key  {public} (for control.roles.ROLE.keys)")
    print(f"kid         {key.thumbprint()}")
    return EXIT_OK


def read_private_key(path: Path) -> OKPKey:
    """The Ed25519 private key in ``path``; ValueError names the path and what is wrong."""
    from joserfc.errors import JoseError
    from joserfc.jwk import OKPKey

    try:
        key = OKPKey.import_key(path.read_bytes())
    except OSError as error:
        raise ValueError(f"{path}: cannot read the key ({error.strerror})") from None
    except (JoseError, ValueError, TypeError):
        raise ValueError(f"{path}: not an Ed25519 private key in PEM") from None
    if key.curve_name != "Ed25519" or not key.is_private:
        raise ValueError(f"{path}: not an Ed25519 private key (NAME.key.pem)")
    return key


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no moment readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
