"""Public keys of the roles that sign controls: PEM files read and checked to be Ed25519."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # joserfc loads cryptography (about 9 MB): only a gateway that signs needs it
    from joserfc.jwk import OKPKey


def read_public_key(path: Path) -> OKPKey:
    """The Ed25519 public key in the PEM file ``path``; ValueError names the path and what is
    wrong with it (missing, unreadable, not a public key, another curve or algorithm)."""
    from joserfc.errors import JoseError
    from joserfc.jwk import OKPKey

    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ValueError(
            f"{path}: cannot read the public key ({error.strerror or error}); "
            "write it with `derms-edge keys new NAME` (NAME.pub.pem)"
        ) from None
    try:
        key = OKPKey.import_key(pem)
    except (JoseError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path}: not an Ed25519 public key in PEM ({type(error).__name__}); "
            "expected -----BEGIN PUBLIC KEY----- as `derms-edge keys new NAME` writes it"
        ) from None
    if key.curve_name != "Ed25519":
        raise ValueError(f"{path}: an {key.curve_name} key; controls are signed with Ed25519")
    if key.is_private:
        raise ValueError(
            f"{path}: a private key; the gateway needs only the public one (NAME.pub.pem)"
        )
    return key
