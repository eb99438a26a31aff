"""The simulated station's OCPP 1.6J side: the `ocpp` library's ChargePoint with the calls a
charge point makes and the smart-charging requests it answers."""

from __future__ import annotations

from typing import Any

from ocpp.routing import on  # type: ignore[import-untyped]
from ocpp.v16 import ChargePoint, call, call_result  # type: ignore[import-untyped]
from ocpp.v16.enums import Action  # type: ignore[import-untyped]

from hil.ocpp.messages import BadProfile, iso, meter_value, parse_profile, schedule_periods
from hil.ocpp.profiles import PURPOSE_NAMES, Criteria
from hil.ocpp.side import StationSide
from hil.ocpp.variables import configuration_16


class Station16(StationSide, ChargePoint):  # type: ignore[misc]
    """A 1.6J charge point with one connector."""

    calls = call

    # --- calls the charge point makes ---------------------------------------------------------

    async def boot(self, reason: str) -> tuple[str, int]:
        """BootNotification (1.6 has no reason): the status and heartbeat interval."""
        result = await self.call(
            call.BootNotification(
                charge_point_model=self.spec.model, charge_point_vendor=self.spec.vendor
            )
        )
        return str(result.status), int(result.interval)

    def connector_status(self) -> str:
        """Available, Preparing (plugged, no session yet), Charging, SuspendedEV (car full)
        or SuspendedEVSE (the limit is below 6 A)."""
        if not self.station.plugged():
            return "Available"
        if self.station.tx is None:
            return "Preparing"
        if self.station.mode3().name == "C":
            return "Charging"
        return "SuspendedEV" if self.station.physics.soc_pct >= 100.0 else "SuspendedEVSE"

    async def status(self, status: str) -> None:
        await self.call(
            call.StatusNotification(
                connector_id=self.spec.connector_id,
                error_code="NoError",
                status=status,
                timestamp=iso(self.station.now()),
            )
        )

    async def start_transaction(self) -> None:
        """StartTransaction at plug-in; the CSMS gives the transaction id."""
        reading = self.station.reading()
        result = await self.call(
            call.StartTransaction(
                connector_id=self.spec.connector_id,
                id_tag=self.spec.id_tag,
                meter_start=round(reading.wh),
                timestamp=iso(reading.t),
            )
        )
        self.station.start_transaction(str(result.transaction_id))

    async def end_transaction(self, reason: str) -> None:
        """StopTransaction (reason EVDisconnected, or the station's own) with the last
        values."""
        tx = self.station.tx
        if tx is None:
            return
        reading = self.station.reading()
        await self.call(
            call.StopTransaction(
                meter_stop=round(reading.wh),
                timestamp=iso(reading.t),
                transaction_id=int(tx.id),
                reason=reason,
                transaction_data=[meter_value(reading, "1.6", "Transaction.End")],
            )
        )

    async def meter(self) -> None:
        """MeterValues, with the transaction id during a session."""
        tx = self.station.tx
        await self.call(
            call.MeterValues(
                connector_id=self.spec.connector_id,
                meter_value=[meter_value(self.station.reading(), "1.6", "Sample.Periodic")],
                transaction_id=None if tx is None else int(tx.id),
            )
        )

    # --- requests the charge point answers ----------------------------------------------------

    @on(Action.set_charging_profile)  # type: ignore[untyped-decorator]
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        try:
            profile = parse_profile(cs_charging_profiles, connector_id, "1.6")
            reason = self.station.install(profile)
        except BadProfile as exc:
            reason = str(exc)
            self.station.rejections.append(reason)
        return call_result.SetChargingProfile(status="Accepted" if reason is None else "Rejected")

    @on(Action.clear_charging_profile)  # type: ignore[untyped-decorator]
    def on_clear_charging_profile(
        self,
        id: int | None = None,  # the payload names it id
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        purpose = charging_profile_purpose
        removed = self.station.clear(
            Criteria(
                profile_id=id,
                evse_id=connector_id,
                purpose=None if purpose is None else PURPOSE_NAMES[purpose],
                stack_level=stack_level,
            )
        )
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)  # type: ignore[untyped-decorator]
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        unit = charging_rate_unit or self.spec.rate_units[0]
        if connector_id not in (0, self.spec.connector_id) or unit not in self.spec.rate_units:
            return call_result.GetCompositeSchedule(status="Rejected")
        start = iso(self.station.now())
        periods = self.station.composite(duration, connector_id)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=start,
            charging_schedule={
                "duration": duration,
                "start_schedule": start,
                "charging_rate_unit": unit,
                "charging_schedule_period": schedule_periods(
                    periods, unit, self.station.store.electrical
                ),
            },
        )

    @on(Action.get_configuration)  # type: ignore[untyped-decorator]
    def on_get_configuration(
        self, key: list[str] | None = None, **_: Any
    ) -> call_result.GetConfiguration:
        known = configuration_16(self.station)
        wanted = key or list(known)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": True, "value": known[k]} for k in wanted if k in known
            ],
            unknown_key=[k for k in wanted if k not in known] or None,
        )
