"""Wiring: builds the parts from the configuration, connects who tells whom, and runs them in
one TaskGroup.

Who tells whom is connected here and nowhere else:

- each device coordinator reports (`DeviceConnected`, `SetpointRefused`) to `_device_report`:
  the capability is published, and the report goes into the control loop's inbox;
- the MQTT session hands every inbound message to `_inbound`: admitted by its role's rate
  limit (or dropped unread), validated into a command (northbound), then into the control
  loop's inbox; after every (re)connection it calls
  the forwarder (the backlog starts over), the reporter (status online, capabilities) and,
  with ``homeassistant`` configured, the discovery announcer (which also gets Home
  Assistant's birth messages and the devices' nameplates);
  each PUBACK goes to the forwarder;
- the outbox wakes the forwarder and the InfluxDB sink when rows are added;
- the control loop hands setpoints to the coordinators, responses to the outbox and the
  values in force to the retained ``active`` topic.

What the gateway says about itself (status, capabilities, telemetry rounds) is the
reporter's (`runtime/reporting.py`); the control loop's is `runtime/control_loop.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from derms_edge.config import Config, OcppDevice
from derms_edge.control import Controller, ExportLimiter, Role
from derms_edge.devices.coordinator import (
    DeviceConnected,
    DeviceCoordinator,
    DeviceReport,
)
from derms_edge.devices.factory import Wiring, build_coordinator
from derms_edge.devices.modbus import LinkPool
from derms_edge.model import DeviceKind, Quality
from derms_edge.northbound.commands import parse_command
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.northbound.rate_limit import InboundLimit
from derms_edge.northbound.signed import KeyRing
from derms_edge.northbound.topics import Topics
from derms_edge.outbox.buffer import MQTT, Outbox
from derms_edge.outbox.forward import Forwarder
from derms_edge.runtime.control_loop import ControlLoop, utc_now
from derms_edge.runtime.device_views import DeviceViews
from derms_edge.runtime.replay import ReplayGuard
from derms_edge.runtime.reporting import Reporter, status_message
from derms_edge.runtime.schedule_store import ScheduleStore
from derms_edge.runtime.supervisor import supervise
from derms_edge.runtime.watchdog import Watchdog

if TYPE_CHECKING:
    from derms_edge.devices.ocpp.hub import OcppHub
    from derms_edge.northbound.ha_announcer import HomeAssistantAnnouncer
    from derms_edge.outbox.influx import InfluxSink

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
    """The control loop of a configured gateway (it loads the stored schedule and the roles'
    stored defaults when it starts)."""
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
        max_clock_skew_s=control.max_clock_skew_s,
    )
    store = ScheduleStore(config.gateway.state_dir / SCHEDULE_FILE)
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
        replay=ReplayGuard(store, control.max_clock_skew_s) if control.require_signed else None,
    )


def _meter(config: Config) -> str | None:
    """The meter at the point of connection: the configured one, else the only meter."""
    if config.control.export_limit.meter is not None:
        return config.control.export_limit.meter
    meters = [d.id for d in config.devices if d.kind == DeviceKind.METER]
    return meters[0] if len(meters) == 1 else None


class Gateway:
    """The running gateway: the parts built from the configuration and wired together."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.prefix, config.gateway.id)
        self.keys = (
            KeyRing.from_files({name: role.keys for name, role in config.control.roles.items()})
            if config.control.require_signed
            else None
        )
        """Each role's public keys when controls must be signed; None when they need not."""
        self.watchdog = Watchdog.from_environment(status=self._health)
        self.watchdog.expect("telemetry", 3 * config.telemetry.interval_s + 10)
        self.watchdog.expect("control", 3 * config.control.interval_s + 10)
        self._kinds = {device.id: device.kind for device in config.devices}
        self._links = LinkPool()
        self.ocpp = _ocpp_hub(config)
        revert_s = config.control.revert_s
        wiring = Wiring(
            report=self._device_report,
            await_decision_s=DECISION_WAIT_S,
            keepalive_s=keepalive_interval(revert_s),
            revert_s=revert_s,
            revert_max_w_pct=config.control.default.max_w_pct,
            ocpp=self.ocpp,
        )
        self.coordinators: dict[str, DeviceCoordinator] = {
            device.id: build_coordinator(device, self._links, wiring) for device in config.devices
        }
        telemetry = config.telemetry
        # the InfluxDB sink's and Home Assistant's modules load only when configured
        self.influx: InfluxSink | None = None
        sinks: tuple[str, ...] = (MQTT,)
        if telemetry.influxdb is not None:
            from derms_edge.outbox.influx import SINK, InfluxSink

            sinks = (MQTT, SINK)
        self.outbox = Outbox(
            telemetry.buffer_path or config.gateway.state_dir / BUFFER_FILE,
            max_bytes=int(telemetry.buffer_max_mb * 1024 * 1024),
            sinks=sinks,
        )
        if telemetry.influxdb is not None:
            self.influx = InfluxSink(telemetry.influxdb, self.outbox, config.gateway.id)
        self.mqtt = MqttSession(
            config.mqtt,
            client_id=f"derms-edge-{config.gateway.id}",
            will=status_message(
                self.topics,
                self._kinds,
                online=False,
                quality=dict.fromkeys(self._kinds, Quality.OFFLINE),
                buffered=self.outbox.backlog(MQTT),
                dropped=self.outbox.dropped,
                rejected_inbound=0,
            ),
        )
        limit = config.control.rate_limit
        self.inbound_limit = InboundLimit(
            config.control.roles, per_s=limit.per_s, burst=limit.burst
        )
        self.forwarder = Forwarder(
            self.outbox, self.mqtt, replay_rate_per_s=telemetry.replay_rate_per_s
        )
        self.reporter = Reporter(
            self.topics,
            self._kinds,
            self.coordinators,
            outbox=self.outbox,
            session=self.mqtt,
            forwarder=self.forwarder,
            qos=telemetry.qos,
            interval_s=telemetry.interval_s,
            store_every_round=telemetry.store_every_round,
            on_round=self._telemetry_round,
            rejected_inbound=lambda: self.inbound_limit.rejected,
            last_dispatch=lambda: self.control_loop.dispatches.last,
        )
        self.control_loop = build_control_loop(
            config,
            self.coordinators,
            self.topics,
            respond=self.outbox.add,
            publish=self.mqtt.publish,
            on_tick=lambda: self.watchdog.beat("control"),
        )
        self.homeassistant: HomeAssistantAnnouncer | None = None
        if config.homeassistant is not None:
            from derms_edge.northbound.ha_announcer import HomeAssistantAnnouncer

            self.homeassistant = HomeAssistantAnnouncer(
                config.homeassistant, self.topics, self._kinds, self.mqtt
            )
        # who tells whom
        self.outbox.add_listener(self.forwarder.wake)
        if self.influx is not None:
            self.outbox.add_listener(self.influx.wake)
        self.mqtt.on_connected(self.forwarder.reconnected)
        self.mqtt.on_connected(self.reporter.announce)
        self.mqtt.on_published(self.forwarder.published)
        filters = self.topics.inbound_filters(config.mqtt.groups)
        if self.homeassistant is not None:
            self.mqtt.on_connected(self.homeassistant.announce)
            filters += self.homeassistant.filters()
        self.mqtt.subscribe(filters, self._inbound)

    def _inbound(self, topic: str, payload: bytes, retained: bool) -> None:
        """An MQTT message: admitted by its role's rate limit (else dropped unread), then
        validated into a command for the control loop. Home Assistant's go to discovery."""
        if self.homeassistant is not None and self.homeassistant.handles(topic):
            self.homeassistant.on_message(topic, payload, retained)
            return
        inbound = self.topics.parse_inbound(topic)
        if inbound is not None and not self.inbound_limit.admit(
            inbound.role, inbound.kind, time.monotonic()
        ):
            self._log_dropped()
            return
        try:
            command = parse_command(
                self.topics,
                topic,
                payload,
                retained,
                max_bytes=self.config.mqtt.max_payload_bytes,
                keys=self.keys,
            )
        except Exception:  # a hostile payload must not reach the event loop's handler
            log.exception("a message on %s could not be read", topic)
            return
        if command is not None:
            self.control_loop.post(command)

    def _log_dropped(self) -> None:
        """The summary of messages dropped over the rate limit, once a minute at most."""
        summary = self.inbound_limit.summary(time.monotonic())
        if summary is not None:
            log.warning("%s", summary)

    def _telemetry_round(self) -> None:
        self.watchdog.beat("telemetry")
        self._log_dropped()  # the tail of a flood that has stopped

    def _health(self) -> str:
        return self.reporter.health()

    def _device_report(self, report: DeviceReport) -> None:
        """A device connected (its capability is published; the controller decides with it)
        or refused a setpoint: both go to the control loop."""
        if isinstance(report, DeviceConnected):
            self.reporter.publish_capability(report.device_id, report.capability)
            if self.homeassistant is not None:
                self.homeassistant.device_connected(report.device_id, report.capability)
        self.control_loop.post(report)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then say goodbye on MQTT and close every device."""
        if self.ocpp is not None:  # first: a listen address taken is a ConfigError
            await self.ocpp.start()
        loop = asyncio.get_running_loop()  # rows fsynced in the outbox's thread: send them
        self.outbox.on_durable(lambda: loop.call_soon_threadsafe(self.forwarder.wake))
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
                group.create_task(supervise("telemetry", self.reporter.run), name="telemetry")
                group.create_task(self.watchdog.run(), name="watchdog")
                group.create_task(supervise("forward", self.forwarder.run), name="forward")
                if self.influx is not None:
                    group.create_task(supervise("influx", self.influx.run), name="influx")
                group.create_task(supervise("control", self.control_loop.run), name="control")
                await stop.wait()
                raise _Stop
        except* _Stop:
            pass
        finally:
            if self.ocpp is not None:
                await self.ocpp.close()
            await self.mqtt.stop([self.reporter.status(online=False)])
            self.forwarder.flush()  # PUBACKs that came while stopping
            self.control_loop.close()  # the answers that waited for its fsync: to the outbox
            self.outbox.close()  # what was not acknowledged stays for the next start
            log.info("gateway %s stopped", self.config.gateway.id)


def _ocpp_hub(config: Config) -> OcppHub | None:
    """The CSMS the configured OCPP stations connect to; None without OCPP devices (the
    ocpp library is imported only with them)."""
    devices = [d for d in config.devices if isinstance(d, OcppDevice)]
    if not devices or config.ocpp is None:
        return None
    from derms_edge.devices.ocpp.hub import OcppHub

    return OcppHub(config.ocpp, devices)


class _Stop(Exception):
    """Raised inside the TaskGroup to cancel every task on shutdown."""


def freeze_startup_heap() -> None:
    """Leave what the start made (modules, models, the configuration: some 50,000 objects
    that live as long as the process) out of every later garbage collection, so a full one
    goes through what the running gateway made only (at 200 devices it took 38 ms every
    20 s or so). Garbage first: only what is still alive is frozen."""
    gc.collect()
    gc.freeze()


async def serve(config: Config) -> None:
    """Run the gateway until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    gateway = Gateway(config)
    freeze_startup_heap()
    await gateway.run(stop)
