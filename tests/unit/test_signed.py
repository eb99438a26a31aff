"""Signed controls, sans I/O: a JWS opens only with one of its topic's role's Ed25519 keys,
and every other input is one refusal, never a traceback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings

import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from derms_edge.model import Reason
from derms_edge.northbound.commands import (
    Cancel,
    Controls,
    DefaultControl,
    EventPayload,
    Invalid,
    parse_command,
)
from derms_edge.northbound.signed import KeyRing, Refused, Signed, sign
from derms_edge.northbound.topics import Topics

DSO_A = OKPKey.generate_key("Ed25519")
DSO_B = OKPKey.generate_key("Ed25519")
AGGREGATOR = OKPKey.generate_key("Ed25519")
STRANGER = OKPKey.generate_key("Ed25519")
PAYLOAD = b'{"mrid": "ev-1", "duration_s": 60, "control": {"max_w_pct": 50}}'


def public(key: OKPKey) -> OKPKey:
    return OKPKey.import_key(key.as_pem(private=False))


RING = KeyRing({"dso": [public(DSO_A), public(DSO_B)], "aggregator": [public(AGGREGATOR)]})


def compact(header: dict[str, object], payload: bytes, key: OKPKey) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # EdDSA is deprecated by RFC 9864
        algorithms = [str(header["alg"])]
        return jws.serialize_compact(header, payload, key, algorithms=algorithms).encode()


def refused(message: bytes, role: str = "dso") -> str:
    opened = RING.open(message, role)
    assert isinstance(opened, Refused), opened
    return opened.detail


def test_ed25519_with_kid_opens_with_that_key() -> None:
    opened = RING.open(sign(PAYLOAD, DSO_B), "dso")
    assert isinstance(opened, Signed)
    assert opened.payload == PAYLOAD
    assert opened.kid == DSO_B.thumbprint()


def test_eddsa_of_rfc_8037_is_accepted() -> None:
    message = compact({"alg": "EdDSA", "kid": DSO_A.thumbprint()}, PAYLOAD, DSO_A)
    opened = RING.open(message, "dso")
    assert isinstance(opened, Signed) and opened.payload == PAYLOAD


@pytest.mark.parametrize("key", [DSO_A, DSO_B], ids=["first", "second"])
def test_without_kid_each_of_the_roles_keys_is_tried(key: OKPKey) -> None:
    opened = RING.open(compact({"alg": "Ed25519"}, PAYLOAD, key), "dso")
    assert isinstance(opened, Signed)
    assert opened.kid == key.thumbprint()


def test_unknown_kid_is_named() -> None:
    detail = refused(sign(PAYLOAD, STRANGER))
    assert detail == f"role dso: kid {STRANGER.thumbprint()} is not a key of this gateway"


def test_another_roles_key_never_counts() -> None:
    detail = refused(sign(PAYLOAD, AGGREGATOR))
    assert "is a key of role aggregator, not of dso" in detail
    # the same without kid: none of dso's keys verifies it
    assert "verifies with none of its keys" in refused(
        compact({"alg": "Ed25519"}, PAYLOAD, AGGREGATOR)
    )
    # nor a kid of the role on another role's signature
    forged = compact({"alg": "Ed25519", "kid": DSO_A.thumbprint()}, PAYLOAD, AGGREGATOR)
    assert (
        refused(forged) == f"role dso: the signature does not verify with kid {DSO_A.thumbprint()}"
    )
    # and the aggregator's own topic takes it
    assert isinstance(RING.open(sign(PAYLOAD, AGGREGATOR), "aggregator"), Signed)


def test_tampered_payload_is_refused_and_the_detail_says_nothing_cryptographic() -> None:
    header, _, signature = sign(PAYLOAD, DSO_A).split(b".")
    other = base64.urlsafe_b64encode(PAYLOAD.replace(b"50", b"0")).rstrip(b"=")
    detail = refused(b".".join([header, other, signature]))
    assert "does not verify" in detail
    assert signature.decode() not in detail and other.decode() not in detail


def test_alg_none_and_hmac_with_the_public_key_are_refused() -> None:
    def segment(data: dict[str, object] | bytes) -> bytes:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    kid = DSO_A.thumbprint()
    unsigned = segment({"alg": "none", "kid": kid}) + b"." + segment(PAYLOAD) + b"."
    assert "not a JWS" in refused(unsigned)  # no signature at all
    none_sig = unsigned + b"AAAA"
    assert refused(none_sig) == "role dso: alg none is not accepted; sign with Ed25519 (or EdDSA)"
    # the classic confusion, forged by hand: HMAC keyed with the public key's PEM
    signing_input = segment({"alg": "HS256", "kid": kid}) + b"." + segment(PAYLOAD)
    secret = public(DSO_A).as_pem(private=False)
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    assert "alg HS256 is not accepted" in refused(signing_input + b"." + segment(mac))


GARBAGE = [
    b"",
    b"   ",
    PAYLOAD,
    b"[" + PAYLOAD + b"]",
    b"a.b.c",
    b"..",
    b"e30.e30.e30",
    b"\xff\xfe.\x00.x",
    b"eyJhbGciOiJFZDI1NTE5In0.e30.not-a-signature",
    b"eyJhbGciOiJFZDI1NTE5IiwgImtpZCI6IDQyfQ.e30.AAAA",  # kid a number
    b"eyJhbGciOlsiRWQyNTUxOSJdfQ.e30.AAAA",  # alg a list
    b"eyJhbGciOiAiRWQyNTUxOSIsICJraWQiOiBbXX0..AA",  # kid a list (found by the fuzz test)
    b"eyJhbGciOiJFZDI1NTE5Iiwia2lkIjp7fX0.e30.AAAA",  # kid an object
    b"W10.e30.AAAA",  # header an array
    b"e30" * 50_000 + b".e30.AAAA",
    sign(PAYLOAD, DSO_A) + b".extra",
]


@pytest.mark.parametrize("message", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_one_refusal_of_the_role(message: bytes) -> None:
    assert refused(message).startswith("role dso: ")


def test_a_role_without_keys_is_told_so() -> None:
    assert refused(compact({"alg": "Ed25519"}, PAYLOAD, DSO_A), "customer") == (
        "role customer: has no keys (control.roles.customer.keys)"
    )


# -- parse_command: a refused message is one unauthorized answer without an mrid

TOPICS = Topics("derms", "site")


def test_unsigned_controls_are_unauthorized_without_reading_the_mrid() -> None:
    command = parse_command(TOPICS, TOPICS.controls("dso"), PAYLOAD, False, keys=RING)
    assert isinstance(command, Controls) and command.signed is None
    (item,) = command.events
    assert isinstance(item, Invalid)
    assert (item.mrid, item.reason) == (None, Reason.UNAUTHORIZED)


def test_signed_controls_carry_their_proof() -> None:
    group = TOPICS.group_controls("feeder-7", "dso")
    command = parse_command(TOPICS, group, sign(PAYLOAD, DSO_A), False, keys=RING)
    assert isinstance(command, Controls)
    assert command.signed is not None and command.signed.kid == DSO_A.thumbprint()
    (item,) = command.events
    assert isinstance(item, EventPayload) and item.mrid == "ev-1"


def test_a_cancel_on_another_roles_topic_is_unauthorized() -> None:
    cancel = sign(b'{"mrid": "ev-1"}', DSO_A)
    command = parse_command(TOPICS, TOPICS.cancel("aggregator"), cancel, False, keys=RING)
    assert isinstance(command, Cancel) and isinstance(command.request, Invalid)
    assert command.request.reason is Reason.UNAUTHORIZED


def test_clearing_a_default_takes_a_signature_too() -> None:
    topic = TOPICS.default_control("dso")
    deleted = parse_command(TOPICS, topic, b"", True, keys=RING)
    assert isinstance(deleted, DefaultControl) and isinstance(deleted.control, Invalid)
    cleared = parse_command(TOPICS, topic, sign(b"", DSO_A), True, keys=RING)
    assert isinstance(cleared, DefaultControl) and cleared.control is None
    assert cleared.signed is not None


def test_heartbeats_are_not_signed() -> None:
    command = parse_command(TOPICS, TOPICS.heartbeat("dso"), b"{}", False, keys=RING)
    assert command is not None and command.signed is None


def test_without_keys_payloads_are_plain_json_as_before() -> None:
    command = parse_command(TOPICS, TOPICS.controls("dso"), PAYLOAD, False)
    assert isinstance(command, Controls) and isinstance(command.events[0], EventPayload)
