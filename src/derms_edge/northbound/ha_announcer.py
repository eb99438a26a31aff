"""Home Assistant discovery on the gateway's MQTT session: the config messages published
(retained) after every connection, again when Home Assistant's birth message says it
restarted, and again for a device whose nameplate became known; the configs of devices
that left the configuration removed.

Which configs are this gateway's is the broker's to say, not a local list's: the session
subscribes to `config_filter` (every config under the gateway's node id), and the broker
delivers the retained ones with the retain flag at each subscription. One that is not among
the configs of now is a device that left: an empty retained message removes it (and Home
Assistant removes the entity). The gateway's own configs come back too, live (no retain
flag), and are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from derms_edge.config import HomeAssistantSection
from derms_edge.model import Capability, DeviceKind
from derms_edge.northbound.homeassistant import (
    DeviceInfo,
    birth_topic,
    config_filter,
    discovery_messages,
    is_birth,
    is_own_config,
)
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.northbound.topics import Topics

log = logging.getLogger(__name__)


class HomeAssistantAnnouncer:
    """Publishes and withdraws the gateway's Home Assistant discovery configs."""

    def __init__(
        self,
        section: HomeAssistantSection,
        topics: Topics,
        kinds: Mapping[str, DeviceKind],
        session: MqttSession,
    ) -> None:
        self._prefix = section.discovery_prefix
        self._topics = topics
        self._session = session
        self._devices = {device_id: DeviceInfo(kind) for device_id, kind in kinds.items()}
        self._configs: dict[str, bytes] = dict(self._messages())
        """Every config topic of now and its payload, as last published."""

    def filters(self) -> list[str]:
        """What the session subscribes to for discovery."""
        return [birth_topic(self._prefix), config_filter(self._prefix, self._topics)]

    def handles(self, topic: str) -> bool:
        """A message on one of `filters`."""
        return topic == birth_topic(self._prefix) or is_own_config(
            self._prefix, self._topics, topic
        )

    def announce(self) -> None:
        """Publish every config (after a connection, or Home Assistant's birth)."""
        self._configs = dict(self._messages())
        for topic, payload in self._configs.items():
            self._publish(topic, payload)

    def device_connected(self, device_id: str, capability: Capability) -> None:
        """A device's nameplate is known: its configs again, where they changed."""
        self._devices[device_id] = DeviceInfo(self._devices[device_id].kind, capability)
        for topic, payload in self._messages():
            if self._configs.get(topic) != payload:
                self._configs[topic] = payload
                self._publish(topic, payload)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        """Home Assistant's birth: announce again. A retained config of this gateway that is
        not one of now: remove it."""
        if is_birth(self._prefix, topic, payload):
            log.info("Home Assistant (re)started: discovery configs published again")
            self.announce()
        elif (
            retained
            and payload
            and is_own_config(self._prefix, self._topics, topic)
            and topic not in self._configs
        ):
            log.info("Home Assistant: %s is no longer configured; its config is removed", topic)
            self._publish(topic, b"")

    def _messages(self) -> list[tuple[str, bytes]]:
        return discovery_messages(self._prefix, self._topics, self._devices)

    def _publish(self, topic: str, payload: bytes) -> None:
        self._session.publish(Message("state", topic, payload, retain=True))
