"""Measurements through an OPC UA subscription: the newest value of each point, and whether
the subscription still delivers.

OPC UA reports changes only, so a value that holds still is confirmed by the subscription
itself: the server is asked for a keep-alive at least every `KEEPALIVE_S` when nothing
changes, and every publish response (notifications or a keep-alive) says "nothing else
changed". Values are therefore current while the subscription keeps that promise and every
status is Good; they age from the last publish response once it falls silent, and from the
moment a status turned Uncertain or Bad. A subscription silent for `KEEPALIVE_MISSED`
keep-alive periods is lost (a server that dropped it says nothing: asyncua's publish loop
just ends).

Every monitored item's DataChangeFilter triggers on status, value *and* source timestamp, so
a server that refreshes its timestamps notifies while values hold still: for such servers a
device may judge by the values' own age instead (``by_value``, the configuration's
``max_value_age_s``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from derms_edge.config import OpcUaPointName
from derms_edge.devices.coordinator import Sample
from derms_edge.devices.opcua.connection import (
    SESSION_TIMEOUT_S,
    Target,
    status_name,
    status_text,
    translate_errors,
)
from derms_edge.errors import DeviceProtocolError

log = logging.getLogger(__name__)

KEEPALIVE_S = 2.0
"""Asked of the server: a keep-alive at least this often when no value changes."""
KEEPALIVE_MISSED = 3
"""Keep-alive periods without any publish response after which the subscription is lost."""


class Notifications:
    """asyncua subscription handler: the newest value of each point, and a lost subscription."""

    def __init__(
        self, points: Mapping[int, OpcUaPointName], seed: Mapping[OpcUaPointName, ua.DataValue]
    ) -> None:
        self.points = dict(points)
        """Client handle to point name."""
        self.values: dict[OpcUaPointName, ua.DataValue] = {}
        self.changed_at = time.monotonic()
        """Monotonic time of the newest data-change notification (the seed read at first)."""
        self.degraded: dict[OpcUaPointName, float] = {}
        """Points whose status is not Good, and since when (monotonic)."""
        self.ended: str | None = None
        """Why the subscription stopped delivering, if it did."""
        self.count = 0
        """Data-change notifications handled."""
        for point, value in seed.items():
            self._take(point, value, self.changed_at)

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        point = self.points.get(data.subscription_data.client_handle or 0)
        if point is not None and data.monitored_item.Value is not None:
            self.changed_at = time.monotonic()
            self._take(point, data.monitored_item.Value, self.changed_at)
            self.count += 1

    def _take(self, point: OpcUaPointName, value: ua.DataValue, at: float) -> None:
        self.values[point] = value
        if value.StatusCode is None or value.StatusCode.is_good():
            self.degraded.pop(point, None)
        else:
            self.degraded.setdefault(point, at)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self.ended = status_name(status.Status)


@dataclass(slots=True)
class Watch:
    """A running subscription and what it delivered."""

    subscription: Subscription
    notifications: Notifications
    keepalive_s: float
    """The keep-alive period the server granted, s."""
    started: float
    """Monotonic time it was created."""

    def confirmed(self, by_value: bool) -> Sample:
        """When the values were last confirmed, and for how long the subscription vouches
        for them (its keep-alive period); ``by_value``: when the newest of them arrived."""
        notifications = self.notifications
        if notifications.degraded:  # Good until the first status turned Uncertain or Bad
            return Sample(min(notifications.degraded.values()))
        if by_value:
            return Sample(notifications.changed_at)
        spoke = max(self.subscription.last_publish_at or 0.0, self.started)
        return Sample(max(spoke, notifications.changed_at), self.keepalive_s)

    def lost(self, grace_s: float) -> str | None:
        """Why the subscription no longer delivers (ended, or silent too long), or None."""
        if self.notifications.ended is not None:
            return f"the subscription ended ({self.notifications.ended})"
        last = max(self.subscription.last_publish_at or 0.0, self.started)
        silent = time.monotonic() - last
        if silent > KEEPALIVE_MISSED * self.keepalive_s + grace_s:
            return (
                f"no notification or keep-alive for {silent:.1f} s "
                f"(the server promised one every {self.keepalive_s:g} s)"
            )
        return None


async def subscribe(
    client: Client,
    target: Target,
    node_ids: Mapping[OpcUaPointName, ua.NodeId],
    interval_ms: float,
    seed: Mapping[OpcUaPointName, ua.DataValue],
) -> Watch | str:
    """Subscribe to these points' nodes; the reason instead when the server refuses.

    ``seed`` holds the values read at connect, served until the first notifications arrive.
    DeviceError when the link fails meanwhile.
    """
    keepalive_count = max(1, math.ceil(KEEPALIVE_S * 1000 / interval_ms))
    params = ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=interval_ms,
        RequestedLifetimeCount=max(
            3 * keepalive_count, math.ceil(SESSION_TIMEOUT_S * 1000 / interval_ms)
        ),
        RequestedMaxKeepAliveCount=keepalive_count,
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
        Priority=0,
    )
    handles = dict(enumerate(node_ids, start=1))
    notifications = Notifications(handles, seed)
    # Subscription itself, not Client.create_subscription: that one may "fix" the keep-alive
    # count to 75 % of the session timeout, and re-creates subscriptions on its own.
    subscription = Subscription(client.uaclient.session, params, notifications)
    trigger = ua.DataChangeFilter(
        Trigger=ua.DataChangeTrigger.StatusValueTimestamp, DeadbandType=ua.DeadbandType.None_
    )
    requests = [
        ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node_ids[point], AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=handle,
                SamplingInterval=interval_ms,
                Filter=trigger,
                QueueSize=1,
                DiscardOldest=True,
            ),
        )
        for handle, point in handles.items()
    ]
    try:
        with translate_errors(target, "creating the subscription"):
            granted = await subscription.init()
            results = await subscription.create_monitored_items(requests)
    except DeviceProtocolError as exc:  # refused by the server (the link is fine)
        await _delete(subscription)
        cause = exc.__cause__
        name = status_text(cause.code)[0] if isinstance(cause, UaStatusCodeError) else exc
        return f"the server refused a subscription: {name}"
    except BaseException:
        await _delete(subscription)
        raise
    for point, result in zip(handles.values(), results, strict=True):
        if isinstance(result, ua.StatusCode):
            await _delete(subscription)
            return f"the server refused to monitor nodes.{point}: {status_name(result)}"
    keepalive_s = granted.RevisedPublishingInterval * granted.RevisedMaxKeepAliveCount / 1000
    return Watch(subscription, notifications, keepalive_s, time.monotonic())


async def _delete(subscription: Subscription) -> None:
    """Delete a subscription that will not be used; a failure here changes nothing."""
    try:
        await subscription.delete()
    except Exception:  # the session is closed next anyway
        log.debug("deleting an unused subscription failed", exc_info=True)
