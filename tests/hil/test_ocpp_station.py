"""The rig's OCPP charging station (2.0.1 and 1.6J) against a minimal CSMS on the `ocpp`
library's central-system side over real loopback websockets: boot, meter values, smart charging
(validation, the composite, reject mode, expiry), reconnects and reboots, the command line.

The station's physics runs on a clock the tests move by hand; the protocol runs in wall time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ocpp import v16, v201

import hil
from hil.ocpp.messages import iso
from hil.ocpp.profiles import (
    Criteria,
    Electrical,
    Period,
    Profile,
    ProfileStore,
    Purpose,
    StationRules,
)
from hil.ocpp.station import OcppStation
from hil.rig import Rig
from hil.spec import load_rig_spec
from tests.hil.harness import HandClock, rig, run
from tests.hil.ocpp_csms import Csms
from tests.support.waiting import until

VERSIONS = ["2.0.1", "1.6"]
V, PHASES, MAX_A = 230.0, 3, 16.0


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Bench:
    csms: Csms
    rig: Rig
    clock: HandClock
    station: OcppStation

    def advance(self, s: float) -> None:
        """Move simulated time on by s (the car settles within a few tau_s)."""
        self.clock.t += s


@asynccontextmanager
async def bench(version: str, **station: Any) -> AsyncIterator[Bench]:
    csms = Csms(version)
    await csms.start()
    clock = HandClock()
    spec = rig(
        {
            "type": "ocpp_evse",
            "id": "ev1",
            "version": version,
            "station_id": "CP-0042",
            "csms_url": csms.url,
            "max_a": MAX_A,
            "phases": PHASES,
            "meter_interval_s": 0.1,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "ev_soc_pct": 40.0,
        }
        | station
    )
    try:
        async with Rig(spec, clock=clock) as r:
            await csms.wait("BootNotification")
            yield Bench(csms, r, clock, r.ocpp_stations["ev1"])
    finally:
        await csms.stop()


def values(meter_value: dict[str, Any]) -> dict[tuple[str, str | None], float]:
    """(measurand, phase) -> value of one MeterValue."""
    return {
        (s.get("measurand", ""), s.get("phase")): float(s["value"])
        for s in meter_value["sampled_value"]
    }


def meter_payload_values(
    version: str, payload: dict[str, Any]
) -> dict[tuple[str, str | None], float]:
    return values(payload["meter_value"][0])


def station_max(version: str, limit: float, unit: str, **extra: Any) -> Any:
    """A SetChargingProfile with a station-wide maximum profile (evse/connector 0)."""
    return set_profile(version, 0, "ChargingStationMaxProfile", limit, unit, 1, 5, **extra)


def set_profile(
    version: str,
    evse: int,
    purpose: str,
    limit: float,
    unit: str,
    profile_id: int,
    stack_level: int,
    *,
    valid_to: str | None = None,
    start_periods: tuple[int, ...] = (0,),
) -> Any:
    periods = [{"start_period": s, "limit": limit} for s in start_periods]
    schedule = {"charging_rate_unit": unit, "charging_schedule_period": periods}
    profile: dict[str, Any] = {
        "stack_level": stack_level,
        "charging_profile_purpose": purpose,
        "charging_profile_kind": "Relative",
    }
    if purpose == "ChargingStationMaxProfile":
        profile["charging_profile_kind"] = "Absolute"
        schedule["start_schedule"] = "2020-01-01T00:00:00Z"
    if valid_to is not None:
        profile["valid_to"] = valid_to
    if version == "2.0.1":
        profile |= {"id": profile_id, "charging_schedule": [schedule | {"id": 1}]}
        return v201.call.SetChargingProfile(evse_id=evse, charging_profile=profile)
    if purpose == "ChargingStationMaxProfile":
        profile["charging_profile_purpose"] = "ChargePointMaxProfile"
    profile |= {"charging_profile_id": profile_id, "charging_schedule": schedule}
    return v16.call.SetChargingProfile(connector_id=evse, cs_charging_profiles=profile)


async def composite(b: Bench, unit: str) -> list[dict[str, Any]]:
    """GetCompositeSchedule for the EVSE over 60 s: its periods (1.6 numbers are Decimal)."""
    if b.csms.version == "2.0.1":
        r = await b.csms.call(v201.call.GetCompositeSchedule(60, 1, unit))
        assert r.status == "Accepted" and r.schedule["charging_rate_unit"] == unit
        periods = r.schedule["charging_schedule_period"]
    else:
        r = await b.csms.call(v16.call.GetCompositeSchedule(1, 60, unit))
        assert r.status == "Accepted" and r.charging_schedule["charging_rate_unit"] == unit
        periods = r.charging_schedule["charging_schedule_period"]
    return [p | {"limit": float(p["limit"])} for p in periods]


async def settled_meter(b: Bench, where: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """A MeterValues sent after now whose values satisfy `where`."""
    return await b.csms.wait(
        "MeterValues",
        lambda p: where(meter_payload_values(b.csms.version, p)),
        after=len(b.csms.messages),
    )


def test_boot_session_and_meter_values_carry_the_simulated_figures(version: str) -> None:
    async def check() -> None:
        async with bench(version) as b:
            boot = b.csms.of("BootNotification")[0]
            assert b.csms.paths == ["/ocpp/CP-0042"]
            if version == "2.0.1":
                assert boot["reason"] == "PowerUp"
                assert boot["charging_station"]["vendor_name"] == "derms-edge"
                await b.csms.wait("TransactionEvent", lambda p: p["event_type"] == "Started")
                await b.csms.wait(
                    "StatusNotification", lambda p: p["connector_status"] == "Occupied"
                )
            else:
                assert boot["charge_point_vendor"] == "derms-edge"
                start = await b.csms.wait("StartTransaction")
                assert start["id_tag"] == "HIL-TAG"
                await b.csms.wait("StatusNotification", lambda p: p["status"] == "Charging")
            await b.csms.wait("Heartbeat")
            b.advance(30.0)
            n = len(b.csms.messages)
            state = b.rig.snapshot("ev1")
            assert state.a == pytest.approx(MAX_A, abs=0.01)
            p = meter_payload_values(version, await settled_meter(b, lambda v: True))
            assert p[("Power.Active.Import", None)] == pytest.approx(-state.w, abs=0.01)
            assert p[("Power.Active.Import", None)] == pytest.approx(MAX_A * V * PHASES, rel=1e-3)
            for phase in ("L1", "L2", "L3"):
                assert p[("Current.Import", phase)] == pytest.approx(state.a, abs=1e-3)
                assert p[("Voltage", f"{phase}-N")] == pytest.approx(V)
            assert p[("Energy.Active.Import.Register", None)] == pytest.approx(state.wh, abs=1e-3)
            assert p[("SoC", None)] == pytest.approx(state.soc_pct, abs=1e-3)
            assert state.wh > 0 and state.soc_pct > 40.0
            if version == "2.0.1":
                update = await b.csms.wait(
                    "TransactionEvent", lambda q: q["event_type"] == "Updated", after=n
                )
                assert values(update["meter_value"][0])[("Power.Active.Import", None)] > 0
            else:
                mv = await b.csms.wait(
                    "MeterValues", lambda q: q.get("transaction_id") == 4711, after=n
                )
                assert mv["connector_id"] == 1
            # the car leaves: the session ends
            b.station.plug(False)
            if version == "2.0.1":
                end = await b.csms.wait("TransactionEvent", lambda q: q["event_type"] == "Ended")
                assert end["transaction_info"]["stopped_reason"] == "EVDisconnected"
            else:
                stop = await b.csms.wait("StopTransaction")
                assert stop["transaction_id"] == 4711 and stop["reason"] == "EVDisconnected"
                assert stop["meter_stop"] == round(state.wh)

    run(check)


def test_station_max_profile_limits_the_car_and_the_composite(version: str) -> None:
    async def check() -> None:
        async with bench(version) as b:
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(MAX_A, abs=0.01)
            r = await b.csms.call(station_max(version, 4200.0, "W"))
            assert r.status == "Accepted"
            b.advance(30.0)
            state = b.rig.snapshot("ev1")
            assert state.a == pytest.approx(4200.0 / (V * PHASES), abs=0.01)
            assert -state.w == pytest.approx(4200.0, abs=2.0)
            await settled_meter(b, lambda v: abs(v[("Power.Active.Import", None)] - 4200) < 2)
            assert await composite(b, "W") == [
                {"start_period": 0, "limit": 4200.0, "number_phases": 3}
            ]
            assert (await composite(b, "A"))[0]["limit"] == pytest.approx(6.1)
            # 6 A set as a TxDefaultProfile is lower still: the minimum of both wins
            r = await b.csms.call(set_profile(version, 1, "TxDefaultProfile", 10.0, "A", 2, 0))
            assert r.status == "Accepted"
            assert (await composite(b, "A"))[0]["limit"] == pytest.approx(6.1)
            r = await b.csms.call(set_profile(version, 1, "TxDefaultProfile", 6.0, "A", 3, 1))
            assert r.status == "Accepted"
            assert (await composite(b, "A"))[0]["limit"] == 6.0
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(6.0, abs=0.01)

    run(check)


def test_an_expired_profile_stops_limiting(version: str) -> None:
    async def check() -> None:
        async with bench(version) as b:
            valid_to = iso(b.station.now() + timedelta(seconds=20))
            r = await b.csms.call(station_max(version, 6.0, "A", valid_to=valid_to))
            assert r.status == "Accepted"
            b.advance(15.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(6.0, abs=0.01)
            periods = await composite(b, "A")
            assert periods[0]["limit"] == 6.0 and periods[1]["limit"] == MAX_A
            assert periods[1]["start_period"] == 5
            b.advance(30.0)  # validTo passed 25 s ago
            assert b.rig.snapshot("ev1").a == pytest.approx(MAX_A, abs=0.01)
            assert await composite(b, "A") == [
                {"start_period": 0, "limit": MAX_A, "number_phases": 3}
            ]

    run(check)


def test_reject_mode_refuses_station_wide_profiles_takes_tx_default_and_clears_it(
    version: str,
) -> None:
    async def check() -> None:
        async with bench(version, reject_station_wide_profiles=True) as b:
            r = await b.csms.call(station_max(version, 4200.0, "W"))
            assert r.status == "Rejected"
            assert b.station.store.profiles == {}
            r = await b.csms.call(set_profile(version, 0, "TxDefaultProfile", 6.0, "A", 7, 2))
            assert r.status == "Accepted"
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(6.0, abs=0.01)
            clear = (
                v201.call.ClearChargingProfile(charging_profile_id=7)
                if version == "2.0.1"
                else v16.call.ClearChargingProfile(id=7)
            )
            assert (await b.csms.call(clear)).status == "Accepted"
            assert (await b.csms.call(clear)).status == "Unknown"
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(MAX_A, abs=0.01)

    run(check)


def test_invalid_profiles_are_rejected(version: str) -> None:
    async def check() -> None:
        async with bench(version, max_stack_level=3) as b:
            bad = [
                set_profile(version, 1, "TxDefaultProfile", 6.0, "A", 1, 0, start_periods=(5,)),
                set_profile(version, 1, "TxDefaultProfile", 6.0, "A", 1, 0, start_periods=(0, 0)),
                set_profile(version, 1, "TxDefaultProfile", 6.0, "A", 1, 4),
                set_profile(version, 1, "ChargingStationMaxProfile", 6.0, "A", 1, 0),
                set_profile(version, 2, "TxDefaultProfile", 6.0, "A", 1, 0),
            ]
            for request in bad:
                assert (await b.csms.call(request)).status == "Rejected"
            assert b.station.store.profiles == {}
            assert len(b.station.rejections) == len(bad)

    run(check)


def test_smart_charging_variables_and_configuration(version: str) -> None:
    async def check() -> None:
        async with bench(version, max_stack_level=5, max_periods=12, rate_units=["A"]) as b:
            if version == "2.0.1":
                names = ["RateUnit", "PeriodsPerSchedule", "ProfileStackLevel", "Enabled", "Nope"]
                r = await b.csms.call(
                    v201.call.GetVariables(
                        [
                            {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": n}}
                            for n in names
                        ]
                    )
                )
                got = {
                    x["variable"]["name"]: (x["attribute_status"], x.get("attribute_value"))
                    for x in r.get_variable_result
                }
                assert got == {
                    "RateUnit": ("Accepted", "A"),
                    "PeriodsPerSchedule": ("Accepted", "12"),
                    "ProfileStackLevel": ("Accepted", "5"),
                    "Enabled": ("Accepted", "true"),
                    "Nope": ("UnknownVariable", None),
                }
            else:
                r = await b.csms.call(v16.call.GetConfiguration())
                got = {k["key"]: k["value"] for k in r.configuration_key}
                assert got["ChargingScheduleAllowedChargingRateUnit"] == "Current"
                assert got["ChargingScheduleMaxPeriods"] == "12"
                assert got["ChargeProfileMaxStackLevel"] == "5"
            w_profile = set_profile(version, 1, "TxDefaultProfile", 4200.0, "W", 1, 0)
            assert (await b.csms.call(w_profile)).status == "Rejected"

    run(check)


def test_csms_restart_reconnects_and_boots_again_keeping_profiles(version: str) -> None:
    async def check() -> None:
        async with bench(version) as b:
            assert (await b.csms.call(station_max(version, 6.0, "A"))).status == "Accepted"
            client = b.rig.ocpp_client("ev1")
            await b.csms.stop()
            await asyncio.sleep(0.3)  # refused a few times: the backoff grows
            assert not client.connected.is_set()
            await b.csms.start()  # same port
            await b.csms.wait("BootNotification", after=1)
            assert len(b.csms.of("BootNotification")) == 2
            # the station counts a boot once its answer is in: a moment after the CSMS has it
            await until(lambda: len(client.boots) == 2, "the second boot accepted")
            assert client.boots == ["PowerUp", "Unknown"]
            assert client.connections == 2
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(6.0, abs=0.01)  # still limited
            # a reboot forgets the profiles and ends the session
            n = len(b.csms.messages)
            await b.rig.reboot_station("ev1")
            await b.csms.wait("BootNotification", after=n)
            await until(lambda: len(client.boots) == 3, "the boot after the reboot accepted")
            assert client.boots[-1] == "PowerUp"
            assert b.station.store.profiles == {}
            b.advance(30.0)
            assert b.rig.snapshot("ev1").a == pytest.approx(MAX_A, abs=0.01)
            if version == "2.0.1":
                end = await b.csms.wait("TransactionEvent", lambda q: q["event_type"] == "Ended")
                assert end["transaction_info"]["stopped_reason"] == "Reboot"
                await b.csms.wait(
                    "TransactionEvent", lambda q: q["event_type"] == "Started", after=n
                )
            else:
                assert (await b.csms.wait("StopTransaction"))["reason"] == "Reboot"
                await b.csms.wait("StartTransaction", after=n)

    run(check)


def test_a_pending_boot_is_repeated_before_the_station_operates() -> None:
    async def check() -> None:
        csms = Csms("2.0.1")
        csms.boot_statuses = ["Pending"]
        await csms.start()
        station = {"type": "ocpp_evse", "id": "ev1", "station_id": "CP-1", "csms_url": csms.url}
        try:
            async with Rig(rig(station), clock=HandClock()) as r:
                await csms.wait("TransactionEvent")
                actions = [a for a, _ in csms.messages]
                assert actions[:2] == ["BootNotification", "BootNotification"]
                assert r.ocpp_client("ev1").boots == ["PowerUp"]
        finally:
            await csms.stop()

    run(check)


def test_basic_auth_header(version: str) -> None:
    async def check() -> None:
        async with bench(version, password="s3cret") as b:
            assert b.csms.auth == ["Basic Q1AtMDA0MjpzM2NyZXQ="]  # CP-0042:s3cret

    run(check)


def test_python_m_hil_runs_an_ocpp_station(tmp_path: Path) -> None:
    async def check() -> None:
        csms = Csms("1.6")
        await csms.start()
        rig_file = tmp_path / "rig.yaml"
        device = {
            "type": "ocpp_evse",
            "id": "ev9",
            "version": "1.6",
            "station_id": "CP-9",
            "csms_url": csms.url,
        }
        rig_file.write_text(yaml.safe_dump({"devices": [device]}))
        env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hil",
            "--rig",
            str(rig_file),
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            await csms.wait("BootNotification", timeout_s=10.0)
            assert csms.paths == ["/ocpp/CP-9"]
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            await csms.stop()
        assert f"ev9 ocpp_evse 1.6 CP-9 -> {csms.url}/CP-9" in out.decode()
        assert proc.returncode == 0

    run(check)


def test_the_ocpp_rig_file_boots_both_stations_behind_its_meter() -> None:
    async def check() -> None:
        csms = Csms("any")
        await csms.start()
        spec = load_rig_spec(Path(hil.__file__).parent / "rigs" / "ocpp.yaml")
        devices = [
            d.model_copy(update={"csms_url": csms.url}) if d.type == "ocpp_evse" else d
            for d in spec.devices
        ]
        clock = HandClock()
        try:
            async with Rig(spec.model_copy(update={"devices": devices}), clock=clock) as r:
                await csms.wait("BootNotification", lambda p: "charging_station" in p)
                await csms.wait("BootNotification", lambda p: "charge_point_vendor" in p)
                assert sorted(csms.paths) == ["/ocpp/CP-0042", "/ocpp/CP-0043"]
                clock.t = 120.0
                ev1, ev2 = r.snapshot("ev1"), r.snapshot("ev2")
                assert ev1.w == pytest.approx(-16 * V * 3, rel=1e-3)
                assert ev2.w == pytest.approx(-32 * V, rel=1e-3)
                assert r.physics_device("meter1").snapshot().w == pytest.approx(ev1.w + ev2.w)
        finally:
            await csms.stop()

    run(check)


# --- the composite rules without a connection -------------------------------------------------


def _store(version: str = "2.0.1") -> ProfileStore:
    rules = StationRules(version, 1, 8, 24, ("A", "W"), reject_station_wide=False)
    return ProfileStore(rules, Electrical(PHASES, V, MAX_A))


def _profile(pid: int, purpose: Purpose, level: int, amps: float, evse: int = 0) -> Profile:
    """A Relative profile of one period in A."""
    return Profile(pid, level, purpose, "Relative", evse, "A", (Period(0, amps),))


def test_composite_is_the_minimum_across_purposes_and_the_top_stack_level_within() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = _store()
    station = Profile(
        1, 0, Purpose.STATION_MAX, "Absolute", 0, "A", (Period(0, 10.0),), start_schedule=now
    )
    assert store.install(station, None, now) is None
    assert store.install(_profile(2, Purpose.TX_DEFAULT, 0, 8.0), None, now) is None
    assert store.install(_profile(3, Purpose.TX_DEFAULT, 1, 12.0), None, now) is None
    assert store.limit_a(now, now) == 10.0  # TxDefault level 1 (12 A) leads, the 10 A max caps
    store.clear(Criteria(profile_id=1))
    assert store.limit_a(now, now) == 12.0
    no_tx_id = _profile(4, Purpose.TX, 0, 7.0, evse=1)
    assert store.install(no_tx_id, None, now) is not None  # no transaction
    assert store.install(no_tx_id, "T1", now) is not None  # 2.0.1 needs its transactionId
    tx = Profile(4, 0, Purpose.TX, "Relative", 1, "A", (Period(0, 7.0),), transaction_id="T1")
    assert store.install(tx, "T1", now) is None
    assert store.limit_a(now, now, "T1") == 7.0  # the TxProfile replaces the TxDefaults
    same_level = Profile(5, 1, Purpose.TX_DEFAULT, "Relative", 0, "A", (Period(0, 9.0),))
    assert "K01.FR.39" in (store.install(same_level, "T1", now) or "")


def test_validity_window_and_periods_shape_the_composite() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = _store()
    later = Profile(
        1,
        0,
        Purpose.TX_DEFAULT,
        "Absolute",
        0,
        "W",
        (Period(0, 6900.0), Period(20, 4140.0)),
        start_schedule=now,
        valid_from=now + timedelta(seconds=10),
        valid_to=now + timedelta(seconds=30),
    )
    assert store.install(later, None, now) is None
    assert [(p.start_s, round(p.amps, 3)) for p in store.composite(now, 60, now)] == [
        (0, MAX_A),
        (10, 10.0),  # 6900 W on 3 x 230 V
        (20, 6.0),
        (30, MAX_A),
    ]
    backwards = Profile(
        2,
        1,
        Purpose.TX_DEFAULT,
        "Relative",
        0,
        "A",
        (Period(0, 6.0),),
        valid_from=now,
        valid_to=now,
    )
    assert "validTo" in (store.install(backwards, None, now) or "")


def test_1_6_replaces_a_profile_of_the_same_stack_level_and_purpose() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = _store("1.6")
    assert store.install(_profile(1, Purpose.TX_DEFAULT, 2, 8.0), None, now) is None
    assert store.install(_profile(2, Purpose.TX_DEFAULT, 2, 7.0), None, now) is None
    assert list(store.profiles) == [2]
    assert store.limit_a(now, now) == 7.0
