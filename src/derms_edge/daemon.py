"""Wiring: builds the parts from the configuration and runs them in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import UTC, datetime

from derms_edge import __version__
from derms_edge.config import Config
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.dispatch import Dispatcher
from derms_edge.errors import ControlRefused
from derms_edge.model import Capability, SetpointName
from derms_edge.northbound.messages import CapabilityMessage, StatusMessage, TelemetryMessage
from derms_edge.northbound.mqtt import MqttSession, Publication
from derms_edge.northbound.topics import Topics

log = logging.getLogger(__name__)


class Gateway:
    """The running gateway: one coordinator per device, telemetry and status over MQTT."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.prefix, config.gateway.id)
        self._kinds = {device.id: device.kind for device in config.devices}
        self._links = LinkPool()
        revert_s = config.control.revert_s
        self.coordinators: dict[str, DeviceCoordinator] = {
            device.id: build_coordinator(
                device,
                self._links,
                self._publish_capability,
                on_refused=self._refused,
                keepalive_s=revert_s / 3 if revert_s > 0 else None,
                revert_s=revert_s,
            )
            for device in config.devices
        }
        self.mqtt = MqttSession(
            config.mqtt,
            client_id=f"derms-edge-{config.gateway.id}",
            will=self._status(online=False),
        )
        self.mqtt.on_connected(self._announce)
        self.dispatcher = Dispatcher(config, self.coordinators, self.mqtt.publish, self.topics)
        self.mqtt.subscribe(self.topics.inbound_filters(config.mqtt.groups), self.dispatcher.handle)
        self.seq = 0

    def _refused(self, device_id: str, name: SetpointName, refusal: ControlRefused) -> None:
        self.dispatcher.on_refused(device_id, name, refusal)

    def _status(self, *, online: bool) -> Publication:
        message = StatusMessage(
            online=online,
            ts=datetime.now(UTC),
            version=__version__,
            devices=list(self._kinds),
        )
        return Publication(self.topics.status, message.encode(), qos=1, retain=True)

    def _announce(self) -> None:
        """After every (re)connection: status online, and the capabilities known so far."""
        self.mqtt.publish(self._status(online=True))
        for device_id, coordinator in self.coordinators.items():
            if coordinator.capability is not None:
                self._publish_capability(device_id, coordinator.capability)

    def _publish_capability(self, device_id: str, capability: Capability) -> None:
        message = CapabilityMessage.of(
            device=device_id,
            kind=self._kinds[device_id],
            ts=datetime.now(UTC),
            capability=capability,
        )
        self.mqtt.publish(
            Publication(self.topics.capability(device_id), message.encode(), qos=1, retain=True)
        )

    def publish_telemetry(self) -> None:
        """One telemetry message per device, each with the next sequence number."""
        qos = self.config.telemetry.qos
        for device_id, coordinator in self.coordinators.items():
            reading = coordinator.reading
            quality = coordinator.quality()
            self.seq += 1
            message = TelemetryMessage.of(
                seq=self.seq,
                device=device_id,
                kind=self._kinds[device_id],
                quality=quality,
                ts=reading.at
                if reading is not None and quality != "offline"
                else datetime.now(UTC),
                state=reading.state if reading is not None else None,
            )
            self.mqtt.publish(Publication(self.topics.telemetry(device_id), message.encode(), qos))

    async def _telemetry_loop(self) -> None:
        interval = self.config.telemetry.interval_s
        while True:
            # align to the interval so readings from many gateways line up in time
            await asyncio.sleep(interval - time.time() % interval)
            self.publish_telemetry()

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then say goodbye on MQTT and close every device."""
        self.mqtt.start()
        log.info(
            "gateway %s: %d devices, MQTT %s, topics under %s",
            self.config.gateway.id,
            len(self.coordinators),
            self.mqtt.endpoint,
            self.topics.root,
        )
        try:
            async with asyncio.TaskGroup() as group:
                for device_id, coordinator in self.coordinators.items():
                    group.create_task(coordinator.run(), name=f"device:{device_id}")
                group.create_task(self._telemetry_loop(), name="telemetry")
                group.create_task(self.dispatcher.run(), name="control")
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            await self.mqtt.stop([self._status(online=False)])
            log.info("gateway %s stopped", self.config.gateway.id)


class _Stop(Exception):
    """Raised inside the TaskGroup to cancel every task on shutdown."""


async def serve(config: Config) -> None:
    """Run the gateway until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await Gateway(config).run(stop)
