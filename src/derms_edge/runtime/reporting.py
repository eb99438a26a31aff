"""What the gateway says about itself and its devices: the retained status and capabilities
(published directly while connected: the latest wins), and a telemetry round every
``telemetry.interval_s`` into the outbox: held in memory while the broker is connected (it
reaches the disk only if it is not acknowledged by the next round), written at once while
the broker is away or with ``telemetry.store_every_round``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from derms_edge import __version__
from derms_edge.aio import to_boundary
from derms_edge.devices.coordinator import DeviceCoordinator
from derms_edge.model import Capability, DeviceKind, Quality
from derms_edge.northbound.messages import (
    CapabilityMessage,
    LastDispatch,
    StatusMessage,
    telemetry_payload,
)
from derms_edge.northbound.mqtt import Message, MqttSession
from derms_edge.northbound.topics import Topics
from derms_edge.outbox.buffer import Outbox
from derms_edge.outbox.forward import Forwarder
from derms_edge.runtime.dispatches import Dispatch


def status_message(
    topics: Topics,
    kinds: Mapping[str, DeviceKind],
    *,
    online: bool,
    quality: Mapping[str, Quality],
    buffered: int,
    dropped: int,
    rejected_inbound: int,
    last_dispatch: Dispatch | None = None,
) -> Message:
    """The retained status (the last will is one, offline)."""
    message = StatusMessage(
        online=online,
        ts=datetime.now(UTC),
        version=__version__,
        devices=list(kinds),
        device_quality=dict(quality),
        buffered=buffered,
        dropped=dropped,
        rejected_inbound=rejected_inbound,
        last_dispatch=None if last_dispatch is None else _last_dispatch(last_dispatch),
    )
    return Message("state", topics.status, message.encode(), retain=True)


def _last_dispatch(dispatch: Dispatch) -> LastDispatch:
    return LastDispatch(
        role=dispatch.role,
        mrid=dispatch.mrid,
        received=dispatch.received,
        status=dispatch.status,
        reason=dispatch.reason,
        detail=dispatch.detail,
        answered=dispatch.answered,
    )


class Reporter:
    """Publishes the status and capabilities, and runs the telemetry rounds."""

    def __init__(
        self,
        topics: Topics,
        kinds: Mapping[str, DeviceKind],
        coordinators: Mapping[str, DeviceCoordinator],
        *,
        outbox: Outbox,
        session: MqttSession,
        forwarder: Forwarder,
        qos: int,
        interval_s: float,
        store_every_round: bool,
        on_round: Callable[[], None],
        rejected_inbound: Callable[[], int],
        last_dispatch: Callable[[], Dispatch | None] = lambda: None,
    ) -> None:
        self._topics = topics
        self._kinds = kinds
        self._coordinators = coordinators
        self._outbox = outbox
        self._session = session
        self._forwarder = forwarder
        self._qos = qos
        self._interval_s = interval_s
        self._store_every_round = store_every_round
        self._on_round = on_round
        """Called after every telemetry round: the telemetry loop is alive."""
        self._rejected_inbound = rejected_inbound
        """Inbound messages dropped over the rate limit so far."""
        self._last_dispatch = last_dispatch
        """The last dispatch taken and its latest answer."""
        self._status_shown: tuple[int, int, int, dict[str, Quality], Dispatch | None] | None = None

    def qualities(self) -> dict[str, Quality]:
        """Every device's quality now."""
        return {device_id: c.quality() for device_id, c in self._coordinators.items()}

    def status(self, *, online: bool) -> Message:
        """The status message as of now."""
        return status_message(
            self._topics,
            self._kinds,
            online=online,
            quality=self.qualities(),
            buffered=self._forwarder.buffered,
            dropped=self._outbox.dropped,
            rejected_inbound=self._rejected_inbound(),
            last_dispatch=self._last_dispatch(),
        )

    def announce(self) -> None:
        """After every (re)connection: status online, and the capabilities known so far."""
        self._show_status(self.qualities(), force=True)
        for device_id, coordinator in self._coordinators.items():
            if coordinator.capability is not None:
                self.publish_capability(device_id, coordinator.capability)

    def publish_capability(self, device_id: str, capability: Capability) -> None:
        """What a device is and can do (retained), as read at its last connect."""
        message = CapabilityMessage.of(
            device=device_id,
            kind=self._kinds[device_id],
            ts=datetime.now(UTC),
            capability=capability,
        )
        self._session.publish(
            Message("state", self._topics.capability(device_id), message.encode(), retain=True)
        )

    def publish_telemetry(self) -> None:
        """One telemetry round: a message per device, each with the next sequence number,
        into the outbox as one add (held in memory while connected, unless every round is
        to be stored); the status first if it changed."""
        quality = self.qualities()
        self._show_status(quality)  # before this round: its rows are not yet sent
        seq = self._outbox.next_seq(len(self._coordinators))
        messages = []
        for offset, (device_id, coordinator) in enumerate(self._coordinators.items()):
            reading = coordinator.reading
            fresh = reading is not None and quality[device_id] in (Quality.OK, Quality.STALE)
            payload = telemetry_payload(
                seq=seq + offset,
                device=device_id,
                kind=self._kinds[device_id],
                quality=quality[device_id],
                ts=reading.at if reading is not None and fresh else datetime.now(UTC),
                state=reading.state if reading is not None else None,
            )
            messages.append(
                Message("telemetry", self._topics.telemetry(device_id), payload, self._qos)
            )
        hold = not self._store_every_round and self._session.connected.is_set()
        self._outbox.add(messages, hold=hold)

    async def run(self) -> None:
        """A telemetry round every interval, aligned to the clock so that readings from many
        gateways line up in time; until cancelled. The first round comes at the first
        boundary, or before it as soon as every device's first attempt has ended (its first
        reading in, or offline): a gateway that starts says what its devices read within
        seconds, not up to an interval later."""
        first_boundary_s = to_boundary(self._interval_s)
        attempts = [c.first_attempt() for c in self._coordinators.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*attempts), first_boundary_s)
        while True:
            self.publish_telemetry()
            self._on_round()
            await asyncio.sleep(to_boundary(self._interval_s))

    def health(self) -> str:
        """The STATUS= line systemctl status shows."""
        counts: dict[str, int] = {}
        for quality in self.qualities().values():
            counts[str(quality)] = counts.get(str(quality), 0) + 1
        devices = ", ".join(f"{n} {q}" for q, n in sorted(counts.items()))
        mqtt = "connected" if self._session.connected.is_set() else "not connected"
        return f"{len(self._coordinators)} devices ({devices}); MQTT {mqtt}"

    def _show_status(self, quality: dict[str, Quality], *, force: bool = False) -> None:
        """Publish the status (retained) when connected and it changed, or when forced."""
        buffered = self._forwarder.buffered
        rejected = self._rejected_inbound()
        dispatch = self._last_dispatch()
        shown = (buffered, self._outbox.dropped, rejected, quality, dispatch)
        if self._session.connected.is_set() and (force or shown != self._status_shown):
            self._session.publish(
                status_message(
                    self._topics,
                    self._kinds,
                    online=True,
                    quality=quality,
                    buffered=buffered,
                    dropped=self._outbox.dropped,
                    rejected_inbound=rejected,
                    last_dispatch=dispatch,
                )
            )
            self._status_shown = shown
