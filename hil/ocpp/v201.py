"""The simulated station's OCPP 2.0.1 side: the `ocpp` library's ChargePoint with the calls a
station makes and the smart-charging requests it answers."""

from __future__ import annotations

import uuid
from typing import Any

from ocpp.routing import on  # type: ignore[import-untyped]
from ocpp.v201 import ChargePoint, call, call_result  # type: ignore[import-untyped]
from ocpp.v201.enums import Action  # type: ignore[import-untyped]

from hil.ocpp.messages import BadProfile, iso, meter_value, parse_profile, schedule_periods
from hil.ocpp.profiles import PURPOSE_NAMES, Criteria
from hil.ocpp.side import StationSide
from hil.ocpp.variables import smart_charging_variable

CHARGING_STATE = {"A": "Idle", "B": "SuspendedEVSE", "C": "Charging"}


class Station201(StationSide, ChargePoint):  # type: ignore[misc]
    """A 2.0.1 charging station with one EVSE and connector."""

    calls = call

    # --- calls the station makes -------------------------------------------------------------

    async def boot(self, reason: str) -> tuple[str, int]:
        """BootNotification: the CSMS's status and heartbeat interval."""
        result = await self.call(
            call.BootNotification(
                charging_station={"model": self.spec.model, "vendor_name": self.spec.vendor},
                reason=reason,
            )
        )
        return str(result.status), int(result.interval)

    def connector_status(self) -> str:
        """Occupied while a car is plugged in."""
        return "Occupied" if self.station.plugged() else "Available"

    async def status(self, status: str) -> None:
        await self.call(
            call.StatusNotification(
                timestamp=iso(self.station.now()),
                connector_status=status,
                evse_id=self.spec.evse_id,
                connector_id=self.spec.connector_id,
            )
        )

    def _charging_state(self) -> str:
        mode = self.station.mode3().name
        if mode == "B" and self.station.physics.soc_pct >= 100.0:
            return "SuspendedEV"
        return CHARGING_STATE[mode]

    async def _event(self, event_type: str, trigger: str, context: str, **extra: Any) -> None:
        tx = self.station.tx
        if tx is None:
            return
        info = {"transaction_id": tx.id, "charging_state": self._charging_state()}
        info.update(extra.pop("info", {}))
        await self.call(
            call.TransactionEvent(
                event_type=event_type,
                timestamp=iso(self.station.now()),
                trigger_reason=trigger,
                seq_no=tx.next_seq(),
                transaction_info=info,
                meter_value=[meter_value(self.station.reading(), "2.0.1", context)],
                **extra,
            )
        )

    async def start_transaction(self) -> None:
        """TransactionEvent Started at plug-in (the station makes the transaction id)."""
        self.station.start_transaction(f"{self.spec.station_id}-{uuid.uuid4().hex[:12]}")
        await self._event(
            "Started",
            "CablePluggedIn",
            "Transaction.Begin",
            evse={"id": self.spec.evse_id, "connector_id": self.spec.connector_id},
            id_token={"id_token": self.spec.id_tag, "type": "Local"},
        )

    async def end_transaction(self, reason: str) -> None:
        """TransactionEvent Ended (stoppedReason EVDisconnected, or the station's own)."""
        trigger = "EVCommunicationLost" if reason == "EVDisconnected" else "AbnormalCondition"
        await self._event("Ended", trigger, "Transaction.End", info={"stopped_reason": reason})

    async def meter(self) -> None:
        """MeterValues (clock-aligned) and, during a session, TransactionEvent Updated."""
        await self.call(
            call.MeterValues(
                evse_id=self.spec.evse_id,
                meter_value=[meter_value(self.station.reading(), "2.0.1", "Sample.Clock")],
            )
        )
        await self._event("Updated", "MeterValuePeriodic", "Sample.Periodic")

    # --- requests the station answers --------------------------------------------------------

    @on(Action.set_charging_profile)  # type: ignore[untyped-decorator]
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        try:
            reason = self.station.install(parse_profile(charging_profile, evse_id, "2.0.1"))
        except BadProfile as exc:
            reason = str(exc)
            self.station.rejections.append(reason)
        if reason is None:
            return call_result.SetChargingProfile(status="Accepted")
        return call_result.SetChargingProfile(
            status="Rejected",
            status_info={"reason_code": "InvalidProfile", "additional_info": reason[:512]},
        )

    @on(Action.clear_charging_profile)  # type: ignore[untyped-decorator]
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        criteria = charging_profile_criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        removed = self.station.clear(
            Criteria(
                profile_id=charging_profile_id,
                evse_id=criteria.get("evse_id"),
                purpose=None if purpose is None else PURPOSE_NAMES[purpose],
                stack_level=criteria.get("stack_level"),
            )
        )
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)  # type: ignore[untyped-decorator]
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        unit = charging_rate_unit or self.spec.rate_units[0]
        if evse_id not in (0, self.spec.evse_id) or unit not in self.spec.rate_units:
            return call_result.GetCompositeSchedule(status="Rejected")
        start = self.station.now()
        periods = self.station.composite(duration, evse_id)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": iso(start),
                "charging_rate_unit": unit,
                "charging_schedule_period": schedule_periods(
                    periods, unit, self.station.store.electrical
                ),
            },
        )

    @on(Action.get_variables)  # type: ignore[untyped-decorator]
    def on_get_variables(
        self, get_variable_data: list[dict[str, Any]], **_: Any
    ) -> call_result.GetVariables:
        results = []
        for item in get_variable_data:
            component, variable = item["component"], item["variable"]
            attribute = item.get("attribute_type", "Actual")
            status, value = smart_charging_variable(
                self.station, component["name"], variable["name"], attribute
            )
            result: dict[str, Any] = {
                "attribute_status": status,
                "component": component,
                "variable": variable,
                "attribute_type": attribute,
            }
            if value is not None:
                result["attribute_value"] = value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)
