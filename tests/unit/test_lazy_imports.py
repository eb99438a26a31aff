"""Heavy libraries load only in a gateway that uses them (each costs 20-40 MB on a Pi):
asyncua for OPC UA devices, influxdb_client for the InfluxDB sink."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUILD = textwrap.dedent(
    """
    import asyncio
    import json
    import sys

    from derms_edge.config import parse_config
    from derms_edge.runtime.gateway import Gateway

    state_dir, extra = sys.argv[1], sys.argv[2]
    devices = [
        {"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"},
        {"id": "ev", "kind": "evse", "protocol": "modbus", "host": "127.0.0.1", "unit_id": 2,
         "profile": {"name": "x", "current_limit": {"address": 1}}},
    ]
    telemetry = {}
    if extra == "opcua":
        devices.append({"id": "wallbox", "kind": "evse", "protocol": "opcua",
                        "endpoint": "opc.tcp://127.0.0.1:4840",
                        "nodes": {"w": "nsu=urn:x;s=ev.Power"}})
    if extra == "influxdb":
        telemetry["influxdb"] = {"url": "http://127.0.0.1:8086", "token": "t", "org": "o",
                                 "bucket": "b"}


    async def build() -> None:  # the Modbus links want a running loop
        config = {"gateway": {"id": "gw", "state_dir": state_dir}, "devices": devices,
                  "telemetry": telemetry}
        Gateway(parse_config(config)).outbox.close()

    asyncio.run(build())
    print(json.dumps(sorted({"asyncua", "influxdb_client"} & set(sys.modules))))
    """
)


def loaded(extra: str, state_dir: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", BUILD, str(state_dir), extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("none", []), ("opcua", ["asyncua"]), ("influxdb", ["influxdb_client"])],
)
def test_a_library_is_imported_only_when_the_configuration_uses_it(
    extra: str, expected: list[str], tmp_path: Path
) -> None:
    assert loaded(extra, tmp_path) == expected
