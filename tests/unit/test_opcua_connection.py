"""asyncua's node ids, status codes and exceptions in the gateway's terms (no server)."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

import pytest
from asyncua import ua
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from derms_edge.config import OpcUaSecurity, parse_node_id
from derms_edge.devices.opcua.connection import (
    Target,
    first_certificate,
    load_credentials,
    node_ref,
    resolve,
    status_text,
    translate_errors,
)
from derms_edge.errors import ConnectionLost, DeviceError, DeviceProtocolError, DeviceTimeout

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:server", "urn:derms-edge:hil:evse"]
TARGET = Target("ev1", "opc.tcp://127.0.0.1:4840/x", OpcUaSecurity(), "gw", None, 1.5)


def test_status_names_and_descriptions() -> None:
    assert status_text(ua.StatusCodes.BadOutOfRange) == (
        "BadOutOfRange",
        "The value was out of range.",
    )
    assert status_text(ua.StatusCodes.BadNodeIdUnknown)[0] == "BadNodeIdUnknown"
    assert status_text(ua.StatusCodes.Good)[0] == "Good"
    # info bits (low 16) do not hide the name
    assert status_text(ua.StatusCodes.BadOutOfRange | 0x0400)[0] == "BadOutOfRange"
    assert status_text(0x80FF0000)[0] == "Bad (0x80FF0000)"


@pytest.mark.parametrize(
    ("text", "identifier", "id_type"),
    [
        ("nsu=urn:derms-edge:hil:evse;s=ev1.ActualPower", "ev1.ActualPower", ua.NodeIdType.String),
        ("nsu=urn:derms-edge:hil:evse;i=1001", 1001, ua.NodeIdType.FourByte),
        ("ns=2;i=70000", 70000, ua.NodeIdType.Numeric),
        (
            "nsu=urn:derms-edge:hil:evse;g=72962b91-fa75-4ae6-8d28-b404dc7daf63",
            uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"),
            ua.NodeIdType.Guid,
        ),
        ("nsu=urn:derms-edge:hil:evse;b=AQID", b"\x01\x02\x03", ua.NodeIdType.ByteString),
    ],
)
def test_node_ids_resolve_and_print_back_by_namespace_uri(
    text: str, identifier: object, id_type: ua.NodeIdType
) -> None:
    node_id = resolve(parse_node_id(text), NAMESPACES)
    assert node_id.NamespaceIndex == 2
    assert node_id.Identifier == identifier
    assert node_id.NodeIdType == id_type
    assert str(node_ref(node_id, NAMESPACES)).rsplit(";", 1)[-1] == text.rsplit(";", 1)[-1]
    assert str(node_ref(node_id, NAMESPACES)).startswith("nsu=urn:derms-edge:hil:evse;")


def test_a_namespace_uri_follows_the_servers_numbering() -> None:
    ref = parse_node_id("nsu=urn:derms-edge:hil:evse;s=ev1.Voltage")
    assert resolve(ref, NAMESPACES).NamespaceIndex == 2
    assert resolve(ref, [*NAMESPACES[:2], "urn:other", NAMESPACES[2]]).NamespaceIndex == 3
    with pytest.raises(KeyError):
        resolve(ref, NAMESPACES[:2])


def test_standard_nodes_print_without_a_namespace() -> None:
    assert str(node_ref(ua.NodeId(ua.Int32(2253)), NAMESPACES)) == "i=2253"
    unknown = ua.NodeId(ua.String("x"), ua.Int16(7))
    assert str(node_ref(unknown, NAMESPACES)) == "ns=7;s=x"


def translated(exc: BaseException) -> DeviceError:
    with pytest.raises(DeviceError) as caught, translate_errors(TARGET, "reading nodes.w"):
        raise exc
    assert caught.value.__cause__ is exc
    return caught.value


def test_library_errors_become_the_gateways() -> None:
    error = translated(TimeoutError())
    assert isinstance(error, DeviceTimeout)
    assert str(error) == "ev1: opc.tcp://127.0.0.1:4840/x: reading nodes.w: no answer within 1.5 s"
    error = translated(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(error, ConnectionLost)
    assert "connection refused (is the server running?)" in str(error)
    assert isinstance(translated(ConnectionError("Connection is closed")), ConnectionLost)
    error = translated(UaStatusCodeError(ua.StatusCodes.BadSessionIdInvalid))
    assert isinstance(error, ConnectionLost)
    assert str(error).endswith("BadSessionIdInvalid")
    assert isinstance(translated(UaStatusCodeError(ua.StatusCodes.BadTimeout)), DeviceTimeout)


def test_status_errors_name_the_status() -> None:
    error = translated(UaStatusCodeError(ua.StatusCodes.BadNodeIdUnknown))
    assert isinstance(error, DeviceProtocolError)
    assert "reading nodes.w: BadNodeIdUnknown: The node id refers to a node" in str(error)
    error = translated(UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied))
    assert str(error).endswith("BadUserAccessDenied: the server refused user 'gw'")
    error = translated(UaError("No matching endpoints"))
    assert isinstance(error, DeviceProtocolError)


def test_device_errors_pass_through_untouched() -> None:
    original = ConnectionLost("ev1: gone")
    with pytest.raises(ConnectionLost) as caught, translate_errors(TARGET):
        raise original
    assert caught.value is original


def _certificate(tmp_path: Path, uri: str | None) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if uri is not None:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
        builder = builder.add_extension(san, critical=False)
    certificate = builder.sign(key, hashes.SHA256())
    cert_path, key_path = tmp_path / "client-cert.pem", tmp_path / "client-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def secure(certificate: Path, private_key: Path, server: Path | None = None) -> Target:
    security = OpcUaSecurity(
        policy="Basic256Sha256",
        certificate=certificate,
        private_key=private_key,
        server_certificate=server,
    )
    return Target("ev1", "opc.tcp://127.0.0.1:4840/x", security)


def test_credentials_take_the_application_uri_from_the_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "urn:derms-edge:gateway")
    credentials = load_credentials(secure(cert, key))
    assert credentials is not None
    assert credentials.application_uri == "urn:derms-edge:gateway"
    assert x509.load_der_x509_certificate(credentials.certificate_der)
    assert credentials.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_credentials(TARGET) is None


def test_missing_files_are_named_with_their_config_key(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "urn:derms-edge:gateway")
    with pytest.raises(DeviceError, match=r"ev1: security\.certificate: cannot read .*nope\.der"):
        load_credentials(secure(tmp_path / "nope.der", key))
    with pytest.raises(DeviceError, match=r"ev1: security\.private_key: cannot read .*k\.pem"):
        load_credentials(secure(cert, tmp_path / "k.pem"))
    with pytest.raises(DeviceError, match=r"security\.server_certificate: cannot read .*s\.der"):
        load_credentials(secure(cert, key, tmp_path / "s.der"))
    with pytest.raises(DeviceError, match=r"security\.certificate: .* is not an X\.509"):
        load_credentials(secure(key, key))


def test_a_certificate_without_an_application_uri_is_refused(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, None)
    with pytest.raises(DeviceError, match="has no URI in its subjectAltName"):
        load_credentials(secure(cert, key))


def test_the_first_certificate_of_a_chain(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path, "urn:a")
    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert first_certificate(der) == der
    assert first_certificate(der + der) == der
    assert first_certificate(b"") == b""
