"""`python -m hil`: serve a rig of simulated SunSpec (Modbus) and OPC UA devices (and OCPP
stations connected out to their CSMS) until SIGINT or SIGTERM; `python -m hil run SCENARIO
--report DIR`: run a scenario (hil.runner)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from hil.rig import Rig

DEMO_RIG = Path(__file__).parent / "rigs" / "demo.yaml"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hil", description=__doc__)
    parser.add_argument("--rig", type=Path, default=DEMO_RIG, help="rig YAML (default: demo)")
    parser.add_argument(
        "--speed", type=float, default=None, help="simulated seconds per wall second"
    )
    return parser.parse_args(argv)


async def _serve(rig_path: Path, speed: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Rig(rig_path, speed=speed) as rig:
        for device in rig.devices.values():
            models = ",".join(str(m) for m in device.model_ids())
            print(
                f"{device.id} {device.kind} {rig.host(device.id)}:{rig.port(device.id)}"
                f" unit={device.unit_id} base={device.base} models={models}",
                flush=True,
            )
        for device_id, opcua in rig.opcua_devices.items():
            print(
                f"{device_id} {opcua.kind} {rig.endpoint(device_id)} pki={rig.pki_dir}",
                flush=True,
            )
        for device_id, client in rig.ocpp_clients.items():
            print(
                f"{device_id} ocpp_evse {client.spec.version} {client.spec.station_id} -> "
                f"{client.url}",
                flush=True,
            )
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the rig, or a scenario with `run`; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from hil.runner import main as run_scenario

        return run_scenario(argv[1:])
    args = _parse(argv)
    if args.speed is not None and args.speed <= 0:
        print("hil: --speed must be positive", file=sys.stderr)
        return 2
    asyncio.run(_serve(args.rig, args.speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
