"""asyncua is loaded only by a gateway that has an OPC UA device (it costs memory on a Pi)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BUILD = textwrap.dedent(
    """
    import asyncio
    import sys

    from derms_edge.cli import main
    from derms_edge.config import parse_config
    from derms_edge.daemon import Gateway
    from derms_edge.devices.opcua import nodeid

    devices = [
        {"id": "pv", "kind": "inverter", "protocol": "sunspec", "host": "127.0.0.1"},
        {"id": "ev", "kind": "evse", "protocol": "modbus", "host": "127.0.0.1", "unit_id": 2,
         "profile": {"name": "x", "current_limit": {"address": 1}}},
    ]
    if sys.argv[1] == "opcua":
        devices.append({"id": "wallbox", "kind": "evse", "protocol": "opcua",
                        "endpoint": "opc.tcp://127.0.0.1:4840",
                        "nodes": {"w": "nsu=urn:x;s=ev.Power"}})


    async def build() -> None:  # the Modbus links want a running loop
        Gateway(parse_config({"gateway": {"id": "gw"}, "devices": devices}))

    asyncio.run(build())
    print("asyncua" in sys.modules)
    """
)


def loaded(kind: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-c", BUILD, kind], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip().splitlines()[-1] == "True"


def test_a_modbus_only_gateway_does_not_import_asyncua() -> None:
    assert not loaded("modbus")


def test_an_opcua_device_imports_it_when_its_driver_is_built() -> None:
    assert loaded("opcua")
