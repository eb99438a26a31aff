"""init's survey of an RS-485 bus, for real over a pty null-modem (tests/support/serial_link):
a Fronius Symo at unit 1, a Veris meter with its map at 1000 as its manual says at unit 2,
a unit that answers without SunSpec at 3 and nobody at 4."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from derms_edge.config import SerialSection
from derms_edge.devices.site_file import Site, check, render, sunspec_entry
from derms_edge.devices.sunspec.scan import bases_to_try
from derms_edge.devices.survey import ModbusPlace, Survey, SurveyPlan, survey
from derms_edge.model import DeviceKind
from tests.support.serial_link import NullModem, RtuBus, load_image

pytestmark = pytest.mark.integration

DATA = Path(__file__).parents[1] / "data" / "sunspec-real"
SYMO = load_image(DATA / "fronius-symo-3.0-3-s-float113.json")
VERIS_AT_1000 = (1000, load_image(DATA / "veris-e51c2-203.json")[1])
NOT_SUNSPEC = (0, [0] * 16)


def test_a_serial_bus_is_surveyed_unit_by_unit() -> None:
    async def main() -> tuple[Survey, list[str]]:
        with NullModem() as modem:
            units = {1: SYMO, 2: VERIS_AT_1000, 3: NOT_SUNSPEC}
            async with RtuBus(modem.ports[0], units, baudrate=19200, parity="N"):
                place = ModbusPlace(serial=SerialSection(port=modem.ports[1], baudrate=19200))
                plan = SurveyPlan((place,), (1, 2, 3, 4), bases_to_try([1000]), timeout_s=0.3)
                steps: list[str] = []
                found = await asyncio.wait_for(survey(plan, steps.append), 30)
                return found, steps

    found, steps = asyncio.run(main())
    assert len(steps) == 4
    kinds = [(u.unit_id, u.kind, u.base) for u in found.sunspec]
    assert kinds == [(1, DeviceKind.INVERTER, 40000), (2, DeviceKind.METER, 1000)]
    assert found.sunspec[0].capability.manufacturer == "Fronius"
    (unread,) = found.unread
    assert "unit 3: answers, but no SunS marker" in unread
    entries = [sunspec_entry(u, f"d{u.unit_id}") for u in found.sunspec]
    config = check(render(Site("bus"), entries, found.unread, "init"), "site.yaml")
    serial = [getattr(d, "serial", None) for d in config.devices]
    assert all(s is not None and s.baudrate == 19200 for s in serial)
    assert [getattr(d, "base_address", None) for d in config.devices] == [40000, 1000]
