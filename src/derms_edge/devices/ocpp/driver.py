"""One EVSE of an OCPP charging station as a gateway device, over the shared CSMS (hub).

The station pushes its readings (MeterValues, TransactionEvent, StatusNotification...): the
driver folds each into the station's state as it arrives, and a poll hands out the EVSE's
share. A reading is as fresh as the station's last message; the station vouches for it
until its next heartbeat is due, so a station silent past that goes stale. Connect waits for
the station's session and its BootNotification, then reads what the station takes in a
charging profile (GetVariables, 1.6 GetConfiguration). A current limit becomes the
gateway's charging profile (station-wide, else a TxDefaultProfile on the EVSE once the
station refused that), read back through GetCompositeSchedule and re-issued halfway to its
validTo while in force; a release clears it. A station that connects again is a changed
device: the coordinator discovers it again and writes its limit again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from derms_edge.aio import wait_set
from derms_edge.config import OcppDevice
from derms_edge.devices.coordinator import Sample
from derms_edge.devices.ocpp import capability as cap
from derms_edge.devices.ocpp.hub import OcppHub
from derms_edge.devices.ocpp.meter import StationState, device_state, fold, start_transaction
from derms_edge.devices.ocpp.profiles import (
    Limit,
    Plan,
    Purpose,
    clear_request,
    composite_request,
    confirms,
    fallback,
    limit_in_force,
    plan_limit,
    read_answer,
    set_request,
)
from derms_edge.devices.ocpp.session import (
    CallErrorAnswer,
    OcppVersion,
    StationConnected,
    StationEvent,
    StationMessage,
    StationSession,
)
from derms_edge.errors import (
    ConnectionLost,
    ControlRefused,
    DeviceChanged,
    DeviceError,
    DeviceTimeout,
)
from derms_edge.model import Capability, DeviceState, SetpointName, SetpointValue

log = logging.getLogger(__name__)

_VERSION = {OcppVersion.V201: cap.OcppVersion.V201, OcppVersion.V16: cap.OcppVersion.V16}
"""The session's version (its subprotocol) as the pure part names it."""
REBOOT_WAIT_S = 2.0
"""How long a connect waits for the BootNotification when the station booted before (a
station may connect again without booting)."""


