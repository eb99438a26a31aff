"""Signed controls, sans I/O: a JWS in compact serialization (RFC 7515) opened with one of
its role's Ed25519 public keys, or refused with a detail for people.

``alg`` is ``Ed25519`` (RFC 9864) or the older ``EdDSA`` (RFC 8037); nothing else is tried,
so ``none`` and HMAC with a public key as its secret are refused before any key is. A ``kid``
is the key's RFC 7638 JWK thumbprint and picks it; without one, each of the role's keys is
tried. A key of another role never counts: the role is the topic's, and the signature must
be one of that role's keys. The cryptography is joserfc's (on ``cryptography``).

A refusal's detail names the role and the kid the sender gave (when it looks like one) and
nothing cryptographic; the payload of a message that did not verify is never read.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from derms_edge.config.keys import read_public_key

if TYPE_CHECKING:  # joserfc, and cryptography under it, load when a message is checked
    from joserfc.jwk import OKPKey

ALGORITHMS = ("Ed25519", "EdDSA")
"""The accepted ``alg`` values: the fully-specified Ed25519 (RFC 9864) and the older,
polymorphic EdDSA (RFC 8037), which joserfc warns about and older signers still write."""

_COMPACT = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")
"""Header, payload (empty: a signed clear of a default control) and signature, base64url."""
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Signed:
    """A message whose signature verified with one of its role's keys."""

    payload: bytes
    """The JSON the signature covers: what the unsigned contract carries."""
    kid: str
    """The thumbprint of the key it verified with."""
    digest: str
    """SHA-256 (hex) of the JWS signing input: the same signed message, however re-sent."""


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that is not a JWS signed with one of its role's keys."""

    detail: str


class KeyRing:
    """Each role's public keys by thumbprint."""

    def __init__(self, keys: Mapping[str, Sequence[OKPKey]]) -> None:
        self._keys = {role: {key.thumbprint(): key for key in ks} for role, ks in keys.items()}
        self._owner = {kid: role for role, ks in self._keys.items() for kid in ks}

    @classmethod
    def from_files(cls, files: Mapping[str, Sequence[Path]]) -> KeyRing:
        """The keys of each role read from their PEM files (checked when the configuration
        loaded; a file changed since then raises ValueError naming it)."""
        return cls(
            {role: [read_public_key(path) for path in paths] for role, paths in files.items()}
        )

    def open(self, message: bytes, role: str) -> Signed | Refused:
        """The payload of ``message`` if it is a JWS that verifies with one of ``role``'s
        keys; else why not (for the ``rejected`` / ``unauthorized`` answer)."""
        from joserfc import jws
        from joserfc.errors import JoseError

        where = f"role {role}"
        if not _COMPACT.fullmatch(message):
            return Refused(
                f"{where}: the message is not a JWS in compact serialization; "
                "control.require_signed is on, so it must be signed with one of the role's keys"
            )
        try:
            header = jws.extract_compact(message).headers()
        except (JoseError, ValueError, TypeError):
            return Refused(f"{where}: the JWS header cannot be read")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            return Refused(
                f"{where}: alg {_shown(alg)} is not accepted; sign with Ed25519 (or EdDSA)"
            )
        if kid is not None and not isinstance(kid, str):
            return Refused(f"{where}: kid {_shown(kid)} is not a key id (a string)")
        mine = self._keys.get(role, {})
        if kid is None:
            candidates = list(mine.items())
            if not candidates:
                return Refused(f"{where}: has no keys (control.roles.{role}.keys)")
        elif kid in mine:
            candidates = [(kid, mine[kid])]
        elif kid in self._owner:
            return Refused(f"{where}: kid {kid} is a key of role {self._owner[kid]}, not of {role}")
        else:
            return Refused(f"{where}: kid {_shown(kid)} is not a key of this gateway")
        for thumbprint, key in candidates:
            payload = _verified(message, key)
            if payload is not None:
                signing_input = message.rpartition(b".")[0]
                return Signed(payload, thumbprint, hashlib.sha256(signing_input).hexdigest())
        if kid is None:
            return Refused(f"{where}: no kid, and the signature verifies with none of its keys")
        return Refused(f"{where}: the signature does not verify with kid {kid}")


def _verified(message: bytes, key: OKPKey) -> bytes | None:
    """The payload if ``message`` verifies with ``key``, else None."""
    from joserfc import jws
    from joserfc.errors import JoseError

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        try:
            return jws.deserialize_compact(message, key, algorithms=list(ALGORITHMS)).payload
        except (JoseError, ValueError, TypeError):
            return None


def _shown(value: object) -> str:
    """A header value as a refusal may quote it: a short token, or a description."""
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value
    return "(missing)" if value is None else "(not a short token)"


def sign(payload: bytes, key: OKPKey) -> bytes:
    """``payload`` as a JWS in compact serialization signed with the private ``key``:
    ``alg: Ed25519``, ``kid`` its thumbprint (what `derms-edge send --sign` publishes)."""
    from joserfc import jws

    header = {"alg": "Ed25519", "kid": key.thumbprint()}
    return jws.serialize_compact(header, payload, key, algorithms=["Ed25519"]).encode()
