"""TLS to the broker: the SSL context (TLS 1.2 or newer, the broker always verified), and why a
connection failed, said for the person installing the gateway.

No switch turns verification off: a broker whose certificate does not chain to the CA, or does
not hold the host name the gateway connects to, is refused, logged once, and tried again with
backoff.
"""

from __future__ import annotations

import ssl

from derms_edge.config import MqttSection, MqttTls


def client_context(tls: MqttTls) -> ssl.SSLContext:
    """The context paho wraps its socket in; OSError or ssl.SSLError when a file is wrong."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if tls.ca_file is None else str(tls.ca_file)
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def closed_before_accepted(reason: str, config: MqttSection) -> str:
    """The broker closed the connection before its CONNACK: with TLS 1.3 that is how a broker
    refuses a client certificate (after the handshake); without TLS, often the credentials."""
    tls = config.tls
    if tls is not None and tls.cert_file is not None:
        check = (
            f"check that it trusts the gateway's certificate {tls.cert_file} (mqtt.tls.cert_file)"
        )
    elif tls is not None:
        check = "it may require a client certificate (mqtt.tls.cert_file and key_file)"
    else:
        check = "check mqtt.username and the password, and whether it requires TLS (mqtt.tls)"
    return (
        f"MQTT broker {config.host}:{config.port} closed the connection before accepting it "
        f"({reason}); {check}"
    )


def connect_failure(error: BaseException | None, config: MqttSection) -> str:
    """Why the broker could not be reached, and what to check."""
    endpoint = f"MQTT broker {config.host}:{config.port}"
    ca = (
        f"the CA in {config.tls.ca_file}"
        if config.tls is not None and config.tls.ca_file is not None
        else "the system's CAs"
    )
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        if "hostname" in message.lower() or "ip address mismatch" in message.lower():
            return (
                f"{endpoint}: its certificate is not valid for the name {config.host!r} "
                f"({message}); connect by a name the certificate holds (mqtt.host), or have "
                "the broker's certificate issued for this one"
            )
        if "expired" in message.lower() or "not yet valid" in message.lower():
            return (
                f"{endpoint}: its certificate is out of its validity period ({message}); "
                "renew it, or check the gateway's clock (timedatectl)"
            )
        return (
            f"{endpoint}: its certificate is not signed by {ca} ({message}); check mqtt.tls.ca_file"
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"{endpoint}: the TLS handshake failed ({error.reason or error}); check that the "
            "broker speaks TLS on this port and, if it asks for a client certificate, "
            "mqtt.tls.cert_file and key_file"
        )
    if isinstance(error, ConnectionRefusedError):
        return f"{endpoint}: nothing accepts connections there (connection refused)"
    if error is not None:
        return f"{endpoint} is unreachable: {error}"
    return f"{endpoint} is unreachable"
