"""Opening an asyncua session as configured, and asyncua's errors as the gateway's.

Shared by the driver and ``derms-edge discover --opcua``. Security: the gateway's certificate
and key are read from the configured files (DER or PEM); its application URI is the URI in
the certificate's subjectAltName, as OPC UA requires. The server's certificate comes from its
endpoint list and, when ``server_certificate`` is configured, must be that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import uuid
from base64 import b64decode, b64encode
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies, uacrypto
from asyncua.ua import status_codes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from derms_edge.config import NodeRef, OpcUaSecurity
from derms_edge.errors import (
    ConnectionLost,
    DeviceError,
    DeviceProtocolError,
    DeviceTimeout,
)

log = logging.getLogger(__name__)

SESSION_TIMEOUT_S = 60.0
"""Asked of the server: a session the gateway lost is dropped after this long, not an hour."""
DISCARD_S = 2.0
"""How long closing a session may take before its socket is simply closed."""
WATCHDOG_MIN_S = 1.0
"""asyncua reads the server state this often (at least) to notice a dead link."""

LINK_STATUSES = frozenset(
    {
        "BadConnectionClosed",
        "BadSecureChannelClosed",
        "BadSecureChannelIdInvalid",
        "BadSessionClosed",
        "BadSessionIdInvalid",
        "BadSessionNotActivated",
        "BadServerHalted",
        "BadShutdown",
        "BadCommunicationError",
        "BadNotConnected",
        "BadServerNotConnected",
        "BadTcpInternalError",
        "BadNoCommunication",
    }
)
"""Status codes that mean the session or the link is gone: reconnect, not a device fault."""
TIMEOUT_STATUSES = frozenset({"BadTimeout", "BadRequestTimeout"})
CERTIFICATE_STATUSES = frozenset(
    {
        "BadCertificateUntrusted",
        "BadCertificateInvalid",
        "BadSecurityChecksFailed",
        "BadCertificateUriInvalid",
        "BadCertificateTimeInvalid",
        "BadCertificateRevoked",
        "BadCertificateUseNotAllowed",
        "BadCertificateHostNameInvalid",
        "BadSecurityPolicyRejected",
    }
)
USER_STATUSES = frozenset(
    {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
)


def status_text(code: int) -> tuple[str, str]:
    """The name and description of a status code (``BadOutOfRange``, "The value was ...").

    Info bits (the low 16 bits, e.g. overflow) are ignored when the full code is not known.
    """
    name, doc = status_codes.get_name_and_doc(code)
    if doc.startswith("Unknown StatusCode"):
        name, doc = status_codes.get_name_and_doc(code & 0xFFFF0000)
    if doc.startswith("Unknown StatusCode"):
        return f"{name} (0x{code:08X})", "a status code this gateway does not know"
    return name, doc


def status_name(status: ua.StatusCode | None) -> str:
    """The name of a status (``Good`` for None, as the protocol reads a missing status)."""
    return "Good" if status is None else status_text(status.value)[0]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to open a session: endpoint, security, user; and names for messages."""

    name: str
    """Who the messages are about: the device id, or the endpoint for discover."""
    endpoint: str
    security: OpcUaSecurity
    username: str | None = None
    password: str | None = None
    timeout_s: float = 1.0

    def describe(self) -> str:
        """The security and user of the session, for log lines."""
        security = self.security
        mode = "no security" if security.policy == "None" else f"{security.policy} {security.mode}"
        return mode + (f", user {self.username}" if self.username else "")


@dataclass(frozen=True, slots=True)
class _Credentials:
    certificate_der: bytes
    private_key_pem: bytes
    application_uri: str
    server_certificate_der: bytes | None


