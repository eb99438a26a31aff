"""Wiring: builds the parts from the configuration and runs them in one TaskGroup.

Telemetry and responses go into the outbox (one transaction per telemetry round) and the
forwarder sends them on; status, capability and active are retained state, published
directly while connected (the latest wins, nothing to buffer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from derms_edge import __version__
from derms_edge.config import Config
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.devices.factory import build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.dispatch import Dispatcher
from derms_edge.errors import ControlRefused
from derms_edge.model import Capability, Quality, SetpointName
from derms_edge.northbound.messages import CapabilityMessage, StatusMessage, TelemetryMessage
from derms_edge.northbound.mqtt import MqttSession, Publication
from derms_edge.northbound.topics import Topics
from derms_edge.supervisor import supervise
from derms_edge.telemetry.forward import Forwarder
from derms_edge.telemetry.influx import SINK as INFLUX
from derms_edge.telemetry.influx import InfluxSink
from derms_edge.telemetry.outbox import MQTT, Entry, Outbox
from derms_edge.watchdog import Watchdog

BUFFER_FILE = "telemetry.sqlite"

log = logging.getLogger(__name__)


CHECK_S = 20.0
"""With no revert timers (``control.revert_s: 0``) the setpoints in force are still read back
this often: a device that restarted between two polls has forgotten them."""


def keepalive_interval(revert_s: float) -> float:
    """How often the setpoints in force are refreshed (revert timers, heartbeat) and read back."""
    return revert_s / 3 if revert_s > 0 else CHECK_S


class Gateway:
    """The running gateway: one coordinator per device, telemetry and status over MQTT."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.prefix, config.gateway.id)
        self.watchdog = Watchdog.from_environment(status=self._health)
        self.watchdog.expect("telemetry", 3 * config.telemetry.interval_s + 10)
        self.watchdog.expect("control", 3 * config.control.interval_s + 10)
        self._kinds = {device.id: device.kind for device in config.devices}
        self._links = LinkPool()
        revert_s = config.control.revert_s
        self.coordinators: dict[str, DeviceCoordinator] = {
            device.id: build_coordinator(
                device,
                self._links,
                self._connected,
                on_refused=self._refused,
                keepalive_s=keepalive_interval(revert_s),
                revert_s=revert_s,
            )
            for device in config.devices
        }
        telemetry = config.telemetry
        self.outbox = Outbox(
            telemetry.buffer_path or config.gateway.state_dir / BUFFER_FILE,
            max_bytes=int(telemetry.buffer_max_mb * 1024 * 1024),
            sinks=(MQTT, INFLUX) if telemetry.influxdb is not None else (MQTT,),
        )
        self.influx = (
            InfluxSink(telemetry.influxdb, self.outbox, config.gateway.id)
            if telemetry.influxdb is not None
            else None
        )
        if self.influx is not None:
            self.outbox.add_listener(self.influx.wake)
        self.mqtt = MqttSession(
            config.mqtt,
            client_id=f"derms-edge-{config.gateway.id}",
            will=self._status(
                online=False,
                quality=dict.fromkeys(self._kinds, Quality.OFFLINE),
                buffered=self.outbox.backlog(MQTT),
            ),
        )
        self.mqtt.on_connected(self._announce)
        self.forwarder = Forwarder(
            self.outbox, self.mqtt, replay_rate_per_s=telemetry.replay_rate_per_s
        )
        self.dispatcher = Dispatcher(
            config,
            self.coordinators,
            self.mqtt.publish,
            self.topics,
            respond=self._respond,
            on_tick=lambda: self.watchdog.beat("control"),
        )
        self.mqtt.subscribe(self.topics.inbound_filters(config.mqtt.groups), self.dispatcher.handle)
        self._status_shown: tuple[int, int, dict[str, Quality]] | None = None

    def _refused(self, device_id: str, name: SetpointName, refusal: ControlRefused) -> None:
        self.dispatcher.on_refused(device_id, name, refusal)

    def _qualities(self) -> dict[str, Quality]:
        return {device_id: c.quality() for device_id, c in self.coordinators.items()}

    def _status(self, *, online: bool, quality: dict[str, Quality], buffered: int) -> Publication:
        message = StatusMessage(
            online=online,
            ts=datetime.now(UTC),
            version=__version__,
            devices=list(self._kinds),
            device_quality=quality,
            buffered=buffered,
            dropped=self.outbox.dropped,
        )
        return Publication(self.topics.status, message.encode(), qos=1, retain=True)

    def _show_status(self, quality: dict[str, Quality], *, force: bool = False) -> None:
        """Publish the status (retained) when connected and it changed, or when forced."""
        buffered = self.forwarder.buffered
        shown = (buffered, self.outbox.dropped, quality)
        if self.mqtt.connected.is_set() and (force or shown != self._status_shown):
            self.mqtt.publish(self._status(online=True, quality=quality, buffered=buffered))
            self._status_shown = shown

    def _announce(self) -> None:
        """After every (re)connection: status online, and the capabilities known so far."""
        self._show_status(self._qualities(), force=True)
        for device_id, coordinator in self.coordinators.items():
            if coordinator.capability is not None:
                self._publish_capability(device_id, coordinator.capability)

    def _respond(self, publications: Sequence[Publication]) -> None:
        """Responses of the control core: into the outbox, in one transaction."""
        self.outbox.add(
            [Entry("response", p.topic, p.payload, p.qos, p.retain) for p in publications]
        )

    def _connected(self, device_id: str, capability: Capability) -> None:
        """A device (re)connected: publish what it can do, and decide its controls at once
        with that knowledge, before the coordinator writes them."""
        self._publish_capability(device_id, capability)
        self.dispatcher.step()

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
        """One telemetry round: a message per device, each with the next sequence number,
        stored in the outbox in one transaction; the status first if it changed."""
        quality = self._qualities()
        self._show_status(quality)  # before this round: its rows are not yet sent
        qos = self.config.telemetry.qos
        seq = self.outbox.next_seq(len(self.coordinators))
        entries = []
        for offset, (device_id, coordinator) in enumerate(self.coordinators.items()):
            reading = coordinator.reading
            message = TelemetryMessage.of(
                seq=seq + offset,
                device=device_id,
                kind=self._kinds[device_id],
                quality=quality[device_id],
                ts=reading.at
                if reading is not None and quality[device_id] != "offline"
                else datetime.now(UTC),
                state=reading.state if reading is not None else None,
            )
            entries.append(
                Entry("telemetry", self.topics.telemetry(device_id), message.encode(), qos)
            )
        self.outbox.add(entries)

    async def _telemetry_loop(self) -> None:
        interval = self.config.telemetry.interval_s
        while True:
            # align to the interval so readings from many gateways line up in time
            await asyncio.sleep(interval - time.time() % interval)
            self.publish_telemetry()
            self.watchdog.beat("telemetry")

    def _health(self) -> str:
        """The STATUS= line systemctl status shows."""
        counts: dict[str, int] = {}
        for coordinator in self.coordinators.values():
            quality = str(coordinator.quality())
            counts[quality] = counts.get(quality, 0) + 1
        devices = ", ".join(f"{n} {q}" for q, n in sorted(counts.items()))
        mqtt = "connected" if self.mqtt.connected.is_set() else "not connected"
        return f"{len(self.coordinators)} devices ({devices}); MQTT {mqtt}"

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
                    name = f"device:{device_id}"
                    group.create_task(supervise(name, coordinator.run), name=name)
                group.create_task(supervise("telemetry", self._telemetry_loop), name="telemetry")
                group.create_task(self.watchdog.run(), name="watchdog")
                group.create_task(supervise("forward", self.forwarder.run), name="forward")
                if self.influx is not None:
                    group.create_task(supervise("influx", self.influx.run), name="influx")
                group.create_task(supervise("control", self.dispatcher.run), name="control")
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            final = self._status(
                online=False, quality=self._qualities(), buffered=self.forwarder.buffered
            )
            await self.mqtt.stop([final])
            self.forwarder.flush()  # PUBACKs that came while stopping
            self.outbox.close()  # what was not acknowledged stays for the next start
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
