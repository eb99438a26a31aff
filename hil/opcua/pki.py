"""The rig's test PKI: a self-signed certificate per OPC UA server and one gateway client
certificate that every rig server trusts.

Files in the PKI directory (generated when missing, kept otherwise, so restarts keep them):

    server-<id>-cert.der, server-<id>-key.pem   one per OPC UA device
    client-cert.der, client-key.pem             the gateway (application URI below)
    trusted/client-cert.der                     what the servers trust (asyncua's TrustStore
                                                reads every certificate in a directory)

asyncua is imported only to generate, so that this module can be imported without it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

CLIENT_APPLICATION_URI = "urn:derms-edge:gateway"
"""The client certificate's application URI: a client must present it as its own."""
VALID_DAYS = 3650


def server_application_uri(device_id: str) -> str:
    """The application URI of the rig server serving device_id."""
    return f"urn:derms-edge:hil:{device_id}"


@dataclass(frozen=True, slots=True)
class OpcUaPki:
    """Where the certificates of one rig server and of the gateway client are."""

    server_certificate: Path
    """The server's self-signed certificate, DER."""
    server_private_key: Path
    """PEM, unencrypted."""
    client_certificate: Path
    """The gateway's certificate (DER), trusted by every rig server."""
    client_private_key: Path
    """PEM, unencrypted."""
    trusted_dir: Path
    """The certificates the server trusts; a client certificate not in it is refused."""


def ensure_pki(pki_dir: Path, device_id: str, host: str) -> OpcUaPki:
    """The PKI of device_id's server, generating whatever file is missing."""
    client_cert, client_key = pki_dir / "client-cert.der", pki_dir / "client-key.pem"
    server_cert = pki_dir / f"server-{device_id}-cert.der"
    server_key = pki_dir / f"server-{device_id}-key.pem"
    pki_dir.mkdir(parents=True, exist_ok=True)
    _ensure_pair(client_cert, client_key, CLIENT_APPLICATION_URI, "derms-edge gateway", None)
    server_uri = server_application_uri(device_id)
    _ensure_pair(server_cert, server_key, server_uri, f"derms-edge hil {device_id}", host)
    trusted = pki_dir / "trusted"
    trusted.mkdir(exist_ok=True)
    der = client_cert.read_bytes()
    trusted_cert = trusted / client_cert.name
    if not trusted_cert.exists() or trusted_cert.read_bytes() != der:
        _write(trusted_cert, der, 0o644)
    return OpcUaPki(server_cert, server_key, client_cert, client_key, trusted)


def _ensure_pair(cert: Path, key: Path, uri: str, name: str, host: str | None) -> None:
    """A key and a self-signed application certificate for uri; host (if any) and this machine
    in the SubjectAltName. Regenerated only when one of the two files is missing."""
    if cert.exists() and key.exists():
        return
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    if host is not None:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    use = ExtendedKeyUsageOID.CLIENT_AUTH if host is None else ExtendedKeyUsageOID.SERVER_AUTH
    private_key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        private_key, name, {}, list(dict.fromkeys(names)), [use], days=VALID_DAYS
    )
    _write(key, cert_gen.dump_private_key_as_pem(private_key), 0o600)
    _write(cert, certificate.public_bytes(Encoding.DER), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write data to path atomically with that permission."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)