def _read(target: Target, key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DeviceError(
            f"{target.name}: security.{key}: cannot read {path} ({exc.strerror or exc})"
        ) from exc


def _certificate(target: Target, key: str, path: Path) -> x509.Certificate:
    data = _read(target, key, path)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise DeviceError(
            f"{target.name}: security.{key}: {path} is not an X.509 certificate (DER or PEM)"
        ) from exc


def load_credentials(target: Target) -> _Credentials | None:
    """Read the configured certificate files (None: no security); DeviceError names the key."""
    security = target.security
    if security.policy == "None":
        return None
    assert security.certificate is not None and security.private_key is not None  # config
    certificate = _certificate(target, "certificate", security.certificate)
    key_data = _read(target, "private_key", security.private_key)
    try:
        if key_data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(key_data, password=None)
        else:
            key = serialization.load_der_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise DeviceError(
            f"{target.name}: security.private_key: {security.private_key} is not an unencrypted "
            f"private key (DER or PEM): {exc}"
        ) from exc
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if not uris:
        raise DeviceError(
            f"{target.name}: security.certificate: {security.certificate} has no URI in its "
            "subjectAltName; OPC UA takes the gateway's application URI from there "
            "(e.g. urn:derms-edge:<gateway id>)"
        )
    server = None
    if security.server_certificate is not None:
        pinned = _certificate(target, "server_certificate", security.server_certificate)
        server = pinned.public_bytes(serialization.Encoding.DER)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _Credentials(certificate.public_bytes(serialization.Encoding.DER), pem, uris[0], server)


def first_certificate(der: bytes) -> bytes:
    """The leading certificate of a DER blob that may hold its chain after it."""
    if len(der) < 4 or der[0] != 0x30:  # an ASN.1 SEQUENCE
        return der
    if der[1] < 0x80:
        return der[: 2 + der[1]]
    size = der[1] & 0x7F
    return der[: 2 + size + int.from_bytes(der[2 : 2 + size], "big")]


def thumbprint(der: bytes) -> str:
    """A certificate's SHA-1 thumbprint, as OPC UA tools show it."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def _subject(der: bytes) -> str:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "an unreadable certificate"


def _label(endpoint: ua.EndpointDescription) -> str:
    """An endpoint's security as the configuration writes it: "Basic256Sha256 Sign", "None"."""
    if endpoint.SecurityMode == ua.MessageSecurityMode.None_:
        return "None"
    return f"{endpoint.SecurityPolicyUri.rsplit('#', 1)[-1]} {endpoint.SecurityMode.name}"


async def _secure(client: Client, target: Target, credentials: _Credentials) -> None:
    """Pick the server's endpoint for the configured policy and mode; check a pinned certificate."""
    security = target.security
    policy = security_policies.SecurityPolicyBasic256Sha256
    mode = getattr(ua.MessageSecurityMode, security.mode)
    endpoints = await client.connect_and_get_server_endpoints()
    chosen = next(
        (e for e in endpoints if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode),
        None,
    )
    if chosen is None:
        offered = ", ".join(sorted({_label(e) for e in endpoints}))
        raise DeviceProtocolError(
            f"{target.name}: {target.endpoint} offers no {security.policy} {security.mode} "
            f"endpoint (it offers: {offered or 'none'})"
        )
    presented = first_certificate(chosen.ServerCertificate or b"")
    pinned = credentials.server_certificate_der
    if pinned is not None and presented != pinned:
        raise DeviceProtocolError(
            f"{target.name}: {target.endpoint} presented certificate {_subject(presented)} "
            f"(SHA-1 {thumbprint(presented)}), not the one in security.server_certificate "
            f"{security.server_certificate} ({_subject(pinned)}, SHA-1 {thumbprint(pinned)}): "
            "refusing to connect"
        )
    client.application_uri = credentials.application_uri
    await client.set_security(
        policy,
        certificate=uacrypto.CertProperties(credentials.certificate_der, "der"),
        private_key=uacrypto.CertProperties(credentials.private_key_pem, "pem"),
        server_certificate=uacrypto.CertProperties(presented, "der"),
        mode=mode,
    )


async def open_client(target: Target, *, watchdog_s: float | None = None) -> Client:
    """A connected asyncua client (no automatic reconnection: the coordinator reconnects).

    DeviceError says what went wrong: unreachable, timed out, refused certificate or user.
    """
    credentials = await asyncio.to_thread(load_credentials, target)
    client = Client(
        target.endpoint,
        timeout=target.timeout_s,
        watchdog_intervall=watchdog_s or max(WATCHDOG_MIN_S, target.timeout_s),
    )
    client.name = client.description = "derms-edge"
    client.application_uri = "urn:derms-edge"
    client.product_uri = "urn:derms-edge"
    client.session_timeout = int(SESSION_TIMEOUT_S * 1000)
    if target.username is not None:
        client.set_user(target.username)
        if target.password is not None:
            client.set_password(target.password)
    with translate_errors(target):
        if credentials is not None:
            await _secure(client, target, credentials)
        await client.connect()  # on failure asyncua has closed the socket already
    return client


async def discard(client: Client) -> None:
    """Close a client whatever state it is in; never raises (a dead link is expected here).

    The session is closed politely (the server drops its subscription at once) if the
    server answers within `DISCARD_S`; the socket is closed in any case.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DISCARD_S):
            await client.disconnect()
    client.disconnect_socket()  # when the polite close timed out half-way


@contextlib.contextmanager
def translate_errors(target: Target, what: str = "") -> Iterator[None]:
    """asyncua and socket exceptions as the gateway's DeviceError tree, chained.

    ``what`` says what was being done, for the message ("reading nodes.w").
    """
    where = f"{target.name}: {target.endpoint}" + (f": {what}" if what else "")
    try:
        yield
    except DeviceError:
        raise
    except TimeoutError as exc:
        raise DeviceTimeout(f"{where}: no answer within {target.timeout_s:g} s") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionLost(f"{where}: connection refused (is the server running?)") from exc
    except socket.gaierror as exc:
        raise ConnectionLost(f"{where}: unknown host ({exc.strerror})") from exc
    except OSError as exc:  # ConnectionError and the rest of the socket's errors
        raise ConnectionLost(f"{where}: {exc.strerror or exc or type(exc).__name__}") from exc
    except UaStatusCodeError as exc:
        raise status_error(target, where, exc.code) from exc
    except UaError as exc:
        if str(exc) == "Server certificate mismatch":
            raise DeviceProtocolError(
                f"{where}: the server's session certificate differs from its endpoint's: "
                "refusing to connect"
            ) from exc
        raise DeviceProtocolError(f"{where}: {exc}") from exc


def status_error(target: Target, where: str, code: int) -> DeviceError:
    """The DeviceError for a Bad service result, with a hint where one helps."""
    name, doc = status_text(code)
    if name in TIMEOUT_STATUSES:
        return DeviceTimeout(f"{where}: {name}")
    if name in LINK_STATUSES:
        return ConnectionLost(f"{where}: {name}")
    if name in CERTIFICATE_STATUSES:
        certificate = target.security.certificate
        return DeviceProtocolError(
            f"{where}: {name}: the server did not accept the gateway's certificate"
            + (
                f" {certificate}: add it to the server's trusted certificates"
                if certificate
                else ""
            )
        )
    if name in USER_STATUSES:
        user = f"user {target.username!r}" if target.username else "anonymous access"
        return DeviceProtocolError(f"{where}: {name}: the server refused {user}")
    return DeviceProtocolError(f"{where}: {name}: {doc}")


def resolve(ref: NodeRef, namespaces: Sequence[str]) -> ua.NodeId:
    """A configured node id as asyncua's, with its namespace URI looked up in ``namespaces``.

    KeyError when the URI is not among them.
    """
    if ref.namespace_uri is not None:
        try:
            index = list(namespaces).index(ref.namespace_uri)
        except ValueError:
            raise KeyError(ref.namespace_uri) from None
    else:
        index = ref.namespace_index or 0
    identifier = ref.identifier
    namespace = ua.Int16(index)
    if ref.id_type == "i":
        return ua.NodeId(ua.Int32(int(identifier)), namespace)
    if ref.id_type == "s":
        return ua.NodeId(ua.String(identifier), namespace, ua.NodeIdType.String)
    if ref.id_type == "g":
        return ua.NodeId(ua.Guid(str(identifier)), namespace, ua.NodeIdType.Guid)
    return ua.NodeId(ua.ByteString(b64decode(str(identifier))), namespace, ua.NodeIdType.ByteString)


def node_ref(node_id: ua.NodeId, namespaces: Sequence[str]) -> NodeRef:
    """asyncua's node id in the configuration's terms, by namespace URI (ns=0 left out)."""
    raw: object = node_id.Identifier
    id_type: str
    identifier: str | int
    if isinstance(raw, int):
        id_type, identifier = "i", int(raw)
    elif isinstance(raw, uuid.UUID):
        id_type, identifier = "g", str(raw)
    elif isinstance(raw, bytes):
        id_type, identifier = "b", b64encode(raw).decode()
    else:
        id_type, identifier = "s", str(raw)
    index = node_id.NamespaceIndex
    uri = namespaces[index] if 0 < index < len(namespaces) else None
    return NodeRef(
        id_type=id_type,  # type: ignore[arg-type]  # one of the four literals above
        identifier=identifier,
        namespace_index=index if uri is None and index else None,
        namespace_uri=uri,
    )
