"""Wiring: builds the parts from the configuration, connects who tells whom, and runs them in
one TaskGroup.

Who tells whom is connected here and nowhere else:

- each device coordinator reports (`DeviceConnected`, `SetpointRefused`) to `_device_report`:
  the capability is published, and the report goes into the control loop's inbox;
- the MQTT session hands every inbound message to `_inbound`: validated into a command
  (northbound), then into the control loop's inbox; after every (re)connection it calls
  the forwarder (the backlog starts over) and `_announce` (status online, capabilities);
  each PUBACK goes to the forwarder;
- the outbox wakes the forwarder and the InfluxDB sink when rows are added;
- the control loop hands setpoints to the coordinators, responses to the outbox and the
  values in force to the retained ``active`` topic.

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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from derms_edge import __version__
from derms_edge.config import Config
from derms_edge.control import Controller, ExportLimiter, Role
from derms_edge.devices.coordinator import (
    DeviceConnected,
    DeviceCoordinator,
    DeviceReport,
)
from derms_edge.devices.factory import Wiring, build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.model import Capability, DeviceKind, Quality
from derms_edge.northbound.commands import parse_command
from derms_edge.northbound.messages import CapabilityMessage, StatusMessage, TelemetryMessage
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.northbound.topics import Topics
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.forward import Forwarder
from derms_edge.outbox.influx import SINK as INFLUX
from derms_edge.outbox.influx import InfluxSink
from derms_edge.runtime.control_loop import ControlLoop, utc_now
from derms_edge.runtime.device_views import DeviceViews
from derms_edge.runtime.schedule_store import ScheduleStore
from derms_edge.runtime.supervisor import supervise
from derms_edge.runtime.watchdog import Watchdog

BUFFER_FILE = "telemetry.sqlite"
SCHEDULE_FILE = "schedule.sqlite"

log = logging.getLogger(__name__)


DECISION_WAIT_S = 2.0
"""After a device connects, its writes wait this long at most for the control loop's
decision with its capability (it comes within milliseconds while the loop runs)."""
CHECK_S = 20.0
"""With no revert timers (``control.revert_s: 0``) the setpoints in force are still read back
this often: a device that restarted between two polls has forgotten them."""


def keepalive_interval(revert_s: float) -> float:
    """How often the setpoints in force are refreshed (revert timers, heartbeat) and read back."""
    return revert_s / 3 if revert_s > 0 else CHECK_S


def build_control_loop(
    config: Config,
    coordinators: Mapping[str, DeviceCoordinator],
    topics: Topics,
    *,
    respond: Callable[[Sequence[Message]], object],
    publish: Callable[[Message], None],
    on_tick: Callable[[], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> ControlLoop:
    """The control loop of a configured gateway, with its stored schedule and the roles'
    stored defaults restored."""
    control = config.control
    roles = {
        name: Role(name, role.primacy, frozenset(role.allow))
        for name, role in control.roles.items()
    }
    export = control.export_limit
    controller = Controller(
        roles=roles,
        dispatcher_timeout_s=control.dispatcher_timeout_s,
        limiter=ExportLimiter(
            export.gain, export.max_step_pct, export.deadband_w, interval_s=control.interval_s
        ),
        meter=_meter(config),
        interval_s=control.interval_s,
        config_default=control.default.to_control(),
    )
    store = ScheduleStore(config.gateway.state_dir / SCHEDULE_FILE)
    now = clock()
    controller.restore(store.load(now), now)
    for role, default in store.load_defaults().items():
        refusal = controller.set_default(role, default) if role in roles else None
        if refusal is not None:
            log.warning("the stored default control of role %s is not applied: %s", role, refusal)
    return ControlLoop(
        controller,
        store,
        DeviceViews(config, coordinators),
        coordinators,
        topics,
        interval_s=control.interval_s,
        respond=respond,
        publish=publish,
        on_tick=on_tick,
        clock=clock,
    )


def _meter(config: Config) -> str | None:
    """The meter at the point of connection: the configured one, else the only meter."""
    if config.control.export_limit.meter is not None:
        return config.control.export_limit.meter
    meters = [d.id for d in config.devices if d.kind == DeviceKind.METER]
    return meters[0] if len(meters) == 1 else None


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
        wiring = Wiring(
            report=self._device_report,
            await_decision_s=DECISION_WAIT_S,
            keepalive_s=keepalive_interval(revert_s),
            revert_s=revert_s,
            revert_max_w_pct=config.control.default.max_w_pct,
        )
        self.coordinators: dict[str, DeviceCoordinator] = {
            device.id: build_coordinator(device, self._links, wiring) for device in config.devices
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
        self.mqtt = MqttSession(
            config.mqtt,
            client_id=f"derms-edge-{config.gateway.id}",
            will=self._status(
                online=False,
                quality=dict.fromkeys(self._kinds, Quality.OFFLINE),
                buffered=self.outbox.backlog(MQTT),
            ),
        )
        self.forwarder = Forwarder(
            self.outbox, self.mqtt, replay_rate_per_s=telemetry.replay_rate_per_s
        )
        self.control = build_control_loop(
            config,
            self.coordinators,
            self.topics,
            respond=self.outbox.add,
            publish=self.mqtt.publish,
            on_tick=lambda: self.watchdog.beat("control"),
        )
        self._status_shown: tuple[int, int, dict[str, Quality]] | None = None
        # who tells whom
        self.outbox.add_listener(self.forwarder.wake)
        if self.influx is not None:
            self.outbox.add_listener(self.influx.wake)
        self.mqtt.on_connected(self.forwarder.reconnected)
        self.mqtt.on_connected(self._announce)
        self.mqtt.on_published(self.forwarder.published)
        self.mqtt.subscribe(self.topics.inbound_filters(config.mqtt.groups), self._inbound)

    def _inbound(self, topic: str, payload: bytes, retained: bool) -> None:
        """An MQTT message: validated into a command for the control loop."""
        command = parse_command(self.topics, topic, payload, retained)
        if command is not None:
            self.control.post(command)

    def _device_report(self, report: DeviceReport) -> None:
        """A device connected (its capability is published; the controller decides with it)
        or refused a setpoint: both go to the control loop."""
        if isinstance(report, DeviceConnected):
            self._publish_capability(report.device_id, report.capability)
        self.control.post(report)

    def _qualities(self) -> dict[str, Quality]:
        return {device_id: c.quality() for device_id, c in self.coordinators.items()}

    def _status(self, *, online: bool, quality: dict[str, Quality], buffered: int) -> Message:
        message = StatusMessage(
            online=online,
            ts=datetime.now(UTC),
            version=__version__,
            devices=list(self._kinds),
            device_quality=quality,
            buffered=buffered,
            dropped=self.outbox.dropped,
        )
        return Message("state", self.topics.status, message.encode(), retain=True)

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

    def _publish_capability(self, device_id: str, capability: Capability) -> None:
        message = CapabilityMessage.of(
            device=device_id,
            kind=self._kinds[device_id],
            ts=datetime.now(UTC),
            capability=capability,
        )
        self.mqtt.publish(
            Message("state", self.topics.capability(device_id), message.encode(), retain=True)
        )

    def publish_telemetry(self) -> None:
        """One telemetry round: a message per device, each with the next sequence number,
        stored in the outbox in one transaction; the status first if it changed."""
        quality = self._qualities()
        self._show_status(quality)  # before this round: its rows are not yet sent
        qos = self.config.telemetry.qos
        seq = self.outbox.next_seq(len(self.coordinators))
        messages = []
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
            messages.append(
                Message("telemetry", self.topics.telemetry(device_id), message.encode(), qos)
            )
        self.outbox.add(messages)

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
                group.create_task(supervise("control", self.control.run), name="control")
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
            self.control.store.close()
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
