"""The broker's access rules for one gateway, from its configuration: a Mosquitto ACL file.

The gateway's identity (``mqtt.username``; with ``use_identity_as_username``, the common name
of its client certificate) may publish only its own state under its root and read only its
own control topics and its groups' (with Home Assistant discovery: also write and read its
own discovery configs, and read Home Assistant's birth message). Each role's identity (a
broker user named as the role) may publish only on its own control, cancel, default-control
and heartbeat topics, own and group, and read what the gateway publishes. Nothing else is
granted: with an ``acl_file``, Mosquitto denies what no line allows.
"""

from __future__ import annotations

from dataclasses import dataclass

from derms_edge.config import Config
from derms_edge.northbound.homeassistant import birth_topic, config_filter
from derms_edge.northbound.topics import Topics


@dataclass(frozen=True, slots=True)
class Grant:
    """What one broker identity may do."""

    user: str
    write: tuple[str, ...]
    read: tuple[str, ...]


def grants(config: Config) -> list[Grant]:
    """The gateway's grant, then each role's; ValueError when the gateway has no identity."""
    if config.mqtt.username is None:
        raise ValueError(
            "mqtt.username is not set: it is the gateway's identity on the broker (with client "
            "certificates and use_identity_as_username, the certificate's common name)"
        )
    topics = Topics(config.mqtt.prefix, config.gateway.id)
    groups = config.mqtt.groups
    published = (
        topics.status,
        topics.telemetry("+"),
        topics.capability("+"),
        topics.responses,
        topics.active,
    )
    written: tuple[str, ...] = published
    read = tuple(topics.inbound_filters(groups))
    if config.homeassistant is not None:  # its discovery configs, and Home Assistant's birth
        prefix = config.homeassistant.discovery_prefix
        written += (config_filter(prefix, topics),)
        read += (config_filter(prefix, topics), birth_topic(prefix))
    gateway = Grant(config.mqtt.username, written, read)
    roles = [
        Grant(
            role,
            (
                topics.controls(role),
                topics.cancel(role),
                topics.default_control(role),
                topics.heartbeat(role),
                *(t for g in groups for t in _group(topics, g, role)),
            ),
            published,
        )
        for role in config.control.roles
    ]
    return [gateway, *roles]


def _group(topics: Topics, group: str, role: str) -> tuple[str, str]:
    controls = topics.group_controls(group, role)
    return controls, f"{controls}/cancel"


def mosquitto_acl(config: Config, source: str) -> str:
    """The Mosquitto ``acl_file`` text for this gateway, made from ``source``."""
    lines = [
        f"# derms-edge ACL for gateway {config.gateway.id}, from {source}",
        "# (derms-edge acl; load it with acl_file in mosquitto.conf)",
    ]
    for grant in grants(config):
        lines += ["", f"user {grant.user}"]
        lines += [f"topic write {topic}" for topic in grant.write]
        lines += [f"topic read {topic}" for topic in grant.read]
    return "\n".join(lines) + "\n"