class OcppDriver:
    """One EVSE of one charging station, fed by the station's messages through the hub."""

    def __init__(
        self,
        device: OcppDevice,
        hub: OcppHub,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._device = device
        self._hub = hub
        self._clock = clock
        self._name = device.id
        self._valid_s = hub.section.profile_valid_s
        self._vouched_s = float(hub.section.heartbeat_interval_s)
        self._session: StationSession | None = None
        self._version = cap.OcppVersion.V201
        self._state = StationState()
        self._boot: Mapping[str, Any] | None = None
        self._booted = asyncio.Event()
        self._heard = clock()
        self._charging = cap.SmartCharging()
        self._capability: Capability | None = None
        self._limit: Limit | None = None
        self._plan: Plan | None = None
        hub.listen(device.station_id, self._on_event)

    def _on_event(self, event: StationEvent) -> None:
        if isinstance(event, StationConnected):
            self._booted.clear()
            return
        if not isinstance(event, StationMessage):
            return
        self._heard = self._clock()
        version = _VERSION[event.version]
        if event.action == "BootNotification":
            self._boot = event.payload
            self._booted.set()
            return
        try:
            if event.action == "StartTransaction" and version is cap.OcppVersion.V16:
                tx = int(event.payload["transactionId"])
                self._state = start_transaction(self._state, event.payload, tx)
            else:
                self._state = fold(self._state, version, event.action, event.payload)
        except (DeviceError, KeyError, ValueError) as error:
            log.warning(
                "%s: %s from station %s not read: %s",
                self._name,
                event.action,
                event.station_id,
                error,
            )

    async def connect(self) -> Capability:
        """Wait for the station's session and its boot, read what it takes in a profile."""
        device = self._device
        session = await self._hub.server.wait_connected(device.station_id, device.timeout_s)
        self._session = session
        self._version = _VERSION[session.version]
        wait_s = device.timeout_s if self._boot is None else REBOOT_WAIT_S
        await wait_set(self._booted, wait_s)
        if self._boot is None:
            raise DeviceTimeout(
                f"{self._name}: station {device.station_id} sent no BootNotification within "
                f"{wait_s:g} s of connecting"
            )
        plate = cap.nameplate(self._version, self._boot)
        charging, rated_w = await self._smart_charging(session)
        if device.phases is not None:
            charging = replace(charging, phases=device.phases)
        self._charging = replace(charging, station_max_rejected=self._charging.station_max_rejected)
        self._heard = self._clock()
        self._capability = cap.evse_capability(
            plate, charging, max_a=device.max_a, w_max=None if device.max_a else rated_w
        )
        return self._capability

    async def _smart_charging(
        self, session: StationSession
    ) -> tuple[cap.SmartCharging, float | None]:
        """What the station takes in a charging profile, and its EVSE's rated power (2.0.1);
        the defaults when it does not answer the question (a CALLERROR)."""
        try:
            if self._version is cap.OcppVersion.V201:
                answer = await session.call(cap.variables_request(self._device.evse))
                results = answer.get_variable_result or []
                return cap.smart_charging_201(results), cap.rated_w_201(results)
            answer = await session.call(cap.configuration_request())
            return cap.smart_charging_16(answer.configuration_key or []), None
        except CallErrorAnswer as error:
            log.info("%s: %s; assuming what every smart charger takes", self._name, error)
            return cap.SmartCharging(), None

    def _live(self) -> StationSession:
        """The session connected at the last connect; DeviceChanged when the station has
        connected again since (it may have forgotten its profiles), ConnectionLost if gone."""
        now = self._hub.server.session(self._device.station_id)
        if self._session is None or now is None:
            raise ConnectionLost(f"{self._name}: station {self._device.station_id} not connected")
        if now is not self._session:
            raise DeviceChanged(f"station {self._device.station_id} connected again")
        return now

    async def poll(self) -> DeviceState:
        """The EVSE's state as the station last reported it."""
        self._live()
        return device_state(self._state, self._device.evse)

    def sampled_at(self) -> Sample:
        """The station's last message; it vouches for its readings until its next heartbeat."""
        return Sample(at=self._heard, vouched_s=self._vouched_s)

    async def close(self) -> None:
        """Nothing of its own to release: the hub's server holds the connection."""
        self._session = None

    def supports(self) -> frozenset[SetpointName]:
        """The current limit, once connected, unless the station has no smart charging."""
        if self._capability is None or not self._charging.supported:
            return frozenset()
        return frozenset({SetpointName.EVSE_MAX_A})

    async def write(self, name: SetpointName, value: SetpointValue | None) -> None:
        """Install the limit as the gateway's charging profile and read it back; None clears
        the profile. ControlRefused carries the station's status when it refuses."""
        if name is not SetpointName.EVSE_MAX_A:
            raise ControlRefused(self._name, name.value, "an OCPP charger takes evse_max_a only")
        session = self._live()
        if value is None:
            await self._clear(session)
            return
        if not isinstance(value, int | float):
            raise ControlRefused(self._name, name.value, f"{value!r} is not a current")
        try:
            limit = Limit(float(value), cap.RateUnit.A)
        except ValueError as error:
            raise ControlRefused(self._name, name.value, str(error)) from error
        await self._install(session, limit)

    def _point(self, plan: Plan) -> str:
        return f"SetChargingProfile {plan.purpose.value} evse {plan.evse_id}"

    def _planned(self, limit: Limit) -> Plan:
        try:
            return plan_limit(
                limit,
                self._charging,
                datetime.now(UTC),
                evse_id=self._device.evse,
                fail_safe_s=self._valid_s,
            )
        except ValueError as error:
            raise ControlRefused(self._name, "SetChargingProfile", str(error)) from error

    async def _ask(self, session: StationSession, request: object, point: str) -> Any:
        """One call for a control: a CALLERROR (NotSupported, PropertyConstraintViolation...)
        is the station refusing it, tried again later only when it is an InternalError."""
        try:
            return await session.call(request)
        except CallErrorAnswer as error:
            raise ControlRefused(
                self._name, point, str(error), retryable=error.retryable
            ) from error
        except ValueError as error:  # ours, not sent: the request breaks the schema
            raise ControlRefused(self._name, point, str(error)) from error

    async def _install(self, session: StationSession, limit: Limit) -> None:
        plan = self._planned(limit)
        set_profile = set_request(plan, self._version)
        answer = read_answer(await self._ask(session, set_profile, self._point(plan)))
        if not answer.accepted:
            station = fallback(self._charging, plan, answer)
            if station is None:
                raise ControlRefused(self._name, self._point(plan), answer.detail or "refused")
            log.info(
                "%s: %s (%s); falling back to a TxDefaultProfile",
                self._name,
                self._point(plan),
                answer.detail,
            )
            self._charging = station
            plan = self._planned(limit)
            set_profile = set_request(plan, self._version)
            answer = read_answer(await self._ask(session, set_profile, self._point(plan)))
            if not answer.accepted:
                raise ControlRefused(self._name, self._point(plan), answer.detail or "refused")
        request = composite_request(self._device.evse, plan.unit, self._version)
        composite = await self._ask(session, request, "GetCompositeSchedule")
        in_force = limit_in_force(composite, self._version)
        if not confirms(plan, in_force):
            shown = "no limit" if in_force is None else f"{in_force.value:g} {in_force.unit}"
            raise ControlRefused(
                self._name,
                self._point(plan),
                f"the composite schedule holds {shown}, not {plan.limit:g} {plan.unit}",
            )
        self._plan, self._limit = plan, limit

    async def _clear(self, session: StationSession) -> None:
        purpose = Purpose.TX_DEFAULT if self._charging.station_max_rejected else Purpose.STATION_MAX
        request = clear_request(purpose, self._device.evse, self._version)
        answer = await self._ask(session, request, f"ClearChargingProfile {purpose.value}")
        # Unknown: no such profile (never installed, or expired): released all the same
        if getattr(answer, "status", None) not in ("Accepted", "Unknown"):
            raise ControlRefused(
                self._name,
                f"ClearChargingProfile {purpose.value}",
                read_answer(answer).detail or "refused",
            )
        self._plan, self._limit = None, None

    async def keepalive(self) -> None:
        """Re-issue the profile in force once it is halfway to its validTo. A station that
        now refuses it is a changed device: discovered and written again (the refusal is
        then reported as a write's)."""
        if self._plan is None or self._limit is None:
            return
        if datetime.now(UTC) >= self._plan.refresh_at():
            try:
                await self._install(self._live(), self._limit)
            except ControlRefused as refusal:
                self._plan = None
                raise DeviceChanged(f"the refresh of the profile was refused: {refusal}") from None
