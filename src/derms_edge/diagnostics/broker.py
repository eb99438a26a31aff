"""The broker as the gateway would meet it: reachable, its TLS certificate chained to the
configured CA and valid for the host name, the login accepted. Each failure is told apart
(nothing listens, TLS refused, login refused) with what to check."""

from __future__ import annotations

import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from derms_edge.config import MqttSection
from derms_edge.config.sections import PASSWORD_ENV
from derms_edge.diagnostics.result import Check
from derms_edge.northbound.mqtt import new_client
from derms_edge.northbound.tls import closed_before_accepted, connect_failure


def broker(mqtt: MqttSection, timeout_s: float = 5.0) -> list[Check]:
    """Connect once as the gateway would (its TLS and credentials), then disconnect."""
    endpoint = f"MQTT broker {mqtt.host}:{mqtt.port}"
    tls = "" if mqtt.tls is None else " over TLS"
    try:
        client = new_client(mqtt)
    except (OSError, ssl.SSLError, ValueError) as error:
        return [
            Check.failed(
                f"{endpoint}: the gateway's TLS or password files cannot be used ({error})",
                "check mqtt.tls.ca_file, cert_file, key_file and mqtt.password_file",
            )
        ]
    answers: list[ReasonCode] = []
    closed: list[str] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        answers.append(code)

    def on_disconnect(_c: paho.Client, _u: Any, _f: Any, code: ReasonCode, _p: Any) -> None:
        closed.append(str(code))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_timeout = timeout_s
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=max(5, int(timeout_s) * 2))
    except ssl.SSLError as error:
        reached = Check.passed(f"{endpoint} reachable")
        return [reached, Check.failed(f"{endpoint}: TLS refused", connect_failure(error, mqtt))]
    except OSError as error:  # refused, timed out, no such host
        return [Check.failed(f"{endpoint} unreachable", connect_failure(error, mqtt))]
    deadline = time.monotonic() + timeout_s
    try:
        while not answers and not closed and time.monotonic() < deadline:
            client.loop(0.1)
    finally:
        client.disconnect()
    checks = [Check.passed(f"{endpoint} reachable")]
    if mqtt.tls is not None:
        checks.append(
            Check.passed(f"{endpoint}: TLS certificate chained and valid for {mqtt.host}")
        )
    who = mqtt.username or "anonymous"
    if answers and not answers[0].is_failure:
        return [*checks, Check.passed(f"{endpoint}: login{tls} as {who} accepted")]
    if answers:
        return [
            *checks,
            Check.failed(
                f"{endpoint}: login as {who} refused ({answers[0]})",
                f"check mqtt.username and the password (mqtt.password_file or {PASSWORD_ENV}) "
                "against the broker's password file and ACL",
            ),
        ]
    if closed:
        return [
            *checks,
            Check.failed(
                f"{endpoint}: closed the connection before accepting it",
                closed_before_accepted(closed[0], mqtt),
            ),
        ]
    return [
        *checks,
        Check.failed(
            f"{endpoint}: no answer to the login within {timeout_s:g} s",
            "is it an MQTT broker on that port? (mqtt.port; 1883 plain, 8883 TLS)",
        ),
    ]
